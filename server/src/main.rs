//! The `dspeak` binary: parses flags, sets up logging, runs the server until
//! ctrl-c or SIGTERM; `dspeak token` mints access tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dspeak_schema::auth::TokenClaims;
use dspeak_server::config::{Config, LogFormat, Secret};
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
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
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
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = cli.command {
        println!("{}", mint(&args)?);
        return Ok(());
    }
    init_tracing(cli.config.log_format);
    let handle = dspeak_server::run(cli.config, shutdown_signal()).await?;
    tracing::info!("listening on {}", handle.ws_url());
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

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("'{s}' is not a duration like 90, 30m, 12h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in '{s}': use s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
