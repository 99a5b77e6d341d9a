//! The access-token format: JWT (HS256) claims a backend mints for `join`.
//!
//! A backend that shares the server's `--auth-secret` signs these claims; clients
//! pass the token in `join { token }`. Grants default to allowed when absent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Claims of a dspeak access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenClaims {
    /// The user's identity. One identity is in a room at most once: a newer session
    /// with the same identity replaces the older one.
    pub sub: String,
    /// The room the token admits to. An admin token may say `*`: every room.
    pub room: String,
    /// Display name; when present it is used instead of `join`'s `displayName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form data about the user that every peer of the room sees (`PeerInfo.metadata`),
    /// at most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// An admin token: it authorizes the `admin…` methods (for its `room`, or every room
    /// with `*`) and cannot `join`. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// May produce audio (default `true`).
    #[serde(default = "allowed")]
    pub can_publish: bool,
    /// May consume others' audio (default `true`).
    #[serde(default = "allowed")]
    pub can_subscribe: bool,
    /// May `broadcast` (default `true`).
    #[serde(default = "allowed")]
    pub can_broadcast: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

fn allowed() -> bool {
    true
}
