// The package as npm users get it (`npm run test:package`): `npm pack` builds the
// tarball (its `prepare` script builds dist/), which is installed into two fresh
// projects — one ES module, one CommonJS — without mediasoup-client. Each type-checks a
// signaling-only program (strict, exactOptionalPropertyTypes, no skipLibCheck) and runs
// it against a live server: connect, a typed error, join, broadcast between two clients.
// A third project, a browser app with mediasoup-client, type-checks the
// `@dspeak/sdk/mediasoup` entry. publint and attw check the tarball's package.json and
// type resolution.

import { execFile } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { repoRoot, startServer, type TestServer } from "../test/support.js";

const sdk = resolve(repoRoot, "sdk");
const work = mkdtempSync(join(tmpdir(), "dspeak-sdk-package-"));
const formats = ["esm", "commonjs"] as const;
type Format = (typeof formats)[number];

/** Versions the projects install next to the SDK: the ones the SDK is developed with. */
const devDependencies = (JSON.parse(readFileSync(join(sdk, "package.json"), "utf8")) as {
  devDependencies: Record<string, string>;
}).devDependencies;
const pinned = (name: string) => `${name}@${devDependencies[name]}`;

/** Runs a command; resolves with its output, rejects with it (and the exit code) on failure. */
async function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  try {
    return await promisify(execFile)(command, args, {
      cwd,
      env: { ...process.env, ...env },
      maxBuffer: 16 << 20,
    });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(" ")} (in ${cwd}) failed:\n${stdout ?? ""}\n${stderr ?? ""}`);
  }
}

const compilerOptions = {
  target: "ES2022",
  module: "NodeNext",
  moduleResolution: "NodeNext",
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: false,
  lib: ["ES2022"],
};

let tarball: string;
let server: TestServer;
const project = (name: Format | "media") => join(work, name);

/** A fresh project with the app sources, its package.json and tsconfigs, and `packages` installed. */
async function createProject(
  name: Format | "media",
  type: "module" | "commonjs",
  tsconfigs: Record<string, object>,
  packages: string[],
): Promise<void> {
  const dir = project(name);
  cpSync(join(sdk, "package-test", "app"), dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: `dspeak-sdk-${name}-app`, private: true, type }));
  for (const [file, config] of Object.entries(tsconfigs)) writeFileSync(join(dir, file), JSON.stringify(config));
  await run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", tarball, ...packages], dir);
}

/** Runs the project's own TypeScript compiler. */
const tsc = (name: Format | "media", config: string) =>
  run(process.execPath, [join("node_modules", "typescript", "bin", "tsc"), "-p", config], project(name));

beforeAll(async () => {
  const packed = await run("npm", ["pack", "--silent", "--pack-destination", work], sdk);
  tarball = join(work, packed.stdout.trim().split("\n").pop()!);

  await Promise.all([
    ...formats.map((format) =>
      createProject(
        format,
        format === "esm" ? "module" : "commonjs",
        {
          "tsconfig.json": {
            compilerOptions: { ...compilerOptions, types: ["node"], outDir: "out" },
            files: ["signaling.ts"],
          },
          "tsconfig.bare.json": { compilerOptions: { ...compilerOptions, types: [], noEmit: true }, files: ["bare.ts"] },
        },
        [pinned("ws"), pinned("@types/ws"), pinned("@types/node"), pinned("typescript")],
      ),
    ),
    createProject(
      "media",
      "module",
      {
        "tsconfig.json": {
          compilerOptions: { ...compilerOptions, lib: ["ES2022", "DOM", "DOM.Iterable"], types: [], noEmit: true },
          files: ["media.ts"],
        },
      },
      [pinned("mediasoup-client"), pinned("typescript")],
    ),
  ]);
  server = await startServer();
}, 240_000);

afterAll(async () => {
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
});

it("packs dist/ (ESM and CommonJS with declarations), the sources and the README, and nothing else", async () => {
  const { stdout } = await run("tar", ["-tzf", tarball], work);
  const files = stdout.trim().split("\n").sort();
  for (const entry of ["index", "mediasoup"]) {
    for (const dir of ["esm", "cjs"]) {
      expect(files).toContain(`package/dist/${dir}/${entry}.js`);
      expect(files).toContain(`package/dist/${dir}/${entry}.d.ts`);
    }
  }
  expect(files).toContain("package/dist/cjs/package.json");
  expect(files).toContain("package/README.md");
  expect(files.filter((f) => !/^package\/(dist|src|mediasoup)\/|^package\/(package\.json|README\.md)$/.test(f))).toEqual([]);
  expect(files.filter((f) => /test|e2e|examples|scripts/.test(f))).toEqual([]);
});

it("publint finds nothing to fix", async () => {
  await run(join(sdk, "node_modules", ".bin", "publint"), ["run", "--strict", tarball], sdk);
});

it("attw: types resolve for node10, node16 (ESM and CommonJS) and bundlers", async () => {
  await run(join(sdk, "node_modules", ".bin", "attw"), ["--format", "ascii", tarball], sdk);
});

describe.each(formats)("a fresh %s project", (format) => {
  it("installed the SDK without mediasoup-client", () => {
    const dir = project(format);
    expect(existsSync(join(dir, "node_modules", "@dspeak", "sdk", "dist", "esm", "index.js"))).toBe(true);
    expect(existsSync(join(dir, "node_modules", "mediasoup-client"))).toBe(false);
  });

  it("type-checks against the root entry with no ambient types (no DOM, no Node)", async () => {
    await tsc(format, "tsconfig.bare.json");
  });

  it("compiles and runs the signaling program against a live server", async () => {
    const dir = project(format);
    await tsc(format, "tsconfig.json");
    const compiled = readFileSync(join(dir, "out", "signaling.js"), "utf8");
    expect(compiled).toContain(format === "esm" ? 'from "@dspeak/sdk"' : 'require("@dspeak/sdk")');

    const { stdout } = await run(process.execPath, [join("out", "signaling.js")], dir, {
      DSPEAK_URL: server.url,
      DSPEAK_ROOM: `package-${format}`,
    });
    const seen = JSON.parse(stdout.trim()) as Record<string, unknown> & { annPeerId: string; bobPeerId: string };
    expect(seen).toMatchObject({
      format,
      notJoined: { code: 1000, codeName: "notJoined" },
      bobSawAnn: ["Ann"],
      peerJoined: { peerId: seen.bobPeerId, displayName: "Bob" },
      delivered: 1,
      adminRefused: "unauthorized",
      broadcast: { from: seen.annPeerId, payload: { text: "hello from Ann" } },
    });
    expect(seen.annPeerId).not.toBe(seen.bobPeerId);
  });
});

it("a browser app with mediasoup-client type-checks against @dspeak/sdk/mediasoup", async () => {
  await tsc("media", "tsconfig.json");
});
