import type { Consumer, Device, Producer, Transport } from "mediasoup-client/types";

import type { DspeakClient, EventOf } from "./client.js";
import { DspeakError } from "./errors.js";
import { ErrorCode } from "./generated/api.js";
import type { Direction, JoinResult, PeerInfo, VoiceState } from "./generated/types.js";
import {
  fromDeviceRtpCapabilities,
  fromDtlsParameters,
  fromProducerRtpParameters,
  toConsumerOptions,
  toDeviceRtpCapabilities,
  toTransportOptions,
} from "./ortc.js";

/** Options of `joinVoiceRoom`. */
export interface JoinVoiceRoomOptions {
  /** A connected client. */
  client: DspeakClient;
  /** Room to join (created on first join). */
  room: string;
  /** The name other peers see. */
  displayName: string;
  /** Access token, when the server requires one. */
  token?: string | undefined;
  /**
   * The mediasoup-client `Device` to use (loaded here if it is not yet), or a function that
   * creates one, e.g. `() => Device.factory()` (`import { Device } from "mediasoup-client"`).
   */
  device: Device | (() => Promise<Device>);
  /** The microphone track to send; omit to only listen. */
  track?: MediaStreamTrack | undefined;
  /** Called for each new consumer (attach `consumer.track` to an `<audio>` element). */
  onConsumer?: ((consumer: Consumer, info: { peerId: string; producerId: string }) => void) | undefined;
  /** Called after a consumer closed (its producer closed or its peer left). */
  onConsumerClosed?: ((consumer: Consumer, info: { peerId: string; producerId: string }) => void) | undefined;
  /** Called when consuming a producer failed; the room stays usable. Default: `console.warn`. */
  onError?: ((error: unknown) => void) | undefined;
  /**
   * How long a transport may stay `failed` or `disconnected` before the room restarts
   * its ICE (`restartIce` on the server, then `transport.restartIce()`); default 2000 ms.
   */
  iceRestartAfterMs?: number | undefined;
}

/** A peer of the room as `VoiceRoom.peers` holds it: its info and whether it speaks. */
export interface VoicePeer extends PeerInfo {
  /**
   * Whether it speaks now: listed in the server's latest `audioLevels` (sent at most
   * every 200 ms while someone speaks; a peer not listed for {@link SPEAKING_TIMEOUT_MS}
   * stops speaking). With the server's `--speaker-events speaker` there are no levels:
   * use `activeSpeakerChanged`.
   */
  speaking: boolean;
  /** Its smoothed audio level in dBov (−50 quiet … 0 loudest) while speaking, else `null`. */
  level: number | null;
}

/** A peer not listed in `audioLevels` for this long stops speaking. */
export const SPEAKING_TIMEOUT_MS = 500;

/** What `VoiceRoom.on()` accepts, with what its handlers receive. */
export interface VoiceRoomEvents {
  /**
   * A peer joined, its voice state changed (`voiceStateUpdated`), or it started or
   * stopped speaking or its level changed (`audioLevels`): its current info.
   */
  peerUpdated: VoicePeer;
  /** A peer left the room. */
  peerLeft: { peerId: string };
  /** A transport's ICE was restarted after it stayed failed or disconnected. */
  iceRestarted: { transportId: string; direction: Direction };
  /**
   * The client could not resume its session and joined the room again as a new
   * session (`rejoined`): the room rebuilt its transports, producer and consumers.
   */
  rebuilt: { joined: JoinResult };
  /** The server named a new active speaker (`activeSpeaker`); it may be this peer. */
  activeSpeakerChanged: { peerId: string; producerId: string };
}

