//! `dspeak-bench`: the load tool behind `BENCHMARKS.md`.
//!
//! Every scenario is a subcommand that starts the servers it measures (dspeak in this
//! process via `dspeak_server::run`, or as a child process; the Node.js baseline from
//! `bench/node-baseline`), pins server and load-client threads to separate CPUs, and
//! prints a markdown table plus one JSON line.
//!
//! Layout:
//! - `signaling`: `ping`, `broadcast`, `idle` (each also against the Node baseline).
//! - `media`: `fanout` and `join-storm` with synthetic str0m WebRTC clients (`media::peer`).
//! - `cluster`: `cluster-join`, join latency on one node and in cluster mode (real
//!   `redis-server`), with and without a `wrongNode` redirect.
//! - `target`: starting, pinning and measuring the servers.
//! - `ws`: the WebSocket load client for both protocols (broadcast, idle).
//! - `rawws`: the cheaper client of `ping` (hand-written upgrade, pre-encoded frames).
//! - `report`: percentiles, median/min/max, tables.
//! - `sys`: /proc, affinity, fd limit.

mod cluster;
mod media;
mod rawws;
mod report;
mod signaling;
mod sys;
mod target;
mod ws;

use std::time::Instant;

use anyhow::{Context, ensure};
use clap::{Args, Parser, Subcommand};

use crate::signaling::Targets;
use crate::target::Cpus;

