//! Errors per area, and the one table of which wire code each of them is.
//!
//! Each area has its own `thiserror` enum, whose messages tell a client what to change.
//! [`AreaError::code`] gives every variant its wire [`Code`] — the stable application
//! [`ErrorCode`], or JSON-RPC's invalid params / internal error — and
//! [`AreaError::codes`] lists every code a type can have; both are generated from one
//! list per type by `codes!`, so they cannot disagree. `api::to_rpc_error` turns them
//! into JSON-RPC error objects (the only place); an internal error's details are logged,
//! never sent. The method table of `dspeak-schema` lists each method's codes, and a test
//! in `api` checks them against the error type of the method's handler.

use std::convert::Infallible;

use dspeak_media::MediaError;
use dspeak_schema::ErrorCode;
use dspeak_schema::events::{ResumeFailReason, SessionEndReason};

/// Where an error lands on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// An application error code (1000–1099) with the error's message.
    App(ErrorCode),
    /// JSON-RPC invalid params (−32602) with the error's message.
    InvalidParams,
    /// JSON-RPC internal error (−32603): the details are logged, never sent.
    Internal,
}

/// An error a request can end with.
pub trait AreaError: std::error::Error + Send + 'static {
    /// The wire code of this error.
    fn code(&self) -> Code;
    /// Every code a value of this type can have.
    fn codes() -> Vec<Code>;
    /// The error object's `data`, for the few errors that carry one (`wrongNode`,
    /// `resumeFailed`).
    fn data(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Implements [`AreaError`] for an error type from one list: `Variant => Code` for a
/// variant with its own code (an `ErrorCode` name, `InvalidParams` or `Internal`), then
/// after a `;` `Variant(Inner)` for a variant that wraps another area error and keeps
/// its code; an optional `, data = path` names a `fn(&Self) -> Option<serde_json::Value>`
/// giving the error object's `data` for the variants that carry one.
/// Structs use `Self => Code`.
macro_rules! codes {
    ($ty:ty { Self => $code:ident }) => {
        impl AreaError for $ty {
            fn code(&self) -> Code {
                codes!(@code $code)
            }
            fn codes() -> Vec<Code> {
                vec![codes!(@code $code)]
            }
        }
    };
    ($ty:ty { $($variant:ident => $code:ident),* $(,)? $(; $($nested:ident($inner:ty)),* $(,)?)? } $(, data = $data:path)?) => {
        impl AreaError for $ty {
            fn code(&self) -> Code {
                match self {
                    $(Self::$variant { .. } => codes!(@code $code),)*
                    $($(Self::$nested(e) => e.code(),)*)?
                }
            }
            fn codes() -> Vec<Code> {
                #[allow(unused_mut)]
                let mut codes = vec![$(codes!(@code $code)),*];
                $($(codes.extend(<$inner as AreaError>::codes());)*)?
                codes
            }
            fn data(&self) -> Option<serde_json::Value> {
                $(if let Some(data) = $data(self) {
                    return Some(data);
                })?
                #[allow(unreachable_patterns)]
                match self {
                    $($(Self::$nested(e) => e.data(),)*)?
                    _ => None,
                }
            }
        }
    };
    (@code InvalidParams) => { Code::InvalidParams };
    (@code Internal) => { Code::Internal };
    (@code $code:ident) => { Code::App(ErrorCode::$code) };
}

impl AreaError for Infallible {
    fn code(&self) -> Code {
        match *self {}
    }
    fn codes() -> Vec<Code> {
        Vec::new()
    }
}

// ---- shared by several areas ----

/// The method needs a joined room.
#[derive(Debug, thiserror::Error)]
#[error("join a room before calling this method")]
pub struct NotJoined;
codes!(NotJoined { Self => NotJoined });

/// No such transport, producer or consumer for this caller.
#[derive(Debug, thiserror::Error)]
#[error("{kind} '{id}' not found")]
pub struct NotFound {
    /// Entity kind, e.g. `transport`.
    pub kind: &'static str,
    /// The id asked for.
    pub id: String,
}
codes!(NotFound { Self => NotFound });

impl NotFound {
    /// A `kind` with this `id` does not exist for the caller.
    pub(crate) fn new(kind: &'static str, id: impl ToString) -> Self {
        NotFound { kind, id: id.to_string() }
    }
}

/// A name or payload is over its size limit.
#[derive(Debug, thiserror::Error)]
#[error("{what} is {size} bytes; the limit is {limit}")]
pub struct TooLarge {
    /// What was too large.
    pub what: &'static str,
    /// Its size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}
codes!(TooLarge { Self => PayloadTooLarge });

// ---- every call ----

/// Errors of the call itself, before a method's handler runs.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The params are not an object of the method's params type.
    #[error("{0}")]
    InvalidParams(String),
    /// The connection sends requests faster than its rate allows.
    #[error("too many requests on this connection; slow down")]
    RateLimited,
    /// The session is closed: its connection closed, or the server is stopping.
    #[error("the server is shutting down or unavailable")]
    Closed,
    /// The call reached no session: a bug.
    #[error("no session for this call")]
    NoSession,
}
codes!(CallError {
    InvalidParams => InvalidParams,
    RateLimited => LimitExceeded,
    Closed => Unavailable,
    NoSession => Internal,
});

// ---- resume ----

/// Errors of `resume`.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// No session has this token (wrong, already used, or its session ended).
    #[error("resume failed: unknown, used or expired resume token; join afresh")]
    UnknownToken,
    /// The events after `lastSeq` are no longer buffered; the session has left its room.
    #[error("resume failed: events after seq {last_seq} are no longer buffered (kept: {kept}); join afresh")]
    EventsLost {
        /// The client's `lastSeq`.
        last_seq: u32,
        /// What the buffer held, e.g. `12..=267`.
        kept: String,
    },
    /// `resume` was not the first call on its connection.
    #[error("resume must be the first call on a new connection")]
    NotFirstCall,
    /// The server is shutting down.
    #[error("the server is shutting down or unavailable")]
    Unavailable,
}
codes!(ResumeError {
    UnknownToken => ResumeFailed,
    EventsLost => ResumeFailed,
    NotFirstCall => InvalidState,
    Unavailable => Unavailable,
}, data = ResumeError::failed_data);

