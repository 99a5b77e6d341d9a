//! The per-session event stream (`subscribeEvents`).
//!
//! [`Event`] is one internally tagged enum: `{"type": "peerJoined", …}`. Clients must
//! ignore event types they do not know, so new variants can be added without breaking
//! them; existing variants only ever gain optional fields.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConsumerId, PeerId, ProducerId, SessionId};
use crate::ortc::MediaKind;
use crate::rooms::UnixMillis;

/// One event pushed to a session. On the wire every event also carries its `seq`
/// (see [`SequencedEvent`]); the schema lists it on every variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
#[schemars(transform = with_seq)]
pub enum Event {
    /// Always the first event of a stream.
    Welcome {
        /// This session's id.
        session_id: SessionId,
        /// Server name, `dspeak`.
        server: String,
        /// Server version.
        version: String,
        /// The secret that resumes this session on a new connection (`resume`) after
        /// its connection drops without `leave`. Single use: `resume` answers with the
        /// next one, and every `welcome` carries the current one.
        resume_token: String,
    },
    /// Sent to a subscribed session for each of its `ping`s.
    Pong {
        /// Server time in milliseconds since the Unix epoch.
        timestamp: UnixMillis,
    },
    /// A message another peer of the room (or the server's admin API) broadcast.
    Broadcast {
        /// The sending peer; `null` when the server sent it (`adminBroadcast`).
        from: Option<PeerId>,
        /// The payload as sent.
        payload: serde_json::Value,
    },
    /// A peer joined the room.
    PeerJoined {
        /// The new peer.
        peer_id: PeerId,
        /// Its display name.
        display_name: String,
        /// Its identity (the access token's `sub`); `null` when anonymous.
        identity: Option<String>,
        /// Its access token's `metadata`, if any.
        metadata: Option<String>,
    },
    /// A peer's state changed: the server muted or unmuted it (`adminMutePeer`). The
    /// peer itself gets it too.
    PeerUpdated {
        /// The peer.
        peer_id: PeerId,
        /// Whether the server muted it: its producers are paused and it cannot resume
        /// them until unmuted.
        server_muted: bool,
    },
    /// A peer's voice state changed (`setVoiceState`, or `adminMutePeer`). Every peer
    /// of the room gets it, the peer itself too.
    VoiceStateUpdated {
        /// The peer.
        peer_id: PeerId,
        /// Whether it muted itself.
        self_mute: bool,
        /// Whether it deafened itself.
        self_deaf: bool,
        /// Whether the server muted it.
        server_muted: bool,
    },
    /// A peer left the room (or its connection closed).
    PeerLeft {
        /// The peer that left.
        peer_id: PeerId,
    },
    /// A peer of the room started producing.
    ProducerAdded {
        /// The producing peer.
        peer_id: PeerId,
        /// The new producer.
        producer_id: ProducerId,
        /// Its media kind.
        kind: MediaKind,
    },
    /// A producer of the room was closed.
    ProducerClosed {
        /// The producing peer.
        peer_id: PeerId,
        /// The closed producer.
        producer_id: ProducerId,
    },
    /// A producer of the room was paused (muted).
    ProducerPaused {
        /// The producing peer.
        peer_id: PeerId,
        /// The paused producer.
        producer_id: ProducerId,
    },
    /// A producer of the room was resumed (unmuted).
    ProducerResumed {
        /// The producing peer.
        peer_id: PeerId,
        /// The resumed producer.
        producer_id: ProducerId,
    },
    /// One of this session's consumers was closed by the server (its producer closed).
    ConsumerClosed {
        /// The closed consumer.
        consumer_id: ConsumerId,
        /// The producer it consumed.
        producer_id: ProducerId,
    },
    /// The server is draining before a restart: calls in progress go on until the
    /// deadline, new `join`s are refused with `unavailable`. Clients should finish
    /// or move to another server before the deadline.
    ServerDraining {
        /// When the server closes what is left, in milliseconds since the Unix epoch.
        deadline_ms: UnixMillis,
    },
    /// A peer's connection dropped without `leave`: it stays in the room (its media
    /// keeps flowing) for the server's resume grace period, then leaves (`peerLeft`)
    /// unless it resumes (`peerReconnected`).
    PeerReconnecting {
        /// The peer.
        peer_id: PeerId,
    },
    /// A peer that was reconnecting resumed its session on a new connection.
    PeerReconnected {
        /// The peer.
        peer_id: PeerId,
    },
    /// The room's active speaker changed (from the producers' RFC 6464 audio levels: the
    /// loudest producer above -50 dBov, kept at least a second, replaced by one louder
    /// by 6 dB or when it stops speaking; paused producers never speak). Every peer of
    /// the room gets it, the speaker too.
    ActiveSpeaker {
        /// The speaking peer.
        peer_id: PeerId,
        /// Its producer.
        producer_id: ProducerId,
    },
    /// The producers speaking now, loudest first: at most every 200 ms and only while
    /// someone speaks (off with the server's `--speaker-events speaker|off`). Every peer
    /// of the room gets it.
    AudioLevels {
        /// Each speaking producer's level.
        levels: Vec<AudioLevel>,
    },
}

