//! The JSON-RPC layer: the method module, one session per connection, error codes.
//!
//! Every method of `dspeak_schema::METHODS` is registered here with its handler on
//! [`Session`]. The API layer parses params (the params object itself, by name),
//! finds the caller's session and maps domain errors to JSON-RPC error objects in one
//! place ([`to_rpc_error`]). It knows nothing of rooms' or media's internals.
//!
//! `serve` starts the runtime and the connection layer (`conn`). A WebSocket's frame
//! loop (`socket`) calls its [`WsService`]: the [`SessionLayer`] middleware around
//! [`Dispatch`], which calls the module's methods and answers `subscribeEvents` with an
//! [`EventStream`] the loop writes out. An HTTP POST goes to jsonrpsee's HTTP call with
//! the same module and middleware.
//!
//! Request order: the frame loop polls each request's future once as soon as the
//! request is read, in wire order, and each handler queues its job on the session actor
//! synchronously in that first poll ([`SessionHandle::call`]). So the jobs of one
//! connection reach its actor in wire order, and the actor applies them one at a time.
//!
//! Resume: a connection's calls go to its own new session, or, once `resume` (its
//! first call) has answered, to the resumed one; a client waits for that answer before
//! its next call (calls pipelined behind `resume` reach the new session).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dspeak_schema::events::SessionEnded;
use dspeak_schema::rooms::{PingResult, PongType};
use dspeak_schema::{EVENTS, Event, Method, SERVER_NAME, methods};
use futures_util::future::{BoxFuture, Either};
use jsonrpsee::core::middleware::{Batch, Notification, RpcServiceBuilder, RpcServiceT};
use jsonrpsee::server::ResponsePayload;
use jsonrpsee::server::{BatchRequestConfig, MethodCallback, Methods, RpcModule, ServerConfig, stop_channel};
use jsonrpsee::types::error::{ErrorCode, reject_too_big_request};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params, Request};
use jsonrpsee::{ConnectionId, Extensions, MethodResponse};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tower::layer::util::{Identity, Stack};

use crate::Shared;
use crate::conn::{self, Conn};
use crate::drain::DrainWatch;
use crate::error::{
    AdminAuthError, AdminBroadcastError, AdminError, AreaError, BroadcastError, CallError, Code, ConsumeError,
    ConsumerError, CreateTransportError, JoinError, NotJoined, ProduceError, ProducerError, ResumeError,
    TransportError, VoiceStateError,
};
use crate::events::{self, EventReceiver, Pushed, SeqHead, Sequenced};
use crate::limits::TokenBucket;
use crate::session::{ConnSession, Session, SessionHandle, TakenEvents, WeakSessionHandle};
use crate::{StartError, unix_millis};

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
    // What jsonrpsee's HTTP call uses (WebSockets are served by `socket`).
    let server_config = ServerConfig::builder()
        .max_connections(config.max_connections)
        .max_request_body_size(config.max_message_bytes)
        .max_response_body_size(config.max_response_bytes() as u32)
        .set_batch_request_config(BatchRequestConfig::Disabled)
        .http_only()
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
            // No session waits for a resume any more: each leaves its room.
            shared.resume_tokens.close();
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
            // The sessions' last events (`peerLeft`, `roomFinished`) reach the backend.
            shared.webhooks.close().await;
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

/// The RPC service of one WebSocket connection: its session middleware around
/// [`Dispatch`].
pub(crate) type WsService = SessionLayer<Dispatch>;

/// The RPC service of a new WebSocket connection (and with it, its session).
pub(crate) fn ws_service(shared: Arc<Shared>, conn: Arc<Conn>, methods: Methods) -> WsService {
    let dispatch = Dispatch { methods, max_response: shared.config.max_response_bytes() };
    let requests = request_bucket(&shared);
    session_middleware(shared, conn, requests).service(dispatch)
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
        let session = SessionHandle::spawn(shared.clone(), Arc::downgrade(&self.conn));
        SessionLayer {
            inner,
            session: ConnSession::new(session.attach_first()),
            shared: shared.clone(),
            requests: self.requests.clone(),
            conn: self.conn.clone(),
            max_request_bytes: shared.config.max_message_bytes,
        }
    }
}

