//! Signaling scenarios, each run against dspeak and the Node.js baseline in the same
//! invocation: `ping` throughput and latency, broadcast fan-out, idle memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::rawws::PingConn;
use crate::report::{Report, Spread, ms, percentile, us};
use crate::target::{self, Cpus, Kind, Running};
use crate::ws::{self, Incoming, Proto};

/// Where the servers come from.
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    pub(crate) cpus: Cpus,
    /// Also run the Node baseline.
    pub(crate) node: bool,
    /// Talk to this dspeak instead of starting one.
    pub(crate) url: Option<String>,
}

impl Targets {
    fn kinds(&self) -> Vec<Kind> {
        if self.node { vec![Kind::Dspeak, Kind::Node] } else { vec![Kind::Dspeak] }
    }

    async fn start(&self, kind: Kind, connections: usize, child: bool) -> anyhow::Result<Running> {
        match (kind, &self.url) {
            (Kind::Dspeak, Some(url)) => Ok(target::external(url)),
            (Kind::Dspeak, None) if child => target::dspeak_child(connections, &self.cpus).await,
            (Kind::Dspeak, None) => target::dspeak_in_process(target::bench_config(connections), &self.cpus).await,
            (Kind::Node, _) => target::node(&self.cpus).await,
        }
    }
}

// ---------------------------------------------------------------- ping

/// One measured ping run.
struct PingRun {
    throughput: f64,
    p50: Duration,
    p99: Duration,
    server_cpu_per_op: Option<Duration>,
    server_util: Option<f64>,
    client_util: f64,
}

/// Scenario 1: closed-loop `ping` on `conns` connections (one request in flight each).
/// With `rate`, connections are paced to that many pings per second in total (latency
/// at a given load); without, each sends its next ping as soon as the last is answered
/// (throughput).
pub(crate) async fn ping(
    targets: &Targets,
    conns_list: &[usize],
    runs: usize,
    secs: f64,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    let mut report = Report::new(
        if rate.is_some() {
            "ping: latency at a fixed total rate (paced, one request in flight per connection)"
        } else {
            "ping: throughput and latency (closed loop, one request in flight per connection)"
        },
        &[
            "server",
            "connections",
            "pings/s",
            "ratio vs node",
            "p50 µs",
            "p99 µs",
            "server CPU µs/ping",
            "server CPU %",
            "load-client CPU %",
        ],
    );
    let window = Duration::from_secs_f64(secs);
    let kinds = targets.kinds();
    let max_conns = conns_list.iter().copied().max().unwrap_or(1);
    let mut servers = Vec::new();
    for &k in &kinds {
        servers.push(targets.start(k, max_conns, false).await?);
    }
    for &conns in conns_list {
        let mut results: Vec<Vec<PingRun>> = kinds.iter().map(|_| Vec::new()).collect();
        // Interleave the servers run by run so both see the same machine noise.
        for _ in 0..runs {
            for (i, server) in servers.iter().enumerate() {
                results[i].push(ping_run(server, conns, window, rate).await?);
            }
        }
        let tput = |i: usize| Spread::of(&results[i].iter().map(|r| r.throughput).collect::<Vec<_>>());
        let node_index = kinds.iter().position(|k| *k == Kind::Node);
        for (i, kind) in kinds.iter().enumerate() {
            let r = &results[i];
            let t = tput(i);
            // Ratio per run (same run, same conditions), then its spread.
            let ratio = node_index.map(|n| {
                Spread::of(&r.iter().zip(&results[n]).map(|(a, b)| a.throughput / b.throughput).collect::<Vec<_>>())
            });
            let p50 = Spread::of(&r.iter().map(|x| us(x.p50)).collect::<Vec<_>>());
            let p99 = Spread::of(&r.iter().map(|x| us(x.p99)).collect::<Vec<_>>());
            let cpu = Spread::of(&r.iter().filter_map(|x| x.server_cpu_per_op.map(us)).collect::<Vec<_>>());
            let util = Spread::of(&r.iter().filter_map(|x| x.server_util.map(|u| u * 100.0)).collect::<Vec<_>>());
            let client = Spread::of(&r.iter().map(|x| x.client_util * 100.0).collect::<Vec<_>>());
            report.row(
                vec![
                    kind.name().into(),
                    conns.to_string(),
                    t.show(0),
                    ratio.map(|r| format!("{}×", r.show(2))).unwrap_or_default(),
                    p50.show(0),
                    p99.show(0),
                    cpu.show(2),
                    util.show(0),
                    client.show(0),
                ],
                json!({
                    "client_cpu_pct": client.json(), "rate": rate,
                    "server": kind.name(), "connections": conns, "runs": runs,
                    "pings_per_s": t.json(), "ratio_vs_node": ratio.map(|r| r.json()),
                    "p50_us": p50.json(), "p99_us": p99.json(),
                    "server_cpu_us_per_ping": cpu.json(), "server_cpu_pct": util.json(),
                }),
            );
        }
    }
    for s in servers {
        s.stop().await;
    }
    report.note(format!(
        "{runs} runs of {secs} s each per row (after 0.5 s warm-up); median (min–max). Runs alternate between servers. {}.",
        targets.cpus.describe()
    ));
    report.note("dspeak answers JSON-RPC `ping` (`{\"type\":\"pong\",\"timestamp\"}`); node answers the seed's plain `{\"type\":\"pong\"}`. Both over one WebSocket per connection; the same Rust client drives both: a raw TCP stream per connection with a pre-encoded masked request frame, answers matched by their id digits (`bench/src/rawws.rs`).");
    Ok(report)
}

