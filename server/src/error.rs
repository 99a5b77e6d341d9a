//! Domain errors of the server core, one enum for every area.
//!
//! These carry what went wrong in words a client can act on. The API layer maps each
//! variant to a stable JSON-RPC error code in one place (`api::to_rpc_error`);
//! [`Error::Internal`] details are logged and never sent.

use dspeak_schema::ErrorCode;

use dspeak_media::MediaError;

/// What can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The method needs a joined room.
    #[error("join a room before calling this method")]
    NotJoined,
    /// `join` while already in a room.
    #[error("already in room '{0}'; call leave first")]
    AlreadyJoined(String),
    /// The room's peer limit is reached.
    #[error("room '{room}' is full ({limit} peers)")]
    RoomFull {
        /// Room name.
        room: String,
        /// Its peer limit.
        limit: usize,
    },
    /// A field or payload is over its size limit.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such entity for this caller.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// Entity kind, e.g. `transport`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A configured limit was exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// Not valid in the entity's current state.
    #[error("{0}")]
    InvalidState(String),
    /// Well-formed params with an invalid value.
    #[error("{0}")]
    InvalidParams(String),
    /// Media parameters the server cannot handle.
    #[error("{0}")]
    Unsupported(String),
    /// The access token is missing or invalid.
    #[error("{0}")]
    Unauthorized(String),
    /// The access token has expired or is not valid yet.
    #[error("{0}")]
    TokenExpired(String),
    /// The server is shutting down, or a worker is gone.
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// A bug or an unexpected failure; the text is logged only.
    #[error("internal error")]
    Internal(String),
}

impl From<MediaError> for Error {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::NotFound { kind, id } => Error::NotFound { kind, id },
            MediaError::InvalidState(m) => Error::InvalidState(m),
            MediaError::InvalidParams(m) => Error::InvalidParams(m),
            MediaError::Unsupported(m) => Error::Unsupported(m),
            MediaError::Unavailable => Error::Unavailable,
            other => Error::Internal(other.to_string()),
        }
    }
}

impl Error {
    /// Shorthand for [`Error::NotFound`].
    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Error::NotFound { kind, id: id.to_string() }
    }

    /// The application error code, or `None` for standard JSON-RPC codes.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::NotJoined => ErrorCode::NotJoined,
            Error::AlreadyJoined(_) => ErrorCode::AlreadyJoined,
            Error::RoomFull { .. } => ErrorCode::RoomFull,
            Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Error::InvalidState(_) => ErrorCode::InvalidState,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::Unavailable => ErrorCode::Unavailable,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::TokenExpired(_) => ErrorCode::TokenExpired,
            Error::InvalidParams(_) | Error::Internal(_) => return None,
        })
    }
}
