//! Test helpers: start a server, connect clients, read events with timeouts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use dspeak_schema::auth::TokenClaims;
use dspeak_schema::client::DspeakClient;
use dspeak_schema::rooms::{JoinParams, JoinResult};
use dspeak_schema::{EVENTS, Event, METHODS};
use dspeak_server::{Config, Counts, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::client::Subscription;
use jsonrpsee::core::client::{
    MiddlewareBatchResponse, MiddlewareMethodResponse, MiddlewareNotifResponse, SubscriptionClientT,
};
use jsonrpsee::core::middleware::{Batch, Notification, RpcServiceBuilder, RpcServiceT};
use jsonrpsee::core::{ClientError, rpc_params};
use jsonrpsee::types::Request;
use jsonrpsee::ws_client::WsClient;
use jsonrpsee::ws_client::{RpcService, WsClientBuilder};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// The exported JSON Schema bundle, with one compiled validator per definition.
struct Contract {
    bundle: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static CONTRACT: LazyLock<Contract> =
    LazyLock::new(|| Contract { bundle: dspeak_schema::export::json_schema_bundle(), validators: Mutex::default() });

/// Asserts that `instance` matches the bundle's definition `name`.
pub fn validate(name: &str, instance: &Value) {
    let validator = {
        let mut cache = CONTRACT.validators.lock().unwrap();
        cache
            .entry(name.to_owned())
            .or_insert_with(|| {
                let schema = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$defs": CONTRACT.bundle["$defs"],
                    "$ref": format!("#/$defs/{name}"),
                });
                Arc::new(jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("schema of {name}: {e}")))
            })
            .clone()
    };
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} does not match the exported schema: {errors:?}\n{instance:#}");
}

/// Asserts that a method's result matches its exported result schema.
pub fn validate_result(method: &str, result: &Value) {
    let methods = &CONTRACT.bundle[dspeak_schema::export::BUNDLE_METHODS_KEYWORD]["methods"];
    let reference = methods[method]["result"]["$ref"].as_str();
    let name = reference.and_then(|r| r.strip_prefix("#/$defs/"));
    match name {
        Some(name) => validate(name, result),
        None if method == EVENTS.subscribe => {}
        None => panic!("method {method} has no result schema"),
    }
}

/// A jsonrpsee client middleware that checks every answer against the exported schema.
#[derive(Clone)]
pub struct Validated<S>(S);

impl<S> RpcServiceT for Validated<S>
where
    S: RpcServiceT<
            MethodResponse = Result<MiddlewareMethodResponse, ClientError>,
            BatchResponse = Result<MiddlewareBatchResponse, ClientError>,
            NotificationResponse = Result<MiddlewareNotifResponse, ClientError>,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = S::MethodResponse;
    type BatchResponse = S::BatchResponse;
    type NotificationResponse = S::NotificationResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let method = request.method_name().to_owned();
        let call = self.0.call(request);
        async move {
            let response = call.await?;
            let json = serde_json::to_value(&*response).expect("responses are JSON");
            match (json.get("result"), json.get("error")) {
                (Some(result), _) => validate_result(&method, result),
                (_, Some(error)) => validate("JsonRpcError", error),
                _ => panic!("neither result nor error: {json}"),
            }
            Ok(response)
        }
    }

    fn batch<'a>(&self, requests: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        self.0.batch(requests)
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.0.notification(n)
    }
}

/// The typed client the tests use: every answer is checked against the schema.
pub type Client = WsClient<Validated<RpcService>>;

/// How long any single expected thing may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
}

pub async fn spawn_server() -> TestServer {
    spawn_server_with(Config::for_tests()).await
}

pub async fn spawn_server_with(config: Config) -> TestServer {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = dspeak_server::run(config, async {
        let _ = stopped.await;
    })
    .await
    .expect("server starts");
    TestServer { handle, stop: Some(stop) }
}

impl TestServer {
    pub fn url(&self) -> String {
        self.handle.ws_url()
    }

