// The dspeak voice-room page: join a room with a name, talk (microphone on/off), hear
// everyone else (or deafen), see who is there, who is muted or deafened and who is
// speaking, leave. Who speaks comes from the server (`activeSpeaker`, `audioLevels`,
// through the SDK's `VoiceRoom`), not from polling `getStats()`.
//
// Uses only the public SDK (`@dspeak/sdk`, `@dspeak/sdk/mediasoup`) and mediasoup-client. The page connects to the
// server it was served from (`ws://<host>`), or to `?server=ws://host:port`.

import { DspeakClient, DspeakError, type SessionEndReason, type WireTrace } from "@dspeak/sdk";
import { joinVoiceRoom, type VoiceRoom } from "@dspeak/sdk/mediasoup";
import { Device } from "mediasoup-client";
import type { Consumer } from "mediasoup-client/types";

import type { InboundSnapshot, PageState, PathSnapshot, PeerSnapshot, TimingSnapshot, VoiceRoomHooks } from "./hooks.js";

/** The quietest level the level bar shows (the server lists speakers above −50 dBov). */
const MIN_LEVEL_DBOV = -50;

// --- elements ------------------------------------------------------------------------

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
}

const ui = {
  server: element<HTMLParagraphElement>("server"),
  form: element<HTMLFormElement>("join-form"),
  name: element<HTMLInputElement>("name"),
  room: element<HTMLInputElement>("room"),
  withMic: element<HTMLInputElement>("with-mic"),
  join: element<HTMLButtonElement>("join"),
  roomView: element<HTMLElement>("room-view"),
  roomTitle: element<HTMLHeadingElement>("room-title"),
  roomSummary: element<HTMLParagraphElement>("room-summary"),
  mic: element<HTMLButtonElement>("mic"),
  deafen: element<HTMLButtonElement>("deafen"),
  leave: element<HTMLButtonElement>("leave"),
  peers: element<HTMLUListElement>("peers"),
  enableAudio: element<HTMLButtonElement>("enable-audio"),
  status: element<HTMLParagraphElement>("status"),
  audio: element<HTMLDivElement>("audio"),
};

// --- state ---------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const serverUrl = params.get("server") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;

/** The page's open WebSockets, for `window.dspeak.dropConnection()`. */
const sockets = new Set<WebSocket>();
/** The browser's WebSocket, remembering the sockets the client opens. */
class PageWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    sockets.add(this);
    this.addEventListener("close", () => sockets.delete(this));
  }
}
/** ICE restarts of the voice room's transports so far. */
let iceRestarts = 0;

interface PeerInfo {
  peerId: string;
  displayName: string;
}
interface ProducerState {
  peerId: string;
  paused: boolean;
}
interface Listening {
  consumer: Consumer;
  peerId: string;
  audio: HTMLAudioElement;
  consumedAt: number;
  firstPacketAt: number | undefined;
}

/** Everything about one connection (a reconnect is a new session: `membership` starts over). */
interface Connection {
  client: DspeakClient;
  roomName: string;
  displayName: string;
  mic: MediaStreamTrack | undefined;
  /** Why there is no microphone, when one was wanted. */
  micProblem: string | undefined;
  joinClickedAt: number;
  micAt: number;
  connectedAt: number;
  membership: Membership;
  unsubscribe: Array<() => void>;
  calls: TimingSnapshot["calls"];
}

/** One `join`: the room as this session sees it. */
interface Membership {
  room: VoiceRoom | undefined;
  selfId: string | undefined;
  joinedAt: number | undefined;
  /** Other peers, in the order they appeared. */
  peers: Map<string, PeerInfo>;
  /** Audio producers of other peers, by producer id. */
  producers: Map<string, ProducerState>;
  /** Consumers (one per remote producer), by producer id. */
  listening: Map<string, Listening>;
  /** Every consumer of this join, for the timings (kept after it closes). */
  consumerLog: Array<Omit<TimingSnapshot["consumers"][number], "displayName">>;
  /** Names of every peer seen in this join (also after it left), for the timings. */
  names: Map<string, string>;
  /** Peers and producers already gone: a join result that arrives later must not bring them back. */
  gonePeers: Set<string>;
  goneProducers: Set<string>;
  /** Producers whose pause state came from an event (newer than the join result). */
  eventPaused: Set<string>;
  /** The room's active speaker (`activeSpeaker`). */
  activeSpeaker: string | undefined;
}

