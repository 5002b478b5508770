/**
 * The package as a user installs it: `npm pack`, installed into an empty project, then imported
 * (ES module), required (CommonJS) and type-checked from both, with no other package present.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const T = { timeout: 60_000 };
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

const work = mkdtempSync(join(tmpdir(), "meshguard-ts-package-"));
const consumer = join(work, "consumer");
let packed: { files: { path: string }[]; filename: string };

function run(command: string, args: string[], cwd: string): string {
  return execFileSync(command, args, {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, npm_config_update_notifier: "false" },
    timeout: 60_000,
  });
}

before(() => {
  // --ignore-scripts: the build under test is the one in dist/, not a rebuild while tests read it.
  const output = run(
    npm,
    ["pack", "--ignore-scripts", "--json", "--pack-destination", work],
    PACKAGE_ROOT,
  );
  [packed] = JSON.parse(output) as (typeof packed)[];
  mkdirSync(consumer);
  writeFileSync(
    join(consumer, "package.json"),
    JSON.stringify({ name: "consumer", private: true }),
  );
  run(
    npm,
    [
      "install",
      "--offline",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      join(work, packed.filename),
    ],
    consumer,
  );
});
after(() => rmSync(work, { recursive: true, force: true }));

test("the tarball holds the two builds and their declarations, nothing else", T, () => {
  const files = packed.files.map((file) => file.path).sort();
  for (const needed of [
    "package.json",
    "README.md",
    "dist/esm/index.js",
    "dist/esm/index.d.ts",
    "dist/esm/package.json",
    "dist/cjs/index.js",
    "dist/cjs/index.d.ts",
    "dist/cjs/package.json",
  ]) {
    assert.ok(files.includes(needed), `${needed} is missing from ${files.join(", ")}`);
  }
  const unexpected = files.filter(
    (file) => !file.startsWith("dist/") && file !== "package.json" && file !== "README.md",
  );
  assert.deepEqual(unexpected, []);
  const manifest = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as {
    dependencies?: Record<string, string>;
  };
  assert.deepEqual(manifest.dependencies ?? {}, {}, "no runtime dependency");
});

test("an ES module imports it and a CommonJS module requires it", T, () => {
  writeFileSync(
    join(consumer, "esm.mjs"),
    `import { MeshGuardClient, PolicyDeniedError, governedTool } from "@meshguard/sdk";
const client = new MeshGuardClient({ gatewayUrl: "http://127.0.0.1:1" });
console.log(typeof governedTool, client.gatewayUrl, new PolicyDeniedError("x:y").name);
`,
  );
  writeFileSync(
    join(consumer, "cjs.cjs"),
    `const { MeshGuardClient, RateLimitError, governMcpClient } = require("@meshguard/sdk");
console.log(typeof governMcpClient, new MeshGuardClient({ gatewayUrl: "http://127.0.0.1:2" }).gatewayUrl, new RateLimitError().name);
console.log(require.resolve("@meshguard/sdk").endsWith("dist/cjs/index.js"));
`,
  );
  assert.equal(
    run(process.execPath, ["esm.mjs"], consumer).trim(),
    "function http://127.0.0.1:1 PolicyDeniedError",
  );
  assert.deepEqual(run(process.execPath, ["cjs.cjs"], consumer).trim().split("\n"), [
    "function http://127.0.0.1:2 RateLimitError",
    "true",
  ]);
});

test("TypeScript finds the declarations from both module kinds, with Node's types only", T, () => {
  const source = `import { MeshGuardClient, type PolicyDecision } from "@meshguard/sdk";
export async function ask(client: MeshGuardClient): Promise<boolean> {
  const decision: PolicyDecision = await client.check("read:workspace", { resource: "a.txt" });
  return decision.allowed;
}
`;
  writeFileSync(join(consumer, "esm.mts"), source);
  writeFileSync(join(consumer, "cjs.cts"), source);
  writeFileSync(
    join(consumer, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        module: "NodeNext",
        moduleResolution: "NodeNext",
        target: "ES2022",
        lib: ["ES2022"],
        types: ["node"],
        typeRoots: [join(PACKAGE_ROOT, "node_modules", "@types")],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
      },
      files: ["esm.mts", "cjs.cts"],
    }),
  );
  const tsc = join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc");
  const traced = run(process.execPath, [tsc, "-p", ".", "--traceResolution"], consumer);
  assert.match(
    traced,
    /'@meshguard\/sdk' was successfully resolved to '.*dist\/esm\/index\.d\.ts'/,
  );
  assert.match(
    traced,
    /'@meshguard\/sdk' was successfully resolved to '.*dist\/cjs\/index\.d\.ts'/,
  );
});
