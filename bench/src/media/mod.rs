//! Media scenarios with synthetic WebRTC clients (see `peer`): fan-out from 1 or 10
//! speakers to N listeners on one worker, and a join storm.

mod baseline;
mod link;
pub(crate) mod peer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::StreamExt;
use jsonrpsee::ws_client::WsClient;
use serde_json::json;

use crate::report::{Report, Spread, percentile};
use crate::sys::{self, UdpDrops};
use crate::target::{self, Cpus, Running};
use peer::{ListenerStats, Shared, SpeakerStats};

/// Loss above this fails a step.
const MAX_LOSS: f64 = 0.005;
/// p99 delay above this fails a step.
const MAX_P99: Duration = Duration::from_millis(10);
/// Packets per second per speaker.
const PPS: f64 = 50.0;

/// Options of the fan-out scenario.
#[derive(Clone, Debug)]
pub(crate) struct FanoutOptions {
    pub(crate) speakers: usize,
    pub(crate) listeners: Vec<usize>,
    pub(crate) windows: usize,
    pub(crate) secs: f64,
    pub(crate) probe_every: usize,
    /// Keep going after a failing step.
    pub(crate) keep_going: bool,
    /// Use this running dspeak instead of starting one (e.g. another build, or one
    /// under `valgrind --tool=callgrind`).
    pub(crate) url: Option<String>,
    /// The process of that server, to read its worker thread's CPU time.
    pub(crate) server_pid: Option<u32>,
    /// Clients reach the server over ICE-TCP instead of UDP.
    pub(crate) tcp: bool,
    /// The in-process server listens on and announces `::1`; clients use `::1`.
    pub(crate) ipv6: bool,
    /// The in-process server's voice-activity events (its speakers send audio levels).
    pub(crate) speaker_events: dspeak_media::SpeakerEvents,
    /// Media workers of the in-process server (a room spans them).
    pub(crate) workers: usize,
}

/// A room under load: speakers, listeners, their signaling connections.
struct Load {
    shared: Arc<Shared>,
    url: String,
    room: String,
    producers: Vec<dspeak_schema::ProducerId>,
    speakers: Vec<Arc<SpeakerStats>>,
    listeners: Vec<Arc<ListenerStats>>,
    /// Signaling connections: dropping one ends its session.
    clients: Vec<WsClient>,
    probe_every: usize,
}

impl Load {
    /// A room with `speakers`, each sending `pps` packets per second.
    async fn new(
        url: &str,
        room: &str,
        speakers: usize,
        probe_every: usize,
        tcp: bool,
        pps: f64,
    ) -> anyhow::Result<Load> {
        let shared = Shared::new(tcp)?;
        let mut load = Load {
            shared,
            url: url.to_owned(),
            room: room.to_owned(),
            producers: Vec::new(),
            speakers: Vec::new(),
            listeners: Vec::new(),
            clients: Vec::new(),
            probe_every: probe_every.max(1),
        };
        for i in 0..speakers {
            let ssrc = 0x1000_0000 + i as u32 * 7919;
            let (client, mut speaker) = peer::speaker(url, room, &format!("speaker{i}"), &load.shared, ssrc).await?;
            speaker.period = Duration::from_secs_f64(1.0 / pps);
            let stats = Arc::new(SpeakerStats::default());
            load.producers.push(speaker.producer.clone());
            tokio::spawn(peer::drive_speaker(speaker, load.shared.clone(), stats.clone()));
            load.speakers.push(stats);
            load.clients.push(client);
        }
        wait_for("speakers connected", Duration::from_secs(10), || {
            load.speakers.iter().all(|s| s.connected.load(Ordering::Relaxed))
        })
        .await?;
        Ok(load)
    }

