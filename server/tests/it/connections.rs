//! The connection layer's bounds, each attacked over real sockets while an honest
//! client keeps pinging: the refusal happens, and the honest client's ping p99 stays
//! under 50 ms.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dspeak_schema::client::DspeakClient;
use dspeak_schema::rooms::JoinParams;
use dspeak_server::Config;
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::*;

/// The most an honest client's ping may take (99th percentile) during an attack.
const HONEST_P99: Duration = Duration::from_millis(50);

/// Pings `url` every 5 ms until `stop` changes; answers with the 99th-percentile
/// round trip. Connects as source `forwarded_for` when given (through a trusted proxy).
/// Runs on its own thread, so the attacker's work in this process does not delay it.
fn honest_pinger(
    url: String,
    forwarded_for: Option<&'static str>,
) -> (watch::Sender<()>, std::thread::JoinHandle<Duration>) {
    let (stop, mut stopped) = watch::channel(());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let task = std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut headers = http::HeaderMap::new();
            if let Some(source) = forwarded_for {
                headers.insert("x-forwarded-for", source.parse().unwrap());
            }
            let client =
                WsClientBuilder::default().set_headers(headers).build(&url).await.expect("honest client connects");
            client
                .join(JoinParams { room: "honest".into(), display_name: "honest".into(), token: None })
                .await
                .expect("honest client joins");
            // Warm-up: the connection's first round trips are not the attack's effect.
            for _ in 0..5 {
                client.ping().await.expect("honest client is answered");
            }
            let mut times = Vec::new();
            let mut stopping = false;
            // Pings for as long as the attack lasts, and at least 200 times (so that the
            // 99th percentile is not simply the slowest).
            while !(stopping && times.len() >= 200) {
                let start = Instant::now();
                client.ping().await.expect("honest client is answered");
                times.push(start.elapsed());
                tokio::select! {
                    _ = stopped.changed(), if !stopping => stopping = true,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            times.sort_unstable();
            times[(times.len() * 99).div_ceil(100) - 1]
        })
    });
    (stop, task)
}

async fn honest_p99(stop: watch::Sender<()>, task: std::thread::JoinHandle<Duration>) {
    stop.send_replace(());
    let p99 = tokio::task::spawn_blocking(move || task.join().expect("the honest client")).await.unwrap();
    assert!(p99 < HONEST_P99, "honest ping p99 {p99:?} during the attack");
}