let state: PageState = "idle";
let connection: Connection | undefined;
const shownErrors: string[] = [];

function newMembership(): Membership {
  return {
    room: undefined,
    selfId: undefined,
    joinedAt: undefined,
    peers: new Map(),
    producers: new Map(),
    listening: new Map(),
    consumerLog: [],
    names: new Map(),
    gonePeers: new Set(),
    goneProducers: new Set(),
    eventPaused: new Set(),
    activeSpeaker: undefined,
  };
}

// --- status line ---------------------------------------------------------------------

function setStatus(text: string, isError = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
  if (isError) shownErrors.push(text);
}

/** Why the page left the room when the server ended the session. */
const SESSION_ENDED: Record<SessionEndReason, string> = {
  replaced: "You joined this room from another tab or device, so this one left.",
  removed: "A moderator removed you from the room.",
  roomClosed: "A moderator closed the room.",
  evicted: "This tab fell behind on room events and was disconnected from the room. Join again.",
};

function describe(error: unknown): string {
  if (error instanceof DspeakError) return `${error.message} (${error.codeName})`;
  if (error instanceof Error) return error.message;
  return String(error);
}

// --- joining -------------------------------------------------------------------------

/** The microphone track, or why there is none. */
async function openMicrophone(): Promise<{ mic?: MediaStreamTrack; problem?: string }> {
  if (!ui.withMic.checked) return {};
  if (!navigator.mediaDevices) return { problem: "browsers give a microphone only to https or localhost pages" };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const mic = stream.getAudioTracks()[0];
    return mic ? { mic } : { problem: "no audio track" };
  } catch (error) {
    // NotAllowedError (permission refused), NotFoundError (no device), …
    return { problem: describe(error) };
  }
}

async function onJoinSubmit(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  if (state !== "idle" && state !== "left" && state !== "error") return;
  const joinClickedAt = performance.now();
  const displayName = ui.name.value.trim();
  const roomName = ui.room.value.trim();
  if (!displayName || !roomName) return;
  localStorage.setItem("dspeak.name", displayName);
  setState("joining");
  setStatus(`Connecting to ${serverUrl}…`);

  const { mic, problem: micProblem } = await openMicrophone();
  const micAt = performance.now();
  const calls = callLog();
  let client: DspeakClient;
  try {
    client = await DspeakClient.connect({
      url: serverUrl,
      WebSocket: PageWebSocket,
      reconnect: { maxAttempts: 20, maxDelayMs: 3000 },
      trace: calls.trace,
    });
  } catch (error) {
    mic?.stop();
    setState("error");
    setStatus(`Could not connect to ${serverUrl}: ${describe(error)}`, true);
    return;
  }
  const conn: Connection = {
    client,
    roomName,
    displayName,
    mic,
    micProblem,
    joinClickedAt,
    micAt,
    connectedAt: performance.now(),
    membership: newMembership(),
    unsubscribe: [],
    calls: calls.calls,
  };
  connection = conn;
  listen(conn);
  try {
    await enterRoom(conn);
  } catch (error) {
    await teardown(conn);
    setState("error");
    setStatus(`Could not join “${roomName}”: ${describe(error)}`, true);
    return;
  }
  const url = new URL(location.href);
  url.searchParams.set("room", roomName);
  history.replaceState(null, "", url);
}

/** Round trips of the JSON-RPC calls (method names and times only), for `window.dspeak.timings()`. */
function callLog() {
  const calls: TimingSnapshot["calls"] = [];
  const open = new Map<unknown, TimingSnapshot["calls"][number]>();
  const trace = (entry: WireTrace): void => {
    const message = entry.message as { id?: unknown; method?: unknown };
    if (message.id === undefined || message.id === null) return;
    if (entry.direction === "send" && typeof message.method === "string") {
      const call = { method: message.method, sentAt: performance.now(), ms: undefined };
      calls.push(call);
      open.set(message.id, call);
      if (calls.length > 200) calls.shift();
    } else if (entry.direction === "receive") {
      const call = open.get(message.id);
      open.delete(message.id);
      if (call) call.ms = performance.now() - call.sentAt;
    }
  };
  return { calls, trace };
}

