//! Server configuration: command-line flags, each also an environment variable.
//!
//! [`Config`] is what `run` takes; `main` parses it with clap, and every flag is also a
//! key of the `--config` file (`config_file`). Every default is usable on a developer
//! machine without any other service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dspeak_media::SpeakerEvents;

/// Deployment environment, as the seed's `NODE_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development: loopback defaults, anonymous joins allowed.
    Development,
    /// Production: an announced address is required.
    Production,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the server needs to run.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// TOML file with any of these flags as keys, in snake_case (`rtc_port = 40000`).
    /// Flags and environment variables override it.
    #[arg(long, env = "DSPEAK_CONFIG")]
    pub config: Option<PathBuf>,

    /// WebSocket (JSON-RPC) listen address.
    #[arg(long, env = "DSPEAK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Deployment environment. When unset, `NODE_ENV` is honoured
    /// (`production` selects production), otherwise development.
    #[arg(long = "env", env = "DSPEAK_ENV", value_enum)]
    pub environment: Option<Environment>,

    /// Log format.
    #[arg(long, env = "DSPEAK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Media workers (threads), each with one UDP port. 0 = one per CPU core.
    #[arg(long, env = "DSPEAK_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// First UDP port for WebRTC media; worker i listens on rtc-port + i.
    /// 0 picks free ports (tests).
    #[arg(long, env = "DSPEAK_RTC_PORT", default_value_t = 40000)]
    pub rtc_port: u16,

    /// IP address the media sockets bind to. On a wildcard (the default), replies
    /// leave from the address each client sent to; the IPv4 wildcard becomes the
    /// dual-stack `::` when an IPv6 address is announced.
    #[arg(long, env = "DSPEAK_RTC_LISTEN_IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub rtc_listen_ip: IpAddr,

    /// Offer ICE over TCP (RFC 6544, passive) on the media ports too, for clients whose
    /// network blocks UDP. On by default.
    #[arg(long = "rtc-tcp", overrides_with = "no_rtc_tcp")]
    pub rtc_tcp: bool,

    /// Do not offer ICE over TCP: UDP only.
    #[arg(long = "no-rtc-tcp", env = "DSPEAK_NO_RTC_TCP", overrides_with = "rtc_tcp")]
    pub no_rtc_tcp: bool,

    /// Pin media worker i to the i-th CPU the process may run on (e.g. with one worker
    /// per core on a dedicated machine).
    #[arg(long, env = "DSPEAK_PIN_WORKERS")]
    pub pin_workers: bool,

    /// Address clients send media to (IP or hostname, resolved at start to all its
    /// addresses), e.g. `api.darelisme.my.id`. May be given more than once (the env var
    /// takes a comma-separated list); each address becomes an ICE candidate, the first
    /// with the highest priority. Defaults to 127.0.0.1 in development; required in
    /// production.
    #[arg(long, env = "DSPEAK_ANNOUNCED_ADDRESS", value_delimiter = ',')]
    pub announced_address: Vec<String>,

    /// Maximum concurrent WebSocket connections.
    #[arg(long, env = "DSPEAK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: u32,

    /// Maximum size of one WebSocket message (request or response), in bytes.
    #[arg(long, env = "DSPEAK_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: u32,

    /// Maximum serialized size of a `broadcast` payload, in bytes.
    #[arg(long, env = "DSPEAK_MAX_BROADCAST_BYTES", default_value_t = 16 * 1024)]
    pub max_broadcast_bytes: usize,

    /// Maximum peers in one room.
    #[arg(long, env = "DSPEAK_MAX_PEERS_PER_ROOM", default_value_t = 1_000)]
    pub max_peers_per_room: usize,

    /// Events queued for one session before it counts as too slow and is evicted from
    /// its room (its event stream then ends with a `limitExceeded` error).
    #[arg(long, env = "DSPEAK_EVENT_QUEUE", default_value_t = 1024)]
    pub event_queue: usize,

    /// Seconds between WebSocket pings; a connection that answers none for three
    /// intervals is closed.
    #[arg(long, env = "DSPEAK_WS_PING_SECS", default_value_t = 20)]
    pub ws_ping_secs: u64,

    /// HS256 secret for access tokens. Required in production; without it
    /// (development only) anyone may join any room.
    #[arg(long, env = "DSPEAK_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<Secret>,

    /// Address for the monitoring listener: `GET /metrics` (Prometheus), `/healthz`,
    /// `/readyz`, e.g. `127.0.0.1:9090`. Off when unset.
    #[arg(long, env = "DSPEAK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// On SIGTERM or SIGINT, how long calls in progress may go on before the server
    /// closes them: seconds, or a number with s, m or h. A second signal stops at once.
    #[arg(long, env = "DSPEAK_DRAIN_TIMEOUT", default_value = "600s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// URL the server POSTs room and peer events to (repeatable, or comma-separated in
    /// the environment variable). Needs `--auth-secret`: every request is signed with it.
    #[arg(long = "webhook-url", env = "DSPEAK_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,

    /// Webhook events queued per receiver before new ones are dropped (counted and logged).
    #[arg(long, env = "DSPEAK_WEBHOOK_QUEUE", default_value_t = 4096)]
    pub webhook_queue: usize,

    /// Wait before the first retry of a failed webhook, in milliseconds; it doubles with
    /// every retry (at most 5 tries).
    #[arg(long, env = "DSPEAK_WEBHOOK_RETRY_MS", default_value_t = 1000)]
    pub webhook_retry_ms: u64,

    /// Timeout of one webhook request, in seconds.
    #[arg(long, env = "DSPEAK_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Longest lifetime (`exp` minus `iat`) of an access token the server accepts, in
    /// seconds.
    #[arg(long = "max-token-ttl", env = "DSPEAK_MAX_TOKEN_TTL", default_value_t = 24 * 3600)]
    pub max_token_ttl_secs: u64,

    /// Allow anonymous joins (no `--auth-secret`) on a non-loopback listen address.
    #[arg(long, env = "DSPEAK_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// How long a joined session whose connection dropped without `leave` stays in
    /// its room (media flowing, others told `peerReconnecting`) waiting for `resume`:
    /// seconds, or a number with s, m or h; `0` leaves at once.
    #[arg(long, env = "DSPEAK_RESUME_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub resume_grace: Duration,

    /// Events kept per session for `resume` to replay; a client that missed more
    /// joins afresh.
    #[arg(long, env = "DSPEAK_RESUME_BUFFER", default_value_t = 256)]
    pub resume_buffer: usize,
    /// Voice-activity events of every room: `all` (`activeSpeaker` and `audioLevels`),
    /// `speaker` (`activeSpeaker` only) or `off` (audio levels are not even parsed).
    #[arg(long, env = "DSPEAK_SPEAKER_EVENTS", default_value = "all")]
    pub speaker_events: SpeakerEvents,

    /// Per-server and per-session limits.
    #[command(flatten)]
    pub limits: Limits,

    /// Connection-layer bounds: requests in flight, unsent output, idle and per-address
    /// limits, allowed origins.
    #[command(flatten)]
    pub connections: ConnectionLimits,

    /// Cluster mode: several nodes share rooms through Redis.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Cluster mode: rooms placed on and found through Redis. Off without `--redis-url`.
