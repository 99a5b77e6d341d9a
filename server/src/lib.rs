//! `dspeak-server`: the dspeak signaling server and WebRTC audio SFU.
//!
//! [`run`] starts everything and returns a [`ServerHandle`]; `main.rs` only parses
//! flags, sets up logging and waits for a signal.
//!
//! Layout:
//! - [`config`]: flags and environment variables; [`config_file`]: `--config` files
//!   and the effective configuration; [`check`] validates a configuration.
//! - `api`: the JSON-RPC layer (jsonrpsee): registers the `dspeak-schema` method table,
//!   creates a session per connection, maps errors to codes. Knows no str0m.
//! - `session`: one actor per connection owning its state; one file per API area;
//!   `session/resume.rs`: sessions that outlive a dropped connection (`resume`).
//! - `room`: rooms as a state machine (members, producers, fan-out) returning effects.
//! - `events`: bounded per-session event queues (numbered, with a replay log for
//!   `resume`) and the slow-consumer policy.
//! - the media engine is the `dspeak-media` crate (workers, str0m transports,
//!   forwarding, traffic counters), driven through one `RouterHandle` per room.
//! - `conn`: the connection layer: accept loop, HTTP, WebSocket upgrades and the
//!   per-address bounds; `socket`: a WebSocket's frame loop and its per-connection
//!   bounds; `frame`: the RFC 6455 frame codec.
//! - `web`: plain HTTP answers: the voice-room demo page at `/`, `/openrpc.json`,
//!   and the probes.
//! - `health`: `/healthz` and `/readyz`. `drain`: the graceful drain state.
//! - `metrics`: Prometheus metrics; `monitor`: the `--metrics-listen` listener.
//! - [`auth`]: access tokens (checking and minting).
//! - `limits`: rate limiting.
//! - `webhooks`: signed room and peer events POSTed to the application's backend.
//! - [`error`]: errors per area and their wire codes.
//! - `cluster`: cluster mode (`--redis-url`): the node registry and room placement in
//!   Redis, behind the `Cluster` handle `join` asks.

pub mod auth;
pub mod config;
pub mod config_file;
pub mod error;

mod api;
mod cluster;
mod conn;
mod drain;
mod events;
mod frame;
mod health;
mod limits;
mod metrics;
mod monitor;
mod room;
mod session;
mod socket;
mod web;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

pub use config::Config;

/// State shared by every session.
#[derive(Debug)]
struct Shared {
    config: Config,
    rooms: Mutex<session::ServerRooms>,
    engine: dspeak_media::Engine,
    counts: Counters,
    metrics: metrics::Metrics,
    drain: drain::Drain,
    webhooks: webhooks::Webhooks,
    /// The resume tokens of sessions that can be resumed.
    resume_tokens: session::ResumeTokens,
    /// Cluster mode (`--redis-url`); `None` on a single node.
    cluster: Option<cluster::Cluster>,
}

impl Shared {
    /// Current live counts.
    fn counts(&self) -> Counts {
        let media = self.engine.counts();
        let (rooms, peers) = {
            let registry = self.rooms();
            (registry.len(), registry.peers())
        };
        Counts {
            sessions: self.counts.sessions.load(Ordering::Relaxed),
            detached: self.resume_tokens.detached(),
            rooms,
            peers,
            transports: media.transports,
            producers: media.producers,
            consumers: media.consumers,
            tcp_connections: media.tcp_connections,
            webhooks_dropped: self.webhooks.dropped(),
        }
    }
}

impl Shared {
    /// The room registry, locked. Never held across `.await`; recovers from poisoning
    /// (the registry has no invariant a panic could break half-way: every change is
    /// made by one synchronous method).
    fn rooms(&self) -> MutexGuard<'_, session::ServerRooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl cluster::Local for std::sync::Weak<Shared> {
    fn state(&self) -> Option<cluster::LocalState> {
        let shared = self.upgrade()?;
        let (rooms, peers) = {
            let registry = shared.rooms();
            (registry.summaries(None), registry.peers())
        };
        let consumers = shared.engine.counts().consumers;
        let (draining, max_rooms) = (shared.drain.is_draining(), shared.config.limits.max_rooms);
        Some(cluster::LocalState { rooms, peers, consumers, draining, max_rooms })
    }

    fn lost(&self, room: &str) {
        if let Some(shared) = self.upgrade() {
            session::remove_members(&shared, room);
        }
    }

