//! Operations: Prometheus metrics that follow real calls, health and readiness
//! probes, and the graceful drain of the real `dspeak` binary on SIGTERM.
//!
//! Tests with `pymediasoup` in their name drive real WebRTC peers (`python -m
//! dspeak_peer talk`) and need the e2e virtualenv (`DSPEAK_PYTHON`, see `pymediasoup.rs`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dspeak_schema::client::DspeakClient;
use dspeak_schema::rooms::JoinParams;
use dspeak_schema::{ErrorCode, Event};
use dspeak_server::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::pymediasoup::python;
use crate::support::*;

/// Longest wait for real WebRTC peers to connect on a loaded machine.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(40);

/// A `python -m dspeak_peer talk` peer: produces a tone and consumes everyone else in `room`
/// for `seconds`, then leaves.
fn talker(python: &str, url: &str, room: &str, freq: u32, seconds: u32) -> Child {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/python");
    Command::new(python)
        .args(["-m", "dspeak_peer", "--url", url, "talk", "--room", room])
        .args(["--freq", &freq.to_string(), "--duration", &seconds.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts")
}

async fn finished(mut child: Child, what: &str) {
    let status = tokio::time::timeout(MEDIA_TIMEOUT, child.wait()).await.expect(what).expect(what);
    assert!(status.success(), "{what}: {status}");
}

/// Scrapes until `pred` holds.
async fn wait_metrics(addr: SocketAddr, what: &str, timeout: Duration, pred: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = Metrics::scrape(addr).await;
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrapes until the RTP counters grew: audio is being forwarded.
async fn audio_flows(addr: SocketAddr) {
    let before = Metrics::scrape(addr).await;
    let (received, sent) =
        (before.sum("dspeak_rtp_packets_received_total", &[]), before.sum("dspeak_rtp_packets_sent_total", &[]));
    wait_metrics(addr, "RTP counters to grow", TIMEOUT, |m| {
        m.sum("dspeak_rtp_packets_received_total", &[]) >= received + 25.0
            && m.sum("dspeak_rtp_packets_sent_total", &[]) >= sent + 25.0
            && m.sum("dspeak_rtp_bytes_received_total", &[]) > before.sum("dspeak_rtp_bytes_received_total", &[])
            && m.sum("dspeak_rtp_bytes_sent_total", &[]) > before.sum("dspeak_rtp_bytes_sent_total", &[])
    })
    .await;
}

fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_pymediasoup_peers() {
    let Some(python) = python() else { return };
    let mut config = Config::for_tests();
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = spawn_server_with(config).await;
    let metrics = server.handle.metrics_addr().expect("metrics listener");

    let idle = Metrics::scrape(metrics).await;
    assert_eq!(idle.sum("dspeak_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    for gauge in ["dspeak_sessions", "dspeak_rooms", "dspeak_peers", "dspeak_consumers"] {
        assert_eq!(idle.sum(gauge, &[]), 0.0, "{gauge}");
    }
    assert!(idle.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(idle.sum("process_open_fds", &[]) > 0.0);
    assert!(idle.has("dspeak_media_send_drops_total"));

    // A refused request is counted with its code.
    let lonely = server.client().await;
    assert_eq!(code_of(lonely.leave().await), ErrorCode::NotJoined.code());

    let room = "metrics";
    let a = talker(&python, &server.url(), room, 440, 10);
    let b = talker(&python, &server.url(), room, 660, 10);
    let m = wait_metrics(metrics, "two peers producing and consuming", MEDIA_TIMEOUT, |m| {
        m.sum("dspeak_consumers", &[]) == 2.0
    })
    .await;
    assert_eq!(m.sum("dspeak_rooms", &[]), 1.0);
    assert_eq!(m.sum("dspeak_peers", &[]), 2.0);
    assert_eq!(m.sum("dspeak_producers", &[]), 2.0);
    assert_eq!(m.sum("dspeak_transports", &[]), 4.0);
    assert_eq!(m.sum("dspeak_rpc_requests_total", &[("method", "join"), ("code", "ok")]), 2.0);
    assert_eq!(m.sum("dspeak_rpc_requests_total", &[("method", "leave"), ("code", "1000")]), 1.0);
    assert_eq!(m.histogram_count("dspeak_rpc_duration_seconds", "join"), 2);
    audio_flows(metrics).await;
    let busy = Metrics::scrape(metrics).await;
    assert!(busy.has("dspeak_worker_busy_ratio"));
    assert!(busy.sum("dspeak_worker_cpu_seconds_total", &[]) > 0.0);

    finished(a, "talker A").await;
    finished(b, "talker B").await;
    let m = wait_metrics(metrics, "everything released", TIMEOUT, |m| {
        m.sum("dspeak_rooms", &[]) == 0.0 && m.sum("dspeak_consumers", &[]) == 0.0
    })
    .await;
    for gauge in ["dspeak_peers", "dspeak_transports", "dspeak_producers"] {
        assert_eq!(m.sum(gauge, &[]), 0.0, "{gauge}");
    }
    assert!(m.sum("dspeak_rtp_packets_sent_total", &[]) >= 50.0);
    assert_eq!(m.sum("dspeak_media_send_drops_total", &[]), 0.0, "two talkers fill no send buffer");
    server.shutdown().await;
}

#[tokio::test]
async fn probes_answer_on_both_listeners_and_readyz_fails_while_draining() {
    let mut config = Config::for_tests();
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = spawn_server_with(config).await;
    let listeners = [server.handle.local_addr(), server.handle.metrics_addr().unwrap()];
    for addr in listeners {
        assert_eq!(http_status(addr, "/healthz").await, 200);
        assert_eq!(http_status(addr, "/readyz").await, 200);
    }
    let (head, _) = http_get(listeners[1], "/nothing").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let mut peer = server.joined("probes", "A").await;
    let drained = tokio::spawn(server.handle.drain(Duration::from_secs(30)));
    for addr in listeners {
        let (head, body) = http_get(addr, "/readyz").await;
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(body.contains("draining"), "{body}");
        assert_eq!(http_status(addr, "/healthz").await, 200);
    }
    let event = peer.event_where("serverDraining", |e| matches!(e, Event::ServerDraining { .. })).await;
    let Event::ServerDraining { deadline_ms } = event else { unreachable!() };
    assert!((deadline_ms - unix_millis() - 30_000).abs() < 5_000, "deadline {deadline_ms}");

    // A session that subscribes during the drain hears it right after `welcome`.
    let mut late = server.subscribed().await;
    assert!(matches!(late.next_event().await, Event::ServerDraining { .. }));
    let refused = late.client.join(JoinParams { room: "probes".into(), display_name: "B".into(), token: None }).await;
    let Err(jsonrpsee::core::ClientError::Call(e)) = refused else { panic!("join during a drain: {refused:?}") };
    assert_eq!(e.code(), ErrorCode::Unavailable.code());
    assert!(e.message().contains("draining"), "{}", e.message());

    // The drain completes once the last room is empty.
    assert!(!drained.is_finished());
    peer.client.leave().await.unwrap();
    let outcome = tokio::time::timeout(TIMEOUT, drained).await.expect("drain completes").unwrap();
    assert_eq!(outcome, dspeak_server::Drained::Empty);
    server.shutdown().await;
}

/// The real `dspeak` binary, started with `--listen 127.0.0.1:0`.
pub struct Binary {
    child: Child,
    pub url: String,
    metrics: SocketAddr,
}

impl Binary {
    async fn start(args: &[&str]) -> Binary {
        Binary::start_on("127.0.0.1:0", args).await
    }

    /// The binary listening on `listen`, with `args`.
    pub async fn start_on(listen: &str, args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dspeak"))
            .args(["--listen", listen, "--rtc-port", "0", "--rtc-listen-ip", "127.0.0.1", "--workers", "1"])
            .args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("NODE_ENV")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("dspeak starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut metrics) = (None, None);
        while url.is_none() || metrics.is_none() {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line()).await.expect("dspeak logs").unwrap();
            let line = line.expect("dspeak logs its addresses before stopping");
            let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            let message = log["fields"]["message"].as_str().unwrap_or_default();
            if let Some(u) = message.strip_prefix("listening on ") {
                url = Some(u.to_owned());
            }
            if let Some(m) = message.strip_prefix("metrics on http://") {
                metrics = Some(m.trim_end_matches("/metrics").parse().unwrap());
            }
        }
        // Keep reading, so the log pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Binary { child, url: url.unwrap(), metrics: metrics.unwrap() }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait()).await.expect("dspeak exits in time").unwrap()
    }
}

async fn draining_event(peer: &mut Peer) -> i64 {
    match peer.event_where("serverDraining", |e| matches!(e, Event::ServerDraining { .. })).await {
        Event::ServerDraining { deadline_ms } => deadline_ms,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_pymediasoup_calls_and_exits_when_the_last_peer_leaves() {
    let Some(python) = python() else { return };
    let mut server = Binary::start(&["--drain-timeout", "120s"]).await;
    let (mut a, mut b) = (subscribed_at(&server.url).await, subscribed_at(&server.url).await);
    a.join("drain-1", "A").await;
    b.join("drain-2", "B").await;
    let talkers = [talker(&python, &server.url, "drain-1", 440, 14), talker(&python, &server.url, "drain-1", 660, 14)];
    wait_metrics(server.metrics, "two talkers", MEDIA_TIMEOUT, |m| m.sum("dspeak_consumers", &[]) == 2.0).await;
    assert_eq!(Metrics::scrape(server.metrics).await.sum("dspeak_rooms", &[]), 2.0);

    server.signal(nix::sys::signal::Signal::SIGTERM);
    for peer in [&mut a, &mut b] {
        let deadline = draining_event(peer).await;
        assert!((deadline - unix_millis() - 120_000).abs() < 10_000, "deadline {deadline}");
    }
    assert_eq!(http_status(server.metrics, "/readyz").await, 503);
    assert_eq!(http_status(server.metrics, "/healthz").await, 200);
    let newcomer = client_at(&server.url).await;
    let refused = newcomer.join(JoinParams { room: "drain-3".into(), display_name: "C".into(), token: None }).await;
    assert_eq!(code_of(refused), ErrorCode::Unavailable.code());
    audio_flows(server.metrics).await;

    // The calls end on their own; the server waits for the last peer.
    for (i, t) in talkers.into_iter().enumerate() {
        finished(t, &format!("talker {i}")).await;
    }
    a.client.leave().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.child.try_wait().unwrap().is_none(), "room drain-2 is still in use");
    let left = Instant::now();
    b.client.leave().await.unwrap();
    let status = server.exit_status(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    assert!(left.elapsed() < Duration::from_secs(2), "exited {:?} after the last peer left", left.elapsed());
}

#[tokio::test]
async fn the_drain_timeout_closes_calls_left_and_exits_0() {
    let mut server = Binary::start(&["--drain-timeout", "2s"]).await;
    let mut a = subscribed_at(&server.url).await;
    a.join("stays", "A").await;
    let signalled = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = draining_event(&mut a).await;
    assert!((deadline - unix_millis() - 2_000).abs() < 1_500, "deadline {deadline}");
    let status = server.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(1_900) && took < Duration::from_secs(6), "exited after {took:?}");
}

#[tokio::test]
async fn a_second_signal_stops_at_once() {
    let mut server = Binary::start(&["--drain-timeout", "120s"]).await;
    let mut a = subscribed_at(&server.url).await;
    a.join("stays", "A").await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    draining_event(&mut a).await;
    server.signal(nix::sys::signal::Signal::SIGINT);
    let status = server.exit_status(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
}
