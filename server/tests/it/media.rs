//! The media area's rules over the typed client: ownership, rooms, invalid input,
//! cleanup. Real WebRTC media is covered by `pymediasoup`.

use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{
    ConnectTransportParams, ConsumeParams, ConsumerParams, CreateTransportParams, Direction, GetStatsParams,
    ProduceParams, ProducerParams, Stats, TransportParams,
};
use dspeak_schema::ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, FingerprintAlgorithm, MediaKind, RtpCapabilities,
};
use dspeak_schema::{ConsumerId, ErrorCode, Event, ProducerId, TransportId};
use serde_json::Value;

use crate::support::*;

fn produce_params(client: &str, transport_id: TransportId) -> ProduceParams {
    let mut p: ProduceParams = serde_json::from_value(fixture(&format!("{client}/produce.params.json"))).unwrap();
    p.transport_id = transport_id;
    p
}

fn consume_params(client: &str, transport_id: TransportId, producer_id: ProducerId) -> ConsumeParams {
    let mut p: ConsumeParams = serde_json::from_value(fixture(&format!("{client}/consume.params.json"))).unwrap();
    p.transport_id = transport_id;
    p.producer_id = producer_id;
    p
}

async fn transport(peer: &Peer, direction: Direction) -> TransportId {
    peer.client.create_transport(CreateTransportParams { direction }).await.unwrap().id
}

/// The port a new transport announces: which worker it was placed on.
async fn transport_port(peer: &Peer) -> u16 {
    peer.client.create_transport(CreateTransportParams { direction: Direction::Recv }).await.unwrap().ice_candidates[0]
        .port
}

#[tokio::test]
async fn a_rooms_transports_spread_over_the_workers_and_a_closed_one_frees_its_place() {
    let config = dspeak_server::Config { workers: 2, pin_workers: true, ..dspeak_server::Config::for_tests() };
    let server = spawn_server_with(config).await;
    let ports = server.handle.rtc_ports();
    // One room: its transports go to the worker with the fewest (nothing is forwarded).
    let a = server.joined("one", "A").await;
    let b = server.joined("one", "B").await;
    let (port_a, port_b) = (transport_port(&a).await, transport_port(&b).await);
    assert_ne!(port_a, port_b, "one room's transports on two workers");
    assert!(ports.contains(&port_a) && ports.contains(&port_b));
    let a2 = server.joined("one", "A2").await;
    assert_eq!(transport_port(&a2).await, port_a, "a tie goes to the first worker");
    // B leaves: its worker is the emptier one again.
    drop(b);
    server.wait_counts("B's transport closed", |c| c.transports == 2).await;
    let c = server.joined("two", "C").await;
    assert_eq!(transport_port(&c).await, port_b, "the freed worker takes the next transport");
}