/// A WebSocket upgrade with extra headers: the connection, or the refusal's status.
async fn upgrade(
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// The server binary as a child process, so its memory can be measured alone.
struct ChildServer {
    child: tokio::process::Child,
    url: String,
}

impl ChildServer {
    async fn start() -> ChildServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dspeak"))
            .args(["--listen", &addr.to_string(), "--rtc-port", "0", "--workers", "1"])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        let deadline = Instant::now() + TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "the server binary did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ChildServer { child, url: format!("ws://{addr}") }
    }

    fn rss_mib(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answers_is_closed_and_memory_stays_bounded() {
    let server = ChildServer::start().await;
    let (stop, pinger) = honest_pinger(server.url.clone(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_mib();

    let (mut ws, _) = tokio_tungstenite::connect_async(&server.url).await.unwrap();
    let join = json!({"jsonrpc": "2.0", "id": 0, "method": "join", "params": {"room": "r", "displayName": "greedy"}});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let mut peak = before;
    let mut sent = 0;
    for id in 1..=20_000 {
        let discover = json!({"jsonrpc": "2.0", "id": id, "method": "rpc.discover"}).to_string();
        // Never reads: the answers pile up until the server closes the connection.
        // 1,000 a second, as in the issue's measurement.
        if id % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match tokio::time::timeout(TIMEOUT, ws.send(Message::text(discover))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) | Err(_) => break,
        }
        if id % 500 == 0 {
            peak = peak.max(server.rss_mib());
        }
    }
    // Now read: what the kernel buffered, then the end of the connection.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
            peak = peak.max(server.rss_mib());
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed after {sent} unread requests");
    peak = peak.max(server.rss_mib());
    assert!(peak - before < 64.0, "server RSS grew {:.1} MiB (from {before:.1})", peak - before);
    honest_p99(stop, pinger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_max_unjoined_connections() {
    let mut config = Config::for_tests();
    config.connections.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    let server = spawn_server_with(config).await;
    let (stop, pinger) = honest_pinger(server.url(), Some("198.51.100.1"));
    let attacker = [("x-forwarded-for", "203.0.113.7")];
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(upgrade(&server.url(), &attacker).await.expect("within the limit"));
    }
    assert_eq!(upgrade(&server.url(), &attacker).await.err(), Some(429), "the 33rd unjoined connection");
    // Another address is not affected, and the TCP peer counts only behind a trusted proxy.
    upgrade(&server.url(), &[("x-forwarded-for", "203.0.113.8")]).await.expect("another address");
    // Joining frees the slot.
    let join = json!({"jsonrpc": "2.0", "id": 1, "method": "join", "params": {"room": "r", "displayName": "a"}});
    held[0].send(Message::text(join.to_string())).await.unwrap();
    let answer = tokio::time::timeout(TIMEOUT, async {
        loop {
            match held[0].next().await {
                Some(Ok(Message::Text(text))) => return text,
                Some(Ok(_)) => continue,
                other => panic!("no answer to join: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(answer.contains("peerId"), "{answer}");
    upgrade(&server.url(), &attacker).await.expect("a slot was freed by the join");
    honest_p99(stop, pinger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_join_in_time_is_closed() {
    let mut config = Config::for_tests();
    config.connections.join_timeout_secs = 1;
    let server = spawn_server_with(config).await;
    let (stop, pinger) = honest_pinger(server.url(), None);
    let (mut idle, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    let start = Instant::now();
    let ended = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(message)) = idle.next().await {
            if let Message::Close(close) = message {
                return close;
            }
        }
        None
    })
    .await;
    let close = ended.expect("the unjoined connection is still open").expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy, "closed with 1008: {close:?}");
    assert!(close.reason.contains("join"), "the reason says why: {close:?}");
    assert!(start.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", start.elapsed());
    // The honest client joined at once and stays connected past the join timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    honest_p99(stop, pinger).await;
    server.wait_counts("the closed connection's session ends", |c| c.sessions == 0).await;
}

#[tokio::test]
async fn an_upgrade_from_another_origin_is_forbidden_when_origins_are_set() {
    let mut config = Config::for_tests();
    config.connections.allowed_origins = Some("https://voice.example".into());
    let server = spawn_server_with(config).await;
    let (stop, pinger) = honest_pinger(server.url(), None);
    for _ in 0..50 {
        assert_eq!(upgrade(&server.url(), &[("origin", "https://evil.example")]).await.err(), Some(403));
    }
    upgrade(&server.url(), &[("origin", "https://voice.example")]).await.expect("the allowed origin");
    upgrade(&server.url(), &[]).await.expect("a client without Origin (not a browser)");
    honest_p99(stop, pinger).await;
}

#[tokio::test]
async fn a_json_rpc_post_is_bounded_like_a_websocket() {
    let mut config = Config::for_tests();
    config.connections.allowed_origins = Some("https://voice.example".into());
    config.limits.request_rate = 1;
    config.max_message_bytes = 1024;
    let server = spawn_server_with(config).await;
    let url = format!("http://{}/", server.handle.local_addr());
    let http = reqwest::Client::new();
    let post = |body: String, origin: Option<&'static str>| {
        let mut request = http.post(url.as_str()).header("content-type", "application/json").body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let refused = post(ping.clone(), Some("https://evil.example")).await.expect("an answer");
    assert_eq!(refused.status(), 403, "a POST from another origin");
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(2048)}}).to_string();
    assert_eq!(post(big, None).await.expect("an answer").status(), 413, "a body over --max-message-bytes");
    // The POSTs of one HTTP connection share its request rate (1/s, bursts of 2).
    let mut codes = Vec::new();
    for _ in 0..4 {
        let answer = post(ping.clone(), Some("https://voice.example")).await.expect("an answer");
        assert_eq!(answer.status(), 200);
        let answer: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        codes.push(answer["error"]["code"].as_i64());
    }
    assert!(codes.contains(&Some(i64::from(dspeak_schema::ErrorCode::LimitExceeded.code()))), "{codes:?}");
    server.client().await.ping().await.expect("the server still answers");
}

#[tokio::test]
async fn a_connection_over_its_outbound_budget_gets_close_code_1008_with_the_reason() {
    let mut config = Config::for_tests();
    config.connections.max_outbound_bytes = 64 * 1024;
    let server = spawn_server_with(config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    // Answers of ~50 KB each, never read while sending: the kernel's buffers fill, then
    // the server's budget.
    let requests = 1_000;
    for id in 0..requests {
        let discover = json!({"jsonrpc": "2.0", "id": id, "method": "rpc.discover"}).to_string();
        if tokio::time::timeout(TIMEOUT, ws.send(Message::text(discover))).await.map_or(true, |r| r.is_err()) {
            break;
        }
    }
    let mut answers = 0;
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(_) => answers += 1,
                Message::Close(close) => return close,
                _ => {}
            }
        }
        None
    })
    .await
    .expect("the connection was closed")
    .expect("with a close frame");
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(close.reason.contains("unread"), "the reason says why: {close:?}");
    assert!(answers < requests, "answers past the budget were dropped, not sent ({answers})");
    server.client().await.ping().await.expect("the server still serves");
}