    fn admin(
        &self,
        method: String,
        params: serde_json::Value,
    ) -> futures_util::future::BoxFuture<'static, serde_json::Value> {
        let shared = self.upgrade();
        Box::pin(async move {
            match shared {
                Some(shared) => session::answer_forwarded(shared, method, params).await,
                None => serde_json::json!({ "error": api::to_rpc_error(&method, &error::CallError::Closed) }),
            }
        })
    }
}

/// Milliseconds since the Unix epoch, now.
fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicUsize,
}

/// Live counts of what the server holds, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Open sessions (connections whose cleanup has not finished).
    pub sessions: usize,
    /// Sessions waiting for a resume without a connection (`--resume-grace`).
    pub detached: usize,
    /// Rooms.
    pub rooms: usize,
    /// Joined peers.
    pub peers: usize,
    /// WebRTC transports.
    pub transports: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Open ICE-TCP connections (attached to a transport or not yet).
    pub tcp_connections: usize,
    /// Webhook events dropped because their queue was full.
    pub webhooks_dropped: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// Any other I/O failure at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<dspeak_media::MediaError> for StartError {
    fn from(e: dspeak_media::MediaError) -> Self {
        match e {
            dspeak_media::MediaError::Bind { addr, source } => StartError::Bind { addr, source },
            dspeak_media::MediaError::Io(e) => StartError::Io(e),
            other => StartError::Config(other.to_string()),
        }
    }
}

/// The media engine's settings from the server's flags. Production needs an announced
/// address: the engine's default (loopback or the listen IP) is for development.
fn engine_config(config: &Config) -> Result<dspeak_media::EngineConfig, StartError> {
    if config.announced_address.is_empty() && config.environment() == config::Environment::Production {
        return Err(StartError::Config(
            "production needs the address clients send media to: set --announced-address \
             (or DSPEAK_ANNOUNCED_ADDRESS), e.g. api.darelisme.my.id"
                .into(),
        ));
    }
    Ok(dspeak_media::EngineConfig {
        workers: config.workers,
        port: config.rtc_port,
        listen_ip: config.rtc_listen_ip,
        announced: config.announced_address.clone(),
        tcp: !config.no_rtc_tcp,
        pin_workers: config.pin_workers,
        consent_timeout: dspeak_media::CONSENT_TIMEOUT,
        speaker_events: config.speaker_events,
    })
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
}

impl ServerHandle {
    /// The WebSocket address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://` URL of the server.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// The address of the metrics listener (`--metrics-listen`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Current live counts.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Starts a graceful drain: the server stops being ready, refuses new `join`s with
    /// `unavailable`, and tells every session `serverDraining` with the deadline
    /// `timeout` from now; calls in progress go on. The future completes when the
    /// last room is empty or at the deadline, whichever comes first; the caller then
    /// stops the server (which closes what is left). Calling it again keeps the first
    /// deadline.
    pub fn drain(&self, timeout: Duration) -> impl Future<Output = Drained> + Send + 'static {
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        if self.shared.drain.start(deadline_ms) {
            tracing::info!(rooms = self.shared.rooms().len(), deadline_ms, "draining: new joins are refused");
            if let Some(cluster) = &self.shared.cluster {
                cluster.beat_now();
            }
        }
        let shared = self.shared.clone();
        async move {
            let until = tokio::time::Instant::now() + timeout;
            let mut tick = tokio::time::interval(DRAIN_POLL);
            loop {
                if shared.rooms().len() == 0 {
                    tracing::info!("drained: the last room is empty");
                    return Drained::Empty;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tokio::time::sleep_until(until) => {
                        tracing::info!(rooms = shared.rooms().len(), "drain timeout: closing the rooms left");
                        return Drained::TimedOut;
                    }
                }
            }
        }
    }

    /// Media datagrams and ICE-TCP frames dropped since start because the kernel's send
    /// buffer (`EAGAIN`) or a connection's queue was full.
    pub fn media_send_drops(&self) -> u64 {
        self.shared.engine.counts().send_drops
    }

    /// Each media worker's figures (transports, consumers, traffic), in index order.
    pub fn media_workers(&self) -> Vec<dspeak_media::WorkerStats> {
        self.shared.engine.workers()
    }

    /// The UDP ports of the media workers.
    pub fn rtc_ports(&self) -> Vec<u16> {
        self.shared.engine.ports()
    }

    /// Waits until the server has shut down and every session is closed.
    pub async fn stopped(self) {
        let _ = self.stopped.await;
    }
}

