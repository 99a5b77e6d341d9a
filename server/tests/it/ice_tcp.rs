//! ICE over TCP (RFC 6544, RFC 4571 framing) on the media ports: candidates as
//! mediasoup announces them, a connection attached by a signed check and answered on
//! the same connection, idle connections closed, and hostile connections (garbage, a
//! 65535-byte length with nothing after it, forged checks, 10,000 silent connections)
//! closed or capped while a legitimate client is still served.

use std::net::SocketAddr;
use std::time::Duration;

use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{CreateTransportParams, CreateTransportResult, Direction, GetStatsParams, Stats};
use dspeak_schema::ortc::{Protocol, TcpType};
use dspeak_server::Counts;
use serde_json::Value;
use str0m::ice::{StunMessage, TransId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Unauthenticated connections one worker keeps (the server's `MAX_UNAUTHENTICATED`).
const MAX_UNAUTHENTICATED: usize = 512;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    str0m::crypto::from_feature_flags().sha1_hmac_provider.sha1_hmac(key, parts)
}

/// An ICE check from a controlling client, signed with the server's password.
fn signed_check(transport: &CreateTransportResult, password: &str) -> Vec<u8> {
    let username = format!("{}:client", transport.ice_parameters.username_fragment);
    let message = StunMessage::binding_request(&username, TransId::new(), true, 7, 1_845_501_695, true);
    let mut buf = vec![0u8; 1500];
    let n = message.to_bytes(Some(password.as_bytes()), &mut buf, hmac).expect("a STUN message fits");
    buf.truncate(n);
    buf
}

async fn send_frame(tcp: &mut TcpStream, data: &[u8]) {
    tcp.write_all(&(data.len() as u16).to_be_bytes()).await.unwrap();
    tcp.write_all(data).await.unwrap();
}

/// The next frame, or `None` when the server closed the connection.
async fn read_frame(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let read = async {
        let len = tcp.read_u16().await.ok()?;
        let mut frame = vec![0u8; usize::from(len)];
        tcp.read_exact(&mut frame).await.ok()?;
        Some(frame)
    };
    tokio::time::timeout(within, read).await.expect("the server answers or closes in time")
}

/// Sends a signed check on `tcp` and asserts the signed success answer on it.
async fn check_is_answered(tcp: &mut TcpStream, transport: &CreateTransportResult) {
    let password = &transport.ice_parameters.password;
    send_frame(tcp, &signed_check(transport, password)).await;
    let answer = read_frame(tcp, TIMEOUT).await.expect("an answer, not a close");
    let message = StunMessage::parse(&answer).expect("a STUN answer");
    assert!(message.is_successful_binding_response(), "{message:?}");
    assert!(message.verify(password.as_bytes(), hmac), "the answer is signed with the server's password");
    assert_eq!(message.mapped_address(), Some(tcp.local_addr().unwrap()), "XOR-MAPPED-ADDRESS is our address");
}

/// The server's TCP candidate.
fn tcp_address(transport: &CreateTransportResult) -> SocketAddr {
    let c = transport.ice_candidates.iter().find(|c| c.protocol == Protocol::Tcp).expect("a TCP candidate");
    SocketAddr::new(c.ip.parse().unwrap(), c.port)
}

/// Waits until the server closes `tcp` (end of stream).
async fn closed(tcp: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut buf)).await.expect("the server closes the connection") {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn candidates_are_udp_then_passive_tcp_as_mediasoup_announces_them() {
    let server = spawn_server().await;
    let peer = server.joined("candidates", "A").await;
    let t = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let ours = serde_json::to_value(&t.ice_candidates).unwrap();
    let theirs = fixture("mediasoup-wire/createTransport.result.json")["iceCandidates"].clone();
    let without_port = |v: &Value| {
        let mut v = v.clone();
        for c in v.as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("port");
        }
        v
    };
    assert_eq!(without_port(&ours), without_port(&theirs), "same fields, values and order as mediasoup");
    assert!(t.ice_candidates.iter().all(|c| c.port == server.handle.rtc_ports()[0]));
    assert_eq!(t.ice_candidates[1].tcp_type, Some(TcpType::Passive));

    let off = spawn_server_with(dspeak_server::Config { no_rtc_tcp: true, ..dspeak_server::Config::for_tests() }).await;
    let peer = off.joined("candidates", "A").await;
    let t = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    assert_eq!(t.ice_candidates.len(), 1, "--no-rtc-tcp: UDP only");
    assert_eq!(t.ice_candidates[0].protocol, Protocol::Udp);
}