/** A joined voice room: what `joinVoiceRoom` resolves with. */
export interface VoiceRoom {
  /** The `join` result (peer id, peers and producers at join time; renewed on `rebuilt`). */
  readonly joined: JoinResult;
  /** The loaded device. */
  readonly device: Device;
  /** The send transport (only with a `track`). */
  readonly sendTransport: Transport | undefined;
  /** The recv transport. */
  readonly recvTransport: Transport;
  /** The microphone producer (only with a `track`). */
  readonly producer: Producer | undefined;
  /** Live consumers, by the id of the producer they consume. */
  readonly consumers: ReadonlyMap<string, Consumer>;
  /**
   * The other peers of the room, by peer id, kept up to date from `peerJoined`,
   * `peerLeft`, `voiceStateUpdated` and `audioLevels` (identity, display name, voice
   * state, speaking, level).
   */
  readonly peers: ReadonlyMap<string, VoicePeer>;
  /** This peer's own voice state, as the server last reported it. */
  readonly voiceState: VoiceState;
  /** The peer id of the room's active speaker (`activeSpeaker`; maybe this peer), until it leaves. */
  readonly activeSpeaker: string | undefined;
  /** Whether this peer speaks now, as the server hears it (`audioLevels`). */
  readonly speaking: boolean;
  /** This peer's level in dBov while it speaks, as the server hears it, else `null`. */
  readonly level: number | null;
  /** Listens to room changes; returns a function that stops listening. */
  on<K extends keyof VoiceRoomEvents>(type: K, handler: (event: VoiceRoomEvents[K]) => void): () => void;
  /**
   * Self-mute (`setVoiceState`): the server pauses this peer's producers and everyone
   * sees `selfMute`; the local producer pauses too. Unmuting resumes it unless the
   * server muted this peer.
   */
  setSelfMute(muted: boolean): Promise<VoiceState>;
  /** Self-deafen (`setVoiceState`): the server sends this peer no audio until undeafened. */
  setSelfDeaf(deafened: boolean): Promise<VoiceState>;
  /** Whether the microphone is muted. */
  readonly muted: boolean;
  /** Mutes the microphone: pauses the producer here and on the server (the room sees `producerPaused`). */
  mute(): Promise<void>;
  /** Unmutes the microphone. */
  unmute(): Promise<void>;
  /** Closes all media and leaves the room. The client stays connected. */
  leave(): Promise<void>;
}

/**
 * The common voice flow with mediasoup-client in one call: join, load the device, create
 * the transports (wired to `connectTransport` / `produce`), consume every producer
 * already in the room, send `track`, consume every new producer (`producerAdded`), and close consumers
 * whose producer went away (`producerClosed` / `consumerClosed`).
 *
 * Connection loss (with the client's `reconnect`): a resumed session keeps everything;
 * when the client had to join afresh (`rejoined`) the room rebuilds its transports,
 * producer and consumers on the new session (`rebuilt`). A transport that stays
 * `failed` or `disconnected` for `iceRestartAfterMs` gets an ICE restart
 * (`iceRestarted`).
 */