    /// Adds listeners until there are `n`; each consumes every speaker.
    async fn grow(&mut self, n: usize) -> anyhow::Result<()> {
        let start = self.listeners.len();
        if n <= start {
            return Ok(());
        }
        let mut adding = futures_util::stream::iter(start..n)
            .map(|i| {
                let url = self.url.clone();
                let room = self.room.clone();
                let shared = self.shared.clone();
                let producers = self.producers.clone();
                let probe = i % self.probe_every == 0 || i + 1 == n;
                async move {
                    let client = peer::join(&url, &room, &format!("listener{i}")).await?;
                    let listener = peer::listener(&client, &shared, &producers, probe).await?;
                    let stats = listener.stats.clone();
                    let consumers = listener.consumers.clone();
                    tokio::spawn(peer::drive_listener(listener, shared));
                    peer::resume(&client, &consumers).await?;
                    anyhow::Ok((i, client, stats))
                }
            })
            .buffered(16);
        while let Some(r) = adding.next().await {
            let (_, client, stats) = r?;
            self.clients.push(client);
            self.listeners.push(stats);
        }
        let listeners = &self.listeners;
        wait_for("every listener receiving", Duration::from_secs(20 + n as u64 / 50), || {
            listeners.iter().all(|l| {
                l.connected.load(Ordering::Relaxed) && l.streams.iter().all(|s| s.received.load(Ordering::Relaxed) > 0)
            })
        })
        .await
    }

    fn snapshot(&self) -> Vec<(u64, u64)> {
        self.listeners
            .iter()
            .flat_map(|l| {
                l.streams.iter().map(|s| (s.received.load(Ordering::Relaxed), s.highest.load(Ordering::Relaxed)))
            })
            .collect()
    }

    fn late(&self) -> u64 {
        self.speakers.iter().map(|s| s.late.load(Ordering::Relaxed)).sum()
    }