/// Per-connection RPC middleware: owns the connection's hold on its session (which
/// `resume` may swap for a resumed one) and hands the session to every call, limits
/// the connection's request rate and the size of params, counts every call in the
/// metrics and tells the connection when the session has joined (or resumed). Dropping
/// it (the connection closed) tells the session, which detaches or ends.
#[derive(Clone)]
pub(crate) struct SessionLayer<S> {
    inner: S,
    session: Arc<ConnSession>,
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
        let max = self.max_request_bytes;
        let refusal = if request.params.as_ref().map_or(0, |p| p.get().len()) > max as usize {
            // Like jsonrpsee's own answer to an oversized message: id null.
            Some(MethodResponse::error(jsonrpsee::types::Id::Null, reject_too_big_request(max)))
        } else if !self.requests.lock().unwrap_or_else(|e| e.into_inner()).try_take() {
            let error = to_rpc_error(&request.method, &CallError::RateLimited);
            Some(MethodResponse::error(request.id.clone(), error))
        } else {
            let first = FirstCall(self.session.first_call());
            request.extensions_mut().insert(self.session.current());
            request.extensions_mut().insert(conn.clone());
            if request.method == EVENTS.subscribe {
                request.extensions_mut().insert(self.shared.drain.watch());
            }
            if request.method == methods::Resume::NAME {
                request.extensions_mut().insert(first);
                request.extensions_mut().insert(self.session.clone());
                request.extensions_mut().insert(self.shared.clone());
            }
            None
        };
        // A resumed session counts as joined, like a joined one.
        let joining = [methods::Join::NAME, methods::Resume::NAME].contains(&request.method_name());
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

impl<S> SessionLayer<S> {
    /// The connection ended: its session is released (the actor closes everything the
    /// session owned once the requests still queued on it have run).
    pub(crate) fn connection_closed(self) {
        drop(self);
    }
}

/// The innermost RPC service of a WebSocket: calls the module's methods (as jsonrpsee's
/// own service does) and answers `subscribeEvents`/`unsubscribeEvents` itself. A
/// subscription's answer carries its [`EventStream`] in its extensions
/// ([`NewStream`]); the frame loop takes it and writes the events.
#[derive(Clone)]
pub(crate) struct Dispatch {
    methods: Methods,
    max_response: usize,
}

/// In the extensions of a `subscribeEvents` answer: the stream to write after it.
#[derive(Clone)]
pub(crate) struct NewStream(Arc<Mutex<Option<EventStream>>>);

impl NewStream {
    /// Takes the stream (once).
    pub(crate) fn take(&self) -> Option<EventStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// In the extensions of an `unsubscribeEvents` answer that ended the stream.
#[derive(Clone, Copy)]
pub(crate) struct EndStream;

impl RpcServiceT for Dispatch {
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let Request { id, method, params, extensions, .. } = request;
        let params = Params::new(params.as_ref().map(|p| p.get()));
        if method == EVENTS.subscribe {
            return Either::Right(subscribe(id.into_owned(), extensions, self.max_response));
        }
        let response = if method == EVENTS.unsubscribe {
            unsubscribe(id, &params, extensions)
        } else {
            match self.methods.method(&method) {
                Some(MethodCallback::Async(callback)) => {
                    let (id, params) = (id.into_owned(), params.into_owned());
                    return Either::Right(callback(id, params, ConnectionId(0), self.max_response, extensions));
                }
                Some(MethodCallback::Sync(callback)) => callback(id, params, self.max_response, extensions),
                // The module registers no subscriptions (events are ours) and no others.
                Some(_) | None => MethodResponse::error(id, ErrorObjectOwned::from(ErrorCode::MethodNotFound)),
            }
        };
        Either::Left(std::future::ready(response))
    }

    fn batch<'a>(&self, _: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // The frame loop refuses batches before they get here.
        std::future::ready(MethodResponse::error(Id::Null, ErrorObjectOwned::from(ErrorCode::InvalidRequest)))
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        std::future::ready(MethodResponse::notification().with_extensions(n.extensions))
    }
}

/// How long a resumed session's new subscription waits for the old connection's
/// stream to give the queue back (it was closed when the session resumed).
const STREAM_HANDOVER: Duration = Duration::from_secs(5);

