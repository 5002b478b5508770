// Runs the built tests (build/test) with node's test runner. Arguments are passed to it
// (e.g. --test-name-pattern=approval). MeshGuard settings of the calling shell are left out so
// that they cannot change what the tests see; MESHGUARD_BIN names the gateway binary.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "build", "test");
const files = readdirSync(dir)
  .filter((name) => /\.test\.(c?js)$/.test(name))
  .sort()
  .map((name) => join(dir, name));
if (files.length === 0) {
  console.error(`no tests in ${dir}: build them first (node scripts/build.mjs --tests)`);
  process.exit(1);
}
const env = {};
for (const [key, value] of Object.entries(process.env)) {
  if (key.startsWith("MESHGUARD_") && key !== "MESHGUARD_BIN") continue;
  env[key] = value;
}
const result = spawnSync(process.execPath, ["--test", ...process.argv.slice(2), ...files], {
  cwd: root,
  env,
  stdio: "inherit",
});
process.exit(result.status ?? 1);
