// Builds the package into dist/ (npm run build; also `prepare`, so `npm ci` and
// `npm pack` build it):
//
//   dist/esm/  ES modules (tsconfig.build.json), with .d.ts, declaration and source maps
//   dist/cjs/  CommonJS (tsconfig.cjs.json), marked `"type": "commonjs"`, with the same
//              .d.ts files, which TypeScript then reads as CommonJS declarations
//
// The CommonJS pass only emits JavaScript (`noCheck`): the ESM pass type-checks the
// same sources, and its declarations are the ones both halves ship.

import { spawnSync } from "node:child_process";
import { cpSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(sdk, "dist");
const tsc = resolveTsc();

function resolveTsc() {
  try {
    return createRequire(import.meta.url).resolve("typescript/bin/tsc");
  } catch {
    // E.g. `npm install path/to/sdk` from an app runs this `prepare` before `npm ci` here.
    console.error(`@dspeak/sdk: the build tools are not installed; run \`npm ci\` in ${sdk} first`);
    process.exit(1);
  }
}

function compile(project) {
  const run = spawnSync(process.execPath, [tsc, "-p", join(sdk, project)], { cwd: sdk, stdio: "inherit" });
  if (run.status !== 0) throw new Error(`tsc -p ${project} failed`);
}

rmSync(dist, { recursive: true, force: true });
compile("tsconfig.build.json");
compile("tsconfig.cjs.json");
writeFileSync(join(dist, "cjs", "package.json"), `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);
cpSync(join(dist, "esm"), join(dist, "cjs"), {
  recursive: true,
  filter: (path) => !/\.js(\.map)?$/.test(path),
});
