// What the voice-room page exposes on `window.dspeak`, for tests and for poking at it
// from the devtools console. Types only: the browser test imports them too.

/** Where the page is. */
export type PageState = "idle" | "joining" | "joined" | "reconnecting" | "leaving" | "left" | "error";

/** One row of the peer list, as shown. */
export interface PeerSnapshot {
  peerId: string;
  displayName: string;
  /** This page's own peer. */
  self: boolean;
  /** `on`: microphone sending; `muted`: producer paused; `none`: listening only. */
  mic: "on" | "muted" | "none";
  /** Deafened (`selfDeaf`): hears nobody. */
  deafened: boolean;
  /** The speaking ring is lit: the server lists the peer in `audioLevels`. */
  speaking: boolean;
  /** The peer's level in dBov as the server hears it (`audioLevels`), `null` while silent. */
  level: number | null;
  /** The room's active speaker (`activeSpeaker`). */
  activeSpeaker: boolean;
}

/** The `inbound-rtp` stats (from `RTCPeerConnection.getStats()`) of one consumer. */
export interface InboundSnapshot {
  /** The producing peer. */
  peerId: string;
  displayName: string;
  producerId: string;
  packetsReceived: number;
  bytesReceived: number;
  packetsLost: number;
  totalAudioEnergy: number;
  totalSamplesDuration: number;
  audioLevel: number;
  jitter: number;
  /** The server's last sender report on this stream (`remote-outbound-rtp`), if one arrived. */
  remoteOutbound?: { packetsSent: number; bytesSent: number; reportsSent: number; remoteTimestamp: number } | undefined;
}

/** Timestamps (`performance.now()`, ms) of the current join. */
export interface TimingSnapshot {
  /** The Join button was clicked. */
  joinClickedAt: number | undefined;
  /** The microphone was open (or refused). */
  micAt: number | undefined;
  /** The WebSocket was open and the session welcomed. */
  connectedAt: number | undefined;
  /** `joinVoiceRoom` resolved (transports up, microphone produced, existing producers consumed). */
  joinedAt: number | undefined;
  /** The JSON-RPC calls of this connection, in the order sent (the last 200): sent at, round trip in ms. */
  calls: Array<{ method: string; sentAt: number; ms: number | undefined }>;
  /** Every consumer this join created: when, and when its first RTP packet was counted. */
  consumers: Array<{
    peerId: string;
    displayName: string;
    producerId: string;
    consumedAt: number;
    firstPacketAt: number | undefined;
  }>;
}

/** The candidate pair an `RTCPeerConnection` selected for one transport. */
export interface PathSnapshot {
  direction: "send" | "recv";
  /** `udp` or `tcp`, of the local candidate of the selected pair. */
  localProtocol: string;
  /** `active`, `passive` or `so` for TCP candidates. */
  localTcpType: string | undefined;
  remoteProtocol: string;
  remoteAddress: string;
  remotePort: number;
}

/** `window.dspeak`. */
export interface VoiceRoomHooks {
  /** The WebSocket URL the page connects to. */
  readonly serverUrl: string;
  state(): PageState;
  /** This page's peer id, once joined. */
  selfId(): string | undefined;
  /** The peer list as shown (self first). */
  peers(): PeerSnapshot[];
  /** Fresh receive stats of every consumer, from the recv transport's `RTCPeerConnection`. */
  inboundStats(): Promise<InboundSnapshot[]>;
  /** The selected candidate pair of each transport (how media reaches the server). */
  paths(): Promise<PathSnapshot[]>;
  timings(): TimingSnapshot;
  /** Errors shown to the user so far. */
  errors(): string[];
  /** Closes the page's WebSocket as a network change would (the client then resumes). */
  dropConnection(): void;
  /** ICE restarts of the room's transports so far. */
  iceRestarts(): number;
}