export async function joinVoiceRoom(options: JoinVoiceRoomOptions): Promise<VoiceRoom> {
  const { client } = options;
  const onError = options.onError ?? ((error: unknown) => console.warn("dspeak: consume failed", error));

  // Listen before joining so that no producer announced meanwhile is missed; events are
  // handled in order, after setup.
  const backlog: Array<() => Promise<void>> = [];
  let ready = false;
  let chain = Promise.resolve();
  const enqueue = (task: () => Promise<void>) => {
    if (!ready) {
      backlog.push(task);
      return;
    }
    chain = chain.then(task).catch(onError);
  };
  const subscriptions = [
    client.on("producerAdded", (e) => enqueue(() => consume(e.producerId, e.peerId))),
    client.on("producerClosed", (e) => enqueue(async () => closeConsumer(e.producerId))),
    client.on("consumerClosed", (e: EventOf<"consumerClosed">) => enqueue(async () => closeConsumer(e.producerId))),
    // Server mute (the app's backend): the server paused the producer; pause it here too.
    client.on("peerUpdated", (e) => {
      if (e.serverMuted && e.peerId === client.joined?.peerId && producer && !producer.paused) producer.pause();
    }),
  ];
  // The room model: the other peers, this peer's voice state, who speaks.
  const peers = new Map<string, VoicePeer>();
  let voiceState: VoiceState = { selfMute: false, selfDeaf: false, serverMuted: false };
  let activeSpeaker: string | undefined;
  let self: { speaking: boolean; level: number | null } = { speaking: false, level: null };
  let silenceTimer: ReturnType<typeof setTimeout> | undefined;
  const handlers: { [K in keyof VoiceRoomEvents]: Set<(event: VoiceRoomEvents[K]) => void> } = {
    peerUpdated: new Set(),
    peerLeft: new Set(),
    iceRestarted: new Set(),
    rebuilt: new Set(),
    activeSpeakerChanged: new Set(),
  };
  const emit = <K extends keyof VoiceRoomEvents>(type: K, event: VoiceRoomEvents[K]) => {
    for (const handler of handlers[type]) handler(event);
  };
  const updatePeer = (peerId: string, change: Partial<VoicePeer>) => {
    const known = peers.get(peerId);
    if (!known) return;
    const peer = { ...known, ...change };
    peers.set(peerId, peer);
    emit("peerUpdated", peer);
  };
  /** Applies the levels of one `audioLevels` (empty: nobody speaks) to every peer and this one. */
  const applyLevels = (levels: ReadonlyMap<string, number>) => {
    const me = client.joined?.peerId;
    const mine = me === undefined ? undefined : levels.get(me);
    self = { speaking: mine !== undefined, level: mine ?? null };
    for (const [peerId, peer] of peers) {
      const level = levels.get(peerId) ?? null;
      if (peer.level !== level || peer.speaking !== (level !== null)) updatePeer(peerId, { speaking: level !== null, level });
    }
  };
  subscriptions.push(
    client.on("peerJoined", (e) => {
      const { peerId, displayName, identity, metadata } = e;
      const peer: VoicePeer = {
        peerId,
        displayName,
        identity,
        metadata,
        selfMute: false,
        selfDeaf: false,
        serverMuted: false,
        speaking: false,
        level: null,
      };
      peers.set(e.peerId, peer);
      emit("peerUpdated", peer);
    }),
    client.on("peerLeft", (e) => {
      if (activeSpeaker === e.peerId) activeSpeaker = undefined;
      if (peers.delete(e.peerId)) emit("peerLeft", { peerId: e.peerId });
    }),
    client.on("voiceStateUpdated", ({ peerId, selfMute, selfDeaf, serverMuted }) => {
      if (peerId === client.joined?.peerId) {
        voiceState = { selfMute, selfDeaf, serverMuted };
        return;
      }
      updatePeer(peerId, { selfMute, selfDeaf, serverMuted });
    }),
    client.on("activeSpeaker", ({ peerId, producerId }) => {
      activeSpeaker = peerId;
      emit("activeSpeakerChanged", { peerId, producerId });
    }),
    client.on("audioLevels", ({ levels }) => {
      // A peer with several producers speaks at its loudest one's level.
      const byPeer = new Map<string, number>();
      for (const { peerId, level } of levels) byPeer.set(peerId, Math.max(level, byPeer.get(peerId) ?? -Infinity));
      applyLevels(byPeer);
      // The server sends no `audioLevels` while nobody speaks: silence after a while.
      clearTimeout(silenceTimer);
      silenceTimer = setTimeout(() => applyLevels(new Map()), SPEAKING_TIMEOUT_MS);
    }),
  );
  const unsubscribe = () => {
    subscriptions.forEach((off) => off());
    clearTimeout(silenceTimer);
  };

  const consumers = new Map<string, Consumer>();
  const owners = new Map<string, string>();
  let sendTransport: Transport | undefined;
  let recvTransport: Transport | undefined;
  let producer: Producer | undefined;
  let left = false;

  const iceRestartAfterMs = options.iceRestartAfterMs ?? 2000;
  /** Restarts ICE while the transport stays failed or disconnected (once per period). */
  const watchIce = (transport: Transport, direction: Direction): void => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bad = () => transport.connectionState === "failed" || transport.connectionState === "disconnected";
    const check = () => {
      timer = undefined;
      if (left || transport.closed || !bad()) return;
      const again = () => {
        if (!timer && !left && !transport.closed) timer = setTimeout(check, iceRestartAfterMs);
      };
      // While the client reconnects, wait: the restart needs the session.
      if (client.state !== "open") return again();
      client
        .restartIce({ transportId: transport.id })
        .then((iceParameters) => transport.restartIce({ iceParameters }))
        .then(() => emit("iceRestarted", { transportId: transport.id, direction }))
        .catch(onError)
        .finally(again);
    };
    transport.on("connectionstatechange", () => {
      if (bad()) {
        timer ??= setTimeout(check, iceRestartAfterMs);
      } else {
        clearTimeout(timer);
        timer = undefined;
      }
    });
  };

  const createTransport = async (device: Device, direction: Direction): Promise<Transport> => {
    const created = await client.createTransport({ direction });
    const options = toTransportOptions(created);
    const transport = direction === "send" ? device.createSendTransport(options) : device.createRecvTransport(options);
    watchIce(transport, direction);
    transport.on("connect", ({ dtlsParameters }, callback, errback) => {
      client
        .connectTransport({ transportId: transport.id, dtlsParameters: fromDtlsParameters(dtlsParameters) })
        .then(() => callback(), errback);
    });
    if (direction === "send") {
      transport.on("produce", ({ kind, rtpParameters, appData }, callback, errback) => {
        client
          .produce({ transportId: transport.id, kind, rtpParameters: fromProducerRtpParameters(rtpParameters), appData })
          .then(({ id }) => callback({ id }), errback);
      });
    }
    return transport;
  };

  let device: Device | undefined;
  const consume = async (producerId: string, peerId: string): Promise<void> => {
    if (left || !device || !recvTransport || consumers.has(producerId)) return;
    const result = await client.consume({
      transportId: recvTransport.id,
      producerId,
      rtpCapabilities: fromDeviceRtpCapabilities(device.recvRtpCapabilities),
    });
    const consumer = await recvTransport.consume(toConsumerOptions(result));
    consumers.set(producerId, consumer);
    owners.set(producerId, peerId);
    // The server creates consumers paused; resume once the local receiver exists.
    await client.resumeConsumer({ consumerId: consumer.id });
    options.onConsumer?.(consumer, { peerId, producerId });
  };
  const closeConsumer = (producerId: string): void => {
    const consumer = consumers.get(producerId);
    if (!consumer) return;
    consumers.delete(producerId);
    const peerId = owners.get(producerId) ?? "";
    owners.delete(producerId);
    consumer.close();
    options.onConsumerClosed?.(consumer, { peerId, producerId });
  };

  let joined: JoinResult;
  try {
    joined = await client.join({
      room: options.room,
      displayName: options.displayName,
      ...(options.token === undefined ? {} : { token: options.token }),
    });
  } catch (error) {
    unsubscribe();
    throw error;
  }
  const listed = (peer: PeerInfo): VoicePeer => ({ ...peer, speaking: false, level: null });
  for (const peer of joined.peers) if (!peers.has(peer.peerId)) peers.set(peer.peerId, listed(peer));
  /** Creates the media of a joined session: transports, consumers, the producer. */
  const setUpMedia = async (device: Device, joined: JoinResult): Promise<void> => {
    // Hear the room first: consuming what is already there comes before sending, so
    // the first audio arrives after the fewest round trips.
    recvTransport = await createTransport(device, "recv");
    for (const p of joined.producers) {
      await consume(p.producerId, p.peerId).catch(onError);
    }
    if (options.track) {
      sendTransport = await createTransport(device, "send");
      producer = await sendTransport.produce({ track: options.track, stopTracks: false });
    }
  };
  /** Closes the media here (the server side is closed by `leave`, or already gone). */
  const closeMedia = (): void => {
    for (const producerId of [...consumers.keys()]) closeConsumer(producerId);
    producer?.close();
    sendTransport?.close();
    recvTransport?.close();
    producer = sendTransport = recvTransport = undefined;
  };
  try {
    device = typeof options.device === "function" ? await options.device() : options.device;
    if (!device.loaded) {
      await device.load({ routerRtpCapabilities: toDeviceRtpCapabilities(joined.routerRtpCapabilities) });
    }
    await setUpMedia(device, joined);
  } catch (error) {
    unsubscribe();
    sendTransport?.close();
    recvTransport?.close();
    await client.leave().catch(() => undefined);
    throw error;
  }
  ready = true;
  for (const task of backlog.splice(0)) enqueue(task);
  const loaded = device;
  // A new session joined the room for this client: its old media is gone on the server.
  subscriptions.push(
    client.on("rejoined", (e) =>
      enqueue(async () => {
        if (left) return;
        closeMedia();
        joined = e.joined;
        peers.clear();
        for (const peer of joined.peers) peers.set(peer.peerId, listed(peer));
        await setUpMedia(loaded, joined);
        emit("rebuilt", { joined });
      }),
    ),
  );

  const room: VoiceRoom = {
    get joined() {
      return joined;
    },
    device,
    get sendTransport() {
      return sendTransport;
    },
    get recvTransport() {
      // Set up before the room is returned (and again on `rebuilt`).
      return recvTransport as Transport;
    },
    get producer() {
      return producer;
    },
    consumers,
    peers,
    get voiceState() {
      return voiceState;
    },
    get activeSpeaker() {
      return activeSpeaker;
    },
    get speaking() {
      return self.speaking;
    },
    get level() {
      return self.level;
    },
    on(type, handler) {
      handlers[type].add(handler);
      return () => handlers[type].delete(handler);
    },
    async setSelfMute(muted) {
      if (muted && producer && !producer.paused) producer.pause();
      voiceState = await client.setVoiceState({ selfMute: muted });
      if (!muted && producer?.paused && !voiceState.serverMuted) producer.resume();
      return voiceState;
    },
    async setSelfDeaf(deafened) {
      voiceState = await client.setVoiceState({ selfDeaf: deafened });
      return voiceState;
    },
    get muted() {
      return producer?.paused ?? true;
    },
    async mute() {
      if (!producer || producer.paused) return;
      producer.pause();
      await client.pauseProducer({ producerId: producer.id });
    },
    async unmute() {
      if (!producer || !producer.paused) return;
      producer.resume();
      try {
        await client.resumeProducer({ producerId: producer.id });
      } catch (error) {
        // E.g. `forbidden` while the server mutes this peer: stay muted here too.
        producer.pause();
        throw error;
      }
    },
    async leave() {
      if (left) return;
      left = true;
      unsubscribe();
      await chain.catch(() => undefined);
      closeMedia();
      try {
        await client.leave();
      } catch (error) {
        // Already out of the room (e.g. the connection was lost): nothing left to leave.
        if (!(error instanceof DspeakError && error.code === ErrorCode.notJoined) && client.state === "open") {
          throw error;
        }
      }
    },
  };
  return room;
}
