//! The servers under test: dspeak (in this process, or as a child process of this
//! binary, or an external URL) and the Node.js `ws` baseline (a child process), each
//! pinned to the server CPUs, with a way to read its CPU time and memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use dspeak_server::{Config, ServerHandle};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::sys;

/// Which server a signaling scenario talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// dspeak: JSON-RPC 2.0 over WebSocket.
    Dspeak,
    /// The Node.js baseline: plain JSON messages.
    Node,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Dspeak => "dspeak",
            Kind::Node => "node ws",
        }
    }
}

/// CPU placement: server threads on `server`, load-client threads on `client`.
#[derive(Clone, Debug)]
pub(crate) struct Cpus {
    pub(crate) server: Vec<usize>,
    pub(crate) client: Vec<usize>,
}

impl Cpus {
    /// Half the CPUs (at least one) for the server, the rest for the client; on one
    /// CPU both share it.
    pub(crate) fn split(pin: bool) -> Cpus {
        let n = sys::cpus();
        let all: Vec<usize> = (0..n).collect();
        if !pin || n < 2 {
            return Cpus { server: all.clone(), client: all };
        }
        let server = (n / 2).max(1);
        Cpus { server: all[..server].to_vec(), client: all[server..].to_vec() }
    }

    pub(crate) fn describe(&self) -> String {
        if self.server == self.client {
            format!("server and client share CPUs {:?} (not pinned)", self.server)
        } else {
            format!("server pinned to CPU {:?}, load client to CPU {:?}", self.server, self.client)
        }
    }
}

/// A runtime like the load client's: one worker thread per client CPU, each pinned to
/// the client CPUs and named `name`.
pub(crate) fn client_runtime(cpus: &Cpus, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let client = cpus.client.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client.len())
        .thread_name(name)
        .on_thread_start(move || {
            let _ = sys::pin(0, &client);
        })
        .enable_all()
        .build()
}

/// A running server.
pub(crate) struct Running {
    pub(crate) kind: Kind,
    pub(crate) url: String,
    how: How,
}

enum How {
    InProcess { handle: Option<ServerHandle>, stop: Option<oneshot::Sender<()>>, threads: Vec<i32> },
    Child(Child),
    External,
}

/// dspeak's configuration for benchmarks: loopback, free ports, one media worker,
/// limits above what the scenarios need.
pub(crate) fn bench_config(connections: usize) -> Config {
    let mut config = Config::for_tests();
    config.workers = 1;
    config.max_connections = (connections + 1_000) as u32;
    config.max_peers_per_room = config.max_peers_per_room.max(2_100);
    // Every peer of a room gets every join: a room of 2,000 listeners queues more than
    // the default 1,024 events for a peer that reads them in bursts.
    config.event_queue = config.event_queue.max(4096);
    // The `join` answer lists every peer already there: 2,000 of them exceed the
    // default answer limit (4 × 64 KiB).
    config.max_message_bytes = config.max_message_bytes.max(256 * 1024);
    // Benchmarks measure capacity, not the per-client abuse limits (the token buckets
    // still run and cost what they cost).
    config.limits.request_rate = 1_000_000_000;
    config.limits.broadcast_rate = 1_000_000_000;
    config.limits.max_rooms = config.limits.max_rooms.max(connections);
    // Every load client connects from loopback, and the idle scenario holds unjoined
    // connections on purpose.
    config.connections.max_unjoined_per_ip = connections + 1_000;
    config.connections.join_timeout_secs = 3_600;
    config
}

