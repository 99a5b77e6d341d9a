//! The JSON-RPC layer: the method module, one session per connection, error codes.
//!
//! Every method of `dspeak_schema::METHODS` is registered here with its handler on
//! [`Session`]. The API layer parses params (the params object itself, by name),
//! finds the caller's session and maps domain errors to JSON-RPC error objects in one
//! place ([`to_rpc_error`]). It knows nothing of rooms' or media's internals.
//!
//! `serve` starts the runtime and the connection layer (`conn`), which hands each
//! WebSocket to jsonrpsee with this module and a [`SessionLayer`].
//!
//! Request order: jsonrpsee spawns one task per incoming message. The server runs on
//! a dedicated current-thread runtime, whose scheduler runs spawned tasks in FIFO
//! order, and each handler queues its job on the session actor synchronously in its
//! first poll ([`SessionHandle::call`]). So the jobs of one connection reach its actor
//! in wire order, and the actor applies them one at a time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspeak_schema::events::SessionEnded;
use dspeak_schema::rooms::{PingResult, PongType};
use dspeak_schema::{EVENTS, Event, Method, SERVER_NAME, methods};
use futures_util::future::BoxFuture;
use jsonrpsee::core::middleware::{Batch, Notification, RpcServiceBuilder, RpcServiceT};
use jsonrpsee::core::{SubscriptionError, SubscriptionResult};
use jsonrpsee::server::{
    BatchRequestConfig, PendingSubscriptionSink, PingConfig, RpcModule, ServerConfig, SubscriptionMessage,
    SubscriptionSink, stop_channel,
};
use jsonrpsee::types::error::reject_too_big_request;
use jsonrpsee::types::{ErrorObjectOwned, Params, Request};
use jsonrpsee::{Extensions, MethodResponse};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tower::layer::util::{Identity, Stack};

use crate::Shared;
use crate::conn::{self, Conn};
use crate::drain::DrainWatch;
use crate::error::{
    AdminAuthError, AdminBroadcastError, AdminError, AreaError, BroadcastError, CallError, Code, ConsumeError,
    ConsumerError, CreateTransportError, JoinError, NotJoined, ProduceError, ProducerError, TransportError,
    VoiceStateError,
};
use crate::events::{self, EventReceiver, Pushed};
use crate::limits::TokenBucket;
use crate::session::{Session, SessionHandle, WeakSessionHandle};
use crate::{StartError, unix_millis};

/// Outgoing messages jsonrpsee buffers per connection.
const OUTGOING_BUFFER: u32 = 128;