#[tokio::test]
async fn create_transport_answers_mediasoup_shaped_parameters() {
    let server = spawn_server().await;
    let peer = server.joined("shape", "A").await;
    let t = peer.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    assert!(t.ice_parameters.ice_lite);
    assert!(t.ice_parameters.username_fragment.len() >= 4 && t.ice_parameters.password.len() >= 22);
    let c = &t.ice_candidates[0];
    assert_eq!((c.ip.as_str(), c.address.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(c.port, server.handle.rtc_ports()[0]);
    assert_eq!(t.dtls_parameters.role, DtlsRole::Auto);
    let algorithms: Vec<_> = t.dtls_parameters.fingerprints.iter().map(|f| f.algorithm).collect();
    assert_eq!(algorithms, FingerprintAlgorithm::ALL);
    for f in &t.dtls_parameters.fingerprints {
        assert_eq!(f.value.split(':').count(), f.algorithm.digest_len());
        assert_eq!(f.value, f.value.to_uppercase());
    }
    // The same JSON keys as real mediasoup's answer.
    let ours = serde_json::to_value(&t).unwrap();
    let theirs = fixture("mediasoup-wire/createTransport.result.json");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(keys(&ours["iceCandidates"][0]), keys(&theirs["iceCandidates"][0]));
    assert_eq!(keys(&ours["iceParameters"]), keys(&theirs["iceParameters"]));
}

#[tokio::test]
async fn produce_and_consume_follow_the_room_and_ownership_rules() {
    let server = spawn_server().await;
    let mut a = server.joined("media", "A").await;
    let mut b = server.joined("media", "B").await;
    let c = server.joined("elsewhere", "C").await;
    a.event_where("B joined", |e| matches!(e, Event::PeerJoined { .. })).await;

    // Before joining, media methods need a room.
    let lonely = server.client().await;
    let r = lonely.create_transport(CreateTransportParams { direction: Direction::Send }).await;
    assert_eq!(code_of(r), ErrorCode::NotJoined.code());

    // A produces with pymediasoup's parameters; B sees it.
    let a_send = transport(&a, Direction::Send).await;
    let a_recv = transport(&a, Direction::Recv).await;
    let produced = a.client.produce(produce_params("pymediasoup-1.5-aiortc-1.16", a_send.clone())).await.unwrap();
    let added = b.event_where("producerAdded", |e| matches!(e, Event::ProducerAdded { .. })).await;
    assert_eq!(
        added,
        Event::ProducerAdded { peer_id: a.peer_id(), producer_id: produced.id.clone(), kind: MediaKind::Audio }
    );

    // Producing on a recv transport, or video, is refused.
    let r = a.client.produce(produce_params("pymediasoup-1.5-aiortc-1.16", a_recv.clone())).await;
    assert_eq!(code_of(r), ErrorCode::InvalidState.code());
    let mut video = produce_params("chromium-mediasoup-client-3.24", a_send.clone());
    video.kind = MediaKind::Video;
    assert_eq!(code_of(a.client.produce(video).await), ErrorCode::Unsupported.code());
    // The same MID twice on one transport is refused.
    let r = a.client.produce(produce_params("chromium-mediasoup-client-3.24", a_send.clone())).await;
    assert_eq!(code_of(r), ErrorCode::InvalidState.code());

    // B consumes with Chromium's capabilities: the router's payload type, paused.
    let b_recv = transport(&b, Direction::Recv).await;
    let consumer = b
        .client
        .consume(consume_params("chromium-mediasoup-client-3.24", b_recv.clone(), produced.id.clone()))
        .await
        .unwrap();
    assert_eq!(consumer.producer_id, produced.id);
    assert_eq!(consumer.rtp_parameters.codecs[0].payload_type, 100);
    assert_eq!(consumer.rtp_parameters.codecs[0].channels, Some(2));
    assert_eq!(consumer.rtp_parameters.mid.as_deref(), Some("0"));
    assert!(consumer.rtp_parameters.encodings[0].ssrc.is_some());
    assert!(!consumer.producer_paused);
    match b.client.get_stats(GetStatsParams { id: consumer.id.to_string() }).await.unwrap() {
        Stats::Consumer { paused, .. } => assert!(paused, "consumers start paused"),
        other => panic!("expected consumer stats, got {other:?}"),
    }
    b.client.resume_consumer(ConsumerParams { consumer_id: consumer.id.clone() }).await.unwrap();
    // One consumer per producer and session: a second one would only multiply the
    // worker's output.
    let again =
        b.client.consume(consume_params("pymediasoup-1.5-aiortc-1.16", b_recv.clone(), produced.id.clone())).await;
    assert_eq!(code_of(again), ErrorCode::InvalidState.code());
    // Once closed, the producer may be consumed again.
    b.client.close_consumer(ConsumerParams { consumer_id: consumer.id.clone() }).await.unwrap();
    let second = b
        .client
        .consume(consume_params("pymediasoup-1.5-aiortc-1.16", b_recv.clone(), produced.id.clone()))
        .await
        .unwrap();
    assert!(second.rtp_parameters.mid.is_some());
    let consumer = second;

    // A late joiner sees the producer in its join result.
    let late = server.joined("media", "late").await;
    assert_eq!(late.joined.as_ref().unwrap().producers[0].producer_id, produced.id);

    // Other people's resources.
    let r = b.client.produce(produce_params("pymediasoup-1.5-aiortc-1.16", a_send.clone())).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code(), "another session's transport");
    let r = b.client.pause_producer(ProducerParams { producer_id: produced.id.clone() }).await;
    assert_eq!(code_of(r), ErrorCode::Forbidden.code(), "another peer's producer");
    let r = a.client.resume_consumer(ConsumerParams { consumer_id: consumer.id.clone() }).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code(), "another session's consumer");
    let r = a.client.get_stats(GetStatsParams { id: consumer.id.to_string() }).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code());
    let r = a.client.consume(consume_params("pymediasoup-1.5-aiortc-1.16", a_recv.clone(), produced.id.clone())).await;
    assert_eq!(code_of(r), ErrorCode::Forbidden.code(), "consuming oneself");
    let c_recv = transport(&c, Direction::Recv).await;
    let r = c.client.consume(consume_params("pymediasoup-1.5-aiortc-1.16", c_recv, produced.id.clone())).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code(), "a producer of another room");
    let r = b.client.consume(consume_params("pymediasoup-1.5-aiortc-1.16", a_send.clone(), produced.id.clone())).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code());

    // Unknown ids and incompatible capabilities.
    let r = b.client.resume_consumer(ConsumerParams { consumer_id: ConsumerId::from("nope") }).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code());
    let r = b.client.close_producer(ProducerParams { producer_id: ProducerId::from("nope") }).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code());
    let mut no_opus = consume_params("pymediasoup-1.5-aiortc-1.16", b_recv.clone(), produced.id.clone());
    no_opus.rtp_capabilities = RtpCapabilities::default();
    assert_eq!(code_of(b.client.consume(no_opus).await), ErrorCode::Unsupported.code());

    // Pause is announced to the room; close closes the consumers.
    a.client.pause_producer(ProducerParams { producer_id: produced.id.clone() }).await.unwrap();
    let paused = b.event_where("producerPaused", |e| matches!(e, Event::ProducerPaused { .. })).await;
    assert_eq!(paused, Event::ProducerPaused { peer_id: a.peer_id(), producer_id: produced.id.clone() });
    a.client.close_producer(ProducerParams { producer_id: produced.id.clone() }).await.unwrap();
    let mut saw = (false, false);
    while saw != (true, true) {
        match b.next_event().await {
            Event::ProducerClosed { producer_id, .. } if producer_id == produced.id => saw.0 = true,
            Event::ConsumerClosed { consumer_id, producer_id } if consumer_id == consumer.id => {
                assert_eq!(producer_id, produced.id);
                saw.1 = true;
            }
            _ => {}
        }
    }
    server.wait_counts("consumers closed with their producer", |c| c.producers == 0 && c.consumers == 0).await;
    let r = b.client.resume_consumer(ConsumerParams { consumer_id: consumer.id.clone() }).await;
    assert_eq!(code_of(r), ErrorCode::NotFound.code(), "a closed consumer is gone");

    drop((a, b, c, late, lonely));
    server.wait_counts("everything released", |c| *c == dspeak_server::Counts::default()).await;
}

