//! The typed Rust client: [`DspeakClient`] on top of any jsonrpsee client.
//!
//! Params are sent as the params object itself (by-name), exactly as the server and the
//! TypeScript SDK expect; jsonrpsee's own proc macro would wrap them in an array.

use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::traits::ToRpcParams;
use serde_json::value::RawValue;

pub use crate::api::DspeakClient;
use crate::api::{EVENTS, Method};
use crate::events::{Event, SequencedEvent};

/// Already-serialized params, sent as they are.
struct RawParams(Option<Box<RawValue>>);

impl ToRpcParams for RawParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        Ok(self.0)
    }
}

/// Generic typed calls; [`DspeakClient`] builds its named methods on these.
pub trait CallExt: ClientT + SubscriptionClientT + Sync {
    /// Calls method `M` with its params object.
    fn call<M: Method>(
        &self,
        params: M::Params,
    ) -> impl std::future::Future<Output = Result<M::Result, ClientError>> + Send
    where
        Self: Sized,
    {
        let raw = serde_json::value::to_raw_value(&params);
        async move {
            let raw = raw.map_err(ClientError::ParseError)?;
            self.request(M::NAME, RawParams(Some(raw))).await
        }
    }

    /// Opens the session's event stream (`subscribeEvents`).
    fn subscribe_events(&self) -> impl std::future::Future<Output = Result<Subscription<Event>, ClientError>> + Send
    where
        Self: Sized,
    {
        self.subscribe(EVENTS.subscribe, RawParams(None), EVENTS.unsubscribe)
    }

    /// Opens the session's event stream with each event's `seq` (what `resume`'s
    /// `lastSeq` needs).
    fn subscribe_sequenced_events(
        &self,
    ) -> impl std::future::Future<Output = Result<Subscription<SequencedEvent>, ClientError>> + Send
    where
        Self: Sized,
    {
        self.subscribe(EVENTS.subscribe, RawParams(None), EVENTS.unsubscribe)
    }
}

impl<T: ClientT + SubscriptionClientT + Sync> CallExt for T {}
impl<T: CallExt> DspeakClient for T {}

/// Connects a WebSocket client to a dspeak server, e.g. `ws://127.0.0.1:8080`.
pub async fn connect(url: &str) -> Result<jsonrpsee::ws_client::WsClient, ClientError> {
    jsonrpsee::ws_client::WsClientBuilder::default().build(url).await
}

/// The typed `wrongNode` answer (cluster mode) in a call's error: the room is hosted by
/// the node at [`WrongNode::url`], where the client connects and joins again. `None` for
/// any other error.
pub fn wrong_node(error: &ClientError) -> Option<crate::rooms::WrongNode> {
    match error {
        ClientError::Call(e) if e.code() == crate::ErrorCode::WrongNode.code() => {
            e.data().and_then(|data| serde_json::from_str(data.get()).ok())
        }
        _ => None,
    }
}