/// Starts the JSON-RPC server on its own thread and runtime; the receiver completes
/// once the server has stopped and every session has closed.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    metrics_listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<oneshot::Receiver<()>, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Built now, not in the first `rpc.discover`: building it takes long enough to stall
    // every other connection of the runtime.
    openrpc_document();
    let config = &shared.config;
    let server_config = ServerConfig::builder()
        .max_connections(config.max_connections)
        .max_request_body_size(config.max_message_bytes)
        .max_response_body_size(config.max_message_bytes.saturating_mul(4))
        .max_subscriptions_per_connection(4)
        // Outgoing messages buffered per connection before the sender waits. Events
        // are queued in the session first, so this stays small.
        .set_message_buffer_capacity(OUTGOING_BUFFER)
        .set_batch_request_config(BatchRequestConfig::Disabled)
        .enable_ws_ping(
            PingConfig::new()
                .ping_interval(config.ws_ping_interval())
                .inactive_limit(config.ws_ping_interval())
                .max_failures(3),
        )
        .build();
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (stop, stop_handle) = stop_channel();
    let ctx = Arc::new(conn::Listener {
        shared: shared.clone(),
        methods: module().into(),
        server_config,
        stop: stop.clone(),
        connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize)),
        unjoined: Mutex::default(),
        next_id: Default::default(),
    });
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new().name("dspeak-rpc".into()).spawn(move || {
        runtime.block_on(async move {
            let monitor = metrics_listener.map(|l| tokio::spawn(crate::monitor::serve(l, shared.clone())));
            let accepting = tokio::spawn(conn::accept_loop(listener, ctx, stop));
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_handle.stop();
            let _ = accepting.await;
            // Connections close on the stop signal; give the session actors time to
            // release what they own (they run on this runtime).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while shared.counts.sessions.load(std::sync::atomic::Ordering::Relaxed) > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shared.engine.stop();
            if let Some(cluster) = &shared.cluster {
                cluster.stop().await;
            }
            if let Some(monitor) = monitor {
                monitor.abort();
            }
            tracing::info!("stopped");
        });
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

/// The RPC middleware of one WebSocket, or of one HTTP POST: creates its session and
/// applies its bounds. `requests` is the request-rate bucket of the connection (an
/// HTTP connection's POSTs share one).
pub(crate) fn session_middleware(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    requests: Arc<Mutex<TokenBucket>>,
) -> RpcServiceBuilder<Stack<NewSession, Identity>> {
    RpcServiceBuilder::new().layer(NewSession { shared, conn, requests })
}

/// A connection's request-rate bucket (`--request-rate`).
pub(crate) fn request_bucket(shared: &Shared) -> Arc<Mutex<TokenBucket>> {
    Arc::new(Mutex::new(TokenBucket::per_second(shared.config.limits.request_rate)))
}

/// The layer that wraps a connection's RPC service in its [`SessionLayer`].
#[derive(Clone)]
pub(crate) struct NewSession {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    requests: Arc<Mutex<TokenBucket>>,
}

impl<S> tower::Layer<S> for NewSession {
    type Service = SessionLayer<S>;

    fn layer(&self, inner: S) -> SessionLayer<S> {
        let shared = &self.shared;
        SessionLayer {
            inner,
            session: SessionHandle::spawn(shared.clone()),
            shared: shared.clone(),
            requests: self.requests.clone(),
            conn: self.conn.clone(),
            max_request_bytes: shared.config.max_message_bytes,
        }
    }
}

/// Per-connection RPC middleware: owns the connection's session and hands it to every
/// call, limits the connection's request rate, counts its requests in flight (the
/// connection layer stops reading at `--max-in-flight`) and accounts for the answers
/// it queues. Dropping it (the connection closed) releases the session.
#[derive(Clone)]
pub(crate) struct SessionLayer<S> {
    inner: S,
    session: SessionHandle,
    shared: Arc<Shared>,
    requests: Arc<Mutex<TokenBucket>>,
    conn: Arc<Conn>,
    /// `--max-message-bytes`, checked on params (the WebSocket frame limit is the
    /// response limit's).
    max_request_bytes: u32,
}

impl<S> RpcServiceT for SessionLayer<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, mut request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let started = std::time::Instant::now();
        let shared = self.shared.clone();
        let method = crate::metrics::known_method(&request.method);
        let conn = self.conn.clone();
        let in_flight = conn.request();
        let max = self.max_request_bytes;
        let refusal = if request.params.as_ref().map_or(0, |p| p.get().len()) > max as usize {
            // Like jsonrpsee's own answer to an oversized message: id null.
            Some(MethodResponse::error(jsonrpsee::types::Id::Null, reject_too_big_request(max)))
        } else if !self.requests.lock().unwrap_or_else(|e| e.into_inner()).try_take() {
            let error = to_rpc_error(&request.method, &CallError::RateLimited);
            Some(MethodResponse::error(request.id.clone(), error))
        } else {
            request.extensions_mut().insert(self.session.clone());
            request.extensions_mut().insert(conn.clone());
            if request.method == EVENTS.subscribe {
                request.extensions_mut().insert(self.shared.drain.watch());
            }
            None
        };
        let joining = request.method_name() == methods::Join::NAME;
        let inner = self.inner.clone();
        async move {
            let response = match refusal {
                Some(refusal) => refusal,
                None => inner.call(request).await,
            };
            shared.metrics.rpc(method, response.as_error_code(), started.elapsed());
            if joining && response.is_success() {
                conn.joined();
            }
            conn.queued(response.as_json().get().len());
            drop(in_flight);
            response
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // Batches are disabled in the server config; jsonrpsee answers them itself.
        self.inner.batch(batch)
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// Builds the RPC module: every method of the schema's table and the event stream.
fn module() -> RpcModule<()> {
    let mut m = RpcModule::new(());
    register_ping(&mut m);
    routes(&mut m);
    register_events(&mut m);
    register_discover(&mut m);
    m
}

/// A handler: runs on the caller's session actor.
trait Handler<M: Method, E>:
    for<'a> Fn(&'a mut Session, M::Params) -> BoxFuture<'a, Result<M::Result, E>> + Copy + Send + Sync + 'static
{
}

impl<M: Method, E, F> Handler<M, E> for F where
    F: for<'a> Fn(&'a mut Session, M::Params) -> BoxFuture<'a, Result<M::Result, E>> + Copy + Send + Sync + 'static
{
}

/// Where methods are routed to: the jsonrpsee module, or (in tests) a list of the
/// errors each method's handler can return.
trait Routes {
    /// Routes method `M` to `handler`, whose errors are of type `E`.
    fn route<M: Method, E: AreaError>(&mut self, handler: impl Handler<M, E>);
}

/// Every method but `ping` and the event stream, with its handler and error type.
fn routes(r: &mut impl Routes) {
    r.route::<methods::Join, JoinError>(|s, p| Box::pin(s.join(p)));
    r.route::<methods::Leave, NotJoined>(|s, _| Box::pin(s.leave()));
    r.route::<methods::Broadcast, BroadcastError>(|s, p| Box::pin(s.broadcast(p)));
    r.route::<methods::SetVoiceState, VoiceStateError>(|s, p| Box::pin(s.set_voice_state(p)));
    r.route::<methods::GetRouterRtpCapabilities, Infallible>(|s, _| Box::pin(s.router_rtp_capabilities()));
    r.route::<methods::CreateTransport, CreateTransportError>(|s, p| Box::pin(s.create_transport(p)));
    r.route::<methods::ConnectTransport, TransportError>(|s, p| Box::pin(s.connect_transport(p)));
    r.route::<methods::RestartIce, TransportError>(|s, p| Box::pin(s.restart_ice(p)));
    r.route::<methods::Produce, ProduceError>(|s, p| Box::pin(s.produce(p)));
    r.route::<methods::PauseProducer, ProducerError>(|s, p| Box::pin(s.set_producer_paused(p, true)));
    r.route::<methods::ResumeProducer, ProducerError>(|s, p| Box::pin(s.set_producer_paused(p, false)));
    r.route::<methods::CloseProducer, ProducerError>(|s, p| Box::pin(s.close_producer(p)));
    r.route::<methods::Consume, ConsumeError>(|s, p| Box::pin(s.consume(p)));
    r.route::<methods::PauseConsumer, ConsumerError>(|s, p| Box::pin(s.set_consumer_paused(p, true)));
    r.route::<methods::ResumeConsumer, ConsumerError>(|s, p| Box::pin(s.set_consumer_paused(p, false)));
    r.route::<methods::CloseConsumer, ConsumerError>(|s, p| Box::pin(s.close_consumer(p)));
    r.route::<methods::GetStats, ConsumerError>(|s, p| Box::pin(s.get_stats(p)));
    r.route::<methods::AdminListRooms, AdminAuthError>(|s, p| Box::pin(s.admin_list_rooms(p)));
    r.route::<methods::AdminListPeers, AdminError>(|s, p| Box::pin(s.admin_list_peers(p)));
    r.route::<methods::AdminRemovePeer, AdminError>(|s, p| Box::pin(s.admin_remove_peer(p)));
    r.route::<methods::AdminMutePeer, AdminError>(|s, p| Box::pin(s.admin_mute_peer(p)));
    r.route::<methods::AdminCloseRoom, AdminError>(|s, p| Box::pin(s.admin_close_room(p)));
    r.route::<methods::AdminBroadcast, AdminBroadcastError>(|s, p| Box::pin(s.admin_broadcast(p)));
}

impl Routes for RpcModule<()> {
    fn route<M: Method, E: AreaError>(&mut self, handler: impl Handler<M, E>) {
        self.register_async_method(M::NAME, move |params, _, ext| {
            // Parse and queue now, in the first poll: this keeps the wire order.
            let call = parse::<M::Params>(&params).and_then(|p| Ok(session(&ext)?.call(move |s| handler(s, p))));
            async move {
                let answer = call.map_err(|e| to_rpc_error(M::NAME, &e))?.await;
                answer.map_err(|e| to_rpc_error(M::NAME, &e))?.map_err(|e| to_rpc_error(M::NAME, &e))
            }
        })
        .expect("method names in the schema table are unique");
    }
}

/// The OpenRPC document of the API, built once from the schema crate: the answer to
/// `rpc.discover` and to `GET /openrpc.json`.
pub(crate) fn openrpc_document() -> &'static serde_json::value::RawValue {
    static DOCUMENT: std::sync::OnceLock<Box<serde_json::value::RawValue>> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // A `serde_json::Value` always serializes.
        serde_json::value::to_raw_value(&dspeak_schema::export::openrpc_document()).expect("serializes")
    })
}

