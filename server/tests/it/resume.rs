//! Session resume: a connection reset without `leave` detaches the session, `resume`
//! on a new connection re-attaches it and replays what it missed; the grace period's
//! end is a normal leave; hostile tokens find nothing.

use std::time::Duration;

use dspeak_schema::client::DspeakClient;
use dspeak_schema::rooms::{BroadcastParams, ResumeParams};
use dspeak_schema::{ErrorCode, Event};
use dspeak_server::Config;
use serde_json::{Value, json};

use crate::support::*;

/// A server whose detached sessions wait `grace`.
async fn server_with_grace(grace: Duration, buffer: usize) -> TestServer {
    spawn_server_with(Config { resume_grace: grace, resume_buffer: buffer, ..Config::for_tests() }).await
}

/// A raw client (so the test can reset its TCP connection) with its event stream open:
/// returns it with the `welcome` event.
async fn raw_subscribed(url: &str) -> (RawWs, Value) {
    let mut ws = RawWs::connect(url).await;
    let subscribed = ws.request(1, "subscribeEvents", json!([])).await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let welcome = next_raw_event(&mut ws).await;
    assert_eq!((welcome["type"].as_str(), welcome["seq"].as_u64()), (Some("welcome"), Some(0)), "{welcome}");
    (ws, welcome)
}

/// The next event notification on a raw connection, checked against the schema.
async fn next_raw_event(ws: &mut RawWs) -> Value {
    loop {
        let message = ws.recv().await;
        if message["method"] == "event" {
            let event = message["params"]["result"].clone();
            validate("Event", &event);
            return event;
        }
    }
}

/// A raw client subscribed and joined to `room` as `A`: the connection, its resume
/// token and its peer id.
async fn raw_joined(url: &str, room: &str) -> (RawWs, String, String) {
    let (mut ws, welcome) = raw_subscribed(url).await;
    let joined = ws.request(2, "join", json!({ "room": room, "displayName": "A" })).await;
    let peer_id = joined["result"]["peerId"].as_str().unwrap_or_else(|| panic!("joined: {joined}")).to_owned();
    (ws, token_of(&welcome), peer_id)
}

/// `A` (raw) and `B` (typed) in `room`, then A's connection reset and B told: A's
/// resume token and B.
async fn detached_a(server: &TestServer, room: &str) -> (String, Peer) {
    let (a, token, _) = raw_joined(&server.url(), room).await;
    let mut b = server.joined(room, "B").await;
    a.reset().await;
    b.event_where("A reconnecting", |e| matches!(e, Event::PeerReconnecting { .. })).await;
    (token, b)
}

fn token_of(welcome: &Value) -> String {
    let token = welcome["resumeToken"].as_str().expect("welcome carries a resume token").to_owned();
    assert_eq!(token.len(), 64, "256 bits, hex");
    token
}

fn resume_params(token: &str, last_seq: u64) -> Value {
    json!({ "resumeToken": token, "lastSeq": last_seq })
}

/// The `data.reason` of a `resumeFailed` answer.
fn resume_failure(answer: &Value) -> &str {
    assert_eq!(raw_code(answer), i64::from(ErrorCode::ResumeFailed.code()), "{answer}");
    answer["error"]["data"]["reason"].as_str().unwrap_or_else(|| panic!("no reason in {answer}"))
}

