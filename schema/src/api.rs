//! The API: every JSON-RPC method, its params and result types, as one table.
//!
//! [`api!`](crate::api) below is the single source of truth. For each method it
//! generates a marker type implementing [`Method`] (used by the server to register
//! handlers and by the typed client to call them), an entry in [`METHODS`] (read by the
//! schema export and the SDK generator), and a typed call on
//! [`DspeakClient`](crate::client::DspeakClient).
//!
//! The last column lists the application errors ([`ErrorCode`]s) a method can answer
//! with besides [`EVERY_METHOD_ERRORS`]; the OpenRPC export reads it, and the server
//! checks it against the error types of its handlers.
//!
//! On the wire `params` is always the params struct itself, as a JSON object.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ErrorCode;
use crate::events::Event;
#[allow(unused_imports)]
use crate::{admin::*, media::*, ortc::*, rooms::*};

/// One JSON-RPC method of the API.
pub trait Method {
    /// The method name on the wire.
    const NAME: &'static str;
    /// The API area it belongs to.
    const AREA: Area;
    /// The application errors it can answer with, besides [`EVERY_METHOD_ERRORS`].
    const ERRORS: &'static [ErrorCode];
    /// Its params object.
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// Its result.
    type Result: Serialize + DeserializeOwned + JsonSchema + Clone + Send + 'static;
}

/// API areas, one per file of the server's API layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Session and room: ping, join, leave, broadcast, events.
    Rooms,
    /// WebRTC transports and router capabilities.
    Transports,
    /// Producers (sending audio).
    Producers,
    /// Consumers (receiving audio) and stats.
    Consumers,
    /// The admin API for an application's backend (admin token).
    Admin,
}

/// Machine-readable description of one method.
#[derive(Clone, Copy, Debug)]
pub struct MethodInfo {
    /// Method name on the wire.
    pub name: &'static str,
    /// API area.
    pub area: Area,
    /// One-line summary (the doc comment of the table entry).
    pub summary: &'static str,
    /// Whether the method takes no params (missing, `{}` or `[]`).
    pub no_params: bool,
    /// The application errors it can answer with, besides [`EVERY_METHOD_ERRORS`].
    pub errors: &'static [ErrorCode],
    /// JSON Schema of the params (use a deserialize-contract generator).
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    /// JSON Schema of the result (use a serialize-contract generator).
    pub result_schema: fn(&mut SchemaGenerator) -> Schema,
}

/// Machine-readable description of the event subscription.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionInfo {
    /// Method that opens the stream.
    pub subscribe: &'static str,
    /// Method that closes it.
    pub unsubscribe: &'static str,
    /// Method name of the notifications that carry the items.
    pub notification: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// The application errors `subscribe` can answer with, or the stream can end with,
    /// besides [`EVERY_METHOD_ERRORS`].
    pub errors: &'static [ErrorCode],
    /// JSON Schema of one item.
    pub item_schema: fn(&mut SchemaGenerator) -> Schema,
}

/// Application errors every method (and `subscribeEvents`) can answer with:
/// `limitExceeded` when the connection exceeds its request rate.
pub const EVERY_METHOD_ERRORS: &[ErrorCode] = &[ErrorCode::LimitExceeded];

/// The one subscription: the session's event stream.
pub const EVENTS: SubscriptionInfo = SubscriptionInfo {
    subscribe: "subscribeEvents",
    unsubscribe: "unsubscribeEvents",
    notification: "event",
    summary: "Opens the session's event stream; the first event is always `welcome`.",
    // invalidState: a second subscription; unavailable: the session is closed. The stream
    // ends with limitExceeded when the session was evicted as too slow, and with
    // forbidden when a newer session of the same identity replaced it, or the admin API
    // removed it or closed its room (the error's `data.reason` says which).
    errors: &[ErrorCode::Forbidden, ErrorCode::LimitExceeded, ErrorCode::InvalidState, ErrorCode::Unavailable],
    item_schema: |g| g.subscription_schema::<Event>(),
};

trait SchemaFor {
    fn subscription_schema<T: JsonSchema>(&mut self) -> Schema;
}

impl SchemaFor for SchemaGenerator {
    fn subscription_schema<T: JsonSchema>(&mut self) -> Schema {
        self.subschema_for::<T>()
    }
}

