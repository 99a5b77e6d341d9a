//! The session and room area: ping, events, join/leave, broadcast, cleanup, limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dspeak_schema::client::{CallExt, DspeakClient};
use dspeak_schema::rooms::{BroadcastParams, JoinParams, PongType};
use dspeak_schema::{EVENTS, ErrorCode, Event, methods};
use dspeak_server::Config;
use jsonrpsee::core::client::SubscriptionClientT;
use jsonrpsee::core::rpc_params;
use serde_json::json;

use crate::support::*;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn ping_answers_pong_with_server_time_and_pushes_a_pong_event() {
    let server = spawn_server().await;
    let client = server.client().await;
    let before = now_ms();
    let pong = client.ping().await.unwrap();
    assert_eq!(pong.kind, PongType::Pong);
    assert!((before - 1000..=now_ms() + 1000).contains(&pong.timestamp), "timestamp {}", pong.timestamp);

    let mut peer = server.subscribed().await;
    let pong = peer.client.ping().await.unwrap();
    assert_eq!(peer.next_event().await, Event::Pong { timestamp: pong.timestamp });
}

#[tokio::test]
async fn welcome_is_the_first_event_and_carries_session_and_version() {
    let server = spawn_server().await;
    let client = server.client().await;
    // Join before subscribing: the queued peer events must still come after welcome.
    let joined = client.join(JoinParams { room: "w".into(), display_name: "Ann".into(), token: None }).await.unwrap();
    let _other = server.joined("w", "Bob").await;
    let mut events = client.subscribe(EVENTS.subscribe, rpc_params![], EVENTS.unsubscribe).await.unwrap();
    match next_event(&mut events).await {
        Event::Welcome { session_id, server: name, version, resume_token } => {
            assert_eq!(session_id, joined.session_id);
            assert_eq!(resume_token.len(), 64, "a 256-bit resume token");
            assert_eq!(name, "dspeak");
            assert_eq!(version, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events).await, Event::PeerJoined { display_name, .. } if display_name == "Bob"));
}

