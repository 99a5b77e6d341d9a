//! Voice state over the typed client: `setVoiceState` announces to everyone, is listed
//! to late joiners, pauses producers (self-mute) and consumers in the engine
//! (self-deafen) without losing the client's own consumer pauses. Real packets are
//! counted in `pymediasoup` (`test_voice_state.py`).

use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{
    ConsumeParams, ConsumerParams, CreateTransportParams, Direction, GetStatsParams, ProduceParams, ProducerParams,
    Stats,
};
use dspeak_schema::rooms::{SetVoiceStateParams, VoiceState};
use dspeak_schema::{ConsumerId, ErrorCode, Event};

use crate::support::*;

const CLIENT: &str = "pymediasoup-1.5-aiortc-1.16";

fn voice(self_mute: Option<bool>, self_deaf: Option<bool>) -> SetVoiceStateParams {
    SetVoiceStateParams { self_mute, self_deaf }
}

/// Whether the engine has consumer `id` of `peer` paused.
async fn engine_paused(peer: &Peer, id: &ConsumerId) -> bool {
    match peer.client.get_stats(GetStatsParams { id: id.to_string() }).await.expect("stats") {
        Stats::Consumer { paused, .. } => paused,
        other => panic!("expected consumer stats, got {other:?}"),
    }
}

#[tokio::test]
async fn voice_state_is_announced_listed_and_applied_to_producers_and_consumers() {
    let server = spawn_server().await;
    let lonely = server.client().await;
    assert_eq!(code_of(lonely.set_voice_state(voice(Some(true), None)).await), ErrorCode::NotJoined.code());

    let mut a = server.joined("voice", "A").await;
    let mut b = server.joined("voice", "B").await;
    let a_send = a.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap().id;
    let mut produce: ProduceParams = serde_json::from_value(fixture(&format!("{CLIENT}/produce.params.json"))).unwrap();
    produce.transport_id = a_send;
    let producer = a.client.produce(produce.clone()).await.unwrap().id;
    let b_recv = b.client.create_transport(CreateTransportParams { direction: Direction::Recv }).await.unwrap().id;
    let mut consume: ConsumeParams = serde_json::from_value(fixture(&format!("{CLIENT}/consume.params.json"))).unwrap();
    (consume.transport_id, consume.producer_id) = (b_recv, producer.clone());
    let resumed = b.client.consume(consume.clone()).await.unwrap().id;
    // A second consumer needs a second producer (one consumer per producer and
    // session): C's.
    let c = server.joined("voice", "C").await;
    let c_send = c.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap().id;
    let mut c_produce = produce.clone();
    c_produce.transport_id = c_send;
    c_produce.rtp_parameters.encodings[0].ssrc = c_produce.rtp_parameters.encodings[0].ssrc.map(|s| s.wrapping_add(7));
    consume.producer_id = c.client.produce(c_produce).await.unwrap().id;
    let kept_paused = b.client.consume(consume).await.unwrap().id;
    b.client.resume_consumer(ConsumerParams { consumer_id: resumed.clone() }).await.unwrap();
    assert!(!engine_paused(&b, &resumed).await && engine_paused(&b, &kept_paused).await);

    // B deafens: both consumers are paused in the engine; A and B are told.
    let state = b.client.set_voice_state(voice(None, Some(true))).await.unwrap();
    assert_eq!(state, VoiceState { self_mute: false, self_deaf: true, server_muted: false });
    let expected =
        Event::VoiceStateUpdated { peer_id: b.peer_id(), self_mute: false, self_deaf: true, server_muted: false };
    for peer in [&mut a, &mut b] {
        let told = peer.event_where("voiceStateUpdated", |e| matches!(e, Event::VoiceStateUpdated { .. })).await;
        assert_eq!(told, expected);
    }
    assert!(engine_paused(&b, &resumed).await && engine_paused(&b, &kept_paused).await);
    // Setting the same state again changes nothing and tells no one.
    b.client.set_voice_state(voice(None, Some(true))).await.unwrap();
    // Resuming while deafened is remembered, not applied.
    b.client.resume_consumer(ConsumerParams { consumer_id: kept_paused.clone() }).await.unwrap();
    b.client.pause_consumer(ConsumerParams { consumer_id: resumed.clone() }).await.unwrap();
    assert!(engine_paused(&b, &kept_paused).await, "deafened: the resume waits");

    // A late joiner sees B's state in the join result.
    let late = server.joined("voice", "late").await;
    let listed = late.joined.as_ref().unwrap().peers.iter().find(|p| p.peer_id == b.peer_id()).cloned().unwrap();
    assert!(listed.self_deaf && !listed.self_mute && !listed.server_muted, "{listed:?}");

    // Undeafened: the client's own wishes apply.
    b.client.set_voice_state(voice(None, Some(false))).await.unwrap();
    assert!(!engine_paused(&b, &kept_paused).await && engine_paused(&b, &resumed).await);

    // A mutes itself: its producer is paused and announced; it cannot resume it
    // directly; unmuting resumes it.
    let state = a.client.set_voice_state(voice(Some(true), None)).await.unwrap();
    assert_eq!(state, VoiceState { self_mute: true, self_deaf: false, server_muted: false });
    let paused = b.event_where("producerPaused", |e| matches!(e, Event::ProducerPaused { .. })).await;
    assert_eq!(paused, Event::ProducerPaused { peer_id: a.peer_id(), producer_id: producer.clone() });
    let told = b.event_where("voiceStateUpdated", |e| matches!(e, Event::VoiceStateUpdated { .. })).await;
    assert_eq!(
        told,
        Event::VoiceStateUpdated { peer_id: a.peer_id(), self_mute: true, self_deaf: false, server_muted: false }
    );
    let r = a.client.resume_producer(ProducerParams { producer_id: producer.clone() }).await;
    assert_eq!(code_of(r), ErrorCode::Forbidden.code());
    // A producer created while self-muted starts paused.
    let mut second = produce.clone();
    second.rtp_parameters.mid = Some("9".into());
    second.rtp_parameters.encodings[0].ssrc = second.rtp_parameters.encodings[0].ssrc.map(|s| s.wrapping_add(1));
    let second = a.client.produce(second).await.unwrap().id;
    let paused = b.event_where("producerPaused", |e| matches!(e, Event::ProducerPaused { .. })).await;
    assert_eq!(paused, Event::ProducerPaused { peer_id: a.peer_id(), producer_id: second.clone() });
    a.client.close_producer(ProducerParams { producer_id: second }).await.unwrap();
    a.client.set_voice_state(voice(Some(false), None)).await.unwrap();
    let resumed_event = b.event_where("producerResumed", |e| matches!(e, Event::ProducerResumed { .. })).await;
    assert_eq!(resumed_event, Event::ProducerResumed { peer_id: a.peer_id(), producer_id: producer });

    drop((a, b, c, late, lonely));
    server.wait_counts("everything released", |c| *c == dspeak_server::Counts::default()).await;
}