impl ResumeError {
    /// The `data.reason` of a `resumeFailed` error.
    pub fn reason(&self) -> Option<ResumeFailReason> {
        match self {
            ResumeError::UnknownToken => Some(ResumeFailReason::UnknownToken),
            ResumeError::EventsLost { .. } => Some(ResumeFailReason::EventsLost),
            ResumeError::NotFirstCall | ResumeError::Unavailable => None,
        }
    }

    /// The `data` of a `resumeFailed` error: `{ reason }` (schema `ResumeFailed`).
    fn failed_data(&self) -> Option<serde_json::Value> {
        let reason = self.reason()?;
        serde_json::to_value(dspeak_schema::events::ResumeFailed { reason }).ok()
    }
}

// ---- events ----

/// Why `subscribeEvents` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The session already streams its events.
    #[error("this session is already subscribed to its events")]
    AlreadySubscribed,
}
codes!(SubscribeError { AlreadySubscribed => InvalidState });

/// Why a session's event stream ended (after the events queued before).
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    /// The session did not read its events fast enough and left its room.
    #[error("event queue overflow: events were not read fast enough; the session left its room")]
    Evicted,
    /// A newer session of the same identity joined the room.
    #[error("replaced: the same identity joined the room from another session")]
    Replaced,
    /// The admin API removed the session from its room (`adminRemovePeer`).
    #[error("removed: the server removed this peer from the room")]
    Removed,
    /// The admin API closed the session's room (`adminCloseRoom`).
    #[error("removed: the server closed the room")]
    RoomClosed,
}
codes!(StreamEnd { Evicted => LimitExceeded, Replaced => Forbidden, Removed => Forbidden, RoomClosed => Forbidden });

impl StreamEnd {
    /// The reason the error's `data` names (the SDK's `sessionEnded`).
    pub fn reason(&self) -> SessionEndReason {
        match self {
            StreamEnd::Evicted => SessionEndReason::Evicted,
            StreamEnd::Replaced => SessionEndReason::Replaced,
            StreamEnd::Removed => SessionEndReason::Removed,
            StreamEnd::RoomClosed => SessionEndReason::RoomClosed,
        }
    }
}

// ---- rooms: join, leave, broadcast ----