/// One producer's level in `audioLevels`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AudioLevel {
    /// The producing peer.
    pub peer_id: PeerId,
    /// The producer.
    pub producer_id: ProducerId,
    /// Its level in dBov, smoothed over ~200 ms: from -50 (quiet) to 0 (loudest).
    pub level: f64,
}

impl Event {
    /// The `type` tag of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Welcome { .. } => "welcome",
            Event::Pong { .. } => "pong",
            Event::Broadcast { .. } => "broadcast",
            Event::PeerJoined { .. } => "peerJoined",
            Event::PeerLeft { .. } => "peerLeft",
            Event::PeerUpdated { .. } => "peerUpdated",
            Event::VoiceStateUpdated { .. } => "voiceStateUpdated",
            Event::ProducerAdded { .. } => "producerAdded",
            Event::ProducerClosed { .. } => "producerClosed",
            Event::ProducerPaused { .. } => "producerPaused",
            Event::ProducerResumed { .. } => "producerResumed",
            Event::ConsumerClosed { .. } => "consumerClosed",
            Event::ServerDraining { .. } => "serverDraining",
            Event::PeerReconnecting { .. } => "peerReconnecting",
            Event::PeerReconnected { .. } => "peerReconnected",
            Event::ActiveSpeaker { .. } => "activeSpeaker",
            Event::AudioLevels { .. } => "audioLevels",
        }
    }
}

/// One item of the event stream: an [`Event`] with its sequence number, as one flat
/// object (`{"seq": 7, "type": "peerJoined", …}`). Clients that do not know `seq`
/// read the event as before.
///
/// The events of a session are numbered from 1 in the order they were queued; a
/// resumed session goes on with the same numbers, and `resume`'s `lastSeq` is the
/// last number the client got. `welcome` and `serverDraining` describe the stream
/// itself, not the session: they carry `seq: 0`, are sent again on every new stream
/// and are never replayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequencedEvent {
    /// The event's number in its session (0: a stream's own `welcome` or
    /// `serverDraining`).
    pub seq: u32,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Adds the required `seq` member to every variant of [`Event`]'s schema: the wire
/// shape of [`SequencedEvent`], under the name `Event`.
fn with_seq(schema: &mut schemars::Schema) {
    let seq = serde_json::json!({
        "description": "The event's number in its session, from 1; 0 for a stream's own `welcome` and `serverDraining` (never replayed).",
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
    });
    let Some(variants) = schema.get_mut("oneOf").and_then(|v| v.as_array_mut()) else { return };
    for variant in variants {
        if let Some(properties) = variant.get_mut("properties").and_then(|p| p.as_object_mut()) {
            properties.insert("seq".to_owned(), seq.clone());
        }
        if let Some(required) = variant.get_mut("required").and_then(|r| r.as_array_mut()) {
            required.push("seq".into());
        }
    }
}

/// Why `resume` failed: the `data.reason` of its `resumeFailed` error. The client
/// then joins afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResumeFailReason {
    /// No session has this token: it is wrong, was already used, or its session
    /// ended (the grace period passed, or it left or was removed).
    UnknownToken,
    /// Events after `lastSeq` are no longer in the session's replay buffer (or
    /// `lastSeq` is ahead of the session's last event).
    EventsLost,
}

/// The `data` of a `resumeFailed` error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeFailed {
    /// Why the session could not be resumed.
    pub reason: ResumeFailReason,
}

/// Why the server ended a session's event stream: the `data.reason` of the error the
/// stream ends with. The session left its room; its connection stays open and it may
/// subscribe and join again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SessionEndReason {
    /// A newer session of the same identity joined the room (`forbidden`).
    Replaced,
    /// The admin API removed the peer (`forbidden`, message `removed: …`).
    Removed,
    /// The session did not read its events fast enough (`limitExceeded`).
    Evicted,
    /// The admin API closed the room (`forbidden`, message `removed: …`).
    RoomClosed,
}

/// The `data` of the error that ends an event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionEnded {
    /// Why the stream ended.
    pub reason: SessionEndReason,
}