async fn ping_run(server: &Running, conns: usize, window: Duration, rate: Option<f64>) -> anyhow::Result<PingRun> {
    // 0 = warm-up, 1 = measuring, 2 = stop.
    let phase = Arc::new(AtomicU8::new(0));
    let mut clients = Vec::with_capacity(conns);
    let mut connecting =
        futures_util::stream::iter(0..conns).map(|_| PingConn::connect(&server.url, server.kind)).buffer_unordered(64);
    while let Some(c) = connecting.next().await {
        clients.push(c?);
    }
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut c) in clients.into_iter().enumerate() {
        let phase = phase.clone();
        let id_offset = (i as u64).wrapping_mul(7919);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            // Paced: this connection's share of the rate, starting at a random offset.
            let period = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
            let mut next = tokio::time::Instant::now()
                + period.map_or(Duration::ZERO, |p| p.mul_f64((id_offset % 1000) as f64 / 1000.0));
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == 2 {
                    break;
                }
                if let Some(period) = period {
                    tokio::time::sleep_until(next).await;
                    next += period;
                }
                let t = Instant::now();
                c.ping().await?;
                if p == 1 && phase.load(Ordering::Relaxed) == 1 {
                    lat.push(t.elapsed());
                }
            }
            c.close().await;
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client_threads = crate::sys::own_threads("bench-client");
    let ccpu0 = crate::sys::threads_cpu(&client_threads);
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    phase.store(2, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1 = server.cpu();
    let ccpu = crate::sys::threads_cpu(&client_threads).saturating_sub(ccpu0);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let count = all.len() as f64;
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
    Ok(PingRun {
        throughput: count / elapsed.as_secs_f64(),
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        server_cpu_per_op: cpu.map(|c| c.div_f64(count.max(1.0))),
        server_util: cpu.map(|c| c.as_secs_f64() / elapsed.as_secs_f64()),
        client_util: ccpu.as_secs_f64() / elapsed.as_secs_f64(),
    })
}

// ---------------------------------------------------------------- broadcast

/// Arrival bookkeeping of the broadcasts of one run.
struct Tracker {
    epoch: Instant,
    /// Per broadcast: members that have it.
    count: Vec<AtomicUsize>,
    /// Per broadcast: latest arrival, ns since `epoch`.
    last: Vec<AtomicU64>,
    /// Deliveries of a seq that was not sent, or twice to one member.
    wrong: AtomicUsize,
    expected: usize,
    done: Notify,
}

