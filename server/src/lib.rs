//! `dspeak-server`: the dspeak signaling server and WebRTC audio SFU.
//!
//! [`run`] starts everything and returns a [`ServerHandle`]; `main.rs` only parses
//! flags, sets up logging and waits for a signal.
//!
//! Layout:
//! - [`config`]: flags and environment variables.
//! - `api`: the JSON-RPC layer (jsonrpsee): registers the `dspeak-schema` method table,
//!   creates a session per connection, maps errors to codes. Knows no str0m.
//! - `session`: one actor per connection owning its state; one file per API area.
//! - `room`: the room registry and event fan-out.
//! - `events`: bounded per-session event queues and the slow-consumer policy.
//! - the media engine is the `dspeak-media` crate (workers, str0m transports,
//!   forwarding), driven through one `RouterHandle` per room.
//! - `web`: the embedded voice-room demo page, served at `/`.
//! - [`auth`]: access tokens (checking and minting).
//! - `limits`: rate limiting.
//! - [`error`]: domain errors.

pub mod auth;
pub mod config;
pub mod error;

mod api;
mod events;
mod limits;
mod room;
mod session;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;

pub use config::Config;

/// State shared by every session.
#[derive(Debug)]
struct Shared {
    config: Config,
    rooms: room::Rooms,
    engine: dspeak_media::Engine,
    counts: Counters,
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
    })
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
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

    /// Current live counts.
    pub fn counts(&self) -> Counts {
        let media = self.shared.engine.counts();
        Counts {
            sessions: self.shared.counts.sessions.load(Ordering::Relaxed),
            rooms: self.shared.rooms.len(),
            peers: self.shared.rooms.peers(),
            transports: media.transports,
            producers: media.producers,
            consumers: media.consumers,
            tcp_connections: media.tcp_connections,
        }
    }

    /// Media datagrams and ICE-TCP frames dropped since start because the kernel's send
    /// buffer (`EAGAIN`) or a connection's queue was full.
    pub fn media_send_drops(&self) -> u64 {
        self.shared.engine.counts().send_drops
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
    match (&config.auth_secret, config.environment()) {
        (None, config::Environment::Production) => {
            return Err(StartError::Config(
                "production needs access tokens: set --auth-secret (or DSPEAK_AUTH_SECRET)".into(),
            ));
        }
        (None, config::Environment::Development) => {
            tracing::warn!("no --auth-secret: anyone may join any room (development only)");
        }
        (Some(_), _) => {}
    }
    let engine = dspeak_media::Engine::start(&engine_config(&config)?)?;
    let shared = Arc::new(Shared { config, rooms: room::Rooms::default(), engine, counts: Counters::default() });
    let stopped = api::serve(listener, shared.clone(), shutdown)?;
    Ok(ServerHandle { local_addr, shared, stopped })
}