#[derive(Clone, Debug, Default, Args)]
pub struct ClusterArgs {
    /// Redis URL (`redis://host:port/db`) that turns cluster mode on: nodes register
    /// there, and each room is placed on one node; a `join` elsewhere is answered with
    /// `wrongNode` and the owner's `--node-url`. Without it the server runs alone.
    #[arg(long, env = "DSPEAK_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The WebSocket URL clients use to reach this node, e.g. `wss://node-a.example:443`
    /// (required with `--redis-url`): other nodes send it to clients in `wrongNode`.
    #[arg(long, env = "DSPEAK_NODE_URL")]
    pub node_url: Option<String>,
}

/// Bounds of the connection layer: what one socket or one address may hold.
#[derive(Clone, Debug, Args)]
pub struct ConnectionLimits {
    /// Requests of one connection being handled at once; further requests wait.
    #[arg(long, env = "DSPEAK_MAX_IN_FLIGHT", default_value_t = 32)]
    pub max_in_flight: usize,

    /// Bytes of answers and events a connection may leave unread; past it the
    /// connection is closed.
    #[arg(long, env = "DSPEAK_MAX_OUTBOUND_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// Seconds a WebSocket may stay open without joining a room.
    #[arg(long = "join-timeout", env = "DSPEAK_JOIN_TIMEOUT", default_value_t = 15)]
    pub join_timeout_secs: u64,

    /// Seconds a client has to send a complete HTTP request head (also the idle
    /// limit of a keep-alive HTTP connection).
    #[arg(long = "http-header-timeout", env = "DSPEAK_HTTP_HEADER_TIMEOUT", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// WebSocket connections from one source address that have not joined a room.
    #[arg(long, env = "DSPEAK_MAX_UNJOINED_PER_IP", default_value_t = 32)]
    pub max_unjoined_per_ip: usize,