impl Tracker {
    fn arrived(&self, seq: u64) {
        let Some(c) = self.count.get(seq as usize) else {
            self.wrong.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let at = self.epoch.elapsed().as_nanos() as u64;
        self.last[seq as usize].fetch_max(at, Ordering::Relaxed);
        let n = c.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.expected {
            self.done.notify_waiters();
        } else if n > self.expected {
            self.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn complete(&self, seq: usize) -> bool {
        self.count[seq].load(Ordering::Relaxed) >= self.expected
    }

    async fn wait(&self, seq: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            if self.complete(seq) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "broadcast {seq} reached {} of {} members in {timeout:?}",
                    self.count[seq].load(Ordering::Relaxed),
                    self.expected
                );
            }
        }
    }
}

struct BroadcastRun {
    last_member_ms: Vec<f64>,
    deliveries_per_s: f64,
    server_cpu_per_delivery: Option<Duration>,
}

/// Scenario 2: one room of `peers`, one sender.
pub(crate) async fn broadcast(
    targets: &Targets,
    peers: usize,
    latency_rounds: usize,
    burst: usize,
    runs: usize,
) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "broadcast fan-out: one room, one sender",
        &[
            "server",
            "room size",
            "deliveries/s",
            "ratio vs node",
            "last member has it, p50 ms",
            "last member has it, max ms",
            "server CPU µs/delivery",
        ],
    );
    let kinds = targets.kinds();
    let mut results: Vec<Vec<BroadcastRun>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, &kind) in kinds.iter().enumerate() {
            let server = targets.start(kind, peers, false).await?;
            let r = broadcast_run(&server, peers, latency_rounds, burst).await;
            server.stop().await;
            results[i].push(r?);
        }
    }
    let node_index = kinds.iter().position(|k| *k == Kind::Node);
    for (i, kind) in kinds.iter().enumerate() {
        let r = &results[i];
        let tput = Spread::of(&r.iter().map(|x| x.deliveries_per_s).collect::<Vec<_>>());
        let ratio = node_index.map(|n| {
            Spread::of(
                &r.iter().zip(&results[n]).map(|(a, b)| a.deliveries_per_s / b.deliveries_per_s).collect::<Vec<_>>(),
            )
        });
        let p50 = Spread::of(
            &r.iter()
                .map(|x| {
                    let mut v = x.last_member_ms.clone();
                    v.sort_by(f64::total_cmp);
                    percentile(&v, 50.0)
                })
                .collect::<Vec<_>>(),
        );
        let max =
            Spread::of(&r.iter().map(|x| x.last_member_ms.iter().copied().fold(0.0, f64::max)).collect::<Vec<_>>());
        let cpu = Spread::of(&r.iter().filter_map(|x| x.server_cpu_per_delivery.map(us)).collect::<Vec<_>>());
        report.row(
            vec![
                kind.name().into(),
                peers.to_string(),
                tput.show(0),
                ratio.map(|r| format!("{}×", r.show(2))).unwrap_or_default(),
                p50.show(1),
                max.show(1),
                cpu.show(2),
            ],
            json!({
                "server": kind.name(), "peers": peers, "runs": runs,
                "deliveries_per_s": tput.json(), "ratio_vs_node": ratio.map(|r| r.json()),
                "last_member_ms_p50": p50.json(), "last_member_ms_max": max.json(),
                "server_cpu_us_per_delivery": cpu.json(),
            }),
        );
    }
    report.note(format!(
        "{runs} runs, a fresh server each; median (min–max). Latency: {latency_rounds} broadcasts one at a time, each timed from send until the last of the {} other members has it. Throughput: {burst} broadcasts sent back to back (at most 64 not yet fully delivered), deliveries / time until the last delivery. {}.",
        peers - 1,
        targets.cpus.describe()
    ));
    report.note("Every member is a real WebSocket client that reads every message; each run asserts that every member got every broadcast exactly once.");
    Ok(report)
}