    /// A typed client whose answers are validated against the exported schema.
    pub async fn client(&self) -> Client {
        client_at(&self.url()).await
    }

    /// A typed client subscribed to its events, with `welcome` already read.
    pub async fn subscribed(&self) -> Peer {
        subscribed_at(&self.url()).await
    }

    /// A subscribed client joined to `room` as `name`.
    pub async fn joined(&self, room: &str, name: &str) -> Peer {
        let mut peer = self.subscribed().await;
        peer.join(room, name).await;
        peer
    }

    /// Waits until the live counts satisfy `pred`, or fails showing the last counts.
    pub async fn wait_counts(&self, what: &str, pred: impl Fn(&Counts) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let counts = self.handle.counts();
            if pred(&counts) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; counts: {counts:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Triggers shutdown and waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle.stopped()).await.expect("server stops");
    }
}

/// A typed client of the server at `url` whose answers are validated against the
/// exported schema.
pub async fn client_at(url: &str) -> Client {
    WsClientBuilder::default()
        .set_rpc_middleware(RpcServiceBuilder::new().layer_fn(Validated))
        .build(url)
        .await
        .expect("client connects")
}

/// A typed client of the server at `url` subscribed to its events, `welcome` read.
pub async fn subscribed_at(url: &str) -> Peer {
    let client = client_at(url).await;
    let mut events = client.subscribe(EVENTS.subscribe, rpc_params![], EVENTS.unsubscribe).await.expect("subscribe");
    let welcome = next_event(&mut events).await;
    assert!(matches!(welcome, Event::Welcome { .. }), "first event must be welcome, got {welcome:?}");
    Peer { client, events, joined: None }
}

/// A typed client with its event stream.
pub struct Peer {
    pub client: Client,
    /// Raw events: each is validated against the schema before it is read as `Event`.
    pub events: Subscription<Value>,
    pub joined: Option<JoinResult>,
}

impl Peer {
    pub async fn join(&mut self, room: &str, name: &str) -> JoinResult {
        let joined = self
            .client
            .join(JoinParams { room: room.into(), display_name: name.into(), token: None })
            .await
            .expect("join");
        self.joined = Some(joined.clone());
        joined
    }

    pub fn peer_id(&self) -> dspeak_schema::PeerId {
        self.joined.as_ref().expect("joined").peer_id.clone()
    }

    pub async fn next_event(&mut self) -> Event {
        next_event(&mut self.events).await
    }

