// Builds the package: ES modules in dist/esm and CommonJS in dist/cjs, each with its .d.ts
// files. With --tests, builds the tests into build/test instead; they import the built package
// by its name, so dist/ must be built first.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

function compile(project) {
  try {
    execFileSync(process.execPath, [tsc, "-p", join(root, project)], {
      stdio: "inherit",
      cwd: root,
    });
  } catch {
    console.error(`tsc -p ${project} failed`);
    process.exit(1);
  }
}

if (process.argv.includes("--tests")) {
  rmSync(join(root, "build"), { recursive: true, force: true });
  compile("tsconfig.test.json");
} else {
  rmSync(join(root, "dist"), { recursive: true, force: true });
  compile("tsconfig.json");
  compile("tsconfig.cjs.json");
  // Each half says how Node reads its .js files, whatever the package's own "type" is.
  for (const [dir, type] of [
    ["esm", "module"],
    ["cjs", "commonjs"],
  ]) {
    mkdirSync(join(root, "dist", dir), { recursive: true });
    writeFileSync(join(root, "dist", dir, "package.json"), `${JSON.stringify({ type })}\n`);
  }
}