async fn broadcast_run(
    server: &Running,
    peers: usize,
    latency_rounds: usize,
    burst: usize,
) -> anyhow::Result<BroadcastRun> {
    let proto = Proto(server.kind);
    let total = latency_rounds + burst;
    let tracker = Arc::new(Tracker {
        epoch: Instant::now(),
        count: (0..total).map(|_| AtomicUsize::new(0)).collect(),
        last: (0..total).map(|_| AtomicU64::new(0)).collect(),
        wrong: AtomicUsize::new(0),
        expected: peers - 1,
        done: Notify::new(),
    });
    // Members join a few at a time; each then reads everything it is sent.
    let mut joining = futures_util::stream::iter(0..peers)
        .map(|i| {
            let url = server.url.clone();
            async move { ws::joined(proto, &url, "bench", &format!("peer{i}")).await }
        })
        .buffered(32);
    let mut members = Vec::with_capacity(peers);
    while let Some(ws) = joining.next().await {
        members.push(ws?);
    }
    let mut sender = members.remove(0);
    let mut readers = Vec::new();
    for ws in members {
        let tracker = tracker.clone();
        readers.push(tokio::spawn(async move {
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(t) = msg
                    && let Incoming::Delivery { seq } = ws::classify(&t)
                {
                    tracker.arrived(seq);
                }
            }
        }));
    }
    // Let the join announcements drain.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Latency: one broadcast at a time.
    let mut last_member_ms = Vec::with_capacity(latency_rounds);
    let mut id = 100u64;
    for seq in 0..latency_rounds {
        id += 1;
        let sent = tracker.epoch.elapsed();
        ws::send(&mut sender, proto.broadcast(id, seq as u64)).await?;
        ws::response(&mut sender, id).await?;
        tracker.wait(seq, Duration::from_secs(30)).await?;
        let last = Duration::from_nanos(tracker.last[seq].load(Ordering::Relaxed));
        last_member_ms.push(ms(last.saturating_sub(sent)));
    }

    // Throughput: a burst with a bounded number not yet fully delivered.
    let (sink, mut stream) = sender.split();
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<u64>();
    let ack_reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(t) = msg
                && let Incoming::Response { id, error } = ws::classify(&t)
            {
                if error {
                    tracing::error!("broadcast failed: {t}");
                }
                let _ = acks_tx.send(id);
            }
        }
    });
    let mut sink = sink;
    let cpu0 = server.cpu();
    let t0 = tracker.epoch.elapsed();
    const WINDOW: usize = 64;
    for seq in latency_rounds..total {
        if seq >= latency_rounds + WINDOW {
            tracker.wait(seq - WINDOW, Duration::from_secs(30)).await?;
        }
        id += 1;
        sink.send(Message::text(proto.broadcast(id, seq as u64))).await.context("send")?;
    }
    for seq in latency_rounds..total {
        tracker.wait(seq, Duration::from_secs(30)).await?;
    }
    let end = (latency_rounds..total).map(|s| tracker.last[s].load(Ordering::Relaxed)).max().unwrap_or(0);
    let cpu1 = server.cpu();
    let mut acked = 0;
    while acked < burst {
        match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
            Ok(Some(_)) => acked += 1,
            _ => bail!("only {acked} of {burst} broadcasts were answered"),
        }
    }
    let elapsed = Duration::from_nanos(end).saturating_sub(t0);
    let deliveries = (burst * (peers - 1)) as f64;
    ensure!(
        tracker.wrong.load(Ordering::Relaxed) == 0,
        "{} unexpected or duplicate deliveries",
        tracker.wrong.load(Ordering::Relaxed)
    );
    drop(sink);
    ack_reader.abort();
    for r in readers {
        r.abort();
    }
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
    Ok(BroadcastRun {
        last_member_ms,
        deliveries_per_s: deliveries / elapsed.as_secs_f64(),
        server_cpu_per_delivery: cpu.map(|c| c.div_f64(deliveries)),
    })
}