macro_rules! api {
    ($(
        $(#[doc = $doc:literal])*
        $fn_name:ident: $marker:ident = $name:literal, $area:ident, ($($params:ty)?) -> $result:ty,
            [$($error:ident),*];
    )*) => {
        /// Marker types, one per method (see [`Method`]).
        pub mod methods {
            use super::*;
            $(
                $(#[doc = $doc])*
                #[derive(Clone, Copy, Debug)]
                pub struct $marker;
                impl Method for $marker {
                    const NAME: &'static str = $name;
                    const AREA: Area = Area::$area;
                    const ERRORS: &'static [ErrorCode] = &[$(ErrorCode::$error),*];
                    type Params = api!(@params $($params)?);
                    type Result = $result;
                }
            )*
        }

        /// Every method of the API, in table order.
        pub const METHODS: &[MethodInfo] = &[$(
            MethodInfo {
                name: $name,
                area: Area::$area,
                summary: concat!($($doc, )*),
                no_params: api!(@no_params $($params)?),
                errors: &[$(ErrorCode::$error),*],
                params_schema: |g| g.subschema_for::<<methods::$marker as Method>::Params>(),
                result_schema: |g| g.subschema_for::<<methods::$marker as Method>::Result>(),
            },
        )*];

        #[cfg(feature = "client")]
        /// Typed calls, one per method, on any jsonrpsee client.
        pub trait DspeakClient: crate::client::CallExt {
            $(
                $(#[doc = $doc])*
                fn $fn_name(&self $(, params: $params)?)
                    -> impl std::future::Future<Output = Result<$result, jsonrpsee::core::ClientError>> + Send
                where
                    Self: Sized,
                {
                    self.call::<methods::$marker>(api!(@value $($params, params)?))
                }
            )*
        }
    };
    (@params) => { crate::rooms::NoParams };
    (@params $p:ty) => { $p };
    (@no_params) => { true };
    (@no_params $p:ty) => { false };
    (@value) => { crate::rooms::NoParams {} };
    (@value $p:ty, $v:ident) => { $v };
}

api! {
    /// Liveness check; also pushes a `pong` event to a subscribed session.
    ping: Ping = "ping", Rooms, () -> PingResult,
        [];
    /// Joins (and creates on first join) a room.
    join: Join = "join", Rooms, (JoinParams) -> JoinResult,
        [AlreadyJoined, RoomFull, PayloadTooLarge, Forbidden, Unauthorized, TokenExpired, Unavailable, WrongNode];
    /// Resumes a session whose connection dropped, as the first call on a new
    /// connection: same peer, room, transports, producers and consumers; the next event
    /// stream replays the events after `lastSeq`.
    resume: Resume = "resume", Rooms, (ResumeParams) -> ResumeResult,
        [ResumeFailed, InvalidState, Unavailable];
    /// Leaves the room, closing the session's transports, producers and consumers.
    leave: Leave = "leave", Rooms, () -> Empty,
        [NotJoined, Unavailable];
    /// Sends a JSON payload to every other peer of the room.
    broadcast: Broadcast = "broadcast", Rooms, (BroadcastParams) -> BroadcastResult,
        [NotJoined, PayloadTooLarge, Forbidden, Unavailable];
    /// Sets the session's self-mute (pauses its producers) and self-deafen (pauses its
    /// consumers on the server); the room gets `voiceStateUpdated`.
    set_voice_state: SetVoiceState = "setVoiceState", Rooms, (SetVoiceStateParams) -> VoiceState,
        [NotJoined, Unavailable];
    /// The room router's RTP capabilities, for `device.load()`.
    get_router_rtp_capabilities: GetRouterRtpCapabilities = "getRouterRtpCapabilities", Transports, () -> RtpCapabilities,
        [Unavailable];
    /// Creates a WebRTC transport on the room's media worker.
    create_transport: CreateTransport = "createTransport", Transports, (CreateTransportParams) -> CreateTransportResult,
        [NotJoined, Forbidden, Unavailable];
    /// Gives a transport the client's DTLS parameters; ICE and DTLS then complete.
    connect_transport: ConnectTransport = "connectTransport", Transports, (ConnectTransportParams) -> Empty,
        [NotJoined, NotFound, InvalidState, Unavailable];
    /// New server ICE credentials for a transport (ICE restart).
    restart_ice: RestartIce = "restartIce", Transports, (TransportParams) -> IceParameters,
        [NotJoined, NotFound, InvalidState, Unavailable];
    /// Starts receiving an audio track on a send transport.
    produce: Produce = "produce", Producers, (ProduceParams) -> ProduceResult,
        [NotJoined, PayloadTooLarge, Forbidden, NotFound, InvalidState, Unsupported, Unavailable];
    /// Closes a producer and the consumers of it.
    close_producer: CloseProducer = "closeProducer", Producers, (ProducerParams) -> Empty,
        [NotJoined, Forbidden, NotFound, Unavailable];
    /// Pauses (mutes) a producer; the room gets `producerPaused`.
    pause_producer: PauseProducer = "pauseProducer", Producers, (ProducerParams) -> Empty,
        [NotJoined, Forbidden, NotFound, Unavailable];
    /// Resumes (unmutes) a producer; the room gets `producerResumed`.
    resume_producer: ResumeProducer = "resumeProducer", Producers, (ProducerParams) -> Empty,
        [NotJoined, Forbidden, NotFound, Unavailable];
    /// Starts sending another peer's producer on a recv transport; the consumer starts paused.
    consume: Consume = "consume", Consumers, (ConsumeParams) -> ConsumeResult,
        [NotJoined, Forbidden, NotFound, InvalidState, Unsupported, Unavailable];
    /// Resumes a consumer once the client's receiver is ready.
    resume_consumer: ResumeConsumer = "resumeConsumer", Consumers, (ConsumerParams) -> Empty,
        [NotJoined, NotFound, Unavailable];
    /// Pauses a consumer.
    pause_consumer: PauseConsumer = "pauseConsumer", Consumers, (ConsumerParams) -> Empty,
        [NotJoined, NotFound, Unavailable];
    /// Closes a consumer.
    close_consumer: CloseConsumer = "closeConsumer", Consumers, (ConsumerParams) -> Empty,
        [NotJoined, NotFound, Unavailable];
    /// Statistics of one of the session's transports, producers or consumers.
    get_stats: GetStats = "getStats", Consumers, (GetStatsParams) -> Stats,
        [NotJoined, NotFound, Unavailable];
    /// Admin: every room the token may see, with its peer and producer counts.
    admin_list_rooms: AdminListRooms = "adminListRooms", Admin, (AdminParams) -> AdminRooms,
        [Unauthorized, TokenExpired, Unavailable];
    /// Admin: the peers of a room with their identity, producers and server-mute state.
    admin_list_peers: AdminListPeers = "adminListPeers", Admin, (AdminRoomParams) -> AdminPeers,
        [Unauthorized, TokenExpired, Forbidden, NotFound, Unavailable];
    /// Admin: removes a peer from its room; its event stream ends with a `removed:` error.
    admin_remove_peer: AdminRemovePeer = "adminRemovePeer", Admin, (AdminPeerParams) -> Empty,
        [Unauthorized, TokenExpired, Forbidden, NotFound, Unavailable];
    /// Admin: server-mutes (pauses every producer, forbids resuming) or unmutes a peer.
    admin_mute_peer: AdminMutePeer = "adminMutePeer", Admin, (AdminMuteParams) -> Empty,
        [Unauthorized, TokenExpired, Forbidden, NotFound, Unavailable];
    /// Admin: removes every peer of a room; the room is gone.
    admin_close_room: AdminCloseRoom = "adminCloseRoom", Admin, (AdminRoomParams) -> Empty,
        [Unauthorized, TokenExpired, Forbidden, NotFound, Unavailable];
    /// Admin: sends a `broadcast` event with `from: null` to every peer of a room.
    admin_broadcast: AdminBroadcast = "adminBroadcast", Admin, (AdminBroadcastParams) -> BroadcastResult,
        [Unauthorized, TokenExpired, Forbidden, NotFound, PayloadTooLarge, Unavailable];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique_camel_case() {
        let mut seen = std::collections::HashSet::new();
        for m in METHODS {
            assert!(seen.insert(m.name), "duplicate method {}", m.name);
            assert!(m.name.chars().next().unwrap().is_ascii_lowercase());
            assert!(m.name.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(!m.summary.is_empty(), "{} has no summary", m.name);
            assert!(
                !m.errors.iter().any(|e| EVERY_METHOD_ERRORS.contains(e)),
                "{} repeats an error of every method",
                m.name
            );
        }
        assert!(!seen.contains(EVENTS.subscribe) && !seen.contains(EVENTS.unsubscribe));
    }
}
