//! Hostile input: a property-based fuzzer over the real server, nasty messages, raw
//! protocol abuse, and thousands of half-finished handshakes. Every request gets a
//! well-formed answer, nothing panics, and the server keeps serving.

use std::time::Duration;

use dspeak_schema::METHODS;
use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{CreateTransportParams, Direction, GetStatsParams, Stats};
use dspeak_server::{Config, Counts};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::support::*;

/// A well-formed JSON-RPC answer with no internals in its message.
fn check_answer(frame: &str, message: &Value) {
    assert_eq!(message["jsonrpc"], "2.0", "{frame} -> {message}");
    match (message.get("result"), message.get("error")) {
        (Some(_), None) => {}
        (None, Some(e)) => {
            assert!(e["code"].is_i64() && e["message"].is_string(), "{frame} -> {message}");
            let text = e["message"].as_str().unwrap();
            assert!(!text.contains("panicked") && !text.contains(".rs:"), "no internals: {text}");
        }
        _ => panic!("malformed answer to {frame}: {message}"),
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        Just(json!("NaN")),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,12}",
                    Just("transportId".to_owned()),
                    Just("producerId".to_owned()),
                    Just("rtpParameters".to_owned()),
                    Just("dtlsParameters".to_owned()),
                    Just("room".to_owned()),
                    Just("displayName".to_owned()),
                    Just("payload".to_owned()),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request frame: a known or random method with random, structure-aware params,
/// sometimes a broken envelope, sometimes not JSON at all.
fn any_frame() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        prop::sample::select(METHODS.iter().map(|m| m.name).collect::<Vec<_>>()).prop_map(str::to_owned),
        Just("subscribeEvents".to_owned()),
        ".{0,16}",
    ];
    let params = prop_oneof![
        any_json(),
        Just(json!({"room": "fuzz", "displayName": "f"})),
        Just(json!({"direction": "send"})),
        Just(json!({"direction": "recv"})),
    ];
    prop_oneof![
        8 => (0u32..1_000_000, method, params).prop_map(|(id, method, params)| {
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
        }),
        1 => any_json().prop_map(|v| v.to_string()),
        1 => ".{0,64}",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_all_get_well_formed_answers() {
    let cases: u32 = std::env::var("DSPEAK_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let mut config = Config::for_tests();
    config.limits.request_rate = 100_000;
    let server = spawn_server_with(config).await;
    let url = server.url();
    let frames: Vec<String> = {
        let mut runner = TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
        let strategy = prop::collection::vec(any_frame(), 1..20);
        (0..cases).flat_map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
    };
    // Replay the frames over a few connections. After each frame a sentinel request
    // that queues behind the session's other requests marks the end of its answers:
    // every answer must be well-formed, and a request with an id must be answered
    // under that id (`subscribeEvents` is answered by its own task, possibly later).
    for (n, chunk) in frames.chunks(200).enumerate() {
        let mut ws = RawWs::connect(&url).await;
        let mut pending: Vec<(Value, String)> = Vec::new();
        for (k, frame) in chunk.iter().enumerate() {
            ws.send_text(frame.clone()).await;
            if let Some(request) = serde_json::from_str::<Value>(frame)
                .ok()
                .filter(|v| v.get("method").is_some_and(Value::is_string) && v.get("id").is_some_and(Value::is_u64))
            {
                pending.push((request["id"].clone(), frame.clone()));
            }
            let sentinel = json!(format!("sentinel-{n}-{k}"));
            let request = json!({"jsonrpc": "2.0", "id": sentinel, "method": "getRouterRtpCapabilities"});
            ws.send_text(request.to_string()).await;
            loop {
                let message = ws.recv().await;
                if message.get("method").is_some() {
                    continue; // an event notification
                }
                if message["id"] == sentinel {
                    assert!(message["result"]["codecs"].is_array(), "after {frame}: {message}");
                    break;
                }
                check_answer(frame, &message);
                pending.retain(|(id, _)| id != &message["id"]);
            }
            let unanswered: Vec<_> = pending.iter().filter(|(_, f)| !f.contains("subscribeEvents")).collect();
            assert!(unanswered.is_empty(), "requests got no answer under their id: {unanswered:?}");
        }
        while !pending.is_empty() {
            let message = ws.recv().await;
            if message.get("method").is_none() {
                check_answer("a late subscribeEvents", &message);
                pending.retain(|(id, _)| id != &message["id"]);
            }
        }
    }
    let client = server.client().await;
    client.ping().await.expect("still serving after fuzzing");
    drop(client);
    server.wait_counts("fuzz sessions released", |c| *c == Counts::default()).await;
}

#[tokio::test]
async fn nasty_values_and_ids_are_answered() {
    let server = spawn_server().await;
    let mut ws = RawWs::connect(&server.url()).await;
    for (frame, code) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"join","params":{"room":1e400,"displayName":"x"}}"#, -32602),
        (r#"{"jsonrpc":"2.0","id":2,"method":"broadcast","params":{"payload":NaN}}"#, -32700),
        (r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"join","params":{"room":"r","displayName":"x","token":18446744073709551616}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"consume","params":{"transportId":"t","producerId":"p","rtpCapabilities":{"codecs":[{"kind":"audio","mimeType":"audio/opus","clockRate":-1}]}}}"#,
            -32602,
        ),
    ] {
        ws.send_text(frame).await;
        let answer = ws.recv().await;
        assert_eq!(answer["error"]["code"], code, "{frame} -> {answer}");
    }
    // jsonrpsee reads a message whose id is an object or array as a notification and
    // does not answer it; the connection goes on serving.
    ws.send_text(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#).await;
    ws.send_text(r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#).await;
    assert_eq!(ws.request(100, "ping", json!({})).await["id"], 100);
    // A string id and a huge numeric id come back as they were sent.
    let answer = ws.request(u64::MAX, "ping", json!({})).await;
    assert_eq!(answer["id"], json!(u64::MAX));
    ws.send_text(r#"{"jsonrpc":"2.0","id":"abc","method":"ping"}"#).await;
    assert_eq!(ws.recv().await["id"], "abc");
    // Malformed ORTC inside valid JSON-RPC.
    ws.request(6, "join", json!({"room": "nasty", "displayName": "n"})).await;
    let t = ws.request(7, "createTransport", json!({"direction": "send"})).await;
    let transport_id = t["result"]["id"].as_str().unwrap().to_owned();
    let bad_rtp = json!({"transportId": transport_id, "kind": "audio", "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 300, "clockRate": 48000}]}});
    assert_eq!(raw_code(&ws.request(8, "produce", bad_rtp).await), -32602);
    let no_ssrc = json!({"transportId": transport_id, "kind": "audio", "rtpParameters": {"mid": "0", "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}]}});
    assert_eq!(raw_code(&ws.request(9, "produce", no_ssrc).await), -32602);
    let bad_fp = json!({"transportId": transport_id, "dtlsParameters": {"role": "client", "fingerprints": [{"algorithm": "md5", "value": "00"}]}});
    assert_eq!(raw_code(&ws.request(10, "connectTransport", bad_fp).await), -32602);
    let bad_role = json!({"transportId": transport_id, "dtlsParameters": {"role": "boss", "fingerprints": []}});
    assert_eq!(raw_code(&ws.request(11, "connectTransport", bad_role).await), -32602);
    assert_eq!(ws.request(12, "ping", json!({})).await["result"]["type"], "pong");
}

/// Writes a WebSocket handshake by hand, then one masked frame.
async fn raw_frame(addr: std::net::SocketAddr, opcode: u8, payload: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = [0u8; 1024];
    let n = tcp.read(&mut response).await.unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 101"), "upgraded");
    tcp.write_all(&client_frame(true, opcode, payload)).await.unwrap();
    tcp
}

#[tokio::test]
async fn invalid_utf8_and_reserved_opcodes_do_not_hurt_the_server() {
    let server = spawn_server().await;
    let addr = server.handle.local_addr();
    let mut bad_text = raw_frame(addr, 0x1, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xff\xfe\"}").await;
    let mut reserved = raw_frame(addr, 0x3, b"hello").await;
    // Each abusive connection is answered or closed, never left hanging.
    for tcp in [&mut bad_text, &mut reserved] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(TIMEOUT, tcp.read(&mut buf)).await.expect("answered or closed");
        assert!(read.is_ok());
    }
    server.client().await.ping().await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_finished_handshakes_do_not_block_anyone() {
    let server = spawn_server().await;
    let addr = server.handle.local_addr();
    let mut stalled = Vec::new();
    for i in 0..2000 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // Half an HTTP upgrade request, never finished; some send nothing at all.
        if i % 2 == 0 {
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websock").await.unwrap();
        }
        stalled.push(tcp);
    }
    let started = tokio::time::Instant::now();
    let client = server.client().await;
    client.ping().await.expect("a real client is served");
    assert!(started.elapsed() < Duration::from_secs(2), "served in {:?}", started.elapsed());
    drop(stalled);
    drop(client);
    server.wait_counts("nothing left over", |c| *c == Counts::default()).await;
}

/// A STUN binding request with `username` and a MESSAGE-INTEGRITY that is not signed
/// with the server's password.
fn forged_check(username: &str, seed: u8) -> Vec<u8> {
    let mut attrs = Vec::new();
    let name = username.as_bytes();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(name.len() as u16).to_be_bytes());
    attrs.extend_from_slice(name);
    attrs.resize(attrs.len().next_multiple_of(4), 0);
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[seed; 20]);
    let mut message = Vec::new();
    message.extend_from_slice(&0x0001u16.to_be_bytes());
    message.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    message.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    message.extend_from_slice(&[seed; 12]);
    message.extend_from_slice(&attrs);
    message
}

#[tokio::test]
async fn udp_garbage_and_forged_ice_checks_never_reach_a_transport() {
    let server = spawn_server().await;
    let peer = server.joined("udp", "A").await;
    let transport = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let port = transport.ice_candidates[0].port;
    let ufrag = &transport.ice_parameters.username_fragment;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut runner = TestRunner::default();
    let garbage = prop::collection::vec(any::<u8>(), 0..1500);
    for i in 0..2000u32 {
        let datagram = if i % 10 == 0 {
            forged_check(&format!("{ufrag}:evil"), i as u8)
        } else {
            garbage.new_tree(&mut runner).unwrap().current()
        };
        socket.send_to(&datagram, ("127.0.0.1", port)).await.unwrap();
    }
    // The worker is still responsive, and the transport saw none of it.
    let second = peer.client.create_transport(CreateTransportParams { direction: Direction::Recv }).await.unwrap();
    assert_eq!(second.ice_candidates[0].port, port);
    match peer.client.get_stats(GetStatsParams { id: transport.id.to_string() }).await.unwrap() {
        Stats::Transport { packets_received, ice_state, .. } => {
            assert_eq!(packets_received, 0, "forged checks are dropped before the transport");
            assert!(!["connected", "completed"].contains(&ice_state.as_str()), "ICE state {ice_state}");
        }
        other => panic!("expected transport stats, got {other:?}"),
    }
}

/// A masked client frame (written by tungstenite).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let header =
        FrameHeader { is_final: fin, opcode: OpCode::from(opcode), mask: Some([7, 1, 9, 3]), ..FrameHeader::default() };
    let mut out = Vec::new();
    Frame::from_payload(header, payload.to_vec().into()).format(&mut out).expect("writing to a Vec");
    out
}

/// Reads one whole (unmasked, unfragmented) server text frame.
async fn server_text(tcp: &mut TcpStream) -> Value {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x81, "a whole text frame");
    let len = match head[1] {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n).await.unwrap();
            usize::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n).await.unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn fragmented_messages_are_assembled_and_oversized_ones_skipped() {
    let mut config = Config::for_tests();
    config.max_message_bytes = 1024;
    let server = spawn_server_with(config).await;
    // The handshake and a first frame (a ping with id 1), by hand.
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let mut tcp = raw_frame(server.handle.local_addr(), 0x1, ping).await;
    assert_eq!(tokio::time::timeout(TIMEOUT, server_text(&mut tcp)).await.unwrap()["id"], 1);
    // One request in three fragments, a ping frame between two of them, in one write.
    let request = br#"{"jsonrpc":"2.0","id":2,"method":"ping","params":{}}"#;
    let (a, rest) = request.split_at(10);
    let (b, c) = rest.split_at(20);
    let mut bytes = client_frame(false, 0x1, a);
    bytes.extend(client_frame(false, 0x0, b));
    bytes.extend(client_frame(true, 0x9, b"hi"));
    bytes.extend(client_frame(true, 0x0, c));
    tcp.write_all(&bytes).await.unwrap();
    let mut pong = [0u8; 4];
    tcp.read_exact(&mut pong).await.unwrap();
    assert_eq!(pong, [0x8A, 2, b'h', b'i'], "the ping in between is answered first");
    assert_eq!(tokio::time::timeout(TIMEOUT, server_text(&mut tcp)).await.unwrap()["id"], 2);
    // An oversized message in two fragments: -32007 (id null), once; the rest is skipped.
    let pad = "x".repeat(800);
    let big = format!(r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"pad":"{pad}{pad}"}}}}"#);
    let (a, b) = big.as_bytes().split_at(big.len() / 2);
    let mut bytes = client_frame(false, 0x1, a);
    bytes.extend(client_frame(true, 0x0, b));
    bytes.extend(client_frame(true, 0x1, br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#));
    tcp.write_all(&bytes).await.unwrap();
    let refused = tokio::time::timeout(TIMEOUT, server_text(&mut tcp)).await.unwrap();
    assert_eq!((refused["id"].clone(), refused["error"]["code"].clone()), (Value::Null, json!(-32007)), "{refused}");
    assert_eq!(tokio::time::timeout(TIMEOUT, server_text(&mut tcp)).await.unwrap()["id"], 4);
}