/// dspeak load tool: signaling and media benchmarks, with a Node.js `ws` baseline.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Do not pin server and load-client threads to separate CPUs.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Benchmark this running dspeak (`ws://…`) instead of starting one (signaling and
    /// `fanout`; no server CPU figures then).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Skip the Node.js baseline.
    #[arg(long, global = true)]
    no_node: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// `ping` throughput and latency at several connection counts.
    Ping {
        /// Connection counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        conns: Vec<usize>,
        /// Measured runs per connection count and server.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Pace all connections together to this many pings/s (latency at a given load)
        /// instead of sending as fast as answers come back.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Broadcast fan-out in one room: deliveries per second and time to the last member.
    Broadcast {
        /// Room size (one of them sends).
        #[arg(long, default_value_t = 1000)]
        peers: usize,
        /// Broadcasts timed one at a time.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Broadcasts sent back to back for throughput.
        #[arg(long, default_value_t = 200)]
        burst: usize,
        /// Runs per server (fresh server each).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Server memory per joined, idle connection.
    Idle {
        /// Connections.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Peers per room; 0 = connect only (no `subscribeEvents`, no `join`).
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Runs per server (fresh server each).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Media fan-out: speakers → N listeners on one worker, N rising.
    Fanout(FanoutArgs),
    /// The fan-out over UDP and over ICE-TCP, alternating: forwarding cost side by side.
    TransportCost {
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Runs per transport (fresh server each).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// The fan-out with the server's speaker detection off and on, alternating: its
    /// forwarding cost per packet side by side.
    SpeakerCost {
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Runs per setting (fresh server each).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Peers join at once and consume one speaker: join → first audio.
    JoinStorm {
        /// Peers joining at once.
        #[arg(long, default_value_t = 100)]
        peers: usize,
        /// Runs (fresh server each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// One producer floods packets; its consumer must receive at most 100 per second.
    Police {
        /// Packets per second the producer sends.
        #[arg(long, default_value_t = 2000.0)]
        pps: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Join latency: one node vs cluster mode (real `redis-server`), with and without a
    /// `wrongNode` redirect.
    ClusterJoin {
        /// Joins per setup and run.
        #[arg(long, default_value_t = 200)]
        rooms: usize,
        /// Runs (fresh servers and Redis each).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A few seconds of every scenario at small N, asserting correctness (for CI).
    Smoke,
    /// Runs a dspeak server until stdin closes (used by the `idle` scenario).
    #[command(hide = true)]
    Serve {
        /// Connections to allow.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
}

#[derive(Args, Debug)]
struct FanoutArgs {
    /// Speakers in the room (1 or 10 in BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    speakers: usize,
    /// Listener counts to step through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    listeners: Option<Vec<usize>>,
    /// Measurement windows per step.
    #[arg(long, default_value_t = 3)]
    windows: usize,
    /// Seconds per window.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Every n-th listener decrypts and measures delay (the others count headers).
    #[arg(long, default_value_t = 20)]
    probe_every: usize,
    /// Keep stepping after a failing step.
    #[arg(long)]
    keep_going: bool,
    /// With `--url`: the server's process id, to measure its `dspeak-media-0` thread.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Clients send and receive over ICE-TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// The in-process server announces `::1`; clients use IPv6 loopback.
    #[arg(long)]
    ipv6: bool,
    /// The in-process server's `--speaker-events` (`off`: audio levels not parsed, no
    /// active-speaker detection), to measure what detection costs per packet.
    #[arg(long, default_value = "all")]
    speaker_events: dspeak_media::SpeakerEvents,
    /// Media workers of the in-process server: one room spans them all (its
    /// transports are placed by load; producers' packets cross between workers).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command_line =
        format!("cargo run --release -p dspeak-bench -- {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    sys::raise_fd_limit(65_536).context("raising the fd limit")?;
    let cpus = Cpus::split(!cli.no_pin);
    if let Command::Serve { connections } = cli.command {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(target::serve(connections));
    }
    let runtime = target::client_runtime(&cpus, "bench-client")?;
    // The main thread only waits; keep it off the server's CPUs too.
    let _ = sys::pin(0, &cpus.client);
    runtime.block_on(run(cli, cpus, command_line))
}

async fn run(cli: Cli, cpus: Cpus, command_line: String) -> anyhow::Result<()> {
    let targets = Targets { cpus: cpus.clone(), node: !cli.no_node && cli.url.is_none(), url: cli.url.clone() };
    eprintln!("dspeak-bench: {} CPUs, load average {:.2}; {}", sys::cpus(), sys::loadavg(), cpus.describe());
    match cli.command {
        Command::Ping { conns, runs, secs, rate } => {
            signaling::ping(&targets, &conns, runs, secs, rate).await?.print(&command_line);
        }
        Command::Broadcast { peers, rounds, burst, runs } => {
            ensure!(peers >= 2, "a broadcast needs at least 2 peers");
            signaling::broadcast(&targets, peers, rounds, burst, runs).await?.print(&command_line);
        }
        Command::Idle { conns, room_size, runs } => {
            signaling::idle(&targets, conns, room_size, runs).await?.print(&command_line);
        }
        Command::Fanout(a) => {
            let opts = fanout_options(&a, &cli.url);
            media::fanout(&cpus, &opts).await?.print(&command_line);
        }
        Command::TransportCost { fanout, rounds } => {
            let opts = fanout_options(&fanout, &cli.url);
            media::transport_cost(&cpus, &opts, rounds).await?.print(&command_line);
        }
        Command::SpeakerCost { fanout, rounds } => {
            let opts = fanout_options(&fanout, &cli.url);
            media::speaker_cost(&cpus, &opts, rounds).await?.print(&command_line);
        }
        Command::JoinStorm { peers, runs } => {
            media::join_storm(&cpus, peers, runs, cli.url.as_deref()).await?.print(&command_line);
        }
        Command::Police { pps, secs } => media::police(&cpus, pps, secs).await?.print(&command_line),
        Command::ClusterJoin { rooms, runs } => {
            cluster::cluster_join(&cpus, rooms, runs).await?.print(&command_line);
        }
        Command::Smoke => smoke(&targets, &cpus, &command_line).await?,
        Command::Serve { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

/// The fan-out options from the command line.
fn fanout_options(a: &FanoutArgs, url: &Option<String>) -> media::FanoutOptions {
    let listeners = a.listeners.clone().unwrap_or_else(|| {
        if a.speakers == 1 { vec![100, 200, 300, 400, 500, 600] } else { vec![20, 40, 60, 80, 100, 120] }
    });
    media::FanoutOptions {
        speakers: a.speakers,
        listeners,
        windows: a.windows,
        secs: a.secs,
        probe_every: a.probe_every,
        keep_going: a.keep_going,
        url: url.clone(),
        server_pid: a.server_pid,
        tcp: a.tcp,
        ipv6: a.ipv6,
        speaker_events: a.speaker_events,
        workers: a.workers.max(1),
    }
}

/// Every scenario at small N; each one fails on a lost or wrong message or packet.
async fn smoke(targets: &Targets, cpus: &Cpus, command_line: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut targets = targets.clone();
    if targets.node && !std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node-baseline/node_modules/ws").exists()
    {
        eprintln!("smoke: Node baseline not installed (npm ci in bench/node-baseline); skipping it");
        targets.node = false;
    }
    signaling::ping(&targets, &[1, 20], 1, 0.5, None).await?.print(command_line);
    signaling::broadcast(&targets, 20, 3, 20, 1).await?.print(command_line);
    signaling::idle(&targets, 50, 10, 1).await?.print(command_line);
    // UDP over IPv4, ICE-TCP, UDP over IPv6 (a server announcing `::1`), and UDP with
    // the room over two workers (packets cross between them).
    for (tcp, ipv6, workers) in [(false, false, 1), (true, false, 1), (false, true, 1), (false, false, 2)] {
        let opts = media::FanoutOptions {
            speakers: 2,
            listeners: vec![5],
            windows: 1,
            secs: 2.0,
            probe_every: 1,
            keep_going: false,
            url: None,
            server_pid: None,
            tcp,
            ipv6,
            speaker_events: dspeak_media::SpeakerEvents::All,
            workers,
        };
        let fanout = media::fanout(cpus, &opts).await?;
        fanout.print(command_line);
        let row = fanout.json.first().context("the fan-out step did not run")?;
        let what = match (tcp, ipv6, workers) {
            (true, _, _) => "ICE-TCP",
            (_, true, _) => "IPv6",
            (_, _, 2) => "UDP, two workers",
            _ => "UDP",
        };
        ensure!(
            row["received"].as_u64() == row["expected"].as_u64() && row["expected"].as_u64() > Some(0),
            "media smoke ({what}): packets lost: {row}"
        );
        ensure!(row["delay_samples"].as_u64() > Some(0), "media smoke ({what}): no delay sample: {row}");
        ensure!(
            row["sender_reports_total"].as_u64() > Some(0),
            "media smoke ({what}): no sane sender report decrypted by a listener: {row}"
        );
        // The speakers send a level; every packet a listener decrypted carries it.
        ensure!(
            row["levels_total"].as_u64() > Some(0) && row["other_levels_total"].as_u64() == Some(0),
            "media smoke ({what}): packets without the speakers' audio level: {row}"
        );
    }
    media::join_storm(cpus, 5, 1, None).await?.print(command_line);
    // A producer flooding 2,000 packets/s is policed: its consumer gets at most 100/s.
    media::police(cpus, 2000.0, 2.0).await?.print(command_line);
    println!("smoke: every scenario passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
