//! Webhooks against a real HTTP receiver on loopback: events in order per room, signed,
//! retried; a receiver that never answers does not hold up signaling; what is queued at
//! shutdown is delivered before the server stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{CreateTransportParams, Direction, ProduceParams};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// One request the receiver got.
#[derive(Debug)]
struct Received {
    signature: Option<String>,
    body: String,
    /// Whether the receiver answered it with success.
    accepted: bool,
}

/// A webhook receiver: a hyper HTTP server that refuses the first `refuse` requests
/// with 503 and accepts the rest, answering each `delay` after it arrived.
async fn receiver(refuse: usize, delay: Duration) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (tx, seen) = (tx.clone(), seen.clone());
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (tx, seen) = (tx.clone(), seen.clone());
                async move {
                    let signature =
                        request.headers().get("x-dspeak-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let accepted = seen.fetch_add(1, Ordering::SeqCst) >= refuse;
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let _ = tx.send(Received { signature, body, accepted });
                    tokio::time::sleep(delay).await;
                    let status = if accepted { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(TIMEOUT, rx.recv()).await.expect("a webhook in time").expect("receiver running")
}

fn expected_signature(body: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()), body.as_bytes());
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[tokio::test]
async fn a_receiver_gets_the_events_of_a_room_in_order_signed_and_retried() {
    let (url, mut rx) = receiver(1, Duration::ZERO).await;
    let mut config = secured_config();
    config.webhook_urls = vec![url];
    config.webhook_retry_ms = 20;
    let server = spawn_server_with(config).await;

    let ann = server.joined_with(&claims("ann", "hooks"), "Ann").await;
    let bob = server.joined_with(&claims("bob", "hooks"), "Bob").await;
    let send = bob.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let mut produce: ProduceParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")).unwrap();
    produce.transport_id = send.id;
    let producer = bob.client.produce(produce).await.unwrap().id;
    bob.client.leave().await.unwrap();
    ann.client.leave().await.unwrap();

    // The first request is refused and retried: the same event, the same id.
    let refused = next(&mut rx).await;
    assert!(!refused.accepted);
    let mut delivered = Vec::new();
    while delivered.len() < 8 {
        let r = next(&mut rx).await;
        if delivered.is_empty() {
            assert_eq!(r.body, refused.body, "a retry sends the same body");
        }
        assert!(r.accepted);
        assert_eq!(r.signature.as_deref(), Some(expected_signature(&r.body).as_str()), "{}", r.body);
        let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
        validate("WebhookEvent", &body);
        delivered.push(body);
    }
    let kinds: Vec<&str> = delivered.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "roomStarted",
            "peerJoined",
            "peerJoined",
            "producerAdded",
            "producerClosed",
            "peerLeft",
            "peerLeft",
            "roomFinished"
        ]
    );
    let who: Vec<&Value> = delivered.iter().map(|e| &e["peer"]["identity"]).collect();
    let (ann, bob, none) = (Value::from("ann"), Value::from("bob"), Value::Null);
    assert_eq!(who, [&none, &ann, &bob, &bob, &bob, &bob, &ann, &none]);
    assert_eq!(
        (&delivered[3]["producerId"], &delivered[4]["producerId"]),
        (&Value::from(producer.as_str()), &Value::from(producer.as_str()))
    );
    assert!(delivered.iter().all(|e| e["room"] == "hooks"));
    let ids: std::collections::BTreeSet<&str> = delivered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), delivered.len(), "every event has its own id");
    let times: Vec<i64> = delivered.iter().map(|e| e["createdAtMs"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// A black hole: a receiver that accepts connections and never answers; its URL and
/// how many connections it took.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_joins() {
    let (url, connections) = black_hole().await;
    let mut config = secured_config();
    config.webhook_urls = vec![url];
    config.webhook_queue = 4;
    config.webhook_timeout_secs = 60;
    let server = spawn_server_with(config).await;

    // Every join queues events while every lane waits on the black hole: the joins
    // complete all the same (each within the client's timeout, far below the
    // webhook timeout), and what does not fit the queue is dropped and counted.
    for i in 0..20 {
        let peer = server.joined_with(&claims(&format!("user-{i}"), &format!("room-{i}")), "P").await;
        peer.client.leave().await.unwrap();
    }
    server.wait_counts("dropped webhooks", |c| c.webhooks_dropped > 0).await;
    assert!(connections.load(Ordering::SeqCst) > 0, "deliveries were attempted");
    assert_eq!(server.handle.counts().peers, 0);
}

/// The events emitted as the server shuts down (the last member's `peerLeft` and the
/// room's `roomFinished`, when its connection closes) and those still queued behind a
/// slow receiver reach it before the shutdown ends.
#[tokio::test]
async fn shutdown_delivers_the_events_still_queued() {
    let (url, mut rx) = receiver(0, Duration::from_millis(200)).await;
    let mut config = secured_config();
    config.webhook_urls = vec![url];
    let server = spawn_server_with(config).await;
    let _ann = server.joined_with(&claims("ann", "last"), "Ann").await;
    server.shutdown().await;
    let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|r| serde_json::from_str::<Value>(&r.body).expect("a JSON body")["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["roomStarted", "peerJoined", "peerLeft", "roomFinished"]);
}

/// Two receivers, the first a black hole: the healthy one still gets every event at
/// once (each receiver has its own lanes).
#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_the_others() {
    let (hole, _) = black_hole().await;
    let (url, mut rx) = receiver(0, Duration::ZERO).await;
    let mut config = secured_config();
    config.webhook_urls = vec![hole, url];
    config.webhook_timeout_secs = 60;
    let server = spawn_server_with(config).await;
    let ann = server.joined_with(&claims("ann", "both"), "Ann").await;
    ann.client.leave().await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let r = next(&mut rx).await;
        let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
        kinds.push(body["event"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(kinds, ["roomStarted", "peerJoined", "peerLeft", "roomFinished"]);
}

/// A session waiting for a resume when the server stops leaves its room like any
/// other: the backend hears its `peerLeft` and the room's `roomFinished`.
#[tokio::test]
async fn a_detached_session_leaves_when_the_server_stops() {
    let (url, mut rx) = receiver(0, Duration::ZERO).await;
    let mut config = secured_config();
    config.webhook_urls = vec![url];
    config.resume_grace = Duration::from_secs(30);
    let server = spawn_server_with(config).await;
    let mut ann = RawWs::connect(&server.url()).await;
    ann.request(1, "subscribeEvents", serde_json::json!([])).await;
    let joined = ann
        .request(
            2,
            "join",
            serde_json::json!({"room": "held", "displayName": "Ann", "token": token(&claims("ann", "held"))}),
        )
        .await;
    assert!(joined.get("result").is_some(), "{joined}");
    ann.reset().await;
    server.wait_counts("ann detached", |c| c.detached == 1).await;
    server.shutdown().await;
    let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|r| serde_json::from_str::<Value>(&r.body).expect("a JSON body")["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["roomStarted", "peerJoined", "peerLeft", "roomFinished"]);
}
