//! Access tokens, grants and limits: each refusal has its documented code, and the
//! refused session stays usable.

use std::time::Duration;

use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{ConsumeParams, CreateTransportParams, Direction, ProduceParams};
use dspeak_schema::rooms::{BroadcastParams, JoinParams};
use dspeak_schema::{ErrorCode, Event, ProducerId};
use dspeak_server::Config;
use dspeak_server::config::{Environment, Limits};
use serde_json::json;

use crate::support::*;

fn join(room: &str, token: Option<String>) -> JoinParams {
    JoinParams { room: room.into(), display_name: "someone".into(), token }
}

#[tokio::test]
async fn tokens_admit_to_their_room_only_and_bad_ones_have_distinct_codes() {
    let server = secured().await;
    let client = server.client().await;
    assert_eq!(code_of(client.join(join("r", None)).await), ErrorCode::Unauthorized.code());
    assert_eq!(code_of(client.join(join("r", Some("garbage".into()))).await), ErrorCode::Unauthorized.code());
    let forged = dspeak_server::auth::mint("another-secret-entirely", &claims("ann", "r")).unwrap();
    assert_eq!(code_of(client.join(join("r", Some(forged))).await), ErrorCode::Unauthorized.code());
    let mut expired = claims("ann", "r");
    expired.exp = now() - 600;
    assert_eq!(code_of(client.join(join("r", Some(token(&expired)))).await), ErrorCode::TokenExpired.code());
    let mut early = claims("ann", "r");
    early.nbf = Some(now() + 600);
    assert_eq!(code_of(client.join(join("r", Some(token(&early)))).await), ErrorCode::TokenExpired.code());
    let other_room = token(&claims("ann", "elsewhere"));
    assert_eq!(code_of(client.join(join("r", Some(other_room))).await), ErrorCode::Forbidden.code());

    // The same session then joins with a good token; the token's name wins.
    let mut named = claims("ann", "r");
    named.name = Some("Ann from the token".into());
    client.join(join("r", Some(token(&named)))).await.unwrap();
    let mut other = server.subscribed().await;
    let joined = other.client.join(join("r", Some(token(&claims("bob", "r"))))).await.unwrap();
    assert_eq!(joined.peers[0].display_name, "Ann from the token");
    other.no_event(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn grants_are_enforced_on_produce_consume_and_broadcast() {
    let server = secured().await;
    let mut speaker = server.subscribed().await;
    let mut muted = claims("mute", "g");
    muted.can_publish = false;
    muted.can_broadcast = false;
    let mut deaf = claims("deaf", "g");
    deaf.can_subscribe = false;
    speaker.client.join(join("g", Some(token(&claims("speaker", "g"))))).await.unwrap();
    let m = server.client().await;
    m.join(join("g", Some(token(&muted)))).await.unwrap();
    let d = server.client().await;
    d.join(join("g", Some(token(&deaf)))).await.unwrap();

    // The speaker produces; the muted peer may not, nor broadcast.
    let send = speaker.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let mut produce: ProduceParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")).unwrap();
    produce.transport_id = send.id;
    let producer = speaker.client.produce(produce.clone()).await.unwrap();
    let m_send = m.create_transport(CreateTransportParams { direction: Direction::Send }).await;
    assert_eq!(code_of(m_send), ErrorCode::Forbidden.code(), "a send transport needs canPublish");
    assert_eq!(code_of(m.broadcast(BroadcastParams { payload: json!("hi") }).await), ErrorCode::Forbidden.code());

    // The deaf peer may not consume; the muted one may.
    let consume = |transport_id, producer_id: ProducerId| {
        let mut p: ConsumeParams =
            serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/consume.params.json")).unwrap();
        p.transport_id = transport_id;
        p.producer_id = producer_id;
        p
    };
    let d_recv = d.create_transport(CreateTransportParams { direction: Direction::Recv }).await;
    assert_eq!(code_of(d_recv), ErrorCode::Forbidden.code(), "a recv transport needs canSubscribe");
    let d_send = d.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    assert_eq!(code_of(d.consume(consume(d_send.id, producer.id.clone())).await), ErrorCode::Forbidden.code());
    let m_recv = m.create_transport(CreateTransportParams { direction: Direction::Recv }).await.unwrap();
    m.consume(consume(m_recv.id, producer.id)).await.unwrap();
    // Refused sessions stay usable.
    d.broadcast(BroadcastParams { payload: json!("still here") }).await.unwrap();
    let heard = speaker.event_where("broadcast", |e| matches!(e, Event::Broadcast { .. })).await;
    assert!(matches!(heard, Event::Broadcast { payload, .. } if payload == json!("still here")));
}

#[tokio::test]
async fn the_same_identity_joining_again_replaces_the_older_session() {
    let server = secured().await;
    let mut watcher = server.subscribed().await;
    watcher.client.join(join("dup", Some(token(&claims("watcher", "dup"))))).await.unwrap();
    // The older session is a raw client, to see how its event stream ends.
    let mut first = RawWs::connect(&server.url()).await;
    first.request(1, "subscribeEvents", json!({})).await;
    let first_join = first
        .request(2, "join", json!({"room": "dup", "displayName": "Ann", "token": token(&claims("ann", "dup"))}))
        .await;
    let first_peer = first_join["result"]["peerId"].as_str().expect("joined").to_owned();
    watcher.event_where("first joined", |e| matches!(e, Event::PeerJoined { .. })).await;

    let second = server.client().await;
    let second_join = second.join(join("dup", Some(token(&claims("ann", "dup"))))).await.unwrap();
    assert_ne!(second_join.peer_id.as_str(), first_peer);
    let left = watcher.event_where("older session left", |e| matches!(e, Event::PeerLeft { .. })).await;
    assert!(matches!(left, Event::PeerLeft { peer_id } if peer_id.as_str() == first_peer));
    // The older session's stream ends with a clear reason; the connection stays.
    let end = loop {
        let message = first.recv().await;
        if let Some(error) = message["params"].get("error") {
            break error.clone();
        }
    };
    assert_eq!(end["code"], ErrorCode::Forbidden.code(), "{end}");
    assert!(end["message"].as_str().unwrap().contains("replaced"), "{end}");
    assert_eq!(end["data"], json!({"reason": "replaced"}));
    assert_eq!(first.request(3, "ping", json!({})).await["result"]["type"], "pong");
    assert_eq!(raw_code(&first.request(4, "leave", json!({})).await), i64::from(ErrorCode::NotJoined.code()));
    server.wait_counts("two peers", |c| c.peers == 2).await;
}

#[tokio::test]
async fn limits_refuse_with_their_codes_and_the_session_stays_usable() {
    let mut config = Config::for_tests();
    config.limits = Limits {
        max_rooms: 1,
        max_transports: 1,
        max_producers: 1,
        max_consumers: 1,
        max_app_data_bytes: 32,
        broadcast_rate: 2,
        request_rate: 1000,
    };
    let server = spawn_server_with(config).await;
    let a = server.client().await;
    a.join(join("only", None)).await.unwrap();
    let b = server.client().await;
    assert_eq!(code_of(b.join(join("second-room", None)).await), ErrorCode::LimitExceeded.code());
    b.join(join("only", None)).await.unwrap();

    let send = a.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let r = a.create_transport(CreateTransportParams { direction: Direction::Recv }).await;
    assert_eq!(code_of(r), ErrorCode::LimitExceeded.code());

    let mut produce: ProduceParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")).unwrap();
    produce.transport_id = send.id.clone();
    produce.app_data = Some(json!({"x": "y".repeat(100)}));
    assert_eq!(code_of(a.produce(produce.clone()).await), ErrorCode::PayloadTooLarge.code());
    produce.app_data = Some(json!({}));
    a.produce(produce.clone()).await.unwrap();
    produce.rtp_parameters.mid = Some("1".into());
    produce.rtp_parameters.encodings[0].ssrc = Some(42);
    assert_eq!(code_of(a.produce(produce).await), ErrorCode::LimitExceeded.code());

    // Broadcasts: a burst of twice the rate, then refused, then allowed again.
    for _ in 0..4 {
        a.broadcast(BroadcastParams { payload: json!(1) }).await.unwrap();
    }
    assert_eq!(code_of(a.broadcast(BroadcastParams { payload: json!(1) }).await), ErrorCode::LimitExceeded.code());
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.broadcast(BroadcastParams { payload: json!(1) }).await.unwrap();
}

#[tokio::test]
async fn a_connection_sending_too_fast_is_slowed_down_not_dropped() {
    let mut config = Config::for_tests();
    config.limits.request_rate = 5;
    let server = spawn_server_with(config).await;
    let client = server.client().await;
    let mut refused = 0;
    for _ in 0..20 {
        if let Err(e) = client.ping().await {
            assert!(
                matches!(e, jsonrpsee::core::ClientError::Call(ref o) if o.code() == ErrorCode::LimitExceeded.code())
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 10, "a burst of twice the rate passes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.ping().await.expect("allowed again after a pause");
}

#[tokio::test]
async fn production_refuses_to_start_without_secret_or_announced_address() {
    let mut config = Config::for_tests();
    config.environment = Some(Environment::Production);
    config.announced_address = vec!["127.0.0.1".into()];
    let err = dspeak_server::run(config.clone(), std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("--auth-secret"), "{err}");
    config.auth_secret = Some(SECRET.parse().unwrap());
    config.announced_address = Vec::new();
    let err = dspeak_server::run(config.clone(), std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("--announced-address"), "{err}");
    config.announced_address = vec!["localhost".into()];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = dspeak_server::run(config, async {
        let _ = stopped.await;
    })
    .await
    .expect("a hostname is resolved at start");
    let _ = stop.send(());
    handle.stopped().await;
}

#[tokio::test]
async fn a_non_loopback_listen_without_a_secret_refuses_to_start_unless_anonymous_is_allowed() {
    let mut config = Config::for_tests();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = dspeak_server::run(config.clone(), std::future::pending()).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("--auth-secret") && message.contains("--allow-anonymous"), "{message}");
    config.allow_anonymous = true;
    // Starts when anonymous joins are allowed explicitly.
    spawn_server_with(config).await.shutdown().await;
}