    /// Skips events until one matches.
    pub async fn event_where(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(Some(Ok(e))) => {
                    let e = checked_event(e);
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(other) => panic!("event stream ended while waiting for {what}: {other:?}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn no_event(&mut self, wait: Duration) {
        if let Ok(e) = tokio::time::timeout(wait, self.events.next()).await {
            panic!("expected no event, got {e:?}");
        }
    }
}

pub async fn next_event(events: &mut Subscription<Value>) -> Event {
    match tokio::time::timeout(TIMEOUT, events.next()).await {
        Ok(Some(Ok(e))) => checked_event(e),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Validates a raw event against the schema and reads it.
fn checked_event(raw: Value) -> Event {
    validate("Event", &raw);
    serde_json::from_value(raw).expect("a valid event reads as Event")
}

/// A recorded wire payload from `fixtures/reference/`.
pub fn fixture(path: &str) -> Value {
    let file = format!("{}/../fixtures/reference/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))).unwrap()
}

/// The JSON-RPC error code of a failed typed call.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, jsonrpsee::core::ClientError>) -> i32 {
    match r {
        Err(jsonrpsee::core::ClientError::Call(e)) => e.code(),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// A raw WebSocket connection speaking JSON text frames.
pub struct RawWs {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl RawWs {
    pub async fn connect(url: &str) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("raw ws connects");
        RawWs { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send");
    }

    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Next text message as sent (skipping pings).
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Next JSON text message (skipping pings).
    pub async fn recv(&mut self) -> Value {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(&t).expect("server sends JSON");
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Next response with the given id, skipping notifications.
    pub async fn response(&mut self, id: Value) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("id") == Some(&id) {
                return v;
            }
        }
    }

    /// Sends `text` and a close frame in one write, so the server reads both in one
    /// turn (the request's answer can no longer reach this connection).
    pub async fn send_and_close(mut self, text: impl Into<String>) {
        self.ws.feed(Message::text(text.into())).await.expect("feed");
        let _ = self.ws.close(None).await;
    }

    /// Drops the connection with a TCP reset (SO_LINGER 0): no close frame, no FIN.
    pub async fn reset(self) {
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            tcp.set_zero_linger().expect("SO_LINGER 0");
        }
        drop(self);
    }

    /// Whether the server closes the connection within `wait` (reading and dropping
    /// whatever comes before).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends a request and waits for its response, which must match the schema.
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(msg.to_string()).await;
        let response = self.response(Value::from(id)).await;
        match (response.get("result"), response.get("error")) {
            (Some(result), _) if METHODS.iter().any(|m| m.name == method) => validate_result(method, result),
            (_, Some(error)) => validate("JsonRpcError", error),
            _ => {}
        }
        response
    }
}

/// The error code of a raw response.
pub fn raw_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error response, got {v}"))
}

/// `GET path` over plain HTTP/1.1: the response head and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

/// The HTTP status of `GET path`.
pub async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let (head, _) = http_get(addr, path).await;
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head}"))
}

/// One scrape of `/metrics`, read with a Prometheus text-format parser.
pub struct Metrics(prometheus_parse::Scrape);

impl Metrics {
    pub async fn scrape(addr: std::net::SocketAddr) -> Metrics {
        let (head, body) = http_get(addr, "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Metrics(prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format"))
    }

    /// Sum of the samples of `name` whose labels include every one of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let samples: Vec<_> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        samples
            .iter()
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name} is not a number: {other:?}"),
            })
            .sum()
    }

    /// Whether any sample of `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == name)
    }

    /// Observations of histogram `name` for `method` (its `+Inf` bucket).
    pub fn histogram_count(&self, name: &str, method: &str) -> u64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get("method") == Some(method))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0, |b| b.count as u64),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }
}

/// The auth secret of [`secured`] servers.
pub const SECRET: &str = "a-test-secret-of-some-length";

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims of a user token for `identity` in `room`, valid for ten minutes.
pub fn claims(identity: &str, room: &str) -> TokenClaims {
    TokenClaims {
        sub: identity.into(),
        room: room.into(),
        name: None,
        metadata: None,
        admin: false,
        can_publish: true,
        can_subscribe: true,
        can_broadcast: true,
        exp: now() + 600,
        nbf: None,
        iat: Some(now()),
    }
}

/// An admin token for `room` (`*`: every room).
pub fn admin_token(room: &str) -> String {
    token(&TokenClaims { admin: true, ..claims("backend", room) })
}

/// `claims` signed with [`SECRET`].
pub fn token(claims: &TokenClaims) -> String {
    dspeak_server::auth::mint(SECRET, claims).unwrap()
}

/// The test configuration with [`SECRET`] as the auth secret.
pub fn secured_config() -> Config {
    let mut config = Config::for_tests();
    config.auth_secret = Some(SECRET.parse().unwrap());
    config
}

/// A server that requires access tokens signed with [`SECRET`].
pub async fn secured() -> TestServer {
    spawn_server_with(secured_config()).await
}

impl TestServer {
    /// A subscribed client joined to `room` with a token of `claims`.
    pub async fn joined_with(&self, claims: &TokenClaims, display_name: &str) -> Peer {
        let mut peer = self.subscribed().await;
        let params =
            JoinParams { room: claims.room.clone(), display_name: display_name.into(), token: Some(token(claims)) };
        peer.joined = Some(peer.client.join(params).await.expect("join with a token"));
        peer
    }
}