/// `rpc.discover`: the OpenRPC document.
fn register_discover(module: &mut RpcModule<()>) {
    module
        .register_method("rpc.discover", |_, _, _| Ok::<_, ErrorObjectOwned>(openrpc_document()))
        .expect("rpc.discover is registered once");
}

/// `ping` answers directly, without queueing behind the session's other requests.
fn register_ping(module: &mut RpcModule<()>) {
    module
        .register_method(methods::Ping::NAME, |params, _, ext| {
            let name = methods::Ping::NAME;
            parse::<<methods::Ping as Method>::Params>(&params).map_err(|e| to_rpc_error(name, &e))?;
            let session = session(ext).map_err(|e| to_rpc_error(name, &e))?;
            let timestamp = unix_millis();
            if session.events().is_subscribed()
                && session.events().push(events::serialize(&Event::Pong { timestamp })) == Pushed::Overflowed
            {
                session.evict_slow();
            }
            Ok::<_, ErrorObjectOwned>(PingResult { kind: PongType::Pong, timestamp })
        })
        .expect("ping is registered once");
}

/// `subscribeEvents`: streams the session's event queue, `welcome` first.
fn register_events(module: &mut RpcModule<()>) {
    module
        .register_subscription(
            EVENTS.subscribe,
            EVENTS.notification,
            EVENTS.unsubscribe,
            |_params, pending: PendingSubscriptionSink, _, ext| async move {
                let name = EVENTS.subscribe;
                let taken = match session(&ext) {
                    Ok(s) => s.call(|s| Box::pin(async move { s.take_events().map(|t| (t, s.handle())) })).await,
                    Err(e) => Err(e),
                };
                let taken =
                    taken.map_err(|e| to_rpc_error(name, &e)).and_then(|t| t.map_err(|e| to_rpc_error(name, &e)));
                let ((session_id, rx), owner) = match taken {
                    Ok(t) => t,
                    Err(e) => {
                        pending.reject(e).await;
                        return Ok(());
                    }
                };
                let drain = ext.get::<DrainWatch>().cloned();
                let sink = pending.accept().await?;
                let welcome = Event::Welcome {
                    session_id,
                    server: SERVER_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                };
                let conn = ext.get::<Arc<Conn>>().cloned();
                stream_events(sink, events::serialize(&welcome), rx, owner, drain, conn).await
            },
        )
        .expect("subscription names are unique");
}