#[tokio::test]
async fn connect_transport_checks_dtls_parameters() {
    let server = spawn_server().await;
    let peer = server.joined("dtls", "A").await;
    let id = transport(&peer, Direction::Send).await;
    let connect = |fingerprints: Vec<DtlsFingerprint>| ConnectTransportParams {
        transport_id: id.clone(),
        dtls_parameters: DtlsParameters { role: DtlsRole::Client, fingerprints },
    };
    let short = DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha256, value: "AB:CD".into() };
    assert_eq!(code_of(peer.client.connect_transport(connect(vec![short])).await), -32602);
    let junk = DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha512, value: "zz:".repeat(63) + "zz" };
    assert_eq!(code_of(peer.client.connect_transport(connect(vec![junk])).await), -32602);
    assert_eq!(code_of(peer.client.connect_transport(connect(vec![])).await), -32602);
    let mut other = connect(vec![]);
    other.transport_id = TransportId::from("unknown");
    assert_eq!(code_of(peer.client.connect_transport(other).await), ErrorCode::NotFound.code());

    // pymediasoup's real parameters (sha-512, role server) are accepted, once.
    let mut real: ConnectTransportParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/connectTransport.params.json")).unwrap();
    real.transport_id = id.clone();
    peer.client.connect_transport(real.clone()).await.unwrap();
    assert_eq!(code_of(peer.client.connect_transport(real).await), ErrorCode::InvalidState.code());

    // ICE restart gives new credentials.
    let before = peer.client.get_stats(GetStatsParams { id: id.to_string() }).await.unwrap();
    assert!(matches!(before, Stats::Transport { .. }));
    let ice = peer.client.restart_ice(TransportParams { transport_id: id.clone() }).await.unwrap();
    let again = peer.client.restart_ice(TransportParams { transport_id: id }).await.unwrap();
    assert_ne!(ice.username_fragment, again.username_fragment);
}

#[tokio::test]
async fn strings_echoed_to_other_clients_must_be_plain() {
    let server = spawn_server().await;
    let a = server.joined("plain", "A").await;
    let send = transport(&a, Direction::Send).await;
    let base = produce_params("chromium-mediasoup-client-3.24", send);
    type Spoil = fn(&mut ProduceParams);
    let cases: [(&str, Spoil); 5] = [
        ("rtpParameters.rtcp.cname", |p| p.rtp_parameters.rtcp.cname = Some("x\r\na=ssrc:1 cname:evil".into())),
        ("rtpParameters.msid", |p| p.rtp_parameters.msid = Some("stream\0track".into())),
        ("rtpParameters.mid", |p| p.rtp_parameters.mid = Some("0;x".into())),
        ("rtpParameters.headerExtensions[0].uri", |p| p.rtp_parameters.header_extensions[0].uri = "urn:x\n".into()),
        ("rtpParameters.codecs[0].parameters.evil", |p| {
            p.rtp_parameters.codecs[0]
                .parameters
                .insert("evil".into(), dspeak_schema::ortc::ParameterValue::String("1\r\na=x".into()));
        }),
    ];
    for (field, spoil) in cases {
        let mut p = base.clone();
        spoil(&mut p);
        match a.client.produce(p).await {
            Err(jsonrpsee::core::ClientError::Call(e)) => {
                assert_eq!(e.code(), -32602, "{field}: {e:?}");
                assert!(e.message().contains(field), "the error names {field}: {}", e.message());
            }
            other => panic!("{field}: expected invalid params, got {other:?}"),
        }
    }
    a.client.produce(base).await.expect("the plain original is accepted");
}
