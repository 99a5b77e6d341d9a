//! The `dspeak` binary: parses flags (and the `--config` file), sets up logging, runs
//! the server; on SIGTERM or ctrl-c it drains (a second signal stops at once).
//! `dspeak token` mints access tokens, `dspeak config` prints the effective
//! configuration and `dspeak check` validates it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dspeak_schema::auth::TokenClaims;
use dspeak_server::config::{Config, LogFormat, Secret};
use dspeak_server::config_file::{self, ConfigError};
use tracing_subscriber::EnvFilter;

/// dspeak: a WebRTC audio SFU with a typed JSON-RPC API over WebSocket.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint an access token (HS256 JWT) for `join`, for testing and for backends.
    Token(TokenArgs),
    /// Print the effective configuration as TOML (flags > environment > file >
    /// defaults), secrets redacted; `--config` reads it back.
    Config(ServerArgs),
    /// Validate the configuration: production requirements, the announced address
    /// (resolved now), free listen addresses and media ports. Exits 1 with the reason.
    Check(ServerArgs),
    /// Probe a running server's `GET /healthz` on its `listen` address (for container
    /// health checks; no curl needed). Exits 1 unless it answers 200.
    Health(ServerArgs),
}

/// The server's flags, for `config` and `check`.
#[derive(Debug, Args)]
struct ServerArgs {
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The secret the server runs with.
    #[arg(long, env = "DSPEAK_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Secret,
    /// Room the token admits to; with --admin, the room it may administer (default `*`,
    /// every room).
    #[arg(long, required_unless_present = "admin")]
    room: Option<String>,
    /// The user's identity (the `sub` claim).
    #[arg(long)]
    identity: String,
    /// Display name to impose.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = dspeak_server::config::parse_duration)]
    ttl: Duration,
    /// Free-form data every peer of the room sees (`metadata`, at most 4 KiB).
    #[arg(long)]
    metadata: Option<String>,
    /// An admin token for the admin API (`adminListRooms` …); it cannot join.
    #[arg(long)]
    admin: bool,
    /// Deny producing audio.
    #[arg(long)]
    no_publish: bool,
    /// Deny consuming audio.
    #[arg(long)]
    no_subscribe: bool,
    /// Deny broadcasting.
    #[arg(long)]
    no_broadcast: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = match config_file::parse::<Cli>(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let config = match loaded.parsed.command {
        Some(Command::Token(ref args)) => {
            println!("{}", mint(args)?);
            return Ok(());
        }
        Some(Command::Config(_)) => {
            print!("{}", loaded.effective());
            return Ok(());
        }
        Some(Command::Check(ServerArgs { ref config })) => match dspeak_server::check(config) {
            Ok(report) => {
                for line in report {
                    println!("ok: {line}");
                }
                return Ok(());
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        Some(Command::Health(ServerArgs { ref config })) => match probe_health(config.listen) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                std::process::exit(1);
            }
        },
        None => loaded.parsed.config,
    };
    let cli = Cli { command: None, config };
    init_tracing(cli.config.log_format);
    let drain_timeout = cli.config.drain_timeout;
    let mut signals = Signals::new()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = dspeak_server::run(cli.config, async {
        let _ = stopped.await;
    })
    .await?;
    tracing::info!("listening on {}", handle.ws_url());
    if let Some(addr) = handle.metrics_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    signals.next().await;
    tracing::info!(timeout_secs = drain_timeout.as_secs(), "signal: draining (a second signal stops at once)");
    tokio::select! {
        _ = handle.drain(drain_timeout) => {}
        () = signals.next() => tracing::warn!("second signal: stopping now"),
    }
    let _ = stop.send(());
    handle.stopped().await;
    Ok(())
}

fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs() as i64;
    let claims = TokenClaims {
        sub: args.identity.clone(),
        room: args.room.clone().unwrap_or_else(|| "*".to_owned()),
        name: args.name.clone(),
        metadata: args.metadata.clone(),
        admin: args.admin,
        can_publish: !args.no_publish,
        can_subscribe: !args.no_subscribe,
        can_broadcast: !args.no_broadcast,
        exp: now + args.ttl.as_secs() as i64,
        nbf: None,
        iat: Some(now),
    };
    dspeak_server::auth::mint(args.auth_secret.expose(), &claims).context("signing the token")
}

/// `GET /healthz` on the listen address (loopback when it listens on every address).
fn probe_health(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(3);
    let mut tcp =
        std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).context("reading the answer")?;
    let status = response.lines().next().unwrap_or_default();
    anyhow::ensure!(status.split(' ').nth(1) == Some("200"), "GET /healthz on {addr}: {status}");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGTERM and SIGINT (ctrl-c), as one stream.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now, so a signal during start is not lost.
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Completes on the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