/// Why an access token is not valid at all.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The server needs a token and the call carried none.
    #[error("this server requires an access token (token)")]
    Missing,
    /// The token is malformed or its signature does not match.
    #[error("invalid access token: {0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("the access token has expired")]
    Expired,
    /// The token's `nbf` has not come yet.
    #[error("the access token is not valid yet (nbf)")]
    NotYetValid,
    /// The token lives longer than `--max-token-ttl` allows.
    #[error("the access token is valid for {lifetime} s; this server accepts at most {max} s (--max-token-ttl)")]
    TooLong {
        /// The token's lifetime, from `iat` (or `nbf`, or now) to `exp`, in seconds.
        lifetime: i64,
        /// The limit, in seconds.
        max: u64,
    },
}
codes!(TokenError {
    Missing => Unauthorized,
    Invalid => Unauthorized,
    Expired => TokenExpired,
    NotYetValid => TokenExpired,
    TooLong => Unauthorized,
});

/// Why an access token does not admit to a room.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token admits to another room.
    #[error("the access token admits to room '{granted}', not '{asked}'")]
    WrongRoom {
        /// The token's room.
        granted: String,
        /// The room asked for.
        asked: String,
    },
    /// An admin token: it authorizes the admin methods, not joining.
    #[error("an admin token cannot join a room; mint a user token")]
    AdminToken,
    /// The token's `metadata` is over its size limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The token is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
}
codes!(AuthError { WrongRoom => Forbidden, AdminToken => Forbidden; TooLarge(TooLarge), Token(TokenError) });

// ---- admin ----

/// Why a call of an admin method is not authorized.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// The server runs without `--auth-secret`, so no admin token can be checked.
    #[error("the admin API needs the server to run with --auth-secret")]
    Disabled,
    /// A valid token without `admin: true`.
    #[error("this access token is not an admin token (admin: true)")]
    NotAdmin,
    /// The token is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
}
codes!(AdminAuthError { Disabled => Unauthorized, NotAdmin => Unauthorized; Token(TokenError) });

/// Errors of the admin methods that act on one room.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin token is for another room.
    #[error("the admin token is for room '{granted}', not '{asked}'")]
    WrongRoom {
        /// The token's room.
        granted: String,
        /// The room asked for.
        asked: String,
    },
    /// No such room, or no such peer in it.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The call is not authorized.
    #[error(transparent)]
    Auth(#[from] AdminAuthError),
    /// Cluster mode: the room's node answered that the room or peer does not exist.
    #[error("{0}")]
    RemoteNotFound(String),
    /// Cluster mode: the room's node (or Redis) did not answer the forwarded call.
    #[error("room '{0}' is hosted by another node, which did not answer; retry later")]
    Unreachable(String),
    /// Cluster mode: the room's node answered with an unexpected error; logged.
    #[error("forwarded admin call: {0}")]
    Remote(String),
}
codes!(AdminError {
    WrongRoom => Forbidden,
    RemoteNotFound => NotFound,
    Unreachable => Unavailable,
    Remote => Internal;
    NotFound(NotFound),
    Auth(AdminAuthError),
});

impl From<TokenError> for AdminError {
    fn from(e: TokenError) -> Self {
        AdminError::Auth(e.into())
    }
}

/// Errors of `adminBroadcast`.
#[derive(Debug, thiserror::Error)]
pub enum AdminBroadcastError {
    /// The payload is over its size limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The room or the call is wrong.
    #[error(transparent)]
    Admin(#[from] AdminError),
}
codes!(AdminBroadcastError { ; TooLarge(TooLarge), Admin(AdminError) });

/// Why a room refused a member.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The server has its maximum number of rooms.
    #[error("the server has its maximum of {limit} rooms")]
    TooManyRooms {
        /// The room limit.
        limit: usize,
    },
    /// The room has its maximum number of peers.
    #[error("room '{room}' is full ({limit} peers)")]
    Full {
        /// Room name.
        room: String,
        /// Its peer limit.
        limit: usize,
    },
    /// The room's peers and producers would not fit in `join`'s answer.
    #[error(
        "room '{room}' lists {size} bytes of peers and producers, more than one answer may hold ({limit}); \
         the server's --max-message-bytes is too small for this room"
    )]
    ListingTooLarge {
        /// Room name.
        room: String,
        /// The listing's size as JSON.
        size: usize,
        /// What fits.
        limit: usize,
    },
}
codes!(RoomError { TooManyRooms => LimitExceeded, Full => RoomFull, ListingTooLarge => PayloadTooLarge });

