// The SDK against a real server: calls, typed events, the OpenRPC document.
// Every message the clients receive is validated against schema/dspeak.schema.json.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";

import { DspeakClient, EVENT_TYPES, METHODS, SUBSCRIPTION, type Event } from "../src/index.js";
import { ContractRecorder, clientFactory, readJson, startServer, type TestServer } from "./support.js";

let server: TestServer;
const recorder = new ContractRecorder();
const { connect, closeAll } = clientFactory(() => server, recorder);

beforeAll(async () => {
  server = await startServer();
});
afterEach(async () => {
  await closeAll();
  expect(recorder.problems).toEqual([]);
});
afterAll(async () => {
  await server?.stop();
  // The contract checks above must have seen real traffic.
  expect(recorder.checked.results).toBeGreaterThan(10);
  expect(recorder.checked.events).toBeGreaterThan(5);
});

/** The `peerJoined` event of a Bob without token. */
const bobJoined = (peerId: string) => ({
  seq: expect.any(Number),
  type: "peerJoined",
  peerId,
  displayName: "Bob",
  identity: null,
  metadata: null,
});

describe("session", () => {
  it("answers ping with pong and the server time", async () => {
    const client = await connect();
    // A subscribed session also gets a `pong` event (possibly before the response).
    const events = client.events();
    const before = Date.now();
    const pong = await client.ping();
    expect(pong.type).toBe("pong");
    expect(pong.timestamp).toBeGreaterThanOrEqual(before - 1000);
    expect(pong.timestamp).toBeLessThanOrEqual(Date.now() + 1000);
    expect((await events.next()).value).toEqual({ seq: expect.any(Number), type: "pong", timestamp: pong.timestamp });
    await events.return?.();
  });

  it("delivers welcome first, with the session id and server version", async () => {
    const client = new DspeakClient({ url: server.url, WebSocket, trace: recorder.trace });
    const seen: Event[] = [];
    client.on("welcome", (e) => seen.push(e));
    const welcome = await client.connect();
    try {
      expect(seen).toEqual([welcome]);
      expect(welcome).toMatchObject({ type: "welcome", server: "dspeak" });
      expect(welcome.version).toMatch(/^\d+\.\d+\.\d+/);
      expect(client.sessionId).toBe(welcome.sessionId);
      const joined = await client.join({ room: "welcome-room", displayName: "Ann" });
      expect(joined.sessionId).toBe(welcome.sessionId);
    } finally {
      await client.close();
    }
  });

  it("joins a room and reports the peers and producers already there", async () => {
    const ann = await connect();
    const bob = await connect();
    const a = await ann.join({ room: "join-room", displayName: "Ann" });
    expect(a.peers).toEqual([]);
    expect(a.producers).toEqual([]);
    expect(a.routerRtpCapabilities.codecs?.[0]).toMatchObject({ mimeType: "audio/opus", clockRate: 48000 });
    const b = await bob.join({ room: "join-room", displayName: "Bob" });
    expect(b.peers).toEqual([
      { peerId: a.peerId, displayName: "Ann", identity: null, metadata: null, selfMute: false, selfDeaf: false, serverMuted: false },
    ]);
    expect(b.peerId).not.toBe(a.peerId);
  });

  it("broadcasts to the other peers of the room only", async () => {
    const ann = await connect();
    const bob = await connect();
    const eve = await connect();
    const a = await ann.join({ room: "bc-room", displayName: "Ann" });
    await bob.join({ room: "bc-room", displayName: "Bob" });
    await eve.join({ room: "other-room", displayName: "Eve" });
    const annEvents = ann.events();
    const eveEvents: Event[] = [];
    eve.on("broadcast", (e) => eveEvents.push(e));

    const payload = { text: "hello", n: [1, 2.5, null], nested: { ok: true } };
    const received = bob.waitFor("broadcast");
    expect(await ann.broadcast({ payload })).toEqual({ delivered: 1 });
    const event = await received;
    expect(event).toEqual({ seq: expect.any(Number), type: "broadcast", from: a.peerId, payload });
    // Any JSON value is a payload.
    const second = bob.waitFor("broadcast");
    await ann.broadcast({ payload: "just a string" });
    expect((await second).payload).toBe("just a string");

    // The sender gets nothing back; the other room nothing at all.
    await ann.ping();
    const next = await annEvents.next();
    expect(next.value?.type).toBe("pong");
    await annEvents.return?.();
    expect(eveEvents).toEqual([]);
  });

  it("delivers typed peerJoined and peerLeft events", async () => {
    const ann = await connect();
    const a = await ann.join({ room: "peers-room", displayName: "Ann" });
    const joinedSeen = ann.waitFor("peerJoined");
    const bob = await connect();
    const b = await bob.join({ room: "peers-room", displayName: "Bob" });
    const joined = await joinedSeen;
    // Typed: `joined` is a PeerJoinedEvent, so displayName is a string field.
    expect(joined).toEqual(bobJoined(b.peerId));

    const leftSeen = ann.waitFor("peerLeft");
    await bob.leave();
    expect(await leftSeen).toEqual({ seq: expect.any(Number), type: "peerLeft", peerId: b.peerId });

    // Disconnecting counts as leaving.
    const carol = await connect();
    const c = await carol.join({ room: "peers-room", displayName: "Carol" });
    const carolLeft = ann.waitFor("peerLeft", { filter: (e) => e.peerId === c.peerId });
    await carol.close();
    expect((await carolLeft).peerId).toBe(c.peerId);
    expect(a.peerId).not.toBe(c.peerId);
  });

  it("waitFor with `since` finds an event that arrived before the call", async () => {
    const ann = await connect();
    await ann.join({ room: "since-room", displayName: "Ann" });
    const since = ann.mark();
    const arrived = new Promise((resolve) => ann.on("peerJoined", resolve));
    const bob = await connect();
    const b = await bob.join({ room: "since-room", displayName: "Bob" });
    await arrived; // Already delivered: a plain waitFor would wait for the next one.
    await expect(ann.waitFor("peerJoined", { timeoutMs: 300 })).rejects.toMatchObject({ name: "DspeakTimeoutError" });
    expect(await ann.waitFor("peerJoined", { since, timeoutMs: 300 })).toEqual(bobJoined(b.peerId));
    // `filter` applies to remembered events too; a later mark excludes them.
    await expect(
      ann.waitFor("peerJoined", { since, filter: (e) => e.displayName === "Carol", timeoutMs: 300 }),
    ).rejects.toMatchObject({ name: "DspeakTimeoutError" });
    await expect(ann.waitFor("peerJoined", { since: ann.mark(), timeoutMs: 300 })).rejects.toMatchObject({
      name: "DspeakTimeoutError",
    });
  });

  it("remembers only the last `eventHistory` events", async () => {
    const ann = await connect({ eventHistory: 1 });
    await ann.join({ room: "history-room", displayName: "Ann" });
    const since = ann.mark();
    const bob = await connect();
    await bob.join({ room: "history-room", displayName: "Bob" });
    const heard = ann.waitFor("broadcast");
    await bob.broadcast({ payload: "after the join" });
    await heard;
    // peerJoined came first and was pushed out by the broadcast.
    expect(await ann.waitFor("broadcast", { since })).toMatchObject({ payload: "after the join" });
    await expect(ann.waitFor("peerJoined", { since, timeoutMs: 300 })).rejects.toMatchObject({
      name: "DspeakTimeoutError",
    });
  });

  it("iterates events in order with for-await", async () => {
    const ann = await connect();
    await ann.join({ room: "iter-room", displayName: "Ann" });
    const events = ann.events();
    const bob = await connect();
    const b = await bob.join({ room: "iter-room", displayName: "Bob" });
    await bob.broadcast({ payload: 1 });
    await bob.broadcast({ payload: 2 });
    const seen: string[] = [];
    for await (const e of events) {
      seen.push(e.type === "broadcast" ? `broadcast:${String(e.payload)}` : e.type);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual(["peerJoined", "broadcast:1", "broadcast:2"]);
    expect(b.peerId).toBeTruthy();
  });

  it("ends event iterators and rejects calls once closed", async () => {
    const client = await connect();
    const events = client.events();
    const closed = client.waitFor("peerJoined").catch((e: unknown) => e);
    await client.close();
    expect(await events.next()).toEqual({ value: undefined, done: true });
    expect(await closed).toBeInstanceOf(Error);
    await expect(client.ping()).rejects.toMatchObject({ name: "DspeakConnectionError" });
    expect(client.state).toBe("closed");
  });
});

describe("contract", () => {
  type OpenRpc = { methods: { name: string }[]; info: { version: string } } & Record<string, unknown>;

  it("rpc.discover returns the committed OpenRPC document", async () => {
    const committed = readJson<OpenRpc>("schema/openrpc.json");
    // The committed file carries the "generated by cargo xtask" stamp; the server's copy does not.
    delete committed["x-generated"];
    const client = await connect();
    const live = await client.call("rpc.discover" as never, {} as never);
    expect(live).toEqual(committed);
  });

  it("the SDK's method table matches the OpenRPC document", () => {
    const doc = readJson<OpenRpc>("schema/openrpc.json");
    const subscription = [SUBSCRIPTION.subscribe, SUBSCRIPTION.unsubscribe];
    const documented = doc.methods.map((m) => m.name).filter((n) => !subscription.includes(n as never));
    expect(METHODS.map((m) => m.name)).toEqual(documented);
    expect(doc.methods.map((m) => m.name)).toEqual(expect.arrayContaining(subscription));
    // Every method is callable as a function of the client.
    for (const m of METHODS) expect(typeof (DspeakClient.prototype as never)[m.name]).toBe("function");
  });

  it("the SDK knows every event type of the schema", () => {
    const bundle = readJson<{ $defs: { Event: { oneOf: { properties: { type: { const: string } } }[] } } }>(
      "schema/dspeak.schema.json",
    );
    expect([...EVENT_TYPES]).toEqual(bundle.$defs.Event.oneOf.map((v) => v.properties.type.const));
  });
});
