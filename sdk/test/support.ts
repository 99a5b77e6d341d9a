// Test helpers: a real dspeak server per test file, SDK clients whose every received
// message is validated against the exported JSON Schema bundle.

import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Ajv2020 } from "ajv/dist/2020.js";
import { WebSocket } from "ws";

import { DspeakClient, type DspeakClientOptions, type WireTrace } from "../src/index.js";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Reads a JSON file relative to the repository root. */
export function readJson<T = unknown>(path: string): T {
  return JSON.parse(readFileSync(resolve(repoRoot, path), "utf8")) as T;
}

/** A running `dspeak` binary. */
export interface TestServer {
  /** `ws://127.0.0.1:PORT`. */
  url: string;
  /** Everything the server logged so far. */
  log(): string;
  /** SIGTERM, then wait for exit. */
  stop(): Promise<void>;
}

function serverBinary(): string {
  const bin =
    process.env.DSPEAK_BIN ??
    resolve(repoRoot, process.env.CARGO_TARGET_DIR ?? "target", "debug", process.platform === "win32" ? "dspeak.exe" : "dspeak");
  if (!existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: run \`cargo build -p dspeak-server\` first (or set DSPEAK_BIN)`);
  }
  return bin;
}

/** Mints an access token with the server binary: `dspeak token --auth-secret SECRET ARGS…`. */
export function mintToken(secret: string, args: string[]): string {
  return execFileSync(serverBinary(), ["token", "--auth-secret", secret, ...args], { encoding: "utf8" }).trim();
}

/**
 * Starts `dspeak` on a free port (unless `args` set `--listen`; plus `args`) and resolves
 * once it listens, with one media worker unless `args` set `--workers`. Unless `args` set
 * `--drain-timeout`, SIGTERM (`stop()`) closes calls at once instead of draining them.
 */
export function startServer(args: string[] = []): Promise<TestServer> {
  const drain = args.includes("--drain-timeout") ? [] : ["--drain-timeout", "0s"];
  const listen = args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"];
  const workers = args.includes("--workers") ? [] : ["--workers", "1"];
  const child = spawn(
    serverBinary(),
    [...listen, "--rtc-port", "0", ...workers, "--log-format", "text", ...drain, ...args],
    { env: { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "info" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`dspeak did not report its address within 15 s; log:\n${log}`));
    }, 15_000);
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      // eslint-disable-next-line no-control-regex
      const match = /listening on (ws:\/\/[^\s]+)/.exec(log.replace(/\x1b\[[0-9;]*m/g, ""));
      if (match?.[1]) {
        clearTimeout(timer);
        resolvePromise({
          url: match[1],
          log: () => log,
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
            await exited;
          },
        });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`dspeak exited (${code ?? signal}) before listening; log:\n${log}`));
    });
  });
}

// --- contract validation --------------------------------------------------------------

type Bundle = {
  $defs: Record<string, unknown>;
  "x-dspeak": { methods: Record<string, { params: { $ref: string }; result: { $ref: string } }> };
};

/** The committed JSON Schema bundle. */
export const bundle = readJson<Bundle>("schema/dspeak.schema.json");

const isInt = (n: number) => Number.isInteger(n);
const ajv = new Ajv2020({ strict: true, allErrors: true });
// schemars' numeric formats.
ajv.addFormat("uint8", { type: "number", validate: (n: number) => isInt(n) && n >= 0 && n <= 0xff });
ajv.addFormat("uint16", { type: "number", validate: (n: number) => isInt(n) && n >= 0 && n <= 0xffff });
ajv.addFormat("uint32", { type: "number", validate: (n: number) => isInt(n) && n >= 0 && n <= 0xffff_ffff });
ajv.addFormat("int32", { type: "number", validate: (n: number) => isInt(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat("int64", { type: "number", validate: (n: number) => Number.isSafeInteger(n) });
ajv.addFormat("double", { type: "number", validate: (n: number) => Number.isFinite(n) });
ajv.addVocabulary(["x-dspeak"]);
ajv.addSchema(bundle, "dspeak");

/** Validates `value` against `#/$defs/<def>`; returns the errors as text, or `undefined`. */
export function schemaErrors(def: string, value: unknown): string | undefined {
  const validate = ajv.getSchema(`dspeak#/$defs/${def}`);
  if (!validate) throw new Error(`no $defs/${def} in the bundle`);
  return validate(value) ? undefined : ajv.errorsText(validate.errors, { dataVar: def });
}

const defName = (ref: { $ref: string }) => ref.$ref.replace("#/$defs/", "");

/** Validates every message a client receives; `problems` lists what did not match. */
export class ContractRecorder {
  readonly problems: string[] = [];
  /** Messages checked, by kind. */
  readonly checked = { results: 0, errors: 0, events: 0 };

  readonly trace = (entry: WireTrace): void => {
    if (entry.direction !== "receive") return;
    const message = entry.message as {
      method?: string;
      params?: { result?: unknown; error?: { data?: unknown } };
      result?: unknown;
      error?: unknown;
    };
    const fail = (what: string, errors: string | undefined) => {
      if (errors) this.problems.push(`${what}: ${errors}\n  ${JSON.stringify(message)}`);
    };
    if (message.method === "event" && message.params?.error) {
      // The stream ended: an error whose data says why.
      this.checked.errors++;
      fail("stream end", schemaErrors("JsonRpcError", message.params.error));
      fail("stream end data", schemaErrors("SessionEnded", message.params.error.data));
    } else if (message.method === "event") {
      this.checked.events++;
      fail("event", schemaErrors("Event", message.params?.result));
    } else if ("error" in message) {
      this.checked.errors++;
      fail(`error of ${entry.method ?? "?"}`, schemaErrors("JsonRpcError", message.error));
    } else if (entry.method && bundle["x-dspeak"].methods[entry.method]) {
      this.checked.results++;
      const def = defName(bundle["x-dspeak"].methods[entry.method]!.result);
      fail(`result of ${entry.method}`, schemaErrors(def, message.result));
    } else if (entry.method === "subscribeEvents") {
      if (typeof message.result !== "number" && typeof message.result !== "string") {
        this.problems.push(`subscription id is neither number nor string: ${JSON.stringify(message)}`);
      }
    } else if (entry.method !== "rpc.discover") {
      this.problems.push(`unexpected message: ${JSON.stringify(message)}`);
    }
  };
}

/** Connects SDK clients to `server`, validating everything they receive with `recorder`. */
export function clientFactory(server: () => TestServer, recorder: ContractRecorder) {
  const clients: DspeakClient[] = [];
  const connect = async (options: Partial<DspeakClientOptions> = {}) => {
    const client = await DspeakClient.connect({
      url: server().url,
      WebSocket,
      requestTimeoutMs: 5000,
      trace: recorder.trace,
      ...options,
    });
    clients.push(client);
    return client;
  };
  const closeAll = async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  };
  return { connect, closeAll };
}

/** The reference produce params a real client (pymediasoup 1.5 + aiortc 1.16) sent, for `transportId`. */
export function referenceProduceParams(transportId: string) {
  const params = readJson<Record<string, unknown>>("fixtures/reference/pymediasoup-1.5-aiortc-1.16/produce.params.json");
  return { ...params, transportId } as unknown as import("../src/index.js").ProduceParams;
}
