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
//! - `room`: rooms as a state machine (members, producers, fan-out) returning effects.
//! - `events`: bounded per-session event queues and the slow-consumer policy.
//! - `media`: the media engine (workers, str0m transports, forwarding).
//! - `conn`: the connection layer: accept loop, HTTP, WebSocket upgrades and the
//!   per-connection and per-address bounds.
//! - `web`: plain HTTP answers: the voice-room demo page at `/`, `/openrpc.json`.
//! - [`auth`]: access tokens (checking and minting).
//! - `limits`: rate limiting.
//! - [`error`]: errors per area and their wire codes.

pub mod auth;
pub mod config;
pub mod error;

mod api;
mod conn;
mod events;
mod limits;
mod media;
mod room;
mod session;
mod web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

pub use config::Config;

/// State shared by every session.
#[derive(Debug)]
struct Shared {
    config: Config,
    rooms: Mutex<session::ServerRooms>,
    engine: media::Engine,
    counts: Counters,
}

impl Shared {
    /// The room registry, locked. Never held across `.await`; recovers from poisoning
    /// (the registry has no invariant a panic could break half-way: every change is
    /// made by one synchronous method).
    fn rooms(&self) -> MutexGuard<'_, session::ServerRooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        let (rooms, peers) = {
            let registry = self.shared.rooms();
            (registry.len(), registry.peers())
        };
        Counts {
            sessions: self.shared.counts.sessions.load(Ordering::Relaxed),
            rooms,
            peers,
            transports: media.transports,
            producers: media.producers,
            consumers: media.consumers,
        }
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
        (None, _) if !config.listen.ip().is_loopback() && !config.allow_anonymous => {
            return Err(StartError::Config(format!(
                "listening on {} (not loopback) without --auth-secret would let anyone join any room with \
                 every grant: set --auth-secret (or DSPEAK_AUTH_SECRET), or pass --allow-anonymous to accept that",
                config.listen
            )));
        }
        (None, config::Environment::Development) => {
            tracing::warn!("no --auth-secret: anyone may join any room (development only)");
        }
        (Some(_), _) => {}
    }
    conn::raise_open_file_limit();
    let engine = media::Engine::start(&config)?;
    let shared = Arc::new(Shared { config, rooms: Mutex::default(), engine, counts: Counters::default() });
    let stopped = api::serve(listener, shared.clone(), shutdown)?;
    Ok(ServerHandle { local_addr, shared, stopped })
}
