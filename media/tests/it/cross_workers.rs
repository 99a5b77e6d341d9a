//! One room over two workers: transports land on both, a producer's packets reach
//! consumers on the other worker through the hand-off rings, pause/resume/close stay
//! right across workers (also for a consumer subscribed while its producer is
//! paused), and the room's speaker detector sees every producer.

use std::time::Duration;

use dspeak_media::{Engine, EngineConfig, RouterEvent, SpeakerEvents};
use dspeak_schema::PeerId;
use dspeak_schema::media::Direction;

use crate::peer::{Client, Running, client, id, wait_for};

fn engine() -> Engine {
    let config = EngineConfig {
        workers: 2,
        listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        tcp: false,
        speaker_events: SpeakerEvents::Speaker,
        ..EngineConfig::default()
    };
    Engine::start(&config).unwrap()
}

/// Sequence numbers one consumer received: every one once, in one continuous run.
fn assert_continuous(seqs: &[u64], what: &str) {
    assert!(!seqs.is_empty(), "{what}: nothing received");
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "{what}: duplicates");
    assert_eq!(sorted[sorted.len() - 1] - sorted[0] + 1, sorted.len() as u64, "{what}: a gap in {sorted:?}");
}

/// A speaker (one producer) and `n` listeners consuming it, all connected.
struct Room {
    speaker: Running,
    producer: dspeak_schema::ProducerId,
    speaker_owner: PeerId,
    /// Per listener: its worker, owner, consumer, its SSRC, and the running client.
    listeners: Vec<(usize, PeerId, dspeak_schema::ConsumerId, u32, Running)>,
}

async fn room(router: &dspeak_media::RouterHandle, n: usize) -> Room {
    let speaker_owner: PeerId = id();
    let mut send = client(router, &speaker_owner, Direction::Send).await.unwrap();
    let producer = send.produce(router, &speaker_owner, 1111, -30).await.unwrap();
    let mut listeners = Vec::new();
    for _ in 0..n {
        let owner: PeerId = id();
        let mut recv = client(router, &owner, Direction::Recv).await.unwrap();
        let (consumer, ssrc) = recv.consume(router, &owner, &producer).await.unwrap();
        listeners.push((recv.worker, owner, consumer, ssrc, recv.run()));
    }
    let speaker = send.run();
    let seen: Vec<_> = listeners.iter().map(|l| l.4.seen.clone()).chain([speaker.seen.clone()]).collect();
    wait_for("every peer connected", 10, || {
        seen.iter().all(|s| s.connected.load(std::sync::atomic::Ordering::Relaxed))
    })
    .await;
    Room { speaker, producer, speaker_owner, listeners }
}

