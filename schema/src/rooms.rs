//! Params and results of the session/room area: `ping`, `join`, `leave`, `broadcast`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, ProducerId, SessionId};
use crate::ortc::{MediaKind, RtpCapabilities};

/// Params of methods that take none. On the wire: missing, `{}` or `[]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoParams {}

/// An empty result object, `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// Milliseconds since the Unix epoch (always a safe JavaScript integer).
pub type UnixMillis = i64;

/// The constant `"pong"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PongType {
    /// `pong`.
    #[default]
    Pong,
}

/// Result of `ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PingResult {
    /// Always `"pong"`.
    #[serde(rename = "type")]
    pub kind: PongType,
    /// Server time in milliseconds since the Unix epoch.
    pub timestamp: UnixMillis,
}

/// Params of `join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinParams {
    /// Room name (1–64 characters). The room is created on first join.
    pub room: String,
    /// The name other peers see (1–64 characters).
    pub display_name: String,
    /// Access token, when the server requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Another peer of the room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// The peer's id.
    pub peer_id: PeerId,
    /// The peer's display name.
    pub display_name: String,
    /// Its access token's identity (`sub`); `null` for an anonymous peer.
    pub identity: Option<String>,
    /// Its access token's `metadata` claim, if any.
    pub metadata: Option<String>,
    /// Whether it muted itself (`setVoiceState`).
    #[serde(default)]
    pub self_mute: bool,
    /// Whether it deafened itself (`setVoiceState`): it receives no audio.
    #[serde(default)]
    pub self_deaf: bool,
    /// Whether the server muted it (`adminMutePeer`).
    #[serde(default)]
    pub server_muted: bool,
}

/// Params of `setVoiceState`: each flag given is set, a missing one is left as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetVoiceStateParams {
    /// Mute: every producer of the peer is paused (the room gets `producerPaused`);
    /// unmuting resumes them unless the server muted the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_mute: Option<bool>,
    /// Deafen: every consumer of the peer is paused on the server (no packets are
    /// sent to it) until undeafened; the consumers it resumed then resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_deaf: Option<bool>,
}

/// A peer's voice state, the result of `setVoiceState`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoiceState {
    /// Whether it muted itself.
    pub self_mute: bool,
    /// Whether it deafened itself.
    pub self_deaf: bool,
    /// Whether the server muted it (`adminMutePeer`).
    pub server_muted: bool,
}

/// A producer that exists in the room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerInfo {
    /// The producing peer.
    pub peer_id: PeerId,
    /// The producer's id (pass it to `consume`).
    pub producer_id: ProducerId,
    /// Its media kind.
    pub kind: MediaKind,
    /// Whether it is paused (muted).
    pub paused: bool,
}

/// Result of `join`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinResult {
    /// This session's peer id in the room.
    pub peer_id: PeerId,
    /// The session id (also sent in `welcome`).
    pub session_id: SessionId,
    /// This session's identity (the access token's `sub`); `null` when anonymous.
    pub identity: Option<String>,
    /// This session's `metadata` (from the access token), if any.
    pub metadata: Option<String>,
    /// The other peers already in the room.
    pub peers: Vec<PeerInfo>,
    /// The producers already in the room.
    pub producers: Vec<ProducerInfo>,
    /// The room router's RTP capabilities (for `device.load()`).
    pub router_rtp_capabilities: RtpCapabilities,
}

/// Params of `broadcast`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastParams {
    /// Any JSON value, delivered unchanged; its serialized size is capped by the server.
    pub payload: serde_json::Value,
}

/// Result of `broadcast`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastResult {
    /// How many other peers the event was queued for.
    pub delivered: u32,
}

/// Params of `resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeParams {
    /// The session's current resume token (from `welcome`, or from the last `resume`).
    pub resume_token: String,
    /// The `seq` of the last event the client received (0 if none).
    pub last_seq: u32,
}

/// Result of `resume`: the session is attached to this connection. Its next
/// `subscribeEvents` stream starts with `welcome` (with the new token), then every
/// event after `lastSeq`, in order, then live events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeResult {
    /// The resumed session's id (as in `welcome`).
    pub session_id: SessionId,
    /// Its peer id in the room (unchanged).
    pub peer_id: PeerId,
    /// Its room.
    pub room: String,
    /// The next resume token; the one just used is no longer valid.
    pub resume_token: String,
    /// How many missed events the next event stream replays after `welcome`.
    pub replayed: u32,
}

/// The `data` of a `wrongNode` error (cluster mode): the room is hosted by another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WrongNode {
    /// The WebSocket URL of the node that hosts the room (its `--node-url`): connect
    /// there and call `join` again.
    pub url: String,
}