// ---------------------------------------------------------------- idle

/// Scenario 3: resident memory per joined, idle connection (server in its own process).
pub(crate) async fn idle(targets: &Targets, conns: usize, room_size: usize, runs: usize) -> anyhow::Result<Report> {
    let mut report = Report::new(
        if room_size == 0 {
            "idle cost: server memory per connected (not joined) idle connection"
        } else {
            "idle cost: server memory per joined, idle connection"
        },
        &["server", "connections", "RSS before MiB", "RSS after MiB", "KiB per connection", "ratio vs node"],
    );
    ensure!(targets.url.is_none(), "the idle scenario measures a server it starts itself");
    let kinds = targets.kinds();
    let mut results: Vec<Vec<(u64, u64)>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, &kind) in kinds.iter().enumerate() {
            let server = targets.start(kind, conns, true).await?;
            let r = idle_run(&server, conns, room_size).await;
            server.stop().await;
            results[i].push(r?);
        }
    }
    let per = |r: &(u64, u64)| (r.1.saturating_sub(r.0)) as f64 / conns as f64 / 1024.0;
    let node_index = kinds.iter().position(|k| *k == Kind::Node);
    for (i, kind) in kinds.iter().enumerate() {
        let r = &results[i];
        let before = Spread::of(&r.iter().map(|x| x.0 as f64 / 1048576.0).collect::<Vec<_>>());
        let after = Spread::of(&r.iter().map(|x| x.1 as f64 / 1048576.0).collect::<Vec<_>>());
        let kib = Spread::of(&r.iter().map(per).collect::<Vec<_>>());
        let ratio = node_index
            .map(|n| Spread::of(&r.iter().zip(&results[n]).map(|(a, b)| per(a) / per(b)).collect::<Vec<_>>()));
        report.row(
            vec![
                kind.name().into(),
                conns.to_string(),
                before.show(1),
                after.show(1),
                kib.show(1),
                ratio.map(|r| format!("{}×", r.show(2))).unwrap_or_default(),
            ],
            json!({
                "server": kind.name(), "connections": conns, "room_size": room_size, "runs": runs,
                "rss_before_mib": before.json(), "rss_after_mib": after.json(),
                "kib_per_connection": kib.json(), "ratio_vs_node": ratio.map(|r| r.json()),
            }),
        );
    }
    report.note(format!(
        "The server runs as its own process (dspeak: `dspeak-bench serve`, the same `dspeak_server::run`); RSS from /proc/<pid>/status before the first connection and 2 s after the last one joined. Connections join rooms of {room_size} (dspeak: `subscribeEvents` + `join`; node: `join`) and then stay idle. {runs} runs, a fresh server each; median (min–max)."
    ));
    Ok(report)
}

async fn idle_run(server: &Running, conns: usize, room_size: usize) -> anyhow::Result<(u64, u64)> {
    let proto = Proto(server.kind);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss().context("RSS of the server process")?;
    let mut joining = futures_util::stream::iter(0..conns)
        .map(|i| {
            let url = server.url.clone();
            async move {
                if room_size == 0 {
                    // Connected only: what the WebSocket layer alone costs.
                    return ws::connect(&url).await;
                }
                ws::joined(proto, &url, &format!("idle{}", i / room_size), &format!("p{i}")).await
            }
        })
        .buffer_unordered(128);
    let mut readers = Vec::with_capacity(conns);
    while let Some(ws) = joining.next().await {
        let ws = ws?;
        // Read (and drop) whatever arrives, as an idle client does.
        readers.push(tokio::spawn(async move {
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(_)) = rx.next().await {}
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss().context("RSS of the server process")?;
    for r in readers {
        r.abort();
    }
    Ok((before, after))
}
