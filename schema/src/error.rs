//! The application error codes every client can rely on.
//!
//! jsonrpsee reserves −32000…−32099 and JSON-RPC itself −32700…−32600, so dspeak's own
//! codes live in the 1000–1099 block. Codes are stable: new ones are added, none is
//! ever renumbered or reused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $desc:literal;)*) => {
        /// An application error code (the `code` of a JSON-RPC error object).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every application error code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The numeric JSON-RPC error code.
            pub const fn code(self) -> i32 {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// A stable camelCase name for the code (used by SDKs for constants).
            pub const fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// What the code means, for documentation.
            pub const fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $desc,)* }
            }

            /// The application code with this number, if any.
            pub fn from_code(code: i32) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.code() == code)
            }
        }
    };
}

error_codes! {
    /// The method needs a joined room and the session has not joined one.
    NotJoined = 1000, "notJoined", "The session must join a room before calling this method.";
    /// `join` on a session that is already in a room.
    AlreadyJoined = 1001, "alreadyJoined", "The session is already in a room; call leave first.";
    /// The room has reached its peer limit.
    RoomFull = 1002, "roomFull", "The room has reached its maximum number of peers.";
    /// A payload (broadcast, appData, displayName…) is larger than allowed.
    PayloadTooLarge = 1003, "payloadTooLarge", "A field or payload exceeds its size limit.";
    /// The caller may not do this (other session's resource, missing grant, wrong room).
    Forbidden = 1004, "forbidden", "The caller is not allowed to perform this operation.";
    /// No entity with the given id exists (for this caller).
    NotFound = 1005, "notFound", "No transport, producer, consumer, room or peer with this id exists.";
    /// A configured limit or rate was exceeded.
    LimitExceeded = 1006, "limitExceeded", "A server limit or rate limit was exceeded; retry later or use fewer resources.";
    /// The request conflicts with the entity's current state.
    InvalidState = 1007, "invalidState", "The request is not valid in the current state (e.g. transport already connected).";
    /// The access token is missing, malformed or its signature is invalid.
    Unauthorized = 1008, "unauthorized", "The access token is missing or invalid.";
    /// The access token has expired or is not yet valid.
    TokenExpired = 1009, "tokenExpired", "The access token has expired or is not yet valid.";
    /// The parameters are well-formed JSON of the right shape but describe something the
    /// server cannot do (e.g. an unsupported codec or incompatible RTP capabilities).
    Unsupported = 1010, "unsupported", "The requested media parameters are not supported.";
    /// The server is shutting down or a media worker is unavailable.
    Unavailable = 1011, "unavailable", "The server is shutting down or temporarily unavailable.";
    /// Cluster mode: the room is hosted by another node; `data.url` (`WrongNode`) is the
    /// URL to connect to and join again.
    WrongNode = 1012, "wrongNode", "The room is hosted by another node: connect to data.url and join there.";
    /// `resume` found no session to resume (wrong, used or expired token), or the
    /// events the client missed are no longer buffered; `data.reason` says which.
    ResumeFailed = 1013, "resumeFailed", "The session cannot be resumed (unknown, used or expired token, or missed events no longer buffered); join afresh.";
}

/// The standard JSON-RPC codes dspeak answers with, for documentation and SDKs.
pub const STANDARD_ERROR_CODES: &[(i32, &str, &str)] = &[
    (-32700, "parseError", "The message is not valid JSON."),
    (-32600, "invalidRequest", "The message is not a valid JSON-RPC 2.0 request."),
    (-32601, "methodNotFound", "No method with this name exists."),
    (-32602, "invalidParams", "The params do not match the method's params schema."),
    (-32603, "internalError", "An unexpected server error; details are logged, not sent."),
    (-32005, "batchesNotSupported", "Batch requests are not supported."),
    (-32007, "requestTooBig", "The message exceeds the maximum message size (answered with id null)."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_outside_reserved_ranges() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert!((1000..1100).contains(&c.code()));
            assert_eq!(ErrorCode::from_code(c.code()), Some(*c));
        }
    }
}