#[tokio::test]
async fn broadcast_reaches_exactly_the_other_members_of_the_senders_room() {
    let server = spawn_server().await;
    let mut a = server.joined("r1", "A").await;
    let mut b = server.joined("r1", "B").await;
    let mut c = server.joined("r1", "C").await;
    let mut d = server.joined("r2", "D").await;
    // Drain the join announcements.
    a.event_where("B joined", |e| matches!(e, Event::PeerJoined { display_name, .. } if display_name == "B")).await;
    a.event_where("C joined", |e| matches!(e, Event::PeerJoined { display_name, .. } if display_name == "C")).await;
    b.event_where("C joined", |e| matches!(e, Event::PeerJoined { display_name, .. } if display_name == "C")).await;

    let payload = json!({"text": "hi", "n": [1, 2, 3]});
    let result = a.client.broadcast(BroadcastParams { payload: payload.clone() }).await.unwrap();
    assert_eq!(result.delivered, 2);
    let expected = Event::Broadcast { from: Some(a.peer_id()), payload };
    assert_eq!(b.next_event().await, expected);
    assert_eq!(c.next_event().await, expected);
    a.no_event(Duration::from_millis(200)).await;
    d.no_event(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn join_leave_and_disconnect_are_announced_and_empty_rooms_disappear() {
    let server = spawn_server().await;
    let mut a = server.joined("room", "A").await;
    let b_joined;
    {
        let mut b = server.subscribed().await;
        b_joined = b.join("room", "B").await;
        assert_eq!(b_joined.peers.len(), 1);
        assert_eq!(b_joined.peers[0].peer_id, a.peer_id());
        assert_eq!(b_joined.peers[0].display_name, "A");
        assert_eq!(
            a.next_event().await,
            Event::PeerJoined {
                peer_id: b_joined.peer_id.clone(),
                display_name: "B".into(),
                identity: None,
                metadata: None
            }
        );
        assert_eq!(server.handle.counts().rooms, 1);
        assert_eq!(server.handle.counts().peers, 2);
        b.client.leave().await.unwrap();
        assert_eq!(a.next_event().await, Event::PeerLeft { peer_id: b_joined.peer_id.clone() });
        // B can join again after leaving.
        let again = b.join("room", "B2").await;
        assert_ne!(again.peer_id, b_joined.peer_id);
        assert!(matches!(a.next_event().await, Event::PeerJoined { display_name, .. } if display_name == "B2"));
        // Killed socket, no leave.
        let b_id = again.peer_id;
        drop(b);
        assert_eq!(a.next_event().await, Event::PeerLeft { peer_id: b_id });
    }
    server.wait_counts("one peer left", |c| c.peers == 1 && c.sessions == 1).await;
    a.client.leave().await.unwrap();
    server.wait_counts("room removed", |c| c.rooms == 0 && c.peers == 0).await;
    drop(a);
    server.wait_counts("sessions closed", |c| c.sessions == 0).await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_delay_the_others_and_is_evicted() {
    let mut config = Config::for_tests();
    // Small enough to overflow soon once the slow client's socket buffers are full,
    // large enough that the fast client never lags that far behind on a busy machine.
    config.event_queue = 256;
    config.limits.broadcast_rate = 100_000;
    config.limits.request_rate = 100_000;
    let server = spawn_server_with(config).await;
    let mut fast = server.joined("busy", "fast").await;
    let sender = server.joined("busy", "sender").await;
    // The slow client subscribes and joins over a raw socket, then never reads again.
    let mut slow = RawWs::connect(&server.url()).await;
    slow.request(1, "subscribeEvents", json!({})).await;
    let slow_join = slow.request(2, "join", json!({"room": "busy", "displayName": "slow"})).await;
    let slow_id = slow_join["result"]["peerId"].as_str().unwrap().to_owned();
    fast.event_where(
        "sender joined",
        |e| matches!(e, Event::PeerJoined { display_name, .. } if display_name == "sender"),
    )
    .await;
    fast.event_where("slow joined", |e| matches!(e, Event::PeerJoined { display_name, .. } if display_name == "slow"))
        .await;

    // Enough 16 KiB broadcasts to fill the slow client's socket buffers and queues.
    let n = 2500;
    let blob = "x".repeat(16 * 1000);
    let slow_peer = slow_id.clone();
    let reader = tokio::spawn(async move {
        let (mut received, mut evicted) = (0, false);
        while received < n {
            match fast.next_event().await {
                Event::Broadcast { payload, .. } => {
                    assert_eq!(payload["i"], received, "broadcasts arrive in order");
                    received += 1;
                }
                Event::PeerLeft { peer_id } if peer_id.as_str() == slow_peer => evicted = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if !evicted {
            fast.event_where(
                "slow client evicted",
                |e| matches!(e, Event::PeerLeft { peer_id } if peer_id.as_str() == slow_peer),
            )
            .await;
        }
        (tokio::time::Instant::now(), fast)
    });
    for i in 0..n {
        sender.client.broadcast(BroadcastParams { payload: json!({"i": i, "blob": blob}) }).await.unwrap();
    }
    let sent = tokio::time::Instant::now();
    let (done, _fast) = reader.await.expect("fast reader saw every broadcast and the eviction");
    let lag = done.saturating_duration_since(sent);
    assert!(lag < Duration::from_secs(2), "fast client trailed the sender by {lag:?}");
    server.wait_counts("slow peer gone", |c| c.peers == 2).await;
}

#[tokio::test]
async fn pipelined_requests_of_one_session_apply_in_wire_order() {
    let mut config = Config::for_tests();
    config.limits.broadcast_rate = 1000;
    let server = spawn_server_with(config).await;
    let mut listener = server.joined("order", "listener").await;
    let mut ws = RawWs::connect(&server.url()).await;
    // join and 100 broadcasts in one burst, without waiting for any answer.
    let mut burst =
        vec![json!({"jsonrpc": "2.0", "id": 0, "method": "join", "params": {"room": "order", "displayName": "fast"}})];
    for i in 1..=100 {
        burst.push(json!({"jsonrpc": "2.0", "id": i, "method": "broadcast", "params": {"payload": i}}));
    }
    for msg in &burst {
        ws.send_text(msg.to_string()).await;
    }
    for _ in 0..burst.len() {
        let v = ws.recv().await;
        assert!(v.get("result").is_some(), "every pipelined request succeeds: {v}");
    }
    listener.event_where("fast joined", |e| matches!(e, Event::PeerJoined { .. })).await;
    for i in 1..=100 {
        match listener.next_event().await {
            Event::Broadcast { payload, .. } => assert_eq!(payload, json!(i)),
            other => panic!("expected broadcast {i}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn room_errors_have_their_documented_codes_and_the_session_stays_usable() {
    let mut config = Config::for_tests();
    config.max_peers_per_room = 2;
    config.max_broadcast_bytes = 100;
    let server = spawn_server_with(config).await;
    let mut a = server.subscribed().await;

    // notJoined
    assert_eq!(code_of(a.client.leave().await), ErrorCode::NotJoined.code());
    assert_eq!(code_of(a.client.broadcast(BroadcastParams { payload: json!(1) }).await), ErrorCode::NotJoined.code());
    // invalid params: empty name; payloadTooLarge: long name
    let bad = JoinParams { room: "".into(), display_name: "A".into(), token: None };
    assert_eq!(code_of(a.client.join(bad).await), -32602);
    let long = JoinParams { room: "r".into(), display_name: "n".repeat(65), token: None };
    assert_eq!(code_of(a.client.join(long).await), ErrorCode::PayloadTooLarge.code());

    a.join("small", "A").await;
    // alreadyJoined
    let again = JoinParams { room: "other".into(), display_name: "A".into(), token: None };
    assert_eq!(code_of(a.client.join(again).await), ErrorCode::AlreadyJoined.code());
    // payloadTooLarge
    let big = BroadcastParams { payload: json!("y".repeat(200)) };
    assert_eq!(code_of(a.client.broadcast(big).await), ErrorCode::PayloadTooLarge.code());
    // invalidState: a second subscription on the same session
    assert_eq!(code_of(a.client.subscribe_events().await.map(|_| ())), ErrorCode::InvalidState.code());
    // roomFull
    let _b = server.joined("small", "B").await;
    let c = server.client().await;
    let full = JoinParams { room: "small".into(), display_name: "C".into(), token: None };
    assert_eq!(code_of(c.join(full).await), ErrorCode::RoomFull.code());
    // Everyone is still usable.
    assert_eq!(a.client.broadcast(BroadcastParams { payload: json!("ok") }).await.unwrap().delivered, 1);
    c.join(JoinParams { room: "elsewhere".into(), display_name: "C".into(), token: None }).await.unwrap();
    assert_eq!(server.handle.counts().rooms, 2);
}

#[tokio::test]
async fn typed_calls_send_params_as_an_object() {
    // The server only accepts by-name params; a typed call proves the client sends them so.
    let server = spawn_server().await;
    let client = server.client().await;
    let joined = client
        .call::<methods::Join>(JoinParams { room: "obj".into(), display_name: "A".into(), token: None })
        .await
        .unwrap();
    assert!(!joined.peer_id.as_str().is_empty());
}

#[tokio::test]
async fn shutdown_closes_sessions_and_completes() {
    let server = spawn_server().await;
    let mut a = server.joined("bye", "A").await;
    let _b = server.joined("bye", "B").await;
    a.next_event().await;
    server.shutdown().await;
    // The client sees its connection end.
    let end = tokio::time::timeout(TIMEOUT, async { while let Some(Ok(_)) = a.events.next().await {} }).await;
    assert!(end.is_ok(), "client connection closed on shutdown");
}

#[tokio::test]
async fn broadcast_payloads_arrive_as_sent_to_the_last_digit() {
    let mut config = Config::for_tests();
    // Room for 1,000 numbers of up to 20 characters each.
    config.max_broadcast_bytes = 32 * 1024;
    let server = spawn_server_with(config).await;
    let mut sender = RawWs::connect(&server.url()).await;
    let mut receiver = RawWs::connect(&server.url()).await;
    receiver.request(1, EVENTS.subscribe, json!({})).await;
    receiver.request(2, "join", json!({"room": "exact", "displayName": "B"})).await;
    sender.request(1, "join", json!({"room": "exact", "displayName": "A"})).await;
    // 1,000 floats like JavaScript's Math.random() (53 random bits), and integers at
    // the edges of what JSON numbers carry exactly here.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut numbers: Vec<serde_json::Value> = (0..1000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            json!((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    numbers.extend([json!(u64::MAX), json!(i64::MIN), json!(9_007_199_254_740_993_u64), json!(-0.0), json!(1e300)]);
    let payload = serde_json::to_string(&numbers).unwrap();
    sender
        .send_text(format!(r#"{{"jsonrpc":"2.0","id":2,"method":"broadcast","params":{{"payload":{payload}}}}}"#))
        .await;
    loop {
        let text = receiver.recv_text().await;
        if text.contains(r#""type":"broadcast""#) {
            assert!(text.contains(&payload), "the payload changed on its way:\nsent {payload}\ngot  {text}");
            break;
        }
    }
}

#[tokio::test]
async fn a_join_whose_answer_would_not_fit_is_refused_before_the_peer_is_added() {
    let mut config = Config::for_tests();
    // Answers of at most 8 KiB: a few dozen peers with long names fill one.
    config.max_message_bytes = 2048;
    let server = spawn_server_with(config).await;
    let mut observer = server.subscribed().await;
    observer.join("crowded", "observer").await;
    let mut members = Vec::new();
    let (refused, code) = loop {
        let client = server.client().await;
        let name = format!("{:0>64}", members.len());
        let params = JoinParams { room: "crowded".into(), display_name: name, token: None };
        match client.join(params).await {
            Ok(_) => members.push(client),
            Err(e) => break (client, code_of::<()>(Err(e))),
        }
        assert!(members.len() < 200, "every join fitted in an answer of 8 KiB");
    };
    assert_eq!(code, ErrorCode::PayloadTooLarge.code(), "after {} members", members.len());
    assert!(members.len() > 10, "only {} members fitted", members.len());
    // The refused peer was never added: the room counts the others, and the observer
    // heard of each of them and of nobody else.
    assert_eq!(server.handle.counts().peers, members.len() + 1);
    for _ in 0..members.len() {
        let joined = observer.next_event().await;
        assert!(matches!(joined, Event::PeerJoined { .. }), "{joined:?}");
    }
    observer.no_event(Duration::from_millis(300)).await;
    // The refused session is still usable.
    refused.ping().await.expect("the refused client is still served");
}
