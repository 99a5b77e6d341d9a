//! Newtype identifiers for every entity on the wire.
//!
//! All ids are opaque strings. Server-generated ids are UUID v4 (as mediasoup's
//! are); a [`RoomId`] is the room name the client chose.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an existing id string.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self(s.to_owned()))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// One WebSocket connection (a session).
    SessionId
);
id_type!(
    /// A room, named by the clients that join it.
    RoomId
);
id_type!(
    /// A peer: a session while it is joined to a room.
    PeerId
);
id_type!(
    /// A WebRTC transport of a peer.
    TransportId
);
id_type!(
    /// A producer: one outgoing audio track of a peer.
    ProducerId
);
id_type!(
    /// A consumer: one incoming copy of another peer's producer.
    ConsumerId
);
