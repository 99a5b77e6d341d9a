// joinVoiceRoom with mediasoup-client against the real server. mediasoup-client runs with
// its FakeHandler (no WebRTC stack in Node): every signaling step is real — device.load,
// transports, connect, produce, consume, resume — only no packets flow.

import { Device } from "mediasoup-client";
import * as fakeParameters from "mediasoup-client/fakeParameters";
import { FakeHandler } from "mediasoup-client/handlers/FakeHandler";
import { FakeMediaStreamTrack } from "fake-mediastreamtrack";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";

import type { DspeakClient } from "../src/index.js";
import { joinVoiceRoom, type VoiceRoom } from "../src/mediasoup.js";
import { ContractRecorder, clientFactory, startServer, type TestServer } from "./support.js";

let server: TestServer;
const recorder = new ContractRecorder();
const { connect, closeAll } = clientFactory(() => server, recorder);
const rooms: VoiceRoom[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterEach(async () => {
  await Promise.all(rooms.splice(0).map((r) => r.leave().catch(() => undefined)));
  await closeAll();
  expect(recorder.problems).toEqual([]);
});
afterAll(async () => {
  await server?.stop();
});

const fakeDevice = () => Device.factory({ handlerFactory: FakeHandler.createFactory(fakeParameters) });
const microphone = () => new FakeMediaStreamTrack({ kind: "audio" }) as unknown as MediaStreamTrack;

/**
 * FakeHandler names its MIDs `mid-<random>`; the server accepts letters and digits only
 * (browsers use `0`, `1`, …), so the test strips the prefix on the way out.
 */
function acceptFakeMids(client: DspeakClient): DspeakClient {
  const produce = client.produce.bind(client);
  client.produce = (params, options) =>
    produce({ ...params, rtpParameters: { ...params.rtpParameters, mid: params.rtpParameters.mid?.replace(/^mid-/, "") } }, options);
  return client;
}

async function join(client: DspeakClient, displayName: string, track?: MediaStreamTrack): Promise<VoiceRoom> {
  acceptFakeMids(client);
  const room = await joinVoiceRoom({
    client,
    room: "voice",
    displayName,
    device: fakeDevice,
    ...(track ? { track } : {}),
    onError: (e) => {
      throw e;
    },
  });
  rooms.push(room);
  return room;
}

/** Polls until `predicate` holds (events are handled asynchronously by the helper). */
async function until(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

it("joins, produces, consumes existing and new producers, mutes and leaves", async () => {
  const annClient = await connect();
  const ann = await join(annClient, "Ann", microphone());
  expect(ann.device.loaded).toBe(true);
  expect(ann.producer?.kind).toBe("audio");
  expect(ann.consumers.size).toBe(0);

  // Bob only listens: he consumes Ann's producer, announced in his join result.
  const bobClient = await connect();
  const bob = await join(bobClient, "Bob");
  expect(bob.producer).toBeUndefined();
  expect(bob.sendTransport).toBeUndefined();
  const fromAnn = bob.consumers.get(ann.producer!.id);
  expect(fromAnn?.kind).toBe("audio");
  expect(fromAnn?.rtpParameters.codecs[0]?.mimeType.toLowerCase()).toBe("audio/opus");
  const stats = await bobClient.getStats({ id: fromAnn!.id });
  expect(stats).toMatchObject({ type: "consumer", paused: false });

  // Carol arrives with a microphone: Ann and Bob consume her via producerAdded.
  const carolClient = await connect();
  const carol = await join(carolClient, "Carol", microphone());
  expect(carol.consumers.has(ann.producer!.id)).toBe(true);
  await until("Ann and Bob consume Carol", () => ann.consumers.has(carol.producer!.id) && bob.consumers.has(carol.producer!.id));

  // Mute: the producer pauses locally and on the server; the room is told.
  const paused = bobClient.waitFor("producerPaused");
  await ann.mute();
  expect(ann.muted).toBe(true);
  expect(ann.producer!.paused).toBe(true);
  expect((await paused).producerId).toBe(ann.producer!.id);
  const resumed = bobClient.waitFor("producerResumed");
  await ann.unmute();
  expect(ann.muted).toBe(false);
  expect((await resumed).producerId).toBe(ann.producer!.id);

  // Carol leaves: her consumers at Ann and Bob close.
  const carolProducer = carol.producer!.id;
  const consumerAtBob = bob.consumers.get(carolProducer)!;
  await carol.leave();
  await until("Carol's consumers close", () => !ann.consumers.has(carolProducer) && !bob.consumers.has(carolProducer));
  expect(consumerAtBob.closed).toBe(true);
  // Carol's client is still connected and can join again.
  expect((await carolClient.ping()).type).toBe("pong");
});

it("closes the consumer when its producer is closed", async () => {
  const annClient = await connect();
  const ann = await join(annClient, "Ann", microphone());
  const bobClient = await connect();
  const bob = await join(bobClient, "Bob");
  const producerId = ann.producer!.id;
  expect(bob.consumers.has(producerId)).toBe(true);

  const closedEvent = bobClient.waitFor("producerClosed");
  ann.producer!.close();
  await annClient.closeProducer({ producerId });
  expect((await closedEvent).producerId).toBe(producerId);
  await until("Bob's consumer closes", () => !bob.consumers.has(producerId));
});

it("keeps the peers and their voice state, and self-mutes and self-deafens", async () => {
  const annClient = await connect();
  const ann = await join(annClient, "Ann", microphone());
  const bobClient = await connect();
  const bob = await join(bobClient, "Bob");
  const annId = ann.joined.peerId;
  const bobId = bob.joined.peerId;
  expect(bob.peers.get(annId)).toMatchObject({ displayName: "Ann", selfMute: false, selfDeaf: false, serverMuted: false });
  // No packets flow with FakeHandler: nobody speaks (the browser test shows speaking).
  expect(bob.peers.get(annId)).toMatchObject({ speaking: false, level: null });
  expect([bob.activeSpeaker, bob.speaking, bob.level]).toEqual([undefined, false, null]);
  await until("Ann sees Bob", () => ann.peers.has(bobId));
  const updates: string[] = [];
  const off = bob.on("peerUpdated", (p) => updates.push(`${p.displayName}:${p.selfMute}:${p.selfDeaf}`));

  // Ann mutes herself: her producer pauses here and on the server; Bob sees it.
  const paused = bobClient.waitFor("producerPaused");
  expect(await ann.setSelfMute(true)).toEqual({ selfMute: true, selfDeaf: false, serverMuted: false });
  expect(ann.producer!.paused).toBe(true);
  expect((await paused).producerId).toBe(ann.producer!.id);
  await until("Bob sees Ann muted", () => bob.peers.get(annId)?.selfMute === true);
  await expect(ann.unmute()).rejects.toMatchObject({ code: 1004 });
  expect(ann.producer!.paused).toBe(true);

  // Bob deafens: the server pauses his consumer of Ann; Ann sees it.
  await bob.setSelfDeaf(true);
  expect(bob.voiceState.selfDeaf).toBe(true);
  const fromAnn = bob.consumers.get(ann.producer!.id)!;
  expect(await bobClient.getStats({ id: fromAnn.id })).toMatchObject({ type: "consumer", paused: true });
  await until("Ann sees Bob deafened", () => ann.peers.get(bobId)?.selfDeaf === true);

  // Both undo it.
  const resumed = bobClient.waitFor("producerResumed");
  expect(await ann.setSelfMute(false)).toEqual({ selfMute: false, selfDeaf: false, serverMuted: false });
  expect(ann.producer!.paused).toBe(false);
  await resumed;
  await bob.setSelfDeaf(false);
  expect(await bobClient.getStats({ id: fromAnn.id })).toMatchObject({ type: "consumer", paused: false });
  await until("Bob sees Ann unmuted", () => bob.peers.get(annId)?.selfMute === false);
  expect(updates).toEqual(["Ann:true:false", "Ann:false:false"]);
  off();

  // A late joiner lists both with their state; a leaver is dropped.
  const left = new Promise<string>((resolve) => ann.on("peerLeft", ({ peerId }) => resolve(peerId)));
  await bob.leave();
  expect(await left).toBe(bobId);
  expect(ann.peers.has(bobId)).toBe(false);
});
