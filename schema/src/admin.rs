//! The admin area: methods an application's backend calls with an admin token, and the
//! webhook events the server POSTs to it.
//!
//! Every admin method takes `token`: a JWT of [`TokenClaims`](crate::auth::TokenClaims)
//! with `admin: true`, for one room or every room (`room: "*"`). They work on the same
//! endpoint as the rest of the API, over WebSocket or one JSON-RPC request per HTTP POST.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, ProducerId};
use crate::rooms::{PeerInfo, ProducerInfo, UnixMillis};

/// Params of `adminListRooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminParams {
    /// An admin access token.
    pub token: String,
}

/// Params of `adminListPeers` and `adminCloseRoom`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminRoomParams {
    /// An admin access token.
    pub token: String,
    /// The room.
    pub room: String,
}

/// Params of `adminRemovePeer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminPeerParams {
    /// An admin access token.
    pub token: String,
    /// The room.
    pub room: String,
    /// The peer.
    pub peer_id: PeerId,
}

/// Params of `adminMutePeer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminMuteParams {
    /// An admin access token.
    pub token: String,
    /// The room.
    pub room: String,
    /// The peer.
    pub peer_id: PeerId,
    /// `true` pauses the peer's producers and keeps it from resuming them; `false`
    /// lets it resume them again.
    pub muted: bool,
}

/// Params of `adminBroadcast`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdminBroadcastParams {
    /// An admin access token.
    pub token: String,
    /// The room.
    pub room: String,
    /// Any JSON value, delivered unchanged in a `broadcast` event with `from: null`.
    pub payload: serde_json::Value,
}

/// One room, as `adminListRooms` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    /// The room's name.
    pub room: String,
    /// How many peers are in it.
    pub peers: u32,
    /// How many producers it has.
    pub producers: u32,
    /// When it was created (its first join), in milliseconds since the Unix epoch.
    pub created_at_ms: UnixMillis,
}

/// Result of `adminListRooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminRooms {
    /// The rooms the token may see, by name.
    pub rooms: Vec<RoomSummary>,
}

/// One peer, as `adminListPeers` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminPeerInfo {
    /// The peer's id.
    pub peer_id: PeerId,
    /// Its display name.
    pub display_name: String,
    /// Its identity (the access token's `sub`); `null` when anonymous.
    pub identity: Option<String>,
    /// Its access token's `metadata`, if any.
    pub metadata: Option<String>,
    /// Its producers.
    pub producers: Vec<ProducerInfo>,
    /// Whether the server muted it (`adminMutePeer`).
    pub server_muted: bool,
}

/// Result of `adminListPeers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminPeers {
    /// The room's peers in join order.
    pub peers: Vec<AdminPeerInfo>,
}

/// What a webhook reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookEventKind {
    /// A room was created (its first peer joined).
    RoomStarted,
    /// A room was removed (its last peer left, or `adminCloseRoom`).
    RoomFinished,
    /// A peer joined a room.
    PeerJoined,
    /// A peer left a room (left, disconnected, was removed, replaced or evicted).
    PeerLeft,
    /// A peer started producing.
    ProducerAdded,
    /// A producer was closed.
    ProducerClosed,
}

/// The JSON body of one webhook request. The request carries the header
/// `X-Dspeak-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body with the server's
/// auth secret. Events of one room arrive in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// What happened.
    pub event: WebhookEventKind,
    /// The room it happened in.
    pub room: String,
    /// The peer concerned (peer and producer events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerInfo>,
    /// The producer concerned (producer events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<ProducerId>,
    /// When it happened, in milliseconds since the Unix epoch.
    pub created_at_ms: UnixMillis,
    /// A unique id of this event (the same on every retry): receivers deduplicate by it.
    pub id: String,
}