#[tokio::test]
async fn a_reset_connection_resumes_with_the_same_peer_and_gets_the_missed_events_in_order() {
    let server = server_with_grace(Duration::from_secs(30), 256).await;
    let (mut a, token, a_peer) = raw_joined(&server.url(), "r").await;
    let transport = a.request(3, "createTransport", json!({ "direction": "recv" })).await;
    let transport_id = transport["result"]["id"].as_str().expect("created").to_owned();
    let mut b = server.joined("r", "B").await;
    let seen = next_raw_event(&mut a).await;
    assert_eq!((seen["type"].as_str(), seen["seq"].as_u64()), (Some("peerJoined"), Some(1)), "{seen}");
    let before = server.handle.counts();

    a.reset().await;
    b.event_where("A reconnecting", |e| matches!(e, Event::PeerReconnecting { peer_id } if peer_id.as_str() == a_peer))
        .await;
    assert_eq!((before.detached, server.handle.counts().detached), (0, 1), "A waits detached");
    for n in 1..=3 {
        let sent = b.client.broadcast(BroadcastParams { payload: json!({ "n": n }) }).await.unwrap();
        assert_eq!(sent.delivered, 1, "the detached session still counts as a member");
    }

    let mut a = RawWs::connect(&server.url()).await;
    let resumed = a.request(1, "resume", resume_params(&token, 1)).await;
    let result = &resumed["result"];
    assert_eq!(result["peerId"], a_peer.as_str(), "{resumed}");
    assert_eq!((result["room"].as_str(), result["replayed"].as_u64()), (Some("r"), Some(3)));
    let next_token = result["resumeToken"].as_str().expect("a new token").to_owned();
    assert_ne!(next_token, token, "rotated");
    let subscribed = a.request(2, "subscribeEvents", json!([])).await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let welcome = next_raw_event(&mut a).await;
    assert_eq!((welcome["type"].as_str(), token_of(&welcome)), (Some("welcome"), next_token));
    for (n, seq) in (1..=3).zip(2..) {
        let e = next_raw_event(&mut a).await;
        assert_eq!(
            (e["type"].as_str(), e["seq"].as_u64(), &e["payload"]["n"]),
            (Some("broadcast"), Some(seq), &json!(n))
        );
    }
    b.event_where("A reconnected", |e| matches!(e, Event::PeerReconnected { peer_id } if peer_id.as_str() == a_peer))
        .await;

    // The same session, answering as before.
    let stats = a.request(3, "getStats", json!({ "id": transport_id })).await;
    assert!(stats.get("result").is_some(), "{stats}");
    let sent = a.request(4, "broadcast", json!({ "payload": "back" })).await;
    assert_eq!(sent["result"]["delivered"], 1);
    let e = b.event_where("A's broadcast", |e| matches!(e, Event::Broadcast { .. })).await;
    assert_eq!(e, Event::Broadcast { from: Some(dspeak_schema::PeerId::new(a_peer.clone())), payload: json!("back") });
    let after = server.handle.counts();
    assert_eq!(
        (after.sessions, after.peers, after.transports, after.detached),
        (before.sessions, before.peers, before.transports, 0),
        "nothing was rebuilt"
    );
    b.no_event(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn without_resume_the_grace_period_ends_in_a_normal_leave_and_counts_return_to_zero() {
    let server = server_with_grace(Duration::from_secs(1), 256).await;
    let (mut a, token, a_peer) = raw_joined(&server.url(), "g").await;
    for (id, direction) in [(3, "send"), (4, "recv")] {
        let created = a.request(id, "createTransport", json!({ "direction": direction })).await;
        assert!(created.get("result").is_some(), "{created}");
    }
    let mut b = server.joined("g", "B").await;
    server.wait_counts("A's transports", |c| c.transports == 2 && c.peers == 2).await;

    a.reset().await;
    b.event_where("A reconnecting", |e| matches!(e, Event::PeerReconnecting { .. })).await;
    server.wait_counts("A still in the room", |c| c.transports == 2 && c.peers == 2).await;
    let left = b.event_where("A left", |e| matches!(e, Event::PeerLeft { .. } | Event::PeerReconnected { .. })).await;
    assert_eq!(left, Event::PeerLeft { peer_id: dspeak_schema::PeerId::new(a_peer) });
    server.wait_counts("A's session gone", |c| c.transports == 0 && c.peers == 1 && c.sessions == 1).await;

    // Its token expired with it.
    let mut late = RawWs::connect(&server.url()).await;
    let answer = late.request(1, "resume", resume_params(&token, 0)).await;
    assert_eq!(resume_failure(&answer), "unknownToken");

    drop((b, late));
    server.wait_counts("everything gone", |c| c.sessions == 0 && c.rooms == 0 && c.peers == 0).await;
}

#[tokio::test]
async fn an_explicit_leave_or_a_grace_of_zero_ends_the_session_at_once() {
    let server = server_with_grace(Duration::from_secs(30), 256).await;
    let (mut a, ..) = raw_joined(&server.url(), "l").await;
    let mut b = server.joined("l", "B").await;
    a.request(3, "leave", json!({})).await;
    b.event_where("A left", |e| matches!(e, Event::PeerLeft { .. })).await;
    a.reset().await;
    b.no_event(Duration::from_millis(200)).await;
    server.wait_counts("A's session gone", |c| c.sessions == 1).await;
}

#[tokio::test]
async fn resuming_while_the_old_connection_is_still_open_closes_it() {
    let server = server_with_grace(Duration::from_secs(30), 256).await;
    let (mut old, token, _) = raw_joined(&server.url(), "h").await;
    let mut b = server.joined("h", "B").await;
    next_raw_event(&mut old).await; // B joined: seq 1

    // The client gave up on `old` (half-open as far as it knows) and resumes.
    let mut new = RawWs::connect(&server.url()).await;
    let resumed = new.request(1, "resume", resume_params(&token, 1)).await;
    assert_eq!(resumed["result"]["replayed"], 0, "{resumed}");
    assert!(old.closed_within(TIMEOUT).await, "the server closes the old connection");
    let subscribed = new.request(2, "subscribeEvents", json!([])).await;
    assert!(subscribed.get("result").is_some(), "the event stream moved to the new connection: {subscribed}");
    assert_eq!(next_raw_event(&mut new).await["type"], "welcome");
    b.client.broadcast(BroadcastParams { payload: json!("to the new one") }).await.unwrap();
    let e = next_raw_event(&mut new).await;
    assert_eq!((e["type"].as_str(), e["seq"].as_u64()), (Some("broadcast"), Some(2)), "{e}");
    // The room never saw the session go: no peerReconnecting, peerReconnected or peerLeft.
    b.no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_gap_no_longer_buffered_fails_and_the_session_leaves() {
    let server = server_with_grace(Duration::from_secs(30), 2).await;
    let (token, mut b) = detached_a(&server, "b").await;
    for n in 0..3 {
        b.client.broadcast(BroadcastParams { payload: json!(n) }).await.unwrap();
    }
    // A missed seq 1 (peerJoined) and three broadcasts; the buffer holds two.
    let mut a = RawWs::connect(&server.url()).await;
    let answer = a.request(1, "resume", resume_params(&token, 0)).await;
    assert_eq!(resume_failure(&answer), "eventsLost");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("join afresh"), "{answer}");
    b.event_where("A left", |e| matches!(e, Event::PeerLeft { .. })).await;
    // The connection is still usable: it joins afresh.
    let joined = a.request(2, "join", json!({ "room": "b", "displayName": "A" })).await;
    assert!(joined.get("result").is_some(), "{joined}");
}

/// The same gap while the old connection is still open (half-open as far as the
/// client knows): the session leaves, and the old connection is closed with it rather
/// than kept on a session that is over.
#[tokio::test]
async fn a_gap_no_longer_buffered_also_closes_a_still_open_old_connection() {
    let server = server_with_grace(Duration::from_secs(30), 2).await;
    let (mut old, token, _) = raw_joined(&server.url(), "g").await;
    let mut b = server.joined("g", "B").await;
    for n in 0..3 {
        b.client.broadcast(BroadcastParams { payload: json!(n) }).await.unwrap();
    }
    let mut new = RawWs::connect(&server.url()).await;
    let answer = new.request(1, "resume", resume_params(&token, 0)).await;
    assert_eq!(resume_failure(&answer), "eventsLost");
    b.event_where("A left", |e| matches!(e, Event::PeerLeft { .. })).await;
    assert!(old.closed_within(TIMEOUT).await, "the server closes the old connection");
}

#[tokio::test]
async fn wrong_reused_and_guessed_tokens_find_nothing() {
    let server = server_with_grace(Duration::from_secs(30), 256).await;
    let (token, mut b) = detached_a(&server, "x").await;

    // 1,000 guesses, each on a connection of its own (resume is only a first call),
    // among them near misses of the real token.
    let mut guesses: Vec<String> =
        (0..992u128).map(|i| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))).collect();
    let flipped = |i: usize| {
        let mut t = token.clone().into_bytes();
        t[i] = if t[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(t).unwrap_or_default()
    };
    guesses.extend([
        flipped(0),
        flipped(63),
        token[..63].to_owned(),
        format!("{token}0"),
        token.to_uppercase(),
        String::new(),
        format!(" {token}"),
        "x".repeat(10_000),
    ]);
    assert_eq!(guesses.len(), 1000);
    let url = server.url();
    for chunk in guesses.chunks(8) {
        let tries = chunk.iter().map(|guess| {
            let url = url.clone();
            let guess = guess.clone();
            async move {
                let mut ws = RawWs::connect(&url).await;
                let answer = ws.request(1, "resume", resume_params(&guess, 0)).await;
                resume_failure(&answer).to_owned()
            }
        });
        for reason in futures_util::future::join_all(tries).await {
            assert_eq!(reason, "unknownToken");
        }
    }

    // The real token still works, once.
    let mut first = RawWs::connect(&url).await;
    let resumed = first.request(1, "resume", resume_params(&token, 0)).await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    let mut second = RawWs::connect(&url).await;
    let reused = second.request(1, "resume", resume_params(&token, 0)).await;
    assert_eq!(resume_failure(&reused), "unknownToken");

    // Resume is only a first call: a connection cannot try again.
    let answer = first.request(2, "resume", resume_params(&token, 0)).await;
    assert_eq!(raw_code(&answer), i64::from(ErrorCode::InvalidState.code()), "{answer}");
    // B saw the one real resume, nothing of the guesses.
    assert!(matches!(b.next_event().await, Event::PeerReconnected { .. }));
    b.no_event(Duration::from_millis(100)).await;
    let _ = b
        .client
        .resume(ResumeParams { resume_token: token, last_seq: 0 })
        .await
        .expect_err("B's connection already made calls");
}

#[tokio::test]
async fn a_resumed_connection_counts_as_joined_for_the_join_timeout() {
    let mut config = Config { resume_grace: Duration::from_secs(30), ..Config::for_tests() };
    config.connections.join_timeout_secs = 1;
    let server = spawn_server_with(config).await;
    let (a, token, _) = raw_joined(&server.url(), "t").await;
    a.reset().await;
    let mut a = RawWs::connect(&server.url()).await;
    let resumed = a.request(1, "resume", resume_params(&token, 0)).await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pong = a.request(2, "ping", json!({})).await;
    assert!(pong.get("result").is_some(), "still open after the join timeout: {pong}");
}

#[tokio::test]
async fn the_typed_client_reads_each_events_seq() {
    use dspeak_schema::client::CallExt;

    let server = spawn_server().await;
    let client = client_at(&server.url()).await;
    let mut events = client.subscribe_sequenced_events().await.unwrap();
    let mut next = async || tokio::time::timeout(TIMEOUT, events.next()).await.ok().flatten().and_then(Result::ok);
    let welcome = next().await.expect("welcome");
    assert!(matches!(welcome.event, Event::Welcome { .. }) && welcome.seq == 0, "{welcome:?}");
    client
        .join(dspeak_schema::rooms::JoinParams { room: "s".into(), display_name: "A".into(), token: None })
        .await
        .unwrap();
    let _b = server.joined("s", "B").await;
    client.ping().await.unwrap();
    let seqs = [next().await, next().await].map(|e| e.map(|e| (e.event.kind(), e.seq)));
    assert_eq!(seqs, [Some(("peerJoined", 1)), Some(("pong", 2))]);
}

#[tokio::test]
async fn at_most_max_connections_sessions_wait_detached() {
    let config = Config { resume_grace: Duration::from_secs(30), max_connections: 2, ..Config::for_tests() };
    let server = spawn_server_with(config).await;
    let mut b = server.joined("cap", "B").await;
    for expected in ["peerReconnecting", "peerReconnecting", "peerLeft"] {
        let (a, _, a_peer) = raw_joined(&server.url(), "cap").await;
        b.event_where("A joined", |e| matches!(e, Event::PeerJoined { peer_id, .. } if peer_id.as_str() == a_peer))
            .await;
        a.reset().await;
        let e = b.event_where("A gone", |e| matches!(e, Event::PeerReconnecting { .. } | Event::PeerLeft { .. })).await;
        assert_eq!(e.kind(), expected, "two detached sessions at most: {e:?}");
    }
}

/// A resumed client asks for its events and its connection closes in the same breath:
/// the answer never reaches it, and the session keeps its event queue, so after the
/// next resume its new connection subscribes and gets the events.
#[tokio::test]
async fn a_subscription_lost_with_its_connection_leaves_the_queue_to_the_next_one() {
    let server = server_with_grace(Duration::from_secs(30), 256).await;
    let (token, b) = detached_a(&server, "lost").await;
    let mut first = RawWs::connect(&server.url()).await;
    let resumed = first.request(1, "resume", resume_params(&token, 1)).await;
    let token = resumed["result"]["resumeToken"].as_str().unwrap_or_else(|| panic!("{resumed}")).to_owned();
    let subscribe = json!({"jsonrpc": "2.0", "id": 2, "method": "subscribeEvents", "params": []});
    first.send_and_close(subscribe.to_string()).await;
    server.wait_counts("A detached again", |c| c.detached == 1).await;
    let mut second = RawWs::connect(&server.url()).await;
    let resumed = second.request(1, "resume", resume_params(&token, 1)).await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    let subscribed = second.request(2, "subscribeEvents", json!([])).await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let welcome = next_raw_event(&mut second).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let sent = b.client.broadcast(BroadcastParams { payload: json!("still there") }).await.unwrap();
    assert_eq!(sent.delivered, 1);
    let e = next_raw_event(&mut second).await;
    assert_eq!((e["type"].as_str(), &e["payload"]), (Some("broadcast"), &json!("still there")), "{e}");
}