/// Errors of `join`.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The session is already in a room.
    #[error("already in room '{0}'; call leave first")]
    AlreadyJoined(String),
    /// The room or display name is empty.
    #[error("{0} must not be empty")]
    EmptyName(&'static str),
    /// The room or display name holds a control character.
    #[error("{0} must not contain control characters")]
    ControlChar(&'static str),
    /// The room or display name is too long.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The token does not admit to the room.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The room (or the server) is full.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The server is draining before a restart and takes no new joins.
    #[error("the server is draining for a restart and accepts no new joins; connect to another server or retry later")]
    Draining,
    /// Cluster mode: the room is elsewhere, or cannot be placed now.
    #[error(transparent)]
    Cluster(#[from] PlacementError),
}
codes!(JoinError {
    AlreadyJoined => AlreadyJoined,
    EmptyName => InvalidParams,
    ControlChar => InvalidParams,
    Draining => Unavailable;
    TooLarge(TooLarge),
    Auth(AuthError),
    Room(RoomError),
    Cluster(PlacementError),
});

// ---- cluster ----

/// Cluster mode: why a room cannot be joined on this node.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Another node hosts the room; `data.url` is its `--node-url`.
    #[error("room '{room}' is hosted by another node: connect to {url} and join there")]
    WrongNode {
        /// The room asked for.
        room: String,
        /// The owner's `--node-url`.
        url: String,
    },
    /// Redis cannot be reached, so a room not open on this node cannot be placed.
    #[error(
        "cannot place room '{0}': the cluster's Redis is unreachable; rooms already open on this node keep \
         working, new rooms are refused until it is back; retry in a few seconds"
    )]
    RedisDown(String),
    /// No live node takes new rooms (all draining).
    #[error("cannot place room '{0}': no node of the cluster takes new rooms (all draining); retry later")]
    NoNode(String),
}

impl AreaError for PlacementError {
    fn code(&self) -> Code {
        match self {
            PlacementError::WrongNode { .. } => Code::App(ErrorCode::WrongNode),
            PlacementError::RedisDown(_) | PlacementError::NoNode(_) => Code::App(ErrorCode::Unavailable),
        }
    }
    fn codes() -> Vec<Code> {
        vec![Code::App(ErrorCode::WrongNode), Code::App(ErrorCode::Unavailable)]
    }
    fn data(&self) -> Option<serde_json::Value> {
        match self {
            PlacementError::WrongNode { url, .. } => {
                serde_json::to_value(dspeak_schema::rooms::WrongNode { url: url.clone() }).ok()
            }
            _ => None,
        }
    }
}

/// Errors of `broadcast`.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The token does not grant `canBroadcast`.
    #[error("the access token does not grant canBroadcast")]
    NotGranted,
    /// Over the session's broadcast rate.
    #[error("at most {rate} broadcasts per second")]
    RateLimited {
        /// Broadcasts per second.
        rate: u32,
    },
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// The payload is over its size limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}
codes!(BroadcastError {
    NotGranted => Forbidden,
    RateLimited => LimitExceeded;
    NotJoined(NotJoined),
    TooLarge(TooLarge),
});

// ---- media engine ----

/// The media engine's refusal (`dspeak_media::MediaError`), as `produce` and `consume`
/// answer it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// No such transport, producer or consumer of the caller on the worker.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Not valid in the entity's current state (MID reused, wrong direction…).
    #[error("{0}")]
    InvalidState(String),
    /// RTP parameters with a missing or inconsistent field.
    #[error("{0}")]
    InvalidParams(String),
    /// Well-formed, but a kind, codec or capability the router does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// str0m refused something it should not have; logged only.
    #[error("media engine: {0}")]
    Internal(String),
}
codes!(EngineError {
    Unavailable => Unavailable,
    InvalidState => InvalidState,
    InvalidParams => InvalidParams,
    Unsupported => Unsupported,
    Internal => Internal;
    NotFound(NotFound),
});

impl From<MediaError> for EngineError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Unavailable => EngineError::Unavailable,
            MediaError::NotFound { kind, id } => EngineError::NotFound(NotFound { kind, id }),
            MediaError::InvalidState(m) => EngineError::InvalidState(m),
            MediaError::InvalidParams(m) => EngineError::InvalidParams(m),
            MediaError::Unsupported(m) => EngineError::Unsupported(m),
            other => EngineError::Internal(other.to_string()),
        }
    }
}