/// Lets the speaker send about `ms` of audio, then waits for the packets in flight.
async fn speak(room: &Room, ms: u64) {
    room.speaker.speaking.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    room.speaker.speaking.store(false, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn sent(room: &Room) -> u64 {
    room.speaker.seen.sent.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_on_both_workers_hear_a_producer_continuously() {
    let engine = engine();
    let (router, _events) = engine.router();
    let room = room(&router, 4).await;
    let workers: Vec<usize> = room.listeners.iter().map(|l| l.0).collect();
    assert!(workers.contains(&0) && workers.contains(&1), "one room's transports land on both workers: {workers:?}");
    speak(&room, 1000).await;
    let sent = sent(&room);
    assert!(sent >= 30, "the speaker sent {sent}");
    for (worker, _, _, ssrc, l) in &room.listeners {
        let got = l.seen.received(*ssrc);
        assert_eq!(got.len() as u64, sent, "a listener on worker {worker} heard {} of {sent}", got.len());
        assert_continuous(&got, &format!("listener on worker {worker}"));
    }
    let stats = engine.workers();
    let forwarded: Vec<u64> = stats.iter().map(|w| w.traffic.packets_sent).collect();
    assert!(forwarded.iter().all(|&f| f >= sent), "both workers forwarded: {forwarded:?}");
    let full = stats.iter().map(|w| w.traffic.dropped[dspeak_media::DropReason::HandoffFull as usize]).sum::<u64>();
    assert_eq!(full, 0);
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_close_hold_across_workers() {
    let engine = engine();
    let (router, _events) = engine.router();
    let room = room(&router, 4).await;
    let far = room.listeners.iter().filter(|l| l.0 != 0).count();
    assert_eq!(far, 2, "two of four listeners on the speaker's other worker");
    speak(&room, 400).await;
    assert!(engine.workers()[0].traffic.handed_over > 0, "the speaker's worker hands its packets over");
    let before: Vec<usize> = room.listeners.iter().map(|l| l.4.seen.received(l.3).len()).collect();
    // Paused: nobody hears anything.
    router.set_producer_paused(room.producer.clone(), room.speaker_owner.clone(), true).await.unwrap();
    speak(&room, 400).await;
    let paused: Vec<usize> = room.listeners.iter().map(|l| l.4.seen.received(l.3).len()).collect();
    assert_eq!(paused, before, "a paused producer reaches no consumer");
    // Resumed: everyone hears again, with no gap in the sequence.
    router.set_producer_paused(room.producer.clone(), room.speaker_owner.clone(), false).await.unwrap();
    speak(&room, 400).await;
    for (worker, _, _, ssrc, l) in &room.listeners {
        let got = l.seen.received(*ssrc);
        assert!(got.len() > before[0], "a listener on worker {worker} hears after the resume");
        assert_continuous(&got, &format!("listener on worker {worker} after the resume"));
    }
    // A far consumer closes: it hears no more; the others still do.
    let (far_worker, far_owner, far_consumer, far_ssrc, far_listener) =
        room.listeners.iter().find(|l| l.0 != 0).unwrap();
    router.close_consumer(far_consumer.clone(), far_owner.clone()).await.unwrap();
    let closed_at = far_listener.seen.received(*far_ssrc).len();
    speak(&room, 400).await;
    assert_eq!(far_listener.seen.received(*far_ssrc).len(), closed_at, "a closed consumer on worker {far_worker}");
    // A far listener's transport closes with its peer.
    let other_far = room.listeners.iter().find(|l| l.0 != 0 && l.2 != *far_consumer);
    if let Some((_, owner, consumer, ssrc, l)) = other_far {
        assert!(router.close_peer(owner.clone()).await.is_empty());
        let at = l.seen.received(*ssrc).len();
        speak(&room, 400).await;
        assert_eq!(l.seen.received(*ssrc).len(), at, "a closed transport's consumer");
        let gone = router.close_consumer(consumer.clone(), owner.clone()).await;
        assert!(gone.is_err(), "the consumer went with its transport");
    }
    // No consumer is left on the far worker: its subscription went with the last one,
    // so the speaker's worker hands nothing over any more.
    let handed = || engine.workers()[0].traffic.handed_over;
    let before = handed();
    speak(&room, 400).await;
    assert_eq!(handed(), before, "the far worker's subscription ended with its last consumer");
    // The producer closes: its consumers on both workers close with it.
    let closed = router.close_producer(room.producer.clone(), room.speaker_owner.clone()).await.unwrap();
    let open: Vec<_> = room
        .listeners
        .iter()
        .filter(|l| &l.2 != far_consumer && Some(&l.2) != other_far.map(|o| &o.2))
        .map(|l| l.2.clone())
        .collect();
    let mut closed: Vec<_> = closed.into_iter().map(|c| c.consumer).collect();
    closed.sort();
    let mut open = open;
    open.sort();
    assert_eq!(closed, open, "every open consumer, on either worker, closed with its producer");
    wait_for("no consumers left", 5, || engine.counts().consumers == 0).await;
    engine.stop();
}

/// Whether a consumer's stats say its producer is paused.
async fn producer_paused(
    router: &dspeak_media::RouterHandle,
    consumer: &dspeak_schema::ConsumerId,
    owner: &PeerId,
) -> bool {
    match router.stats(consumer.to_string(), owner.clone()).await.unwrap() {
        dspeak_schema::media::Stats::Consumer { producer_paused, .. } => producer_paused,
        other => panic!("consumer stats, got {other:?}"),
    }
}

/// Consumes `producer`, paused, on `client` and runs it until it is connected; the
/// consumer's stats show the pause.
async fn consume_paused(
    router: &dspeak_media::RouterHandle,
    mut client: Client,
    owner: &PeerId,
    producer: &dspeak_schema::ProducerId,
) -> (dspeak_schema::ConsumerId, u32, Running) {
    let (consumer, ssrc) = client.consume(router, owner, producer).await.unwrap();
    let running = client.run();
    wait_for("a far listener connected", 10, || running.seen.connected.load(std::sync::atomic::Ordering::Relaxed))
        .await;
    assert!(producer_paused(router, &consumer, owner).await, "its stats show the pause");
    (consumer, ssrc, running)
}

/// Far consumers subscribed while their producer is paused (the first one on its
/// worker, then one more while the first is there) hear nothing until the resume,
/// then every packet sent after it, in one continuous run; their stats follow the
/// producer's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_consumers_subscribed_while_paused_hear_the_resume() {
    let engine = engine();
    let (router, _events) = engine.router();
    let speaker_owner: PeerId = id();
    let mut send = client(&router, &speaker_owner, Direction::Send).await.unwrap();
    let producer = send.produce(&router, &speaker_owner, 4444, -30).await.unwrap();
    // Placed in turn: the speaker and a near listener on one worker, two far ones on
    // the other, which consume later.
    let (first_owner, near_owner, second_owner): (PeerId, PeerId, PeerId) = (id(), id(), id());
    let first = client(&router, &first_owner, Direction::Recv).await.unwrap();
    let mut near = client(&router, &near_owner, Direction::Recv).await.unwrap();
    let second = client(&router, &second_owner, Direction::Recv).await.unwrap();
    assert_eq!([send.worker, near.worker], [0, 0]);
    assert_eq!([first.worker, second.worker], [1, 1]);
    let (near_consumer, near_ssrc) = near.consume(&router, &near_owner, &producer).await.unwrap();
    let near_worker = near.worker;
    let room = Room {
        speaker: send.run(),
        producer: producer.clone(),
        speaker_owner: speaker_owner.clone(),
        listeners: vec![(near_worker, near_owner, near_consumer, near_ssrc, near.run())],
    };
    let near = &room.listeners[0].4;
    wait_for("speaker and near listener connected", 10, || {
        [&room.speaker, near].iter().all(|r| r.seen.connected.load(std::sync::atomic::Ordering::Relaxed))
    })
    .await;
    let pause = |paused: bool| router.set_producer_paused(producer.clone(), speaker_owner.clone(), paused);
    // Paused, then the first far consumer subscribes: nothing reaches it.
    pause(true).await.unwrap();
    let (first_consumer, first_ssrc, first) = consume_paused(&router, first, &first_owner, &producer).await;
    speak(&room, 400).await;
    assert!(first.seen.received(first_ssrc).is_empty(), "a paused producer's packets reach no far consumer");
    // Resumed: it hears everything sent from then on.
    pause(false).await.unwrap();
    assert!(!producer_paused(&router, &first_consumer, &first_owner).await);
    let before = sent(&room);
    speak(&room, 400).await;
    let heard = first.seen.received(first_ssrc);
    assert_eq!(heard.len() as u64, sent(&room) - before, "the far consumer hears the resume");
    assert_continuous(&heard, "first far listener");
    // Paused again; a second far consumer joins the worker's subscription.
    pause(true).await.unwrap();
    let (second_consumer, second_ssrc, second) = consume_paused(&router, second, &second_owner, &producer).await;
    let first_before = first.seen.received(first_ssrc).len();
    speak(&room, 400).await;
    assert_eq!(first.seen.received(first_ssrc).len(), first_before, "paused again: nothing more");
    assert!(second.seen.received(second_ssrc).is_empty());
    pause(false).await.unwrap();
    let before = sent(&room);
    speak(&room, 400).await;
    let delta = sent(&room) - before;
    let (heard_first, heard_second) = (first.seen.received(first_ssrc), second.seen.received(second_ssrc));
    assert_eq!(heard_second.len() as u64, delta, "the second far consumer hears the resume");
    assert_eq!((heard_first.len() - first_before) as u64, delta, "so does the first");
    assert_continuous(&heard_first, "first far listener, across the pause");
    assert_continuous(&heard_second, "second far listener");
    assert!(!producer_paused(&router, &second_consumer, &second_owner).await);
    let near_heard = near.seen.received(room.listeners[0].3);
    assert_continuous(&near_heard, "near listener, across the pauses");
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_detector_hears_producers_on_every_worker() {
    let engine = engine();
    let (router, mut events) = engine.router();
    let home = router.worker_index();
    // A quiet producer, then a loud one: they land on different workers.
    let (quiet_owner, loud_owner): (PeerId, PeerId) = (id(), id());
    let mut quiet = client(&router, &quiet_owner, Direction::Send).await.unwrap();
    let _quiet_producer = quiet.produce(&router, &quiet_owner, 2222, -127).await.unwrap();
    let mut loud = client(&router, &loud_owner, Direction::Send).await.unwrap();
    let loud_producer = loud.produce(&router, &loud_owner, 3333, -20).await.unwrap();
    assert_ne!(loud.worker, home, "the loud producer's levels cross to the room's home worker");
    let (quiet, loud) = (quiet.run(), loud.run());
    wait_for("both connected", 10, || {
        [&quiet, &loud].iter().all(|r| r.seen.connected.load(std::sync::atomic::Ordering::Relaxed))
    })
    .await;
    quiet.speaking.store(true, std::sync::atomic::Ordering::Relaxed);
    loud.speaking.store(true, std::sync::atomic::Ordering::Relaxed);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event in time");
    match event {
        Some(RouterEvent::ActiveSpeaker { peer_id, producer_id }) => {
            assert_eq!((peer_id, producer_id), (loud_owner, loud_producer));
        }
        other => panic!("expected the active speaker, got {other:?}"),
    }
    engine.stop();
}