/// Forwards queued events to the client until it unsubscribes or disconnects, or the
/// session ends the stream (eviction); then hands the queue back to the session.
/// `serverDraining` is sent once the server drains (right after `welcome` if it
/// already does).
async fn stream_events(
    sink: SubscriptionSink,
    welcome: events::RawEvent,
    mut rx: EventReceiver,
    owner: WeakSessionHandle,
    drain: Option<DrainWatch>,
    conn: Option<Arc<Conn>>,
) -> SubscriptionResult {
    let send_event = |event: &events::RawEvent| {
        if let Some(conn) = &conn {
            // The notification wraps the event in about 80 bytes.
            conn.queued(event.get().len() + 80);
        }
        let raw: Box<serde_json::value::RawValue> = (**event).to_owned();
        sink.send(SubscriptionMessage::from(raw))
    };
    let result = async {
        send_event(&welcome).await.map_err(|e| e.to_string())?;
        let mut drain = drain;
        loop {
            let draining = async {
                match &mut drain {
                    Some(w) => w.wait_for(Option::is_some).await.map(|d| d.unwrap_or_default()),
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = rx.next() => next,
                Ok(deadline_ms) = draining => {
                    drain = None;
                    send_event(&events::serialize(&Event::ServerDraining { deadline_ms })).await.map_err(|e| e.to_string())?;
                    continue;
                }
                () = sink.closed() => return Ok(()),
            };
            match next {
                Ok(Some(event)) => send_event(&event).await.map_err(|e| e.to_string())?,
                Ok(None) => return Ok(()),
                Err(reason) => {
                    let e = to_rpc_error(EVENTS.subscribe, &reason);
                    let data = SessionEnded { reason: reason.reason() };
                    let error = ErrorObjectOwned::owned(e.code(), e.message().to_owned(), Some(data));
                    let json = serde_json::value::to_raw_value(&error).map_err(|e| e.to_string())?;
                    return Err(SubscriptionError::from_json(json));
                }
            }
        }
    }
    .await;
    owner.post(move |s| Box::pin(s.return_events(rx)));
    result
}

/// Parses params given by name. A missing params member and `[]` are read as `{}`.
fn parse<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, CallError> {
    let text = params.as_str().map(str::trim).unwrap_or("{}");
    let text = match text {
        "[]" => "{}",
        t if t.starts_with('[') => {
            return Err(CallError::InvalidParams("params must be an object with named members, not an array".into()));
        }
        t => t,
    };
    serde_json::from_str(text).map_err(|e| CallError::InvalidParams(format!("invalid params: {e}")))
}

fn session(ext: &Extensions) -> Result<SessionHandle, CallError> {
    // The middleware inserts the session into every call; missing means a bug.
    ext.get::<SessionHandle>().cloned().ok_or(CallError::NoSession)
}

/// The one place where errors become JSON-RPC error objects: the code of the error's
/// [`Code`], its message (prefixed with the method for invalid params), and for
/// internal errors a fixed message while the details go to the log.
pub(crate) fn to_rpc_error<E: AreaError + ?Sized>(method: &str, e: &E) -> ErrorObjectOwned {
    match e.code() {
        Code::App(code) => {
            tracing::debug!(method, code = code.code(), error = %e, "refused");
            ErrorObjectOwned::owned(code.code(), e.to_string(), e.data())
        }
        Code::InvalidParams => {
            let code = jsonrpsee::types::error::INVALID_PARAMS_CODE;
            tracing::debug!(method, code, error = %e, "refused");
            ErrorObjectOwned::owned(code, format!("{method}: {e}"), None::<()>)
        }
        Code::Internal => {
            tracing::error!(method, error = ?e, "internal error");
            ErrorObjectOwned::owned(
                jsonrpsee::types::error::INTERNAL_ERROR_CODE,
                "internal error; it has been logged",
                None::<()>,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use dspeak_schema::ErrorCode;
    use dspeak_schema::api::{EVERY_METHOD_ERRORS, METHODS};

    use super::*;
    use crate::error::{StreamEnd, SubscribeError};

    /// Per routed method: its name, its column of the method table, and every code its
    /// handler's error type can have.
    #[derive(Default)]
    struct Possible(Vec<(&'static str, &'static [ErrorCode], Vec<Code>)>);

    impl Routes for Possible {
        fn route<M: Method, E: AreaError>(&mut self, _: impl Handler<M, E>) {
            self.0.push((M::NAME, M::ERRORS, E::codes()));
        }
    }

    /// The application codes among `codes`.
    fn app(codes: impl IntoIterator<Item = Code>) -> BTreeSet<i32> {
        codes
            .into_iter()
            .filter_map(|c| match c {
                Code::App(code) => Some(code.code()),
                Code::InvalidParams | Code::Internal => None,
            })
            .collect()
    }

    /// A method's column plus what every method can answer.
    fn listed(column: &[ErrorCode]) -> BTreeSet<i32> {
        column.iter().chain(EVERY_METHOD_ERRORS).map(|c| c.code()).collect()
    }

    #[test]
    fn every_error_a_handler_can_return_is_listed_for_its_method_and_nothing_else() {
        let mut possible = Possible::default();
        routes(&mut possible);
        for (name, column, codes) in &possible.0 {
            // A routed call can also fail before its handler runs (params, rate, a closed
            // session).
            let codes = app(codes.iter().copied().chain(CallError::codes()));
            assert_eq!(codes, listed(column), "{name}: the errors its handler can return vs its column in `api!`");
        }
        // `ping` answers without queueing on the session, so only a closed session's
        // `unavailable` cannot happen.
        let ping = CallError::codes().into_iter().filter(|c| *c != CallError::Closed.code());
        assert_eq!(app(ping), listed(methods::Ping::ERRORS), "ping");

        let mut routed: Vec<&str> = possible.0.iter().map(|(name, ..)| *name).chain([methods::Ping::NAME]).collect();
        let mut table: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        routed.sort_unstable();
        table.sort_unstable();
        assert_eq!(routed, table, "every method of the table is routed exactly once");
    }

    #[test]
    fn the_event_stream_lists_every_error_it_can_answer_or_end_with() {
        let codes = app(SubscribeError::codes().into_iter().chain(StreamEnd::codes()).chain(CallError::codes()));
        assert_eq!(codes, listed(EVENTS.errors));
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = to_rpc_error("createTransport", &CreateTransportError::Internal("str0m said no".into()));
        assert_eq!(e.code(), jsonrpsee::types::error::INTERNAL_ERROR_CODE);
        assert!(!e.message().contains("str0m"), "{}", e.message());
        let e = to_rpc_error("join", &JoinError::EmptyName("room"));
        assert_eq!(
            (e.code(), e.message()),
            (jsonrpsee::types::error::INVALID_PARAMS_CODE, "join: room must not be empty")
        );
    }
}