/// `From<MediaError>` for a method's error type that can answer only some of the
/// engine's refusals: each listed [`EngineError`] variant keeps its meaning (the same
/// variant name on both sides); anything else is a bug for that method and becomes its
/// `Internal` (the text is logged only). One narrowing per method keeps the `api!`
/// errors column exact.
macro_rules! narrow_engine_error {
    ($(#[$doc:meta])* $ty:ident { $($variant:ident $(($inner:ident))?),* $(,)? }) => {
        impl From<MediaError> for $ty {
            $(#[$doc])*
            fn from(e: MediaError) -> Self {
                match EngineError::from(e) {
                    $(EngineError::$variant $(($inner))? => $ty::$variant $(($inner))?,)*
                    other => $ty::Internal(other.to_string()),
                }
            }
        }
    };
}

// ---- transports ----

/// Errors of `createTransport`.
#[derive(Debug, thiserror::Error)]
pub enum CreateTransportError {
    /// The token grants neither `canPublish` (for a send transport) nor `canSubscribe`
    /// (for a recv transport).
    #[error("the access token does not grant {0}")]
    NotGranted(&'static str),
    /// The session holds its maximum number of transports.
    #[error("a session may hold at most {max} transports")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// The engine could not build the transport; logged only.
    #[error("{0}")]
    Internal(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
}
codes!(CreateTransportError {
    NotGranted => Forbidden,
    TooMany => LimitExceeded,
    Unavailable => Unavailable,
    Internal => Internal;
    NotJoined(NotJoined),
});

narrow_engine_error!(
    /// A transport being created cannot be missing or in a wrong state: the engine
    /// saying so is a bug, answered as an internal error.
    CreateTransportError { Unavailable }
);

/// Errors of `connectTransport` and `restartIce`.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The DTLS parameters are invalid (a fingerprint missing or malformed).
    #[error("{0}")]
    InvalidParams(String),
    /// Not valid in the transport's state (e.g. already connected).
    #[error("{0}")]
    InvalidState(String),
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// The engine answered what these commands never do; logged only.
    #[error("{0}")]
    Internal(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// Not one of the session's transports.
    #[error(transparent)]
    NotFound(#[from] NotFound),
}
codes!(TransportError {
    InvalidParams => InvalidParams,
    InvalidState => InvalidState,
    Unavailable => Unavailable,
    Internal => Internal;
    NotJoined(NotJoined),
    NotFound(NotFound),
});

narrow_engine_error!(
    /// Connecting and restarting ICE involve no codec: an engine saying so is a bug,
    /// answered as an internal error.
    TransportError { Unavailable, NotFound(e), InvalidState(m), InvalidParams(m) }
);

// ---- producers ----

/// Errors of `produce`.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The token does not grant `canPublish`.
    #[error("the access token does not grant canPublish")]
    NotGranted,
    /// The server muted the peer.
    #[error("the server muted this peer; it cannot produce until it is unmuted")]
    ServerMuted,
    /// `produce` on a recv transport.
    #[error("transport '{0}' is a recv transport; produce needs a send transport")]
    NotSendTransport(String),
    /// The session holds its maximum number of producers.
    #[error("a session may hold at most {max} producers")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A string that other clients would receive (in their consumer parameters, and so
    /// in their SDP) is not plain: it must be printable ASCII without `;`, and short.
    #[error("{0} must be printable ASCII without ';', at most 256 characters")]
    UnsafeString(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// Not one of the session's transports.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// `appData` is over its size limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The engine refused (the RTP parameters, or the transport's state).
    #[error(transparent)]
    Media(#[from] EngineError),
}
codes!(ProduceError {
    NotGranted => Forbidden,
    ServerMuted => Forbidden,
    NotSendTransport => InvalidState,
    TooMany => LimitExceeded,
    UnsafeString => InvalidParams;
    NotJoined(NotJoined),
    NotFound(NotFound),
    TooLarge(TooLarge),
    Media(EngineError),
});

impl From<MediaError> for ProduceError {
    fn from(e: MediaError) -> Self {
        ProduceError::Media(e.into())
    }
}

/// Errors of `pauseProducer`, `resumeProducer` and `closeProducer`.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// `resumeProducer` while the server muted the peer.
    #[error("the server muted this peer; its producers stay paused until it is unmuted")]
    ServerMuted,
    /// `resumeProducer` while the peer muted itself.
    #[error("this peer is self-muted; unmute with setVoiceState {{\"selfMute\": false}}")]
    SelfMuted,
    /// The producer belongs to another peer.
    #[error("producer '{0}' belongs to another peer")]
    NotOwner(String),
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// The engine answered what these commands never do; logged only.
    #[error("{0}")]
    Internal(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// No such producer in the room.
    #[error(transparent)]
    NotFound(#[from] NotFound),
}
codes!(ProducerError {
    ServerMuted => Forbidden,
    SelfMuted => Forbidden,
    NotOwner => Forbidden,
    Unavailable => Unavailable,
    Internal => Internal;
    NotJoined(NotJoined),
    NotFound(NotFound),
});

narrow_engine_error!(
    /// Pausing, resuming or closing a producer checks no state: an engine saying so is
    /// a bug, answered as an internal error.
    ProducerError { Unavailable, NotFound(e) }
);

/// Errors of `setVoiceState`.
#[derive(Debug, thiserror::Error)]
pub enum VoiceStateError {
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// The engine answered what pausing never does; logged only.
    #[error("{0}")]
    Internal(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
}
codes!(VoiceStateError {
    Unavailable => Unavailable,
    Internal => Internal;
    NotJoined(NotJoined),
});

narrow_engine_error!(
    /// Pausing the session's own producers and consumers checks no state: anything
    /// but a missing worker is a bug, answered as an internal error.
    VoiceStateError { Unavailable }
);

// ---- consumers ----

/// Errors of `consume`.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The token does not grant `canSubscribe`.
    #[error("the access token does not grant canSubscribe")]
    NotGranted,
    /// `consume` on a send transport.
    #[error("transport '{0}' is a send transport; consume needs a recv transport")]
    NotRecvTransport(String),
    /// The producer is the caller's own.
    #[error("a peer cannot consume its own producer")]
    OwnProducer,
    /// The session already consumes this producer.
    #[error("this session already consumes producer '{0}'")]
    AlreadyConsuming(String),
    /// The session holds its maximum number of consumers.
    #[error("a session may hold at most {max} consumers")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// No such transport of the session, or producer in the room.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The engine refused (the capabilities, or the transport's state).
    #[error(transparent)]
    Media(#[from] EngineError),
}
codes!(ConsumeError {
    NotGranted => Forbidden,
    NotRecvTransport => InvalidState,
    OwnProducer => Forbidden,
    AlreadyConsuming => InvalidState,
    TooMany => LimitExceeded;
    NotJoined(NotJoined),
    NotFound(NotFound),
    Media(EngineError),
});

impl From<MediaError> for ConsumeError {
    fn from(e: MediaError) -> Self {
        ConsumeError::Media(e.into())
    }
}

/// Errors of `pauseConsumer`, `resumeConsumer`, `closeConsumer` and `getStats`.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The worker is gone (the server is stopping).
    #[error("the server is shutting down or unavailable")]
    Unavailable,
    /// The engine answered what these commands never do; logged only.
    #[error("{0}")]
    Internal(String),
    /// The session is not in a room.
    #[error(transparent)]
    NotJoined(#[from] NotJoined),
    /// Not one of the session's consumers (or transports, producers for `getStats`).
    #[error(transparent)]
    NotFound(#[from] NotFound),
}
codes!(ConsumerError { Unavailable => Unavailable, Internal => Internal; NotJoined(NotJoined), NotFound(NotFound) });

narrow_engine_error!(
    /// These commands check no state: an engine saying so is a bug, answered as an
    /// internal error.
    ConsumerError { Unavailable, NotFound(e) }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_error_keeps_its_code_and_codes_include_the_wrapped_ones() {
        let e = JoinError::Auth(AuthError::Token(TokenError::Expired));
        assert_eq!(e.code(), Code::App(ErrorCode::TokenExpired));
        assert_eq!(JoinError::EmptyName("room").code(), Code::InvalidParams);
        let codes = JoinError::codes();
        for c in [ErrorCode::AlreadyJoined, ErrorCode::Unauthorized, ErrorCode::RoomFull, ErrorCode::PayloadTooLarge] {
            assert!(codes.contains(&Code::App(c)), "{c:?} in {codes:?}");
        }
        assert!(!codes.contains(&Code::App(ErrorCode::NotJoined)));
    }

    #[test]
    fn narrowed_media_errors_keep_unavailable_and_not_found() {
        assert!(matches!(ConsumerError::from(MediaError::Unavailable), ConsumerError::Unavailable));
        let e = ProducerError::from(MediaError::NotFound { kind: "producer", id: "p".into() });
        assert_eq!(e.code(), Code::App(ErrorCode::NotFound));
        assert_eq!(e.to_string(), "producer 'p' not found");
        let e = CreateTransportError::from(MediaError::InvalidState("x".into()));
        assert_eq!(e.code(), Code::Internal);
    }
}
