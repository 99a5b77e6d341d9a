// Reconnecting without leaving, against the real server: the client resumes its session
// after the connection drops (`reconnecting` → `resumed`, missed events in order), joins
// afresh when the server no longer has it (`rejoined`), and a voice room restarts ICE on a
// transport that stays failed or disconnected.

import { Device } from "mediasoup-client";
import * as fakeParameters from "mediasoup-client/fakeParameters";
import { FakeHandler } from "mediasoup-client/handlers/FakeHandler";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";

import {
  DspeakClient,
  type ReconnectingInfo,
  type RejoinedInfo,
  type ResumedInfo,
  type WebSocketConstructor,
} from "../src/index.js";
import { joinVoiceRoom, type VoiceRoom } from "../src/mediasoup.js";
import { ContractRecorder, clientFactory, startServer, type TestServer } from "./support.js";

let server: TestServer;
let shortGrace: TestServer;
const recorder = new ContractRecorder();
const main = clientFactory(() => server, recorder);
const short = clientFactory(() => shortGrace, recorder);

beforeAll(async () => {
  [server, shortGrace] = await Promise.all([
    startServer(["--resume-grace", "20s"]),
    startServer(["--resume-grace", "1s"]),
  ]);
});
afterEach(async () => {
  await Promise.all([main.closeAll(), short.closeAll()]);
  expect(recorder.problems).toEqual([]);
});
afterAll(async () => {
  await Promise.all([server?.stop(), shortGrace?.stop()]);
});

/**
 * The `ws` WebSocket, with a handle on the sockets it opened (so a test can cut them as a
 * network failure would) and a switch that makes new connections fail (network down).
 */
function network() {
  const sockets: WebSocket[] = [];
  const state = { down: false };
  class Tracked extends WebSocket {
    constructor(url: string) {
      // A port nobody listens on: the connection fails as with no network.
      super(state.down ? "ws://127.0.0.1:1" : url);
      sockets.push(this);
    }
  }
  return {
    WebSocket: Tracked as unknown as WebSocketConstructor,
    state,
    /** Drops every open connection without a close handshake. */
    cut: () => sockets.splice(0).forEach((s) => s.terminate()),
  };
}

/** Collects a client's reconnect lifecycle events, in order. */
function lifecycle(client: DspeakClient) {
  const seen: string[] = [];
  const reconnecting: ReconnectingInfo[] = [];
  client.on("disconnected", () => seen.push("disconnected"));
  client.on("reconnecting", (e) => {
    seen.push(`reconnecting:${e.resuming ? "resume" : "fresh"}`);
    reconnecting.push(e);
  });
  const resumed = new Promise<ResumedInfo>((resolve) =>
    client.on("resumed", (e) => {
      seen.push("resumed");
      resolve(e);
    }),
  );
  const rejoined = new Promise<RejoinedInfo>((resolve) =>
    client.on("rejoined", (e) => {
      seen.push("rejoined");
      resolve(e);
    }),
  );
  return { seen, reconnecting, resumed, rejoined };
}