/// Starts dspeak in this process and pins its threads to `cpus`.
pub(crate) async fn dspeak_in_process(config: Config, cpus: &Cpus) -> anyhow::Result<Running> {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = dspeak_server::run(config, async {
        let _ = stopped.await;
    })
    .await
    .context("starting dspeak")?;
    // New threads name themselves once they first run; give them the chance.
    let mut threads = Vec::new();
    for _ in 0..200 {
        threads = sys::own_threads("dspeak-");
        let named = |p: &str| !sys::own_threads(p).is_empty();
        if named("dspeak-rpc") && named("dspeak-media-") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for &t in &threads {
        sys::pin(t, &cpus.server)?;
    }
    Ok(Running {
        kind: Kind::Dspeak,
        url: handle.ws_url(),
        how: How::InProcess { handle: Some(handle), stop: Some(stop), threads },
    })
}

/// What `dspeak-bench serve` prints once it listens.
#[derive(Deserialize)]
struct Listening {
    url: Option<String>,
    port: Option<u16>,
}

/// Starts dspeak as a child process (`dspeak-bench serve`), pinned to `cpus`.
pub(crate) async fn dspeak_child(connections: usize, cpus: &Cpus) -> anyhow::Result<Running> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("--connections").arg(connections.to_string());
    spawn_child(Kind::Dspeak, cmd, cpus).await
}

/// Starts the Node.js baseline, pinned to `cpus`.
pub(crate) async fn node(cpus: &Cpus) -> anyhow::Result<Running> {
    let dir = node_dir();
    if !dir.join("node_modules/ws").exists() {
        bail!("the Node baseline is not installed: run `npm ci` in {}", dir.display());
    }
    let mut cmd = Command::new("node");
    cmd.arg("server.js").current_dir(&dir);
    spawn_child(Kind::Node, cmd, cpus).await
}

/// An external dspeak server (not pinned, not measured).
pub(crate) fn external(url: &str) -> Running {
    Running { kind: Kind::Dspeak, url: url.to_owned(), how: How::External }
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-baseline")
}

async fn spawn_child(kind: Kind, mut cmd: Command, cpus: &Cpus) -> anyhow::Result<Running> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {kind:?}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("server did not start in 20 s")??
        .context("server exited before listening")?;
    let listening: Listening =
        serde_json::from_str(&line).with_context(|| format!("unexpected first line {line:?}"))?;
    let url = match (listening.url, listening.port) {
        (Some(url), _) => url,
        (None, Some(port)) => format!("ws://127.0.0.1:{port}"),
        _ => bail!("no url or port in {line:?}"),
    };
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Some(pid) = child.id() {
        sys::pin_process(pid, &cpus.server)?;
    }
    Ok(Running { kind, url, how: How::Child(child) })
}

impl Running {
    /// The server's CPU time so far (its threads in this process, or its whole child
    /// process). `None` for an external server.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        match &self.how {
            How::InProcess { threads, .. } => Some(sys::threads_cpu(threads)),
            How::Child(c) => c.id().map(sys::process_cpu),
            How::External => None,
        }
    }

    /// The server's resident memory, for a child process.
    pub(crate) fn rss(&self) -> Option<u64> {
        match &self.how {
            How::Child(c) => c.id().map(sys::rss),
            _ => None,
        }
    }

    /// Media datagrams the server dropped since start because the kernel refused them
    /// (in-process dspeak only).
    pub(crate) fn media_send_drops(&self) -> Option<u64> {
        match &self.how {
            How::InProcess { handle: Some(handle), .. } => Some(handle.media_send_drops()),
            _ => None,
        }
    }

    /// Each media worker's figures (in-process dspeak only).
    pub(crate) fn media_workers(&self) -> Option<Vec<dspeak_media::WorkerStats>> {
        match &self.how {
            How::InProcess { handle: Some(handle), .. } => Some(handle.media_workers()),
            _ => None,
        }
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) {
        match &mut self.how {
            How::InProcess { handle, stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(handle) = handle.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(10), handle.stopped()).await;
                }
            }
            How::Child(child) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            How::External => {}
        }
    }
}

/// `dspeak-bench serve`: runs dspeak until stdin closes, printing its URL first.
pub(crate) async fn serve(connections: usize) -> anyhow::Result<()> {
    sys::raise_fd_limit((connections as u64) * 2 + 1_000)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = dspeak_server::run(bench_config(connections), async {
        let _ = stopped.await;
    })
    .await?;
    println!("{}", serde_json::json!({ "url": handle.ws_url() }));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), handle.stopped()).await;
    Ok(())
}