/** Joins `conn.roomName` with a fresh membership (first join, and after each reconnect). */
async function enterRoom(conn: Connection): Promise<void> {
  const m = newMembership();
  conn.membership = m;
  const room = await joinVoiceRoom({
    client: conn.client,
    room: conn.roomName,
    displayName: conn.displayName,
    device: () => Device.factory(),
    ...(conn.mic ? { track: conn.mic } : {}),
    onConsumer: (consumer, { peerId, producerId }) => startListening(m, consumer, peerId, producerId),
    onConsumerClosed: (_consumer, { producerId }) => stopListening(m, producerId),
    onError: (error) => setStatus(`Could not receive a peer: ${describe(error)}`, true),
  });
  if (conn.membership !== m) {
    // Superseded (left or reconnected meanwhile).
    await room.leave().catch(() => undefined);
    return;
  }
  m.room = room;
  m.selfId = room.joined.peerId;
  room.on("iceRestarted", () => iceRestarts++);
  room.on("rebuilt", ({ joined }) => {
    // The session could not be resumed: the room joined again as a new peer.
    m.selfId = joined.peerId;
    m.peers.clear();
    m.producers.clear();
    for (const p of joined.peers) m.peers.set(p.peerId, { peerId: p.peerId, displayName: p.displayName });
    for (const p of joined.producers) m.producers.set(p.producerId, { peerId: p.peerId, paused: p.paused });
    setState("joined");
    setStatus("Reconnected as a new session.");
    render();
  });
  m.joinedAt = performance.now();
  for (const p of room.joined.peers) {
    m.names.set(p.peerId, p.displayName);
    if (!m.gonePeers.has(p.peerId) && !m.peers.has(p.peerId)) {
      m.peers.set(p.peerId, { peerId: p.peerId, displayName: p.displayName });
    }
  }
  for (const p of room.joined.producers) {
    if (p.kind !== "audio" || m.goneProducers.has(p.producerId) || m.gonePeers.has(p.peerId)) continue;
    const known = m.producers.get(p.producerId);
    m.producers.set(p.producerId, {
      peerId: p.peerId,
      paused: known && m.eventPaused.has(p.producerId) ? known.paused : p.paused,
    });
  }
  // Speaking rings and level bars follow the server's `audioLevels` and `activeSpeaker`.
  room.on("peerUpdated", () => render());
  room.on("activeSpeakerChanged", ({ peerId }) => {
    m.activeSpeaker = peerId;
    render();
  });
  setState("joined");
  setStatus(
    conn.mic
      ? "You are in. Talk away."
      : conn.micProblem
        ? `You are in, listening only: no microphone (${conn.micProblem}).`
        : "You are in, listening only.",
  );
  render();
}

