//! `dspeak-schema`: the wire contract of the dspeak signaling API.
//!
//! Everything a client and the server must agree on lives here, and nothing else: no
//! I/O, no engine. The server implements the methods; the typed Rust client, the
//! exported JSON Schemas / OpenRPC document and the TypeScript SDK are derived from it.
//!
//! Layout:
//! - [`api`]: the method table ([`METHODS`], [`EVENTS`]) and the [`Method`] trait.
//! - [`rooms`]: params/results of the session and room area.
//! - [`media`]: params/results of transports, producers and consumers.
//! - [`admin`]: params/results of the admin methods, and the webhook events.
//! - [`ortc`]: mediasoup-shaped RTP, ICE and DTLS types.
//! - [`events`]: the [`Event`] stream.
//! - [`error`]: the stable application [`ErrorCode`]s.
//! - [`ids`]: newtype ids.
//! - [`auth`]: the access-token claims backends mint.
//! - [`export`]: the JSON Schema bundle and OpenRPC document built from all of the above.
//! - `client` (feature `client`): typed calls on a jsonrpsee client.
//!
//! Without features the crate needs serde and schemars only: a backend that mints
//! tokens ([`auth::TokenClaims`]) or handles the wire types pulls in no jsonrpsee.
//! `examples/backend.rs` mints tokens and calls the API with the typed client.

pub mod admin;
pub mod api;
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod events;
pub mod export;
pub mod ids;
pub mod media;
pub mod ortc;
pub mod rooms;

pub use api::{Area, EVENTS, METHODS, Method, MethodInfo, SubscriptionInfo, methods};
pub use error::ErrorCode;
pub use events::Event;
pub use ids::*;

/// The server's name, as sent in `welcome`.
pub const SERVER_NAME: &str = "dspeak";