/// Production needs an auth secret; development without one gets a warning.
fn check_auth(config: &Config) -> Result<Option<&'static str>, StartError> {
    match (&config.auth_secret, config.environment()) {
        (None, config::Environment::Production) => {
            Err(StartError::Config("production needs access tokens: set --auth-secret (or DSPEAK_AUTH_SECRET)".into()))
        }
        (None, _) if !config.listen.ip().is_loopback() && !config.allow_anonymous => Err(StartError::Config(format!(
            "listening on {} (not loopback) without --auth-secret would let anyone join any room with every grant: \
             set --auth-secret (or DSPEAK_AUTH_SECRET), or pass --allow-anonymous to accept that",
            config.listen
        ))),
        (None, config::Environment::Development) => {
            Ok(Some("no --auth-secret: anyone may join any room (development only)"))
        }
        (Some(_), _) => Ok(None),
    }
}

/// Secrets shorter than this are accepted (16 is the minimum) but `check` warns.
const RECOMMENDED_SECRET_CHARS: usize = 32;

/// Validates a configuration without starting the server (`dspeak check`): the
/// production requirements, the announced address (resolved now), and that every
/// listen address and media port can be bound. Returns what was checked, or the
/// first problem.
pub fn check(config: &Config) -> Result<Vec<String>, StartError> {
    let mut report = Vec::new();
    if let Some(warning) = check_auth(config)? {
        report.push(format!("warning: {warning}"));
    }
    if let Some(secret) = &config.auth_secret {
        let chars = secret.expose().chars().count();
        report.push(match chars {
            ..RECOMMENDED_SECRET_CHARS => format!(
                "warning: the auth secret has {chars} characters; use {RECOMMENDED_SECRET_CHARS} or more random ones \
                 (openssl rand -hex 32)"
            ),
            _ => format!("auth secret set ({chars} characters)"),
        });
    }
    if cluster::settings(&config.cluster)?.is_some() {
        report.push("cluster mode: Redis URL and node URL set (Redis is not contacted by check)".into());
    }
    let engine_config = engine_config(config)?;
    let (_, announced) = dspeak_media::media_addresses(&engine_config)?;
    let announced: Vec<String> = announced.iter().map(ToString::to_string).collect();
    report.push(format!("announced addresses {}", announced.join(", ")));
    let listen = std::net::TcpListener::bind(config.listen)
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    report.push(format!("WebSocket listen address {} is free", config.listen));
    if let Some(addr) = config.metrics_listen {
        monitor::bind(addr)?;
        report.push(format!("metrics listen address {addr} is free"));
    }
    drop(listen);
    let ports = dspeak_media::check_ports(&engine_config)?;
    report.push(format!("media ports {ports} are free"));
    Ok(report)
}

/// How often a drain checks for the last room to close.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every room closed.
    Empty,
    /// The drain timeout passed with rooms still open.
    TimedOut,
}

/// Starts the server. It runs until `shutdown` completes, then stops accepting
/// connections, closes every session and finishes [`ServerHandle::stopped`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle, StartError> {
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let metrics_listener = config.metrics_listen.map(monitor::bind).transpose()?;
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(warning) = check_auth(&config)? {
        tracing::warn!("{warning}");
    }
    let cluster = cluster::settings(&config.cluster)?.map(cluster::Cluster::start).transpose()?;
    let webhooks = webhooks::Webhooks::start(&config)?;
    conn::raise_open_file_limit();
    let engine = dspeak_media::Engine::start(&engine_config(&config)?)?;
    let shared = Arc::new(Shared {
        config,
        rooms: Mutex::default(),
        engine,
        counts: Counters::default(),
        metrics: metrics::Metrics::default(),
        drain: drain::Drain::default(),
        webhooks,
        resume_tokens: session::ResumeTokens::default(),
        cluster,
    });
    if let Some(cluster) = &shared.cluster {
        tracing::info!(node = cluster.node_id(), "cluster mode");
        cluster.attach(Arc::new(Arc::downgrade(&shared)));
    }
    let stopped = api::serve(listener, metrics_listener, shared.clone(), shutdown)?;
    Ok(ServerHandle { local_addr, metrics_addr, shared, stopped })
}
