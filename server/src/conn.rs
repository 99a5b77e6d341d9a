//! The connection layer: the accept loop, HTTP/1.1 on every connection, and the
//! bounds that keep one socket or one address from holding the server.
//!
//! Each accepted TCP connection is served by hyper with a header timeout; a `GET` goes
//! to `web::respond`. A WebSocket upgrade or a JSON-RPC `POST` is checked (allowed
//! `Origin`, the connection cap, unjoined connections per source address). A `POST`
//! goes to jsonrpsee's HTTP call with the API's method table; it holds its connection
//! slot and its address's unjoined slot while it runs, and the POSTs of one HTTP
//! connection share one request-rate bucket (`--request-rate`). Bodies are capped by
//! `--max-message-bytes`. An upgrade is answered here (`101`), and once hyper lets go
//! of the socket the same task runs the connection's frame loop (`socket::Socket`),
//! which holds the connection's slot until it closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonrpsee::server::{ConnectionState, HttpBody, HttpResponse, Methods, ServerConfig, StopHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Shared;
use crate::config::Environment;

/// What every connection of the listener shares.
pub(crate) struct Listener {
    pub(crate) shared: Arc<Shared>,
    pub(crate) methods: Methods,
    pub(crate) server_config: ServerConfig,
    pub(crate) stop: StopHandle,
    /// One permit per open WebSocket (`--max-connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// Unjoined WebSockets per source address.
    pub(crate) unjoined: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) next_id: AtomicU32,
}

