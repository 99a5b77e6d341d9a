//! The connection layer: the accept loop, HTTP/1.1 on every connection, and the
//! bounds that keep one socket or one address from holding the server.
//!
//! Each accepted TCP connection is served by hyper with a header timeout; a `GET` goes
//! to `web::respond`. A WebSocket upgrade or a JSON-RPC `POST` is checked (allowed
//! `Origin`, the connection cap, unjoined connections per source address) and handed
//! to jsonrpsee's per-connection WebSocket driver, or its HTTP call, with the API's
//! method table; a `POST` holds its connection slot and its address's unjoined slot
//! while it runs, and the POSTs of one HTTP connection share one request-rate bucket
//! (`--request-rate`). Bodies are capped by `--max-message-bytes`. The socket
//! is wrapped in [`Guarded`], which counts what reaches the kernel and lets the layer
//! close it at once: when the connection leaves more than `--max-outbound-bytes`
//! unread, or has not joined a room within `--join-timeout`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonrpsee::server::{ConnectionState, HttpResponse, Methods, ServerConfig, StopHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::Shared;
use crate::config::Environment;

/// The most one connection reads per turn of the runtime.
const READ_CHUNK: usize = 2048;

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

/// Serves HTTP/1.1 on one TCP connection (the page, or one WebSocket upgrade).
async fn serve_http(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Listener>) {
    let guard =
        Arc::new(Guard { max_in_flight: ctx.shared.config.connections.max_in_flight.max(1), ..Guard::default() });
    let io = TokioIo::new(Guarded { io: tcp, guard: guard.clone(), must_yield: false });
    let header_timeout = Duration::from_secs(ctx.shared.config.connections.http_header_timeout_secs.max(1));
    let posts = crate::api::request_bucket(&ctx.shared);
    let service = hyper::service::service_fn(move |request| {
        let ctx = ctx.clone();
        let guard = guard.clone();
        let posts = posts.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(request, peer, ctx, guard, posts).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%error, %peer, "HTTP connection ended");
    }
}

/// One HTTP request: a plain `GET` gets the page; an upgrade or a `POST` is checked and
/// becomes a JSON-RPC session (a `POST`'s lasts for its one call). `posts` is the
/// request-rate bucket of this HTTP connection's POSTs.
async fn handle(
    request: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    ctx: Arc<Listener>,
    guard: Arc<Guard>,
    posts: Arc<Mutex<crate::limits::TokenBucket>>,
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
        guard: guard.clone(),
        closed: Notify::new(),
        joined: AtomicBool::new(false),
        slot: Mutex::new(Some(slot)),
        budget: config.connections.max_outbound_bytes as i64,
    });
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let state = ConnectionState::new(ctx.stop.clone(), id, permit);
    if !upgrade {
        let middleware = crate::api::session_middleware(ctx.shared.clone(), conn, posts);
        let (server_config, methods) = (ctx.server_config.clone(), ctx.methods.clone());
        return jsonrpsee::server::http::call_with_service_builder(request, server_config, state, methods, middleware)
            .await;
    }
    let middleware =
        crate::api::session_middleware(ctx.shared.clone(), conn.clone(), crate::api::request_bucket(&ctx.shared));
    match jsonrpsee::server::ws::connect(request, ctx.server_config.clone(), ctx.methods.clone(), state, middleware)
        .await
    {
        Ok((response, session)) => {
            let join_timeout = Duration::from_secs(config.connections.join_timeout_secs.max(1));
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(join_timeout);
                tokio::pin!(session, deadline);
                let mut waiting_for_join = true;
                loop {
                    tokio::select! {
                        () = &mut session => return,
                        () = conn.closed.notified() => break,
                        () = &mut deadline, if waiting_for_join => {
                            if conn.joined.load(Ordering::Relaxed) {
                                waiting_for_join = false;
                            } else {
                                tracing::debug!(%peer, "closing a connection that did not join in time");
                                break;
                            }
                        }
                    }
                }
                conn.guard.close();
            });
            response
        }
        Err(response) => response,
    }
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

/// One WebSocket connection's bounds, shared by the connection task and the
/// connection's RPC middleware.
pub(crate) struct Conn {
    guard: Arc<Guard>,
    /// Fired to make the connection task close the connection.
    closed: Notify,
    joined: AtomicBool,
    /// The connection's place among its address's unjoined connections, until it joins.
    slot: Mutex<Option<UnjoinedSlot>>,
    budget: i64,
}

impl Conn {
    /// The session joined a room: it no longer counts as unjoined.
    pub(crate) fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// A request arrived; the returned guard counts it in flight until dropped.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.guard.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.guard.clone())
    }

    /// `bytes` of answer or event are queued for the client; closes the connection
    /// when its unsent output exceeds the budget.
    pub(crate) fn queued(&self, bytes: usize) {
        // A WebSocket frame header of up to 10 bytes goes with each message.
        let unsent = self.guard.unsent.fetch_add(bytes as i64 + 10, Ordering::Relaxed) + bytes as i64 + 10;
        if unsent > self.budget {
            tracing::info!(unsent, budget = self.budget, "closing a connection that does not read its answers");
            self.close();
        }
    }

    /// Closes the connection now.
    pub(crate) fn close(&self) {
        self.guard.close();
        self.closed.notify_one();
    }
}

/// One request in flight; when dropped (answered) reading may resume.
pub(crate) struct InFlight(Arc<Guard>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        if before == self.0.max_in_flight {
            self.0.reader.wake();
        }
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

/// What [`Guarded`] shares with the layer: a kill switch, the unsent-byte count and
/// the requests in flight.
#[derive(Default)]
struct Guard {
    closed: AtomicBool,
    /// Requests received and not yet answered; at `max_in_flight` reading stops.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Bytes queued for the client minus bytes written to the socket (never below 0).
    unsent: AtomicI64,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Guard {
    /// Makes every further read and write fail, and wakes whoever waits on them.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.reader.wake();
        self.writer.wake();
    }

    fn full(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight
    }

    fn check(&self) -> io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the server"))
        } else {
            Ok(())
        }
    }
}

/// A TCP stream the connection layer can close from outside (even while a writer
/// waits on a client that does not read) and that counts the bytes written. It is
/// also where backpressure happens: after each read it lets the runtime run the
/// requests that read produced, and while `--max-in-flight` requests are unanswered
/// it does not read at all.
struct Guarded {
    io: TcpStream,
    guard: Arc<Guard>,
    /// Set by a read; the next read first yields to the requests it spawned.
    must_yield: bool,
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.guard.check()?;
        this.guard.reader.register(cx.waker());
        if this.must_yield {
            this.must_yield = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.guard.full() {
            // Woken by `Conn::answered` when a request is answered.
            return Poll::Pending;
        }
        // At most READ_CHUNK bytes per turn: one connection's burst of requests is
        // interleaved with the other connections' instead of running ahead of them.
        let room = buf.remaining().min(READ_CHUNK);
        let mut chunk = ReadBuf::new(buf.initialize_unfilled_to(room));
        let read = Pin::new(&mut this.io).poll_read(cx, &mut chunk);
        let n = chunk.filled().len();
        buf.advance(n);
        this.must_yield = matches!(read, Poll::Ready(Ok(()))) && n > 0;
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.guard.check()?;
        this.guard.writer.register(cx.waker());
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            let unsent = this.guard.unsent.fetch_sub(n as i64, Ordering::Relaxed) - n as i64;
            if unsent < 0 {
                this.guard.unsent.store(0, Ordering::Relaxed);
            }
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.guard.check()?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