/** Room events. Registered once per client: they apply to whatever membership is current. */
function listen(conn: Connection): void {
  const { client } = conn;
  const m = () => conn.membership;
  conn.unsubscribe.push(
    client.on("peerJoined", (e) => {
      m().names.set(e.peerId, e.displayName);
      m().peers.set(e.peerId, { peerId: e.peerId, displayName: e.displayName });
      render();
    }),
    client.on("peerLeft", (e) => {
      const mm = m();
      mm.gonePeers.add(e.peerId);
      mm.peers.delete(e.peerId);
      for (const [id, p] of mm.producers) if (p.peerId === e.peerId) mm.producers.delete(id);
      render();
    }),
    client.on("producerAdded", (e) => {
      if (e.kind !== "audio") return;
      m().producers.set(e.producerId, { peerId: e.peerId, paused: false });
      render();
    }),
    client.on("producerClosed", (e) => {
      m().goneProducers.add(e.producerId);
      m().producers.delete(e.producerId);
      render();
    }),
    client.on("serverDraining", (e) => {
      // The call goes on; the server takes no new joins and closes at the deadline.
      const until = new Date(e.deadlineMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      document.body.dataset.draining = "true";
      setStatus(`The server is restarting: this call can go on until ${until}. Join again after that.`);
    }),
    client.on("producerPaused", (e) => setPaused(m(), e.producerId, e.peerId, true)),
    client.on("producerResumed", (e) => setPaused(m(), e.producerId, e.peerId, false)),
    client.on("disconnected", (e) => {
      if (!e.willReconnect || state === "leaving" || state === "left") return;
      if (client.joined) {
        // The server keeps the session (and its media) for a while: resume it.
        setState("reconnecting");
        setStatus("Connection lost, resuming…", true);
        render();
        return;
      }
      // Not in a room yet: the next session joins afresh.
      const old = conn.membership;
      conn.membership = newMembership();
      void old.room?.leave().catch(() => undefined);
      for (const producerId of [...old.listening.keys()]) stopListening(old, producerId);
      setState("reconnecting");
      setStatus("Connection lost, reconnecting…", true);
      render();
    }),
    client.on("resumed", () => {
      if (state !== "reconnecting") return;
      setState("joined");
      setStatus("Reconnected.");
      render();
    }),
    client.on("reconnected", () => {
      if (state !== "reconnecting") return;
      setState("joining");
      setStatus("Reconnected, joining again…");
      enterRoom(conn).catch(async (error) => {
        await teardown(conn);
        setState("error");
        setStatus(`Could not join again: ${describe(error)}`, true);
      });
    }),
    client.on("peerUpdated", (e) => {
      if (e.peerId !== m().selfId) return;
      setStatus(e.serverMuted ? "A moderator muted you." : "A moderator unmuted you: you may unmute.", e.serverMuted);
      render();
    }),
    client.on("sessionEnded", ({ reason }) => {
      if ((state !== "joined" && state !== "reconnecting") || connection !== conn) return;
      void conn.membership.room?.leave().catch(() => undefined);
      void teardown(conn);
      setState("error");
      setStatus(SESSION_ENDED[reason], true);
    }),
    client.on("closed", ({ reason }) => {
      if (state === "leaving" || state === "left" || connection !== conn) return;
      void teardown(conn);
      setState("error");
      setStatus(`Disconnected: ${reason}`, true);
    }),
  );
}

function setPaused(m: Membership, producerId: string, peerId: string, paused: boolean): void {
  m.eventPaused.add(producerId);
  if (!m.goneProducers.has(producerId)) m.producers.set(producerId, { peerId, paused });
  render();
}

// --- hearing -------------------------------------------------------------------------

function startListening(m: Membership, consumer: Consumer, peerId: string, producerId: string): void {
  // Remote audio is decoded (and its stats move) only while it plays out of an element.
  const audio = document.createElement("audio");
  audio.autoplay = true;
  audio.dataset.peerId = peerId;
  audio.srcObject = new MediaStream([consumer.track]);
  ui.audio.append(audio);
  audio.play().catch(() => {
    // Autoplay refused (no user gesture yet, e.g. after a reconnect): ask for a click.
    ui.enableAudio.hidden = false;
  });
  const entry: Listening = {
    consumer,
    peerId,
    audio,
    consumedAt: performance.now(),
    firstPacketAt: undefined,
  };
  m.listening.set(producerId, entry);
  const log = { peerId, producerId, consumedAt: entry.consumedAt, firstPacketAt: undefined as number | undefined };
  m.consumerLog.push(log);
  void watchFirstPacket(entry, log);
  render();
}

/** Polls the consumer's stats briefly until its first RTP packet is counted. */
async function watchFirstPacket(entry: Listening, log: { firstPacketAt: number | undefined }): Promise<void> {
  const deadline = performance.now() + 15_000;
  while (!entry.consumer.closed && performance.now() < deadline) {
    const stats = await entry.consumer.getStats().catch(() => undefined);
    for (const s of stats?.values() ?? []) {
      if (s.type === "inbound-rtp" && (s.packetsReceived ?? 0) > 0) {
        entry.firstPacketAt = log.firstPacketAt = performance.now();
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

function stopListening(m: Membership, producerId: string): void {
  const entry = m.listening.get(producerId);
  if (!entry) return;
  m.listening.delete(producerId);
  entry.audio.srcObject = null;
  entry.audio.remove();
  render();
}

// --- muting and leaving --------------------------------------------------------------

async function toggleMic(): Promise<void> {
  const room = connection?.membership.room;
  if (!room?.producer) return;
  ui.mic.disabled = true;
  try {
    if (room.muted) await room.unmute();
    else await room.mute();
  } catch (error) {
    setStatus(`Could not switch the microphone: ${describe(error)}`, true);
  } finally {
    ui.mic.disabled = false;
    render();
  }
}

async function toggleDeafen(): Promise<void> {
  const room = connection?.membership.room;
  if (!room) return;
  ui.deafen.disabled = true;
  try {
    await room.setSelfDeaf(!room.voiceState.selfDeaf);
  } catch (error) {
    setStatus(`Could not switch deafen: ${describe(error)}`, true);
  } finally {
    ui.deafen.disabled = false;
    render();
  }
}

async function leave(): Promise<void> {
  const conn = connection;
  if (!conn || state === "leaving") return;
  setState("leaving");
  setStatus("Leaving…");
  try {
    await conn.membership.room?.leave();
  } catch (error) {
    setStatus(`Leaving failed: ${describe(error)}`, true);
  }
  await teardown(conn);
  setState("left");
  setStatus(`You left “${conn.roomName}”.`);
}

/** Closes everything of a connection: media, the WebSocket, the microphone. */
async function teardown(conn: Connection): Promise<void> {
  const m = conn.membership;
  for (const producerId of [...m.listening.keys()]) stopListening(m, producerId);
  conn.membership = newMembership();
  conn.unsubscribe.splice(0).forEach((off) => off());
  conn.mic?.stop();
  await conn.client.close();
  if (connection === conn) connection = undefined;
  render();
}

// --- rendering -----------------------------------------------------------------------

function setState(next: PageState): void {
  state = next;
  document.body.dataset.state = next;
  // A new join goes to a server that is not draining (or hears so again).
  if (next === "joining") delete document.body.dataset.draining;
  const inRoom = next === "joined" || next === "reconnecting" || next === "leaving";
  ui.form.hidden = inRoom;
  ui.roomView.hidden = !inRoom;
  ui.join.disabled = next === "joining";
  ui.leave.disabled = next === "leaving";
  if (!inRoom) ui.enableAudio.hidden = true;
  render();
}

function snapshot(): PeerSnapshot[] {
  const conn = connection;
  const m = conn?.membership;
  if (!conn || !m?.selfId || !m.room) return [];
  const room = m.room;
  const selfOn = !!room.producer && !room.muted;
  const rows: PeerSnapshot[] = [
    {
      peerId: m.selfId,
      displayName: conn.displayName,
      self: true,
      mic: !room.producer ? "none" : room.muted ? "muted" : "on",
      deafened: room.voiceState.selfDeaf,
      speaking: selfOn && room.speaking,
      level: selfOn ? room.level : null,
      activeSpeaker: m.activeSpeaker === m.selfId,
    },
  ];
  for (const peer of m.peers.values()) {
    let mic: PeerSnapshot["mic"] = "none";
    for (const p of m.producers.values()) if (p.peerId === peer.peerId) mic = p.paused ? "muted" : "on";
    const voice = room.peers.get(peer.peerId);
    rows.push({
      peerId: peer.peerId,
      displayName: peer.displayName,
      self: false,
      mic,
      deafened: voice?.selfDeaf ?? false,
      speaking: mic === "on" && !!voice?.speaking,
      level: mic === "on" ? (voice?.level ?? null) : null,
      activeSpeaker: m.activeSpeaker === peer.peerId,
    });
  }
  return rows;
}

const MIC_ICON =
  '<svg class="mic" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" aria-hidden="true">' +
  '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/></svg>';
const MIC_OFF_ICON =
  '<svg class="mic" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" aria-hidden="true">' +
  '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3M4 3l16 18"/></svg>';

function initials(name: string): string {
  const parts = name.split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? "?") + (parts[1]?.[0] ?? "")).toUpperCase();
}

function hue(id: string): string {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 55% 45%)`;
}

function peerRow(peer: PeerSnapshot): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "peer";
  li.dataset.peerId = peer.peerId;
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.style.setProperty("--hue", hue(peer.peerId));
  avatar.textContent = initials(peer.displayName);
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = peer.displayName;
  if (peer.self) {
    const you = document.createElement("span");
    you.className = "you";
    you.textContent = " (you)";
    name.append(you);
  }
  const level = document.createElement("span");
  level.className = "level";
  level.append(document.createElement("span"));
  const status = document.createElement("span");
  status.className = "mic-state";
  li.append(avatar, name, level, status);
  return li;
}

function render(): void {
  const rows = snapshot();
  const conn = connection;
  if (conn && rows.length > 0) {
    ui.roomTitle.textContent = conn.roomName;
    const people = rows.length === 1 ? "just you" : `${rows.length} people`;
    ui.roomSummary.textContent = `${people} · ${serverUrl}`;
  }
  const self = rows[0];
  ui.mic.textContent = !self || self.mic === "none" ? "No microphone" : self.mic === "muted" ? "Unmute" : "Mute";
  ui.mic.disabled = !self || self.mic === "none" || state !== "joined";
  ui.mic.setAttribute("aria-pressed", String(self?.mic === "muted"));
  ui.deafen.textContent = self?.deafened ? "Undeafen" : "Deafen";
  ui.deafen.disabled = !self || state !== "joined";
  ui.deafen.setAttribute("aria-pressed", String(!!self?.deafened));

  const existing = new Map<string, HTMLLIElement>();
  for (const li of ui.peers.querySelectorAll<HTMLLIElement>("li.peer")) existing.set(li.dataset.peerId ?? "", li);
  let previous: HTMLLIElement | undefined;
  for (const peer of rows) {
    let li = existing.get(peer.peerId);
    existing.delete(peer.peerId);
    if (!li) li = peerRow(peer);
    if (previous ? previous.nextSibling !== li : ui.peers.firstChild !== li) {
      if (previous) previous.after(li);
      else ui.peers.prepend(li);
    }
    previous = li;
    li.dataset.mic = peer.mic;
    li.dataset.muted = String(peer.mic === "muted");
    li.dataset.speaking = String(peer.speaking);
    li.dataset.active = String(peer.activeSpeaker);
    li.dataset.deafened = String(peer.deafened);
    li.title = [peer.displayName, peer.speaking ? "is speaking" : "", peer.deafened ? "(deafened)" : ""]
      .filter(Boolean)
      .join(" ");
    const bar = li.querySelector<HTMLSpanElement>(".level > span");
    const width = peer.level === null ? 0 : ((peer.level - MIN_LEVEL_DBOV) / -MIN_LEVEL_DBOV) * 100;
    if (bar) bar.style.width = `${Math.max(0, Math.min(100, Math.round(width)))}%`;
    const status = li.querySelector<HTMLSpanElement>(".mic-state");
    const wanted = peer.mic;
    if (status && status.dataset.mic !== wanted) {
      status.dataset.mic = wanted;
      if (wanted === "none") {
        status.innerHTML = '<span class="note">listening</span>';
        status.title = "Listening only";
      } else {
        status.innerHTML = wanted === "muted" ? MIC_OFF_ICON : MIC_ICON;
        status.title = wanted === "muted" ? "Muted" : "Microphone on";
      }
      status.setAttribute("aria-label", status.title);
    }
  }
  for (const li of existing.values()) li.remove();
}

// --- wiring --------------------------------------------------------------------------

ui.server.textContent = serverUrl;
ui.name.value = params.get("name") ?? localStorage.getItem("dspeak.name") ?? "";
ui.room.value = params.get("room") ?? "lobby";
ui.form.addEventListener("submit", (e) => void onJoinSubmit(e));
ui.mic.addEventListener("click", () => void toggleMic());
ui.deafen.addEventListener("click", () => void toggleDeafen());
ui.leave.addEventListener("click", () => void leave());
ui.enableAudio.addEventListener("click", () => {
  ui.enableAudio.hidden = true;
  for (const audio of ui.audio.querySelectorAll("audio")) void audio.play().catch(() => (ui.enableAudio.hidden = false));
});
// Closing the tab closes the WebSocket anyway; saying so first lets the server clean up at once.
window.addEventListener("pagehide", () => {
  if (connection) void connection.client.close();
});
setState("idle");
(ui.name.value ? ui.room : ui.name).focus();

async function inboundStats(): Promise<InboundSnapshot[]> {
  const m = connection?.membership;
  const room = m?.room;
  if (!m || !room) return [];
  const report = await room.recvTransport.getStats();
  const out: InboundSnapshot[] = [];
  for (const s of report.values()) {
    if (s.type !== "inbound-rtp" || s.kind !== "audio") continue;
    const entry = [...m.listening].find(([, l]) => l.consumer.rtpParameters.encodings?.[0]?.ssrc === s.ssrc);
    if (!entry) continue;
    const [producerId, l] = entry;
    const remote = s.remoteId ? report.get(s.remoteId) : undefined;
    out.push({
      peerId: l.peerId,
      displayName: m.names.get(l.peerId) ?? l.peerId,
      producerId,
      packetsReceived: s.packetsReceived ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      totalAudioEnergy: s.totalAudioEnergy ?? 0,
      totalSamplesDuration: s.totalSamplesDuration ?? 0,
      audioLevel: s.audioLevel ?? 0,
      jitter: s.jitter ?? 0,
      remoteOutbound: remote
        ? {
            packetsSent: remote.packetsSent ?? 0,
            bytesSent: remote.bytesSent ?? 0,
            reportsSent: remote.reportsSent ?? 0,
            remoteTimestamp: remote.remoteTimestamp ?? 0,
          }
        : undefined,
    });
  }
  return out;
}

async function paths(): Promise<PathSnapshot[]> {
  const room = connection?.membership?.room;
  if (!room) return [];
  const out: PathSnapshot[] = [];
  for (const [direction, transport] of [["send", room.sendTransport], ["recv", room.recvTransport]] as const) {
    if (!transport) continue;
    const report = await transport.getStats();
    const stats = [...report.values()];
    const pairId = stats.find((s) => s.type === "transport")?.selectedCandidatePairId;
    const pair = pairId ? report.get(pairId) : stats.find((s) => s.type === "candidate-pair" && s.nominated);
    const local = pair ? report.get(pair.localCandidateId) : undefined;
    const remote = pair ? report.get(pair.remoteCandidateId) : undefined;
    if (!local || !remote) continue;
    out.push({
      direction,
      localProtocol: local.protocol,
      localTcpType: local.tcpType,
      remoteProtocol: remote.protocol,
      remoteAddress: remote.address ?? remote.ip,
      remotePort: remote.port,
    });
  }
  return out;
}

const hooks: VoiceRoomHooks = {
  serverUrl,
  state: () => state,
  selfId: () => connection?.membership.selfId,
  peers: snapshot,
  inboundStats,
  paths,
  timings: () => {
    const m = connection?.membership;
    return {
      joinClickedAt: connection?.joinClickedAt,
      micAt: connection?.micAt,
      connectedAt: connection?.connectedAt,
      joinedAt: m?.joinedAt,
      calls: (connection?.calls ?? []).map((c) => ({ ...c })),
      consumers: (m?.consumerLog ?? []).map((c) => ({ ...c, displayName: m?.names.get(c.peerId) ?? c.peerId })),
    };
  },
  errors: () => [...shownErrors],
  dropConnection: () => {
    for (const socket of sockets) socket.close(4000, "dropped from the page");
  },
  iceRestarts: () => iceRestarts,
};
(window as unknown as { dspeak: VoiceRoomHooks }).dspeak = hooks;