#[tokio::test]
async fn a_signed_check_attaches_a_connection_and_silent_ones_are_closed_when_idle() {
    let server = spawn_server().await;
    let peer = server.joined("tcp", "A").await;
    let transport = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let addr = tcp_address(&transport);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let opened = tokio::time::Instant::now();
    check_is_answered(&mut client, &transport).await;
    match peer.client.get_stats(GetStatsParams { id: transport.id.to_string() }).await.unwrap() {
        Stats::Transport { packets_received, packets_sent, .. } => {
            assert!(packets_received >= 1 && packets_sent >= 1, "{packets_received} in, {packets_sent} out");
        }
        other => panic!("expected transport stats, got {other:?}"),
    }
    server.wait_counts("both connections open", |c| c.tcp_connections == 2).await;
    // The attached connection keeps sending checks (as consent freshness does); the
    // silent one is closed 10 s after it was opened, the attached one stays.
    let silent_closed = async {
        closed(&mut silent, Duration::from_secs(15)).await;
        opened.elapsed()
    };
    let keep_alive = async {
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            check_is_answered(&mut client, &transport).await;
        }
    };
    let (after, ()) = tokio::join!(silent_closed, keep_alive);
    assert!(after >= Duration::from_secs(9), "closed as idle after {after:?}, before its 10 s");
    server.wait_counts("the attached connection remains", |c| c.tcp_connections == 1).await;
    check_is_answered(&mut client, &transport).await;
    // Closing the session closes its transport, and with it the connection.
    drop(peer);
    closed(&mut client, TIMEOUT).await;
    server.wait_counts("nothing left over", |c| *c == Counts::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tcp_connections_are_closed_or_capped_and_a_real_client_is_still_served() {
    let server = spawn_server().await;
    let peer = server.joined("tcp-hostile", "A").await;
    let transport = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let addr = tcp_address(&transport);

    // Garbage, framed and not: closed.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    send_frame(&mut garbage, b"\x80\x00 definitely not a STUN message, not DTLS either").await;
    closed(&mut garbage, TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0u8; 2]).await.unwrap(); // an empty frame
    closed(&mut raw, TIMEOUT).await;
    // A length prefix of 65535 with nothing after it: closed, nothing buffered.
    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
    closed(&mut huge, TIMEOUT).await;
    // A check with the right ufrag but signed with another password: closed.
    let mut forged = TcpStream::connect(addr).await.unwrap();
    send_frame(&mut forged, &signed_check(&transport, "not-the-server-password-at-all")).await;
    closed(&mut forged, TIMEOUT).await;

    // 10,000 connections that never send a check, 2,000 held open at a time: the
    // server keeps at most its cap of unauthenticated ones, closing the oldest.
    let mut held = std::collections::VecDeque::new();
    let mut most = 0;
    for i in 0..10_000 {
        held.push_back(TcpStream::connect(addr).await.unwrap());
        if held.len() > 2_000 {
            held.pop_front();
        }
        if i % 500 == 499 {
            most = most.max(server.handle.counts().tcp_connections);
            // A real client gets through in the middle of the flood.
            let mut client = TcpStream::connect(addr).await.unwrap();
            check_is_answered(&mut client, &transport).await;
        }
    }
    assert!(most <= MAX_UNAUTHENTICATED + 1, "at most the cap of silent connections (+1 attached), saw {most}");
    assert!(most >= MAX_UNAUTHENTICATED / 2, "the flood did reach the server ({most} connections)");
    let mut client = TcpStream::connect(addr).await.unwrap();
    check_is_answered(&mut client, &transport).await;
    // The oldest silent connections were closed by the server.
    closed(held.front_mut().unwrap(), TIMEOUT).await;
    server.client().await.ping().await.expect("signaling still serves");
    drop(held);
    drop(client);
    drop(peer);
    server.wait_counts("nothing left over", |c| *c == Counts::default()).await;
}
