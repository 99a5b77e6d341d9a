// Client runtime behaviour that needs control over the server's timing: request
// timeouts, connection loss and reconnects. A scripted WebSocket server stands in for
// dspeak here; a last test checks connection loss against the real server.

import type { AddressInfo } from "node:net";

import { afterEach, describe, expect, it } from "vitest";
import { WebSocket, WebSocketServer } from "ws";

import {
  DspeakClient,
  DspeakConnectionError,
  DspeakError,
  DspeakTimeoutError,
  ErrorCode,
  type DisconnectedInfo,
  type Event,
} from "../src/index.js";
import { startServer } from "./support.js";

interface Request {
  id: number;
  method: string;
  params: unknown;
}

/** A scripted stand-in server: answers subscribeEvents (+ welcome) and ping; never answers `join`. */
class ScriptedServer {
  readonly requests: Request[] = [];
  sessions = 0;
  readonly wss: WebSocketServer;

  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    wss.on("connection", (socket) => {
      const session = `session-${++this.sessions}`;
      socket.on("message", (data) => {
        const request = JSON.parse(data.toString()) as Request;
        this.requests.push(request);
        const reply = (result: unknown) => socket.send(JSON.stringify({ jsonrpc: "2.0", id: request.id, result }));
        if (request.method === "subscribeEvents") {
          reply(42);
          const welcome = { type: "welcome", sessionId: session, server: "dspeak", version: "0.0.0" };
          socket.send(JSON.stringify({ jsonrpc: "2.0", method: "event", params: { subscription: 42, result: welcome } }));
        } else if (request.method === "ping") {
          reply({ type: "pong", timestamp: Date.now() });
        } else if (request.method === "leave") {
          socket.send(
            JSON.stringify({ jsonrpc: "2.0", id: request.id, error: { code: 1000, message: "join a room first" } }),
          );
        } else if (request.method === "broadcast") {
          // An event type this SDK does not know, then a known one.
          const future = { type: "somethingNew", x: 1 };
          const known = { type: "peerLeft", peerId: "p" };
          for (const result of [future, known]) {
            socket.send(JSON.stringify({ jsonrpc: "2.0", method: "event", params: { subscription: 42, result } }));
          }
          reply({ delivered: 0 });
        }
        // Anything else (e.g. `join`) is never answered.
      });
    });
  }

  static async start(port = 0): Promise<ScriptedServer> {
    const wss = new WebSocketServer({ host: "127.0.0.1", port });
    await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
    return new ScriptedServer(wss);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`;
  }

  /** Drops every connection as a network failure would. */
  dropAll(): void {
    for (const socket of this.wss.clients) socket.terminate();
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  count(method: string): number {
    return this.requests.filter((r) => r.method === method).length;
  }
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function scripted(): Promise<ScriptedServer> {
  const server = await ScriptedServer.start();
  cleanup.push(() => server.stop());
  return server;
}

async function client(url: string, options: Partial<ConstructorParameters<typeof DspeakClient>[0]> = {}) {
  const c = await DspeakClient.connect({ url, WebSocket, requestTimeoutMs: 2000, ...options });
  cleanup.push(() => c.close());
  return c;
}

describe("requests", () => {
  it("subscribes first and resolves connect with the welcome", async () => {
    const server = await scripted();
    const c = await client(server.url);
    expect(server.requests[0]?.method).toBe("subscribeEvents");
    expect(c.sessionId).toBe("session-1");
    expect(c.state).toBe("open");
  });

  it("times out a request that gets no answer", async () => {
    const server = await scripted();
    const c = await client(server.url);
    const started = Date.now();
    const error = await c.join({ room: "r", displayName: "A" }, { timeoutMs: 150 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DspeakTimeoutError);
    expect((error as DspeakTimeoutError).method).toBe("join");
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    // The connection is still usable.
    expect((await c.ping()).type).toBe("pong");
  });

  it("rejects on abort", async () => {
    const server = await scripted();
    const c = await client(server.url);
    const controller = new AbortController();
    const call = c.join({ room: "r", displayName: "A" }, { signal: controller.signal });
    controller.abort(new Error("user gave up"));
    await expect(call).rejects.toThrow("user gave up");
  });

  it("turns error responses into DspeakError with the code", async () => {
    const server = await scripted();
    const c = await client(server.url);
    const error = await c.leave().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DspeakError);
    expect(error).toMatchObject({ code: ErrorCode.notJoined, codeName: "notJoined", method: "leave" });
  });

  it("ignores event types it does not know", async () => {
    const server = await scripted();
    const c = await client(server.url);
    const events = c.events();
    await c.broadcast({ payload: 1 });
    const first = (await events.next()).value as Event;
    expect(first).toEqual({ type: "peerLeft", peerId: "p" });
  });
});

describe("connection loss", () => {
  it("rejects pending calls and closes without reconnect", async () => {
    const server = await scripted();
    const c = await client(server.url);
    const disconnected: DisconnectedInfo[] = [];
    c.on("disconnected", (info) => disconnected.push(info));
    const closed = new Promise((resolve) => c.on("closed", resolve));
    const pending = c.join({ room: "r", displayName: "A" }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 20));
    server.dropAll();
    const error = await pending;
    expect(error).toBeInstanceOf(DspeakConnectionError);
    expect((error as DspeakConnectionError).method).toBe("join");
    await closed;
    expect(disconnected).toHaveLength(1);
    expect(disconnected[0]?.willReconnect).toBe(false);
    expect(c.state).toBe("closed");
    await expect(c.ping()).rejects.toBeInstanceOf(DspeakConnectionError);
  });

  it("reconnects to a new session, never replays requests, and keeps event iterators", async () => {
    const server = await scripted();
    const c = await client(server.url, { reconnect: { minDelayMs: 20, maxDelayMs: 100 } });
    const events = c.events();
    const lifecycle: string[] = [];
    c.on("disconnected", (i) => lifecycle.push(`disconnected:${i.willReconnect}`));
    const reconnected = new Promise<string>((resolve) =>
      c.on("reconnected", (info) => {
        lifecycle.push("reconnected");
        resolve(info.sessionId);
      }),
    );
    const pending = c.join({ room: "r", displayName: "A" }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 20));
    server.dropAll();
    expect(await pending).toBeInstanceOf(DspeakConnectionError);
    // While reconnecting, calls fail fast instead of queueing.
    expect(c.state === "reconnecting" || c.state === "open").toBe(true);

    expect(await reconnected).toBe("session-2");
    expect(c.sessionId).toBe("session-2");
    expect(lifecycle).toEqual(["disconnected:true", "reconnected"]);
    expect(server.count("join")).toBe(1); // not replayed
    expect(server.count("subscribeEvents")).toBe(2); // the new session subscribed again
    expect((await c.ping()).type).toBe("pong");

    // The iterator saw both welcomes.
    const first = (await events.next()).value as Event;
    expect(first).toMatchObject({ type: "welcome", sessionId: "session-2" });
  });

  it("gives up after maxAttempts", async () => {
    const server = await ScriptedServer.start();
    const c = await DspeakClient.connect({
      url: server.url,
      WebSocket,
      reconnect: { minDelayMs: 10, maxDelayMs: 20, maxAttempts: 2 },
    });
    const closed = new Promise<{ reason: string }>((resolve) => c.on("closed", resolve));
    await server.stop();
    expect((await closed).reason).toMatch(/gave up reconnecting after 2 attempts/);
    expect(c.state).toBe("closed");
  });

  it("fails connect() clearly when nothing listens", async () => {
    const server = await ScriptedServer.start();
    const url = server.url;
    await server.stop();
    await expect(DspeakClient.connect({ url, WebSocket, connectTimeoutMs: 2000 })).rejects.toBeInstanceOf(
      DspeakConnectionError,
    );
  });

  it("reports the real server going away", async () => {
    const real = await startServer();
    const c = await DspeakClient.connect({ url: real.url, WebSocket });
    cleanup.push(() => c.close());
    await c.join({ room: "shutdown", displayName: "Ann" });
    const disconnected = new Promise<DisconnectedInfo>((resolve) => c.on("disconnected", resolve));
    await real.stop();
    expect((await disconnected).willReconnect).toBe(false);
    expect(c.state).toBe("closed");
  });

  it("surfaces a draining server as a typed serverDraining event", async () => {
    const real = await startServer(["--drain-timeout", "30s"]);
    const c = await DspeakClient.connect({ url: real.url, WebSocket });
    const late = await DspeakClient.connect({ url: real.url, WebSocket });
    cleanup.push(() => c.close(), () => late.close());
    await c.join({ room: "draining", displayName: "Ann" });
    const draining = c.waitFor("serverDraining");
    const exited = real.stop(); // SIGTERM: the server drains until the room is empty
    const { deadlineMs } = await draining;
    expect(deadlineMs).toBeGreaterThan(Date.now() + 20_000);
    expect(deadlineMs).toBeLessThan(Date.now() + 40_000);
    const refused = await late.join({ room: "draining", displayName: "Bob" }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DspeakError);
    expect((refused as DspeakError).code).toBe(ErrorCode.unavailable);
    expect((refused as DspeakError).message).toMatch(/draining/);
    await c.leave();
    await exited; // the last room closed: the server exits without waiting for the deadline
  });
});

describe("environment", () => {
  it("asks for a WebSocket class when there is no global one", () => {
    const global = globalThis as { WebSocket?: unknown };
    const saved = global.WebSocket;
    delete global.WebSocket;
    try {
      expect(() => new DspeakClient({ url: "ws://127.0.0.1:1" })).toThrow(/pass `WebSocket` from the `ws` package/);
    } finally {
      if (saved) global.WebSocket = saved;
    }
  });
});