/// `subscribeEvents`: takes the session's event queue (queued on the actor now, to keep
/// the wire order) and answers the subscription id, with the stream in the answer's
/// extensions. After a `resume` the queue may still be with the old connection's
/// stream: it waits for it to be given back.
fn subscribe(id: Id<'static>, ext: Extensions, max_response: usize) -> BoxFuture<'static, MethodResponse> {
    let name = EVENTS.subscribe;
    let taken = session(&ext).map(|s| s.call(|s| Box::pin(async move { s.take_events().map(|t| (t, s.handle())) })));
    Box::pin(async move {
        let taken = match taken {
            Ok(call) => call.await,
            Err(e) => Err(e),
        };
        let taken = taken.map_err(|e| to_rpc_error(name, &e)).and_then(|t| t.map_err(|e| to_rpc_error(name, &e)));
        let (conn, ((session_id, resume_token, taken), owner)) = match (ext.get::<Arc<Conn>>(), taken) {
            (Some(conn), Ok(taken)) => (conn.clone(), taken),
            (_, Err(e)) => return MethodResponse::error(id, e),
            (None, Ok(_)) => return MethodResponse::error(id, to_rpc_error(name, &CallError::NoSession)),
        };
        let queue = match taken {
            TakenEvents::Now(queue) => queue,
            TakenEvents::Later(handover) => match tokio::time::timeout(STREAM_HANDOVER, handover).await {
                Ok(Ok(queue)) => queue,
                _ => return MethodResponse::error(id, to_rpc_error(name, &CallError::Closed)),
            },
        };
        let Some(queue) = queue.claim() else {
            return MethodResponse::error(id, to_rpc_error(name, &CallError::Closed));
        };
        let subscription = conn.new_subscription();
        let welcome = Event::Welcome {
            session_id,
            server: SERVER_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            resume_token,
        };
        let drain = ext.get::<DrainWatch>().cloned();
        let stream = EventStream::new(subscription, events::serialize(&welcome), queue, owner, drain);
        let mut extensions = Extensions::new();
        extensions.insert(NewStream(Arc::new(Mutex::new(Some(stream)))));
        MethodResponse::response(id, ResponsePayload::success(subscription), max_response).with_extensions(extensions)
    })
}

/// `unsubscribeEvents [id]`: `true` (and the stream ends) if `id` is the connection's
/// current subscription, else `false`.
fn unsubscribe(id: Id<'_>, params: &Params<'_>, ext: Extensions) -> MethodResponse {
    let Ok(subscription) = params.clone().one::<u64>() else {
        let error = CallError::InvalidParams("params must be [subscription id]".into());
        return MethodResponse::error(id, to_rpc_error(EVENTS.unsubscribe, &error));
    };
    let ended = ext.get::<Arc<Conn>>().is_some_and(|conn| conn.end_subscription(subscription));
    let mut extensions = Extensions::new();
    if ended {
        extensions.insert(EndStream);
    }
    MethodResponse::response(id, ResponsePayload::success(ended), usize::MAX).with_extensions(extensions)
}

/// A session's event stream while it is subscribed: `welcome` first, then after a
/// `resume` the events the client missed, then the queued events (skipping what the
/// replay covered), `serverDraining` once the server drains, and at the end maybe an
/// error (the session was evicted, replaced, removed). Each event is written with its
/// `seq` (0 for `welcome` and `serverDraining`). Dropping it hands the queue back to
/// the session, which may subscribe again.
pub(crate) struct EventStream {
    /// The notification up to the event: `{"jsonrpc":"2.0","method":…,"params":{"subscription":…,"result":`.
    prefix: String,
    subscription: u64,
    welcome: Option<events::RawEvent>,
    /// After a `resume`: the missed events still to write.
    replay: std::vec::IntoIter<Sequenced>,
    /// Queued events up to this number were replayed (or seen) already.
    through: u32,
    rx: Option<EventReceiver>,
    owner: WeakSessionHandle,
    drain: Option<Pin<Box<dyn Future<Output = Option<i64>> + Send>>>,
}

/// What an event stream has next.
pub(crate) enum Next {
    /// An event, to be written with [`EventStream::notification`].
    Event(Sequenced),
    /// The last message: the error the stream ends with.
    End(Box<RawValue>),
}

impl EventStream {
    fn new(
        subscription: u64,
        welcome: events::RawEvent,
        (rx, replay): (EventReceiver, Option<events::Replay>),
        owner: WeakSessionHandle,
        drain: Option<DrainWatch>,
    ) -> Self {
        let replay = replay.unwrap_or_default();
        let prefix = format!(
            r#"{{"jsonrpc":"2.0","method":{},"params":{{"subscription":{subscription},"result":"#,
            serde_json::Value::from(EVENTS.notification)
        );
        let drain = drain.map(|mut watch| -> Pin<Box<dyn Future<Output = Option<i64>> + Send>> {
            Box::pin(async move { watch.wait_for(Option::is_some).await.ok().and_then(|d| *d) })
        });
        EventStream {
            prefix,
            subscription,
            welcome: Some(welcome),
            replay: replay.events.into_iter(),
            through: replay.through,
            rx: Some(rx),
            owner,
            drain,
        }
    }

    /// The subscription's id.
    pub(crate) fn subscription(&self) -> u64 {
        self.subscription
    }

    /// The parts of the notification that carries an event (`head` and `members`, from
    /// [`events::with_seq`]), to be written one after the other (the event itself is
    /// shared by every recipient, never copied per session).
    pub(crate) fn notification<'a>(&'a self, head: &'a SeqHead, members: &'a [u8]) -> [&'a [u8]; 4] {
        [self.prefix.as_bytes(), head.as_bytes(), members, b"}}"]
    }

    /// The next message; `None` once the stream is over.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        if let Some(welcome) = self.welcome.take() {
            return Poll::Ready(Some(Next::Event(Sequenced { seq: 0, event: welcome })));
        }
        if let Some(missed) = self.replay.next() {
            return Poll::Ready(Some(Next::Event(missed)));
        }
        if let Some(drain) = &mut self.drain
            && let Poll::Ready(deadline) = drain.as_mut().poll(cx)
        {
            self.drain = None;
            if let Some(deadline_ms) = deadline {
                let event = events::serialize(&Event::ServerDraining { deadline_ms });
                return Poll::Ready(Some(Next::Event(Sequenced { seq: 0, event })));
            }
        }
        let Some(rx) = &mut self.rx else { return Poll::Ready(None) };
        let mut next = rx.poll_next(cx);
        // Queued before the resume: replayed already, or seen by the client.
        while let Poll::Ready(Ok(Some(event))) = &next
            && event.seq <= self.through
        {
            next = rx.poll_next(cx);
        }
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(event))) => Poll::Ready(Some(Next::Event(event))),
            Poll::Ready(Ok(None)) => {
                self.give_back();
                Poll::Ready(None)
            }
            Poll::Ready(Err(reason)) => {
                self.give_back();
                let e = to_rpc_error(EVENTS.subscribe, &reason);
                let data = SessionEnded { reason: reason.reason() };
                let error = ErrorObjectOwned::owned(e.code(), e.message().to_owned(), Some(data));
                let payload = jsonrpsee::types::response::SubscriptionPayloadError {
                    subscription: jsonrpsee::types::SubscriptionId::Num(self.subscription),
                    error,
                };
                let message = jsonrpsee::types::response::SubscriptionError::new(EVENTS.notification.into(), payload);
                match serde_json::value::to_raw_value(&message) {
                    Ok(json) => Poll::Ready(Some(Next::End(json))),
                    Err(error) => {
                        // Plain strings and numbers: not expected; the stream just ends.
                        tracing::error!(%error, "cannot serialize the end of an event stream");
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    /// Hands the event queue back to the session (once).
    fn give_back(&mut self) {
        if let Some(rx) = self.rx.take() {
            self.owner.post(move |s| Box::pin(s.return_events(rx)));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Builds the RPC module: every method of the schema's table but the event stream
/// (which [`Dispatch`] answers).
fn module() -> RpcModule<()> {
    let mut m = RpcModule::new(());
    register_ping(&mut m);
    register_resume(&mut m);
    routes(&mut m);
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

/// Whether a call is the first on its connection (given to `resume`).
#[derive(Clone, Copy, Debug)]
struct FirstCall(bool);

/// `resume`: attaches the connection to the session of a resume token, in place of
/// the connection's own new session.
fn register_resume(module: &mut RpcModule<()>) {
    module
        .register_async_method(methods::Resume::NAME, |params, _, ext| async move {
            let name = methods::Resume::NAME;
            let p = parse::<<methods::Resume as Method>::Params>(&params).map_err(|e| to_rpc_error(name, &e))?;
            let (Some(slot), Some(shared), Some(first)) =
                (ext.get::<Arc<ConnSession>>(), ext.get::<Arc<Shared>>(), ext.get::<FirstCall>())
            else {
                return Err(to_rpc_error(name, &CallError::NoSession));
            };
            let conn = ext.get::<Arc<Conn>>().map(Arc::downgrade).unwrap_or_default();
            let resumed = if first.0 {
                crate::session::resume(&shared.resume_tokens, p, conn).await
            } else {
                Err(ResumeError::NotFirstCall)
            };
            match resumed {
                Ok((result, attachment)) => {
                    slot.replace(attachment);
                    Ok(result)
                }
                Err(e) => Err(to_rpc_error(name, &e)),
            }
        })
        .expect("resume is registered once");
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

        // `resume` answers on the connection, outside any session's handlers.
        let resume = ResumeError::codes().into_iter().chain(CallError::codes());
        assert_eq!(app(resume), listed(methods::Resume::ERRORS), "resume");

        let mut routed: Vec<&str> =
            possible.0.iter().map(|(name, ..)| *name).chain([methods::Ping::NAME, methods::Resume::NAME]).collect();
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