describe("auto-resume", () => {
  it("resumes the same session after the connection drops and delivers what was missed, in order", async () => {
    const net = network();
    const ann = await main.connect({ WebSocket: net.WebSocket, reconnect: { minDelayMs: 50 } });
    const a = await ann.join({ room: "resume", displayName: "Ann" });
    const before = ann.mark();
    const bob = await main.connect();
    await bob.join({ room: "resume", displayName: "Bob" });
    await ann.waitFor("peerJoined", { since: before });
    const life = lifecycle(ann);
    const received: unknown[] = [];
    ann.on("broadcast", (e) => received.push(e.payload));

    const since = bob.mark();
    net.state.down = true;
    net.cut();
    await bob.waitFor("peerReconnecting", { since, filter: (e) => e.peerId === a.peerId });
    for (const n of [1, 2, 3]) expect(await bob.broadcast({ payload: { n } })).toEqual({ delivered: 1 });
    net.state.down = false;

    const resumed = await life.resumed;
    expect(resumed).toMatchObject({ peerId: a.peerId, sessionId: a.sessionId, replayed: 3 });
    expect(received).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(life.seen[0]).toBe("disconnected");
    expect(life.seen.at(-1)).toBe("resumed");
    expect(life.seen.filter((s) => s === "reconnecting:fresh")).toEqual([]);
    // Attempts back off while the network is down, and all of them resume.
    expect(life.reconnecting.length).toBeGreaterThanOrEqual(1);
    await bob.waitFor("peerReconnected", { since, filter: (e) => e.peerId === a.peerId });
    expect(ann.joined?.peerId).toBe(a.peerId);
    expect(ann.state).toBe("open");

    // The same session: it answers as before, and the room never saw it leave.
    const heard = bob.waitFor("broadcast");
    await ann.broadcast({ payload: "back" });
    expect((await heard).from).toBe(a.peerId);
    await expect(bob.waitFor("peerLeft", { since, timeoutMs: 300 })).rejects.toMatchObject({ name: "DspeakTimeoutError" });
  });

  it("joins afresh when the session is gone, and says so with rejoined", async () => {
    const net = network();
    const ann = await short.connect({ WebSocket: net.WebSocket, reconnect: { minDelayMs: 100, maxDelayMs: 400 } });
    const a = await ann.join({ room: "rejoin", displayName: "Ann" });
    const bob = await short.connect();
    await bob.join({ room: "rejoin", displayName: "Bob" });
    const life = lifecycle(ann);

    const since = bob.mark();
    net.state.down = true;
    net.cut();
    await bob.waitFor("peerReconnecting", { since });
    // Longer than the server's 1 s grace: the old session leaves.
    await bob.waitFor("peerLeft", { since, filter: (e) => e.peerId === a.peerId, timeoutMs: 5000 });
    net.state.down = false;

    const rejoined = await life.rejoined;
    expect(rejoined.joined.peerId).not.toBe(a.peerId);
    expect(rejoined.welcome.sessionId).not.toBe(a.sessionId);
    expect(rejoined.error).toMatchObject({ codeName: "resumeFailed" });
    expect(ann.joined?.peerId).toBe(rejoined.joined.peerId);
    expect(life.seen).toContain("reconnecting:resume");
    expect(life.seen.at(-1)).toBe("rejoined");
    const joined = await bob.waitFor("peerJoined", { since, filter: (e) => e.peerId === rejoined.joined.peerId });
    expect(joined.displayName).toBe("Ann");
  });

  it("close() leaves at once instead of leaving the session waiting", async () => {
    const ann = await main.connect({ reconnect: true });
    const a = await ann.join({ room: "close", displayName: "Ann" });
    const bob = await main.connect();
    await bob.join({ room: "close", displayName: "Bob" });
    const left = bob.waitFor("peerLeft", { filter: (e) => e.peerId === a.peerId, timeoutMs: 3000 });
    await ann.close();
    await left;
  });
});

describe("voice room after a rejoin", () => {
  it("rebuilds its transports on the new session", async () => {
    const net = network();
    const client = await short.connect({ WebSocket: net.WebSocket, reconnect: { minDelayMs: 100, maxDelayMs: 400 } });
    const room = await joinVoiceRoom({
      client,
      room: "rebuild",
      displayName: "Ann",
      device: () => Device.factory({ handlerFactory: FakeHandler.createFactory(fakeParameters) }),
      onError: (e) => {
        throw e;
      },
    });
    const before = { peerId: room.joined.peerId, transport: room.recvTransport.id };
    const rebuilt = new Promise<void>((resolve) => room.on("rebuilt", () => resolve()));
    net.state.down = true;
    net.cut();
    await new Promise((r) => setTimeout(r, 1500)); // past the server's 1 s grace
    net.state.down = false;
    await rebuilt;
    expect(room.joined.peerId).not.toBe(before.peerId);
    expect(room.recvTransport.id).not.toBe(before.transport);
    expect(room.recvTransport.closed).toBe(false);
    // The new transport is the new session's: the server knows it.
    await client.getStats({ id: room.recvTransport.id });
    await room.leave();
  });
});

describe("ICE restart", () => {
  it("restarts ICE on a transport that stays disconnected or failed for 2 s, not on a short blip", async () => {
    // mediasoup-client's FakeHandler (no WebRTC stack in Node) offers `setConnectionState`
    // to simulate ICE states; the signaling (`restartIce`) is real.
    const handlers: FakeHandler[] = [];
    const base = FakeHandler.createFactory(fakeParameters);
    const handlerFactory = {
      ...base,
      factory: (options: Parameters<typeof base.factory>[0]) => {
        const handler = base.factory(options) as FakeHandler;
        handlers.push(handler);
        return handler;
      },
    };
    const client = await main.connect();
    const room: VoiceRoom = await joinVoiceRoom({
      client,
      room: "ice",
      displayName: "Ann",
      device: () => Device.factory({ handlerFactory }),
      onError: (e) => {
        throw e;
      },
    });
    const restarts: string[] = [];
    room.on("iceRestarted", (e) => restarts.push(e.direction));
    const recv = handlers[0]!;
    recv.setConnectionState("connected");

    // A blip shorter than 2 s: nothing.
    recv.setConnectionState("disconnected");
    await new Promise((r) => setTimeout(r, 500));
    recv.setConnectionState("connected");
    await new Promise((r) => setTimeout(r, 2500));
    expect(restarts).toEqual([]);

    // Failed for good: a restart after 2 s, and again while it stays failed.
    recv.setConnectionState("failed");
    await new Promise<void>((resolve) => room.on("iceRestarted", () => resolve()));
    expect(restarts).toEqual(["recv"]);
    recv.setConnectionState("connected");
    await room.leave();
  });
});
