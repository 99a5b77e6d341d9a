//! Errors of the media engine: what a request to a router can fail with, and why the
//! engine could not start.
//!
//! The engine knows nothing of JSON-RPC: the server maps each variant to its own
//! error (and so to a stable code) in one place. [`MediaError::Internal`] texts are for
//! logs only.

use std::net::SocketAddr;

/// What can go wrong in the media engine.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// No such transport, producer or consumer for this owner.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// Entity kind, e.g. `transport`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Not valid in the entity's current state (e.g. producing on a recv transport).
    #[error("{0}")]
    InvalidState(String),
    /// Well-formed parameters with an invalid value.
    #[error("{0}")]
    InvalidParams(String),
    /// Media parameters the engine cannot handle (a codec, a kind).
    #[error("{0}")]
    Unsupported(String),
    /// The worker is gone (the engine is stopping).
    #[error("the media engine is stopping or unavailable")]
    Unavailable,
    /// A bug or an unexpected failure; the text is logged only.
    #[error("internal media error: {0}")]
    Internal(String),
    /// The engine's configuration is not usable (at start).
    #[error("{0}")]
    Config(String),
    /// A media socket could not be bound (at start).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other I/O failure at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    /// Shorthand for [`MediaError::NotFound`].
    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        MediaError::NotFound { kind, id: id.to_string() }
    }
}
