//! The API: every JSON-RPC method, its params and result types, as one table.
//!
//! [`api!`](crate::api) below is the single source of truth. For each method it
//! generates a marker type implementing [`Method`] (used by the server to register
//! handlers and by the typed client to call them), an entry in [`METHODS`] (read by the
//! schema export and the SDK generator), and a typed call on
//! [`DspeakClient`](crate::client::DspeakClient).
//!
//! On the wire `params` is always the params struct itself, as a JSON object.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, de::DeserializeOwned};

use crate::events::Event;
#[allow(unused_imports)]
use crate::{media::*, ortc::*, rooms::*};

/// One JSON-RPC method of the API.
pub trait Method {
    /// The method name on the wire.
    const NAME: &'static str;
    /// The API area it belongs to.
    const AREA: Area;
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
    /// JSON Schema of one item.
    pub item_schema: fn(&mut SchemaGenerator) -> Schema,
}

/// The one subscription: the session's event stream.
pub const EVENTS: SubscriptionInfo = SubscriptionInfo {
    subscribe: "subscribeEvents",
    unsubscribe: "unsubscribeEvents",
    notification: "event",
    summary: "Opens the session's event stream; the first event is always `welcome`.",
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
        $fn_name:ident: $marker:ident = $name:literal, $area:ident, ($($params:ty)?) -> $result:ty;
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
    ping: Ping = "ping", Rooms, () -> PingResult;
    /// Joins (and creates on first join) a room.
    join: Join = "join", Rooms, (JoinParams) -> JoinResult;
    /// Leaves the room, closing the session's transports, producers and consumers.
    leave: Leave = "leave", Rooms, () -> Empty;
    /// Sends a JSON payload to every other peer of the room.
    broadcast: Broadcast = "broadcast", Rooms, (BroadcastParams) -> BroadcastResult;
    /// The room router's RTP capabilities, for `device.load()`.
    get_router_rtp_capabilities: GetRouterRtpCapabilities = "getRouterRtpCapabilities", Transports, () -> RtpCapabilities;
    /// Creates a WebRTC transport on the room's media worker.
    create_transport: CreateTransport = "createTransport", Transports, (CreateTransportParams) -> CreateTransportResult;
    /// Gives a transport the client's DTLS parameters; ICE and DTLS then complete.
    connect_transport: ConnectTransport = "connectTransport", Transports, (ConnectTransportParams) -> Empty;
    /// New server ICE credentials for a transport (ICE restart).
    restart_ice: RestartIce = "restartIce", Transports, (TransportParams) -> IceParameters;
    /// Starts receiving an audio track on a send transport.
    produce: Produce = "produce", Producers, (ProduceParams) -> ProduceResult;
    /// Closes a producer and the consumers of it.
    close_producer: CloseProducer = "closeProducer", Producers, (ProducerParams) -> Empty;
    /// Pauses (mutes) a producer; the room gets `producerPaused`.
    pause_producer: PauseProducer = "pauseProducer", Producers, (ProducerParams) -> Empty;
    /// Resumes (unmutes) a producer; the room gets `producerResumed`.
    resume_producer: ResumeProducer = "resumeProducer", Producers, (ProducerParams) -> Empty;
    /// Starts sending another peer's producer on a recv transport; the consumer starts paused.
    consume: Consume = "consume", Consumers, (ConsumeParams) -> ConsumeResult;
    /// Resumes a consumer once the client's receiver is ready.
    resume_consumer: ResumeConsumer = "resumeConsumer", Consumers, (ConsumerParams) -> Empty;
    /// Pauses a consumer.
    pause_consumer: PauseConsumer = "pauseConsumer", Consumers, (ConsumerParams) -> Empty;
    /// Closes a consumer.
    close_consumer: CloseConsumer = "closeConsumer", Consumers, (ConsumerParams) -> Empty;
    /// Statistics of one of the session's transports, producers or consumers.
    get_stats: GetStats = "getStats", Consumers, (GetStatsParams) -> Stats;
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
        }
        assert!(!seen.contains(EVENTS.subscribe) && !seen.contains(EVENTS.unsubscribe));
    }
}
