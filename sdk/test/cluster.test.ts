// Cluster mode: two real `dspeak` nodes sharing a real `redis-server` (Debian's
// package; skipped without it outside CI). `join` on the node that does not host the
// room is answered with `wrongNode`, and the client follows it by itself.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { delimiter, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";

import { DspeakClient, DspeakError, ErrorCode, type RedirectedInfo, type RejoinedInfo } from "../src/index.js";
import { ContractRecorder, schemaErrors, startServer, type TestServer } from "./support.js";

const haveRedis = (process.env.PATH ?? "").split(delimiter).some((dir) => existsSync(join(dir, "redis-server")));
if (!haveRedis && process.env.CI) throw new Error("redis-server is missing: .ci/run installs it");

/** A free loopback port. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function listening(port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => resolve(socket.destroy() !== undefined));
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server does not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!haveRedis)("cluster", () => {
  let redis: ChildProcess;
  const nodes: TestServer[] = [];
  const recorder = new ContractRecorder();
  const clients: DspeakClient[] = [];

  beforeAll(async () => {
    const redisPort = await freePort();
    redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    });
    await listening(redisPort);
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      nodes.push(
        await startServer([
          "--listen",
          `127.0.0.1:${port}`,
          "--redis-url",
          `redis://127.0.0.1:${redisPort}/0`,
          "--node-url",
          `ws://127.0.0.1:${port}`,
        ]),
      );
    }
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(nodes.map((n) => n.stop()));
    redis?.kill("SIGKILL");
  });

  const connect = async (url: string) => {
    const client = await DspeakClient.connect({ url, WebSocket, requestTimeoutMs: 5000, trace: recorder.trace });
    clients.push(client);
    return client;
  };

  it("join follows wrongNode to the node that hosts the room", async () => {
    const [a, b] = nodes as [TestServer, TestServer];
    const ann = await connect(a.url);
    await ann.join({ room: "cluster-r1", displayName: "Ann" });

    const bob = await connect(b.url);
    const redirected: RedirectedInfo[] = [];
    bob.on("redirected", (info) => redirected.push(info));
    const firstSession = bob.sessionId;
    const since = ann.mark();
    const joined = await bob.join({ room: "cluster-r1", displayName: "Bob" });

    expect(joined.peers.map((p) => p.displayName)).toEqual(["Ann"]);
    expect(bob.url).toBe(a.url);
    expect(redirected.map((r) => r.url)).toEqual([a.url]);
    expect(bob.sessionId).not.toBe(firstSession);
    expect(bob.sessionId).toBe(redirected[0]?.welcome.sessionId);
    expect(bob.joined?.peerId).toBe(joined.peerId);
    const peerJoined = await ann.waitFor("peerJoined", { since });
    expect(peerJoined.peerId).toBe(joined.peerId);
    // The client on node A works as any other: it hears the room's broadcasts.
    const delivered = await bob.broadcast({ payload: { hello: "from B" } });
    expect(delivered.delivered).toBe(1);
    expect(recorder.problems).toEqual([]);
  });

  it("answers a plain join on the other node with wrongNode and the owner's URL as data", async () => {
    const ann = await connect(nodes[0]!.url);
    // The least loaded node gets the room (node 0 has the first test's room): Ann may
    // have been moved.
    await ann.join({ room: "cluster-r2", displayName: "Ann" });
    const other = nodes.find((n) => n.url !== ann.url)!;
    // A plain WebSocket (no SDK) sees the error object itself.
    const socket = new WebSocket(other.url);
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    type Answer = { id?: number; error?: { code: number; message: string; data?: unknown } };
    const answer = new Promise<Answer>((resolve) =>
      socket.on("message", (data) => {
        const message = JSON.parse(data.toString()) as Answer;
        if (message.id === 1) resolve(message);
      }),
    );
    socket.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "join", params: { room: "cluster-r2", displayName: "Cid" } }));
    const { error } = await answer;
    socket.close();
    expect(error?.code).toBe(ErrorCode.wrongNode);
    expect(error?.data).toEqual({ url: ann.url });
    expect(schemaErrors("JsonRpcError", error)).toBeUndefined();
    expect(schemaErrors("WrongNode", error?.data)).toBeUndefined();
    expect(new DspeakError(error!).codeName).toBe("wrongNode");
  });

  // Last: it stops node 0.
  it("when the room's node goes away, reconnecting goes back to the first URL and rejoining places the room again", async () => {
    const [a, b] = nodes as [TestServer, TestServer];
    const holder = await connect(a.url);
    await holder.join({ room: "cluster-r3", displayName: "Holder" });
    expect(holder.url).toBe(a.url);
    const carl = await DspeakClient.connect({
      url: b.url,
      WebSocket,
      requestTimeoutMs: 5000,
      trace: recorder.trace,
      reconnect: { minDelayMs: 50, maxDelayMs: 200 },
    });
    clients.push(carl);
    await carl.join({ room: "cluster-r3", displayName: "Carl" });
    expect(carl.url).toBe(a.url);

    const rejoined = new Promise<RejoinedInfo>((resolve) => carl.on("rejoined", resolve));
    await a.stop();
    // The session cannot be resumed (its node is gone): after the node stays
    // unreachable the client goes back to the first URL and joins the room afresh.
    const { joined } = await rejoined;
    // Node 0 gave up its rooms when it stopped: the room is placed on node 1.
    expect(joined.peers).toEqual([]);
    expect(carl.url).toBe(b.url);
    expect(recorder.problems).toEqual([]);
  });
});