    /// Proxies (CIDR, repeatable or comma-separated) whose `X-Forwarded-For` names
    /// the source address.
    #[arg(long, env = "DSPEAK_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<Cidr>,

    /// Origins allowed to open a WebSocket or POST a call (comma list, or `*`). Default: `*` in
    /// development; in production only the page's own origin.
    #[arg(long, env = "DSPEAK_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_in_flight: 32,
            max_outbound_bytes: 4 * 1024 * 1024,
            join_timeout_secs: 15,
            http_header_timeout_secs: 10,
            max_unjoined_per_ip: 32,
            trusted_proxy: Vec::new(),
            allowed_origins: None,
        }
    }
}

/// An IP network, `address/prefix` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
            let keep = u32::from(prefix.min(width));
            if keep == 0 { 0 } else { bits >> (u32::from(width) - keep) }
        }
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix) == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let network: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an IP network (like 10.0.0.0/8)"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or_else(|| format!("bad prefix in `{s}`"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

/// Per-server and per-session limits. Exceeding one answers `limitExceeded` (or
/// `payloadTooLarge`, `roomFull`) and the session stays usable.
#[derive(Clone, Debug, Args)]
pub struct Limits {
    /// Maximum rooms on the server.
    #[arg(long, env = "DSPEAK_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Maximum WebRTC transports per session.
    #[arg(long, env = "DSPEAK_MAX_TRANSPORTS", default_value_t = 4)]
    pub max_transports: usize,

    /// Maximum producers per session.
    #[arg(long, env = "DSPEAK_MAX_PRODUCERS", default_value_t = 4)]
    pub max_producers: usize,

    /// Maximum consumers per session.
    #[arg(long, env = "DSPEAK_MAX_CONSUMERS", default_value_t = 500)]
    pub max_consumers: usize,

    /// Maximum serialized size of a producer's `appData`, in bytes.
    #[arg(long, env = "DSPEAK_MAX_APP_DATA_BYTES", default_value_t = 4096)]
    pub max_app_data_bytes: usize,

    /// Broadcasts per second per session (bursts of twice as many are allowed).
    #[arg(long, env = "DSPEAK_BROADCAST_RATE", default_value_t = 20)]
    pub broadcast_rate: u32,

    /// Requests per second per connection (bursts of twice as many are allowed).
    #[arg(long, env = "DSPEAK_REQUEST_RATE", default_value_t = 200)]
    pub request_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 10_000,
            max_transports: 4,
            max_producers: 4,
            max_consumers: 500,
            max_app_data_bytes: 4096,
            broadcast_rate: 20,
            request_rate: 200,
        }
    }
}

/// A secret string that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("the auth secret must be at least 16 characters".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// The effective environment (flag, then `NODE_ENV`, then development).
    pub fn environment(&self) -> Environment {
        self.environment.unwrap_or_else(|| match std::env::var("NODE_ENV").as_deref() {
            Ok("production") => Environment::Production,
            _ => Environment::Development,
        })
    }

    /// WebSocket ping interval.
    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_secs(self.ws_ping_secs.max(1))
    }

    /// The largest answer, four times `--max-message-bytes` (a larger one is answered
    /// with jsonrpsee's "response too big" error instead).
    pub fn max_response_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(4) as usize
    }

    /// A configuration for tests: loopback, free ports, one worker, production-sane limits.
    pub fn for_tests() -> Self {
        Self {
            config: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            environment: Some(Environment::Development),
            log_format: LogFormat::Text,
            workers: 1,
            rtc_port: 0,
            rtc_listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtc_tcp: false,
            no_rtc_tcp: false,
            pin_workers: false,
            announced_address: Vec::new(),
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            max_broadcast_bytes: 16 * 1024,
            max_peers_per_room: 1_000,
            event_queue: 1024,
            ws_ping_secs: 20,
            auth_secret: None,
            metrics_listen: None,
            drain_timeout: Duration::from_secs(600),
            webhook_urls: Vec::new(),
            webhook_queue: 4096,
            webhook_retry_ms: 1000,
            webhook_timeout_secs: 10,
            allow_anonymous: false,
            speaker_events: SpeakerEvents::All,
            max_token_ttl_secs: 24 * 3600,
            // Tests of other areas expect a dropped connection to leave at once; resume
            // tests set a grace period.
            resume_grace: Duration::ZERO,
            resume_buffer: 256,
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            cluster: ClusterArgs::default(),
        }
    }
}

/// Parses a duration: seconds (`90`), or a number with `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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