    fn take_delays(&self) -> Vec<u32> {
        let mut all = Vec::new();
        for l in &self.listeners {
            all.append(&mut l.delays.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }

    /// Sane sender reports the probe listeners decrypted so far.
    fn sender_reports(&self) -> u64 {
        self.listeners.iter().map(|l| l.sender_reports.load(Ordering::Relaxed)).sum()
    }

    /// Decrypted packets carrying the speakers' level, and carrying none or another.
    fn levels(&self) -> (u64, u64) {
        let sum = |f: fn(&ListenerStats) -> &AtomicU64| {
            self.listeners.iter().map(|l| f(l).load(Ordering::Relaxed)).sum::<u64>()
        };
        (sum(|l| &l.levels), sum(|l| &l.other_levels))
    }

    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

async fn wait_for(what: &str, timeout: Duration, ok: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One measurement window at a fixed load.
#[derive(Debug)]
struct Window {
    expected: u64,
    received: u64,
    loss: f64,
    delay_p50_us: f64,
    delay_p99_us: f64,
    delay_samples: usize,
    worker_util: f64,
    ns_per_packet: f64,
    client_util: f64,
    late_sends: u64,
    kernel_drops: u64,
    /// Per media worker: CPU share, and ns of its CPU per packet it forwarded.
    per_worker: Vec<(f64, f64)>,
}

/// The media worker threads whose CPU is measured: (process id, thread ids).
type WorkerThreads = (u32, Vec<i32>);

/// Packets each media worker forwarded so far (in-process server), in index order.
fn forwarded(server: &Running) -> Vec<u64> {
    server.media_workers().unwrap_or_default().iter().map(|w| w.traffic.packets_sent).collect()
}

fn worker_cpu(w: &WorkerThreads) -> Duration {
    w.1.iter().map(|&t| sys::thread_cpu(w.0, t)).sum()
}

async fn measure(load: &Load, server: &Running, workers: &[WorkerThreads], window: Duration) -> Window {
    let client_threads = sys::own_threads("bench-client");
    let before = load.snapshot();
    let each0: Vec<Duration> = workers.iter().map(worker_cpu).collect();
    let sent0 = forwarded(server);
    let ccpu0 = sys::threads_cpu(&client_threads);
    let drops0 = UdpDrops::read();
    let late0 = load.late();
    let _ = load.take_delays();
    load.shared.recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    load.shared.recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let after = load.snapshot();
    let each: Vec<Duration> = workers.iter().zip(&each0).map(|(w, c0)| worker_cpu(w).saturating_sub(*c0)).collect();
    let sent: Vec<u64> =
        forwarded(server).iter().zip(sent0.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a - b).collect();
    let per_worker = each
        .iter()
        .zip(sent.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(c, n)| {
            (c.as_secs_f64() / elapsed.as_secs_f64(), c.as_nanos() as f64 / n.copied().unwrap_or(0).max(1) as f64)
        })
        .collect();
    let cpu: Duration = each.iter().sum();
    let ccpu = sys::threads_cpu(&client_threads).saturating_sub(ccpu0);
    let drops = UdpDrops::read().since(drops0);
    let mut delays = load.take_delays();
    delays.sort_unstable();
    let (mut expected, mut received) = (0u64, 0u64);
    for ((r0, h0), (r1, h1)) in before.iter().zip(&after) {
        expected += h1.saturating_sub(*h0);
        received += r1.saturating_sub(*r0);
    }
    let loss = if expected == 0 { 1.0 } else { 1.0 - received.min(expected) as f64 / expected as f64 };
    Window {
        expected,
        received,
        loss,
        delay_p50_us: f64::from(percentile(&delays, 50.0)),
        delay_p99_us: f64::from(percentile(&delays, 99.0)),
        delay_samples: delays.len(),
        worker_util: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        ns_per_packet: cpu.as_nanos() as f64 / expected.max(1) as f64,
        client_util: ccpu.as_secs_f64() / elapsed.as_secs_f64(),
        late_sends: load.late() - late0,
        kernel_drops: drops.rcvbuf_errors + drops.sndbuf_errors,
        per_worker,
    }
}

/// Scenario 5: S speakers → N listeners in one room on one worker (or one room over
/// `--workers` workers), N rising until loss > 0.5 % or p99 delay > 10 ms.
pub(crate) async fn fanout(cpus: &Cpus, opts: &FanoutOptions) -> anyhow::Result<Report> {
    let s = opts.speakers;
    let mut report = Report::new(
        match (s == 1, opts.workers > 1) {
            (true, false) => "media fan-out: 1 speaker → N listeners, one worker",
            (false, false) => "media fan-out: 10 speakers → N listeners, one worker",
            (true, true) => "media fan-out: 1 speaker → N listeners, one room over several workers",
            (false, true) => "media fan-out: 10 speakers → N listeners, one room over several workers",
        },
        &[
            "listeners",
            "consumers",
            "forwarded pkt/s",
            "loss %",
            "delay p50 ms",
            "delay p99 ms",
            "worker CPU %",
            "worker ns/forwarded pkt",
            "× one sendto",
            "× one sendmmsg datagram",
            "fan-out sendmmsg ns",
            "× fan-out sendmmsg datagram",
            "load-client CPU %",
            "ok",
        ],
    );
    let server = match &opts.url {
        Some(url) => target::external(url),
        None => {
            let mut config = target::bench_config(20_000);
            config.speaker_events = opts.speaker_events;
            config.workers = opts.workers;
            if opts.ipv6 {
                config.rtc_listen_ip = std::net::Ipv6Addr::LOCALHOST.into();
                config.announced_address = vec!["::1".into()];
            }
            target::dspeak_in_process(config, cpus).await?
        }
    };
    let pid = opts.server_pid.unwrap_or_else(std::process::id);
    let workers: Vec<WorkerThreads> =
        (0..opts.workers).map(|i| (pid, sys::named_threads(pid, &format!("dspeak-media-{i}")))).collect();
    ensure!(opts.url.is_some() || workers.iter().all(|w| !w.1.is_empty()), "no dspeak-media-* thread");
    let load = Load::new(&server.url, "fanout", s, opts.probe_every, opts.tcp, PPS).await;
    let mut load = match load {
        Ok(l) => l,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let window = Duration::from_secs_f64(opts.secs);
    // The baselines' datagrams are UDP (the target's unit) in the run's address family.
    let loopback: std::net::IpAddr =
        if opts.ipv6 { std::net::Ipv6Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::LOCALHOST.into() };
    let send_ns = baseline::one_socket(cpus, 1, loopback)?;
    let mmsg_ns = baseline::one_socket(cpus, baseline::BATCH, loopback)?;
    // Before any listener joins, as the one-socket baselines: one per listener count.
    let mut fan = std::collections::BTreeMap::new();
    for &n in &opts.listeners {
        if let std::collections::btree_map::Entry::Vacant(e) = fan.entry(n) {
            e.insert(baseline::fanout_sendmmsg(cpus, n, s as f64 * PPS, loopback)?);
        }
    }
    let mut best: Option<(usize, f64, f64, f64, f64)> = None;
    let mut failed_at = None;
    for &n in &opts.listeners {
        if let Err(e) = load.grow(n).await {
            report.note(format!("Stopped adding listeners at {n}: {e:#}"));
            failed_at = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut ws = Vec::new();
        for _ in 0..opts.windows {
            ws.push(measure(&load, &server, &workers, window).await);
        }
        let col = |f: &dyn Fn(&Window) -> f64| Spread::of(&ws.iter().map(f).collect::<Vec<_>>());
        let loss = col(&|w| w.loss * 100.0);
        let p50 = col(&|w| w.delay_p50_us / 1000.0);
        let p99 = col(&|w| w.delay_p99_us / 1000.0);
        let util = col(&|w| w.worker_util * 100.0);
        let ns = col(&|w| w.ns_per_packet);
        let cutil = col(&|w| w.client_util * 100.0);
        let rate = col(&|w| w.expected as f64 / window.as_secs_f64());
        let ok = loss.median <= MAX_LOSS * 100.0 && p99.median <= MAX_P99.as_secs_f64() * 1e3;
        let consumers = n * s;
        let fan_step = fan.get(&n).copied();
        let fan_ns = fan_step.map_or(f64::NAN, |f| f.ns);
        let fan_json = fan_step.map(|f| {
            json!({
                "ns_per_datagram": f.ns, "sockets": f.sockets, "rounds_per_s": f.rounds_per_s,
                "datagrams_measured": f.datagrams, "sent": f.sent, "received": f.received,
            })
        });
        let split = server.media_workers().unwrap_or_default();
        let per_worker: Vec<serde_json::Value> = (0..opts.workers)
            .map(|i| {
                let cpu = col(&|w| w.per_worker.get(i).map_or(0.0, |p| p.0 * 100.0));
                let ns = col(&|w| w.per_worker.get(i).map_or(0.0, |p| p.1));
                let on = split.get(i);
                json!({
                    "worker": i, "cpu_pct": cpu.json(), "ns_per_forwarded_packet": ns.json(),
                    "transports": on.map(|w| w.transports), "consumers": on.map(|w| w.consumers),
                    "handoff_full": on.map(|w| w.traffic.dropped[dspeak_media::DropReason::HandoffFull as usize]),
                })
            })
            .collect();
        if opts.workers > 1 {
            let each: Vec<String> = per_worker
                .iter()
                .map(|w| {
                    format!(
                        "worker {}: CPU {:.0} %, {:.0} ns per packet it forwarded, {} consumers",
                        w["worker"],
                        w["cpu_pct"]["median"].as_f64().unwrap_or(0.0),
                        w["ns_per_forwarded_packet"]["median"].as_f64().unwrap_or(0.0),
                        w["consumers"],
                    )
                })
                .collect();
            report.note(format!("{n} listeners over {} workers: {}.", opts.workers, each.join("; ")));
        }
        report.row(
            vec![
                n.to_string(),
                consumers.to_string(),
                rate.show(0),
                loss.show(3),
                p50.show(2),
                p99.show(2),
                util.show(0),
                ns.show(0),
                format!("{:.1}", ns.median / send_ns),
                format!("{:.2}", ns.median / mmsg_ns),
                format!("{:.0}", fan_ns),
                format!("{:.2}", ns.median / fan_ns),
                cutil.show(0),
                if ok { "✓".into() } else { "✗".into() },
            ],
            json!({
                "transport": if opts.tcp { "tcp" } else { "udp" }, "ipv6": opts.ipv6,
                "speakers": s, "listeners": n, "consumers": consumers,
                "forwarded_per_s": rate.json(), "loss_pct": loss.json(),
                "delay_p50_ms": p50.json(), "delay_p99_ms": p99.json(),
                "worker_cpu_pct": util.json(), "worker_ns_per_packet": ns.json(),
                "client_cpu_pct": cutil.json(), "ok": ok, "udp_sendto_ns": send_ns, "udp_sendmmsg_ns": mmsg_ns,
                "udp_fanout_sendmmsg_ns": fan_ns, "udp_fanout_sendmmsg": fan_json,
                "delay_samples": ws.iter().map(|w| w.delay_samples).sum::<usize>(),
                "late_sends": ws.iter().map(|w| w.late_sends).sum::<u64>(),
                "kernel_udp_drops": ws.iter().map(|w| w.kernel_drops).sum::<u64>(),
                "server_send_drops_total": server.media_send_drops(),
                "received": ws.iter().map(|w| w.received).sum::<u64>(),
                "sender_reports_total": load.sender_reports(),
                "levels_total": load.levels().0, "other_levels_total": load.levels().1,
                "expected": ws.iter().map(|w| w.expected).sum::<u64>(),
                "workers": opts.workers, "per_worker": per_worker,
            }),
        );
        if ok {
            best = Some((consumers, ns.median, loss.median, p99.median, util.median));
        } else {
            failed_at = Some(n);
            if !opts.keep_going {
                break;
            }
        }
    }
    load.stop();
    drop(load);
    let server_drops = server.media_send_drops();
    server.stop().await;
    match best {
        Some((consumers, ns, loss, p99, util)) => {
            let per_core = 1e9 / (ns * PPS);
            report.note(format!(
                "Highest passing step: **{consumers} consumers** on {} at {util:.0} % of a core, {ns:.0} ns of worker CPU per forwarded packet, loss {loss:.3} %, p99 delay {p99:.2} ms. At that CPU cost one fully busy core forwards to **{per_core:.0} consumers** (1 s / (ns per packet × {PPS} packets/s)).",
                if opts.workers > 1 { format!("{} workers (their CPU summed)", opts.workers) } else { "one worker".into() }
            ));
        }
        None => report.note("No step passed."),
    }
    report.note(format!(
        "Baseline measured in the same run: one 150-byte loopback `sendto` from a thread on the server CPU costs {send_ns:.0} ns of its CPU (the median of 5 runs of 50,000 sends to a socket drained on the client CPU); \"× one sendto\" is the worker's cost per forwarded packet in those units. The same in `sendmmsg` calls of 32 datagrams (the worker's batch): {mmsg_ns:.0} ns per datagram (\"× one sendmmsg datagram\")."
    ));
    let each: Vec<String> = fan
        .values()
        .map(|f| {
            format!(
                "{} sockets: {:.0} ns ({} datagrams measured; the readers got {} of {} sent)",
                f.sockets, f.ns, f.datagrams, f.received, f.sent
            )
        })
        .collect();
    report.note(format!(
        "Fan-out baseline, per listener count N (\"fan-out sendmmsg ns\"), measured in the same run before any listener joined: the same 150-byte datagrams in `sendmmsg` calls of 32 from a thread on the server CPU, but to N distinct client UDP sockets in round-robin order (consecutive datagrams go to different sockets, as the worker's fan-out sends them), one round of N per incoming packet at the step's rate ({s} × {PPS} packets/s, the sender sleeping between rounds), each socket a tokio `UdpSocket` on a runtime like the load client's (same thread count and CPU pinning) read by its own task looping `recv_from`. On loopback the sender's CPU also runs each datagram's receive side (the destination socket's lookup, the enqueue into its queue, the epoll callback and the wake-up of its reader), and with N cold sockets that costs more per datagram than with the one warm socket of the baseline above: the difference between the two baselines is the kernel's per-destination work charged to the sender on loopback, which the worker cannot avoid either. \"× fan-out sendmmsg datagram\" is the worker's cost per forwarded packet in those units: what it is above 1 is the worker's user-space work (copy, seal, loop) and its per-wake-up costs (epoll, receiving and decrypting the producer's packet, timers). The issue's target stays \"× one sendmmsg datagram\". Per N: {}.",
        each.join("; ")
    ));
    if let Some(n) = failed_at {
        report.note(format!("First failing step: {n} listeners."));
    }
    if let Some(drops) = server_drops {
        report.note(format!(
            "Datagrams the server dropped because its send buffer was full (`EAGAIN`), over the whole run: {drops}."
        ));
    }
    report.note(format!(
        "Clients reach the server over {} on {}.",
        if opts.tcp { "ICE-TCP (RFC 4571 frames on one TCP connection per transport)" } else { "UDP" },
        if opts.ipv6 { "`::1`" } else { "`127.0.0.1`" }
    ));
    report.note(format!(
        "Each step: {} windows of {} s after all listeners receive; median (min–max) over the windows. Loss from RTP sequence numbers of every consumer stream; delay (send → decrypted at the listener, so it includes both clients' str0m) from every {}th listener plus the last one, which decrypt through str0m; the others count packets from the cleartext SRTP header. Worker CPU from /proc/self/task/<tid>/schedstat of the `dspeak-media-*` threads (summed over workers), per packet the server should have forwarded; per worker, per packet that worker forwarded. {}. Synthetic clients run in the load-client thread(s).",
        opts.windows,
        opts.secs,
        opts.probe_every,
        cpus.describe()
    ));
    Ok(report)
}

/// The same fan-out over UDP and over ICE-TCP, alternating, `rounds` times each (a
/// fresh server every run): the worker's CPU per forwarded packet, side by side.
pub(crate) async fn transport_cost(cpus: &Cpus, opts: &FanoutOptions, rounds: usize) -> anyhow::Result<Report> {
    let variants = [
        Variant { label: "UDP", opts: FanoutOptions { tcp: false, ..opts.clone() } },
        Variant { label: "ICE-TCP", opts: FanoutOptions { tcp: true, ..opts.clone() } },
    ];
    let what = "ICE-TCP: each client transport has one TCP connection to the worker's passive candidate (RFC 4571 frames); the worker hands frames to a per-connection writer task on its own thread instead of `sendmmsg`.";
    compare(cpus, "media forwarding cost: UDP vs ICE-TCP, one worker", "transport", &variants, rounds, what).await
}

/// The same fan-out with the server's `--speaker-events off` (audio levels not parsed,
/// no detection) and `all` (every producer packet's level parsed and fed to the room's
/// detector; `activeSpeaker`/`audioLevels` sent), alternating, `rounds` times each.
pub(crate) async fn speaker_cost(cpus: &Cpus, opts: &FanoutOptions, rounds: usize) -> anyhow::Result<Report> {
    use dspeak_media::SpeakerEvents;
    let variants = [
        Variant { label: "off", opts: FanoutOptions { speaker_events: SpeakerEvents::Off, ..opts.clone() } },
        Variant { label: "all", opts: FanoutOptions { speaker_events: SpeakerEvents::All, ..opts.clone() } },
    ];
    let what = "Every speaker sends `ssrc-audio-level` (-30 dBov, V bit set) on every packet, as declared at `produce`; with `all` each listener also receives `activeSpeaker` and `audioLevels` (every 200 ms) over signaling.";
    compare(
        cpus,
        "media forwarding cost: speaker detection off vs on, one worker",
        "speaker events",
        &variants,
        rounds,
        what,
    )
    .await
}

/// One side of a side-by-side forwarding-cost comparison.
struct Variant {
    /// Its name in the first column.
    label: &'static str,
    opts: FanoutOptions,
}

/// Runs the fan-out of each variant in turn, `rounds` times (a fresh server every run),
/// and tabulates the worker's CPU per forwarded packet, with its ratio to the first
/// variant's at the same listener count. `what` describes the variants in the notes.
async fn compare(
    cpus: &Cpus,
    title: &'static str,
    column: &str,
    variants: &[Variant],
    rounds: usize,
    what: &str,
) -> anyhow::Result<Report> {
    let base = variants.first().map_or("", |v| v.label);
    let ratio = format!("× {base}");
    let mut report = Report::new(
        title,
        &[
            column,
            "listeners",
            "consumers",
            "forwarded pkt/s",
            "worker ns/forwarded pkt",
            "× one sendto",
            &ratio,
            "loss %",
            "delay p99 ms",
        ],
    );
    // (variant, listeners) → one value per run, each the median over that run's windows.
    let mut runs: std::collections::BTreeMap<(usize, u64), Vec<serde_json::Value>> = Default::default();
    for _ in 0..rounds.max(1) {
        for (i, variant) in variants.iter().enumerate() {
            let run = fanout(cpus, &FanoutOptions { keep_going: true, ..variant.opts.clone() }).await?;
            for row in run.json {
                let listeners = row["listeners"].as_u64().unwrap_or(0);
                runs.entry((i, listeners)).or_default().push(row);
            }
        }
    }
    let median = |rows: &[serde_json::Value], key: &str| {
        Spread::of(&rows.iter().filter_map(|r| r[key]["median"].as_f64().or(r[key].as_f64())).collect::<Vec<_>>())
    };
    for ((i, listeners), rows) in &runs {
        let ns = median(rows, "worker_ns_per_packet");
        let send_ns = median(rows, "udp_sendto_ns");
        let base_ns = runs.get(&(0, *listeners)).map(|b| median(b, "worker_ns_per_packet").median);
        let (loss, p99, rate) =
            (median(rows, "loss_pct"), median(rows, "delay_p99_ms"), median(rows, "forwarded_per_s"));
        let label = variants[*i].label;
        report.row(
            vec![
                label.into(),
                listeners.to_string(),
                rows[0]["consumers"].to_string(),
                rate.show(0),
                ns.show(0),
                format!("{:.1}", ns.median / send_ns.median),
                base_ns.map_or("–".into(), |b| format!("{:.3}", ns.median / b)),
                loss.show(3),
                p99.show(2),
            ],
            json!({
                "variant": label, "listeners": listeners, "consumers": rows[0]["consumers"],
                "worker_ns_per_packet": ns.json(), "udp_sendto_ns": send_ns.json(), "loss_pct": loss.json(),
                "delay_p99_ms": p99.json(), "forwarded_per_s": rate.json(), "runs": rows.len(),
            }),
        );
    }
    let labels: Vec<&str> = variants.iter().map(|v| v.label).collect();
    report.note(format!(
        "{} runs per variant, alternating {}, a fresh in-process server each; per run the median over {} windows of {} s, then median (min–max) over the runs. {} speakers; every listener consumes each. {what} \"× one sendto\": per forwarded packet, in units of one 150-byte loopback `sendto` measured in the same run. {}.",
        rounds.max(1),
        labels.join(" and "),
        variants.first().map_or(0, |v| v.opts.windows),
        variants.first().map_or(0.0, |v| v.opts.secs),
        variants.first().map_or(0, |v| v.opts.speakers),
        cpus.describe()
    ));
    Ok(report)
}

/// One reported step: JSON key, label, and how to read it from [`Stages`].
type Step = (&'static str, &'static str, fn(&Stages) -> f64);

/// Stages of one storm peer, ms after its `join` call.
#[derive(Clone, Copy, Debug, Default)]
struct Stages {
    joined: f64,
    signaled: f64,
    connected: f64,
    first_audio: f64,
}

/// Scenario 6: `peers` join at once and consume one speaker; time from `join` to the
/// first decrypted audio packet, and when each step completed.
pub(crate) async fn join_storm(cpus: &Cpus, peers: usize, runs: usize, url: Option<&str>) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "join storm: peers join at once and consume one speaker",
        &["peers", "step done (ms after `join` call)", "p50 ms", "p95 ms", "max ms"],
    );
    let mut all: Vec<Vec<Stages>> = Vec::new();
    for run in 0..runs {
        let server = match url {
            Some(url) => target::external(url),
            None => target::dspeak_in_process(target::bench_config(peers + 10), cpus).await?,
        };
        let r = storm_run(&server, peers, run).await;
        server.stop().await;
        all.push(r?);
    }
    let steps: [Step; 4] = [
        ("joined", "`join` answered", |s| s.joined),
        ("signaled", "`createTransport`, `connectTransport`, `consume`, `resumeConsumer` answered", |s| s.signaled),
        ("connected", "ICE + DTLS connected (client side)", |s| s.connected),
        ("first_audio", "**first audio packet decrypted**", |s| s.first_audio),
    ];
    for (key, label, f) in steps {
        let pct = |p: f64| {
            Spread::of(
                &all.iter()
                    .map(|run| {
                        let mut v: Vec<f64> = run.iter().map(f).collect();
                        v.sort_by(f64::total_cmp);
                        if p >= 100.0 { v.last().copied().unwrap_or(f64::NAN) } else { percentile(&v, p) }
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let (p50, p95, max) = (pct(50.0), pct(95.0), pct(100.0));
        report.row(
            vec![peers.to_string(), label.into(), p50.show(1), p95.show(1), max.show(1)],
            json!({"peers": peers, "runs": runs, "step": key, "p50_ms": p50.json(), "p95_ms": p95.json(), "max_ms": max.json()}),
        );
    }
    report.note(format!(
        "{runs} runs, a fresh server each; median (min–max) over runs of each run's percentile. All {peers} WebSocket connections are open first; then every peer at once: `join` → `createTransport` → str0m peer → `connectTransport` → `consume` → `resumeConsumer` → ICE + DTLS → first RTP packet decrypted by its str0m. Every peer got audio. The clock starts at the `join` call. The speaker sends 50 packets/s, so up to 20 ms is waiting for its next packet. {}; the {peers} synthetic peers (their signaling, ICE, DTLS and SRTP) share the load-client CPU.",
        cpus.describe()
    ));
    Ok(report)
}

async fn storm_run(server: &Running, peers: usize, run: usize) -> anyhow::Result<Vec<Stages>> {
    let room = format!("storm{run}");
    let load = Load::new(&server.url, &room, 1, 1, false, PPS).await?;
    let producers = load.producers.clone();
    let mut clients = Vec::with_capacity(peers);
    for _ in 0..peers {
        clients.push(dspeak_schema::client::connect(&server.url).await?);
    }
    let start = Arc::new(tokio::sync::Barrier::new(peers));
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let start = start.clone();
        let shared = load.shared.clone();
        let producers = producers.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            use dspeak_schema::client::DspeakClient;
            start.wait().await;
            let since = |t0: u64, at: u64| at.saturating_sub(t0) as f64 / 1e6;
            let now = || shared.epoch.elapsed().as_nanos() as u64;
            let t0 = now();
            client
                .join(dspeak_schema::rooms::JoinParams { room, display_name: format!("storm{i}"), token: None })
                .await
                .context("join")?;
            let joined = since(t0, now());
            let listener = peer::listener(&client, &shared, &producers, true).await?;
            let stats = listener.stats.clone();
            let consumers = listener.consumers.clone();
            tokio::spawn(peer::drive_listener(listener, shared.clone()));
            peer::resume(&client, &consumers).await?;
            let signaled = since(t0, now());
            let first = AtomicU64::new(0);
            wait_for("first audio", Duration::from_secs(10), || {
                let f = stats.first_audio.load(Ordering::Relaxed);
                first.store(f, Ordering::Relaxed);
                f != 0
            })
            .await?;
            let stages = Stages {
                joined,
                signaled,
                connected: since(t0, stats.connected_at.load(Ordering::Relaxed)),
                first_audio: since(t0, first.load(Ordering::Relaxed)),
            };
            anyhow::Ok((client, stages))
        }));
    }
    let mut stages = Vec::with_capacity(peers);
    let mut keep = Vec::new();
    for t in tasks {
        let (client, s) = t.await??;
        keep.push(client);
        stages.push(s);
    }
    load.stop();
    Ok(stages)
}

/// What the engine lets through per producer: 100 packets/s (its `Policer`).
const POLICED_PPS: f64 = 100.0;

/// Policing over real sockets: one str0m speaker floods `pps` packets/s into a room and
/// one listener consumes it; its consumer must receive at most 100 packets/s (the
/// producer's policer drops the rest). Measured over `secs` after the listener receives.
pub(crate) async fn police(cpus: &Cpus, pps: f64, secs: f64) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "policing: one producer flooding, one consumer",
        &["sent pkt/s", "consumer received pkt/s", "limit pkt/s", "ok"],
    );
    let server = target::dspeak_in_process(target::bench_config(100), cpus).await?;
    let mut load = Load::new(&server.url, "police", 1, 1, false, pps).await?;
    load.grow(1).await?;
    // The policer's first second may let a burst through; measure after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = |load: &Load| load.speakers[0].sent.load(Ordering::Relaxed);
    let received = |load: &Load| load.snapshot().iter().map(|(r, _)| r).sum::<u64>();
    let (sent0, received0, t0) = (sent(&load), received(&load), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let sent_pps = (sent(&load) - sent0) as f64 / elapsed;
    let received_pps = (received(&load) - received0) as f64 / elapsed;
    load.stop();
    // A second's worth of slack for where the window falls on the policer's second.
    let ok = sent_pps >= 10.0 * POLICED_PPS && received_pps > 0.0 && received_pps <= POLICED_PPS * (1.0 + 1.0 / secs);
    report.row(
        vec![format!("{sent_pps:.0}"), format!("{received_pps:.1}"), format!("{POLICED_PPS:.0}"), ok.to_string()],
        json!({"sent_pps": sent_pps, "received_pps": received_pps, "limit_pps": POLICED_PPS, "ok": ok}),
    );
    report.note(format!(
        "One str0m WebRTC speaker asked to send {pps:.0} packets/s, one str0m listener consuming it, over UDP; \
         rates over {secs} s after the listener first received and one more second."
    ));
    ensure!(ok, "policing: sent {sent_pps:.0}/s, the consumer received {received_pps:.1}/s (limit {POLICED_PPS}/s)");
    Ok(report)
}