/// Accepts connections until `stop` fires. Accept errors (such as running out of file
/// descriptors) back off, from 10 ms doubling to 1 s, instead of spinning.
pub(crate) async fn accept_loop(listener: TcpListener, ctx: Arc<Listener>, stop: StopHandle) {
    let stopped = stop.shutdown();
    tokio::pin!(stopped);
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_http(tcp, peer, ctx.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = &mut stopped => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Serves HTTP/1.1 on one TCP connection (the page, POSTs, or one WebSocket upgrade,
/// after which the same task serves the WebSocket).
async fn serve_http(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Listener>) {
    let header_timeout = Duration::from_secs(ctx.shared.config.connections.http_header_timeout_secs.max(1));
    let posts = crate::api::request_bucket(&ctx.shared);
    let upgraded: Arc<Mutex<Option<Upgrade>>> = Arc::default();
    let service = {
        let (ctx, upgraded) = (ctx.clone(), upgraded.clone());
        hyper::service::service_fn(move |request| {
            let (ctx, upgraded, posts) = (ctx.clone(), upgraded.clone(), posts.clone());
            async move { Ok::<_, std::convert::Infallible>(handle(request, peer, ctx, posts, upgraded).await) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    // Boxed: hyper's state lives only until the upgrade, the task lives on.
    if let Err(error) = Box::pin(connection).await {
        tracing::debug!(%error, %peer, "HTTP connection ended");
    }
    let upgrade = upgraded.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(upgrade) = upgrade {
        upgrade.run(&ctx).await;
    }
}

/// A WebSocket upgrade that was answered `101`: what its frame loop needs once hyper
/// hands over the socket.
struct Upgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    conn: Arc<Conn>,
    /// The connection's place among `--max-connections`.
    _permit: OwnedSemaphorePermit,
}

impl Upgrade {
    async fn run(self, ctx: &Listener) {
        let upgraded = match self.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return tracing::error!("WebSocket upgrade: not the TCP stream it was served on");
        };
        let config = &ctx.shared.config;
        let limits = crate::socket::Limits {
            max_message: config.max_message_bytes as usize,
            max_in_flight: config.connections.max_in_flight.max(1),
            max_outbound: config.connections.max_outbound_bytes,
            ping_interval: config.ws_ping_interval(),
            join_timeout: Duration::from_secs(config.connections.join_timeout_secs.max(1)),
        };
        let rpc = crate::api::ws_service(ctx.shared.clone(), self.conn.clone(), ctx.methods.clone());
        let socket = crate::socket::Socket::new(parts.io.into_inner(), &parts.read_buf, rpc, self.conn, limits);
        drop(parts.read_buf);
        socket.run(ctx.stop.clone().shutdown()).await;
    }
}

/// One HTTP request: a plain `GET` gets the page; an upgrade or a `POST` is checked and
/// becomes a JSON-RPC session (a `POST`'s lasts for its one call). `posts` is the
/// request-rate bucket of this HTTP connection's POSTs; an accepted upgrade is left in
/// `upgraded` for the connection's task.
async fn handle(
    mut request: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    ctx: Arc<Listener>,
    posts: Arc<Mutex<crate::limits::TokenBucket>>,
    upgraded: Arc<Mutex<Option<Upgrade>>>,
) -> HttpResponse {
    let upgrade = request.headers().contains_key(http::header::UPGRADE);
    if !upgrade && request.method() != http::Method::POST {
        return crate::web::respond(request.method(), request.uri().path(), &ctx.shared);
    }
    let config = &ctx.shared.config;
    if let Some(origin) = request.headers().get(http::header::ORIGIN)
        && !origin_allowed(origin.as_bytes(), request.headers().get(http::header::HOST), config)
    {
        return crate::web::refuse(http::StatusCode::FORBIDDEN, "this origin may not call this server");
    }
    let accept = if upgrade {
        match websocket_accept(&request) {
            Some(accept) => Some(accept),
            None => return crate::web::refuse(http::StatusCode::BAD_REQUEST, "not a WebSocket version 13 upgrade"),
        }
    } else {
        None
    };
    let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
        return crate::web::refuse(http::StatusCode::TOO_MANY_REQUESTS, "too many connections");
    };
    let source = source_address(peer.ip(), request.headers(), &config.connections.trusted_proxy);
    let Some(slot) = UnjoinedSlot::take(&ctx, source) else {
        return crate::web::refuse(
            http::StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address that have not joined a room",
        );
    };
    let conn = Arc::new(Conn {
        joined: AtomicBool::new(false),
        slot: Mutex::new(Some(slot)),
        subscriptions: AtomicU64::new(0),
        subscription: AtomicU64::new(0),
        superseded: AtomicBool::new(false),
        loop_waker: AtomicWaker::new(),
    });
    let Some(accept) = accept else {
        let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
        let state = ConnectionState::new(ctx.stop.clone(), id, permit);
        let middleware = crate::api::session_middleware(ctx.shared.clone(), conn, posts);
        let (server_config, methods) = (ctx.server_config.clone(), ctx.methods.clone());
        return jsonrpsee::server::http::call_with_service_builder(request, server_config, state, methods, middleware)
            .await;
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    *upgraded.lock().unwrap_or_else(|e| e.into_inner()) = Some(Upgrade { on_upgrade, conn, _permit: permit });
    let mut response = HttpResponse::new(HttpBody::empty());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The `Sec-WebSocket-Accept` of a valid WebSocket (version 13) upgrade request.
fn websocket_accept<B>(request: &http::Request<B>) -> Option<http::HeaderValue> {
    let headers = request.headers();
    let has = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    let valid = request.method() == http::Method::GET
        && has(http::header::UPGRADE, "websocket")
        && has(http::header::CONNECTION, "upgrade")
        && headers.get(http::header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(http::header::SEC_WEBSOCKET_KEY).filter(|_| valid)?;
    http::HeaderValue::from_str(&crate::frame::accept_key(key.as_bytes())).ok()
}

/// Whether a WebSocket upgrade from `origin` is allowed: `--allowed-origins` (a comma
/// list, or `*`); unset, any origin in development and the page's own (same host) in
/// production. Clients that send no `Origin` (not browsers) are not affected.
fn origin_allowed(origin: &[u8], host: Option<&http::HeaderValue>, config: &crate::Config) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else { return false };
    match config.connections.allowed_origins.as_deref() {
        Some(list) => list.split(',').map(str::trim).any(|allowed| allowed == "*" || allowed == origin),
        None if config.environment() == Environment::Development => true,
        None => {
            let host = host.and_then(|h| h.to_str().ok()).unwrap_or_default();
            let own = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            own.is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
        }
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the
/// nearest untrusted address of `X-Forwarded-For`.
fn source_address(peer: IpAddr, headers: &http::HeaderMap, trusted: &[crate::config::Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer.to_canonical();
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut source = peer;
    for hop in hops.into_iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => source = ip,
            Ok(ip) => return ip.to_canonical(),
            Err(_) => break,
        }
    }
    source.to_canonical()
}

/// What a connection's frame loop (or HTTP POST) shares with its RPC middleware.
pub(crate) struct Conn {
    joined: AtomicBool,
    /// The connection's place among its address's unjoined connections, until it joins.
    slot: Mutex<Option<UnjoinedSlot>>,
    /// Subscription ids given so far.
    subscriptions: AtomicU64,
    /// The id of the event stream being written, 0 if none.
    subscription: AtomicU64,
    /// The session resumed on another connection: this one must close.
    superseded: AtomicBool,
    /// The frame loop, woken by [`Conn::close`].
    loop_waker: AtomicWaker,
}

impl Conn {
    /// The session joined a room: it no longer counts as unjoined.
    pub(crate) fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether the session has joined a room since the connection opened.
    pub(crate) fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// A new subscription id (unique on this connection).
    pub(crate) fn new_subscription(&self) -> u64 {
        self.subscriptions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The event stream `id` is now written to the client.
    pub(crate) fn stream_started(&self, id: u64) {
        self.subscription.store(id, Ordering::Relaxed);
    }

    /// Closes the connection now (its session resumed on another one): the frame loop
    /// sends a close frame and ends.
    pub(crate) fn close(&self) {
        self.superseded.store(true, Ordering::Relaxed);
        self.loop_waker.wake();
    }

    /// Whether [`Conn::close`] was called; registers the frame loop to be woken by it.
    pub(crate) fn poll_superseded(&self, cx: &std::task::Context<'_>) -> bool {
        self.loop_waker.register(cx.waker());
        self.superseded.load(Ordering::Relaxed)
    }

    /// Ends subscription `id` if it is the current one; whether it was.
    pub(crate) fn end_subscription(&self, id: u64) -> bool {
        id != 0 && self.subscription.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// A slot among the unjoined connections of one source address; freed on drop.
struct UnjoinedSlot {
    ctx: Arc<Listener>,
    source: IpAddr,
}

impl UnjoinedSlot {
    fn take(ctx: &Arc<Listener>, source: IpAddr) -> Option<Self> {
        let mut map = ctx.unjoined.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(source).or_default();
        if *count >= ctx.shared.config.connections.max_unjoined_per_ip {
            return None;
        }
        *count += 1;
        Some(UnjoinedSlot { ctx: ctx.clone(), source })
    }
}

impl Drop for UnjoinedSlot {
    fn drop(&mut self) {
        let mut map = self.ctx.unjoined.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.source);
            }
        }
    }
}

/// Raises the soft open-file limit to the hard limit, so `--max-connections` sockets
/// fit. Failure is logged, not fatal.
pub(crate) fn raise_open_file_limit() {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
                Err(error) => tracing::warn!(%error, soft, hard, "cannot raise the open-file limit"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(source_address(proxy, &headers, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(source_address(stranger, &headers, &trusted), stranger);
        assert_eq!(source_address(proxy, &http::HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn cidrs_match_their_networks() {
        let net: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains("192.168.44.1".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.168.1.1".parse().unwrap()));
        let any: Cidr = "::/0".parse().unwrap();
        assert!(any.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn origins_follow_the_flag_then_the_environment() {
        let mut config = crate::Config::for_tests();
        let host = http::HeaderValue::from_static("voice.example.com");
        assert!(origin_allowed(b"https://evil.example", Some(&host), &config), "development allows any");
        config.environment = Some(Environment::Production);
        assert!(origin_allowed(b"https://voice.example.com", Some(&host), &config));
        assert!(!origin_allowed(b"https://evil.example", Some(&host), &config));
        config.connections.allowed_origins = Some("https://app.example, https://voice.example.com".into());
        assert!(origin_allowed(b"https://app.example", Some(&host), &config));
        assert!(!origin_allowed(b"https://evil.example", Some(&host), &config));
    }
}
