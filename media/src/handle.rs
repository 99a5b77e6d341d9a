//! [`RouterHandle`]: the typed API of the media engine, one per room.
//!
//! A room spans the workers: each transport is placed on the worker forwarding the
//! fewest packets per second, and its producers and consumers live there too. Every
//! method is async: it validates what needs no state, sends a command to the worker
//! holding the transport, producer or consumer, and awaits the answer. A consumer of a
//! producer on another worker subscribes that worker first (`cross`), and closing a
//! producer closes its consumers on every worker; pausing one tells its worker only.
//! The caller passes the ids it generated and the peer it acts for; the worker checks
//! ownership, direction and state, so a session can only touch what its peer owns.
//! The handle holds the room's home on one worker (its speaker detector): dropping it
//! closes the room there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dspeak_schema::media::{ConsumeResult, CreateTransportResult, Direction, Stats};
use dspeak_schema::ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceParameters, MediaKind, RtpCapabilities, RtpParameters,
};
use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};

use crate::dtls::expected_fingerprint;
use crate::error::MediaError;
use crate::router;
use crate::speaker::{self, RouterEvents};
use crate::worker::{RoomKey, WorkerHandle};

/// The next room's key (unique over the process, so a late command of a closed room
/// never reaches a new one).
static NEXT_ROOM: AtomicU64 = AtomicU64::new(1);
/// The next producer's key in its room's speaker detector (unique over the process).
static NEXT_SPEAKER: AtomicU32 = AtomicU32::new(1);

/// A consumer the engine closed because its producer closed; its owner must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedConsumer {
    /// The consumer closed.
    pub consumer: ConsumerId,
    /// The producer it consumed.
    pub producer: ProducerId,
    /// The peer that owned the consumer.
    pub owner: PeerId,
}

/// Where a room's transports, producers and consumers are: which worker holds each.
#[derive(Debug, Default)]
struct Places {
    transports: HashMap<TransportId, (usize, PeerId)>,
    /// Worker, transport, and key in the room's speaker detector.
    producers: HashMap<ProducerId, (usize, TransportId, u32)>,
    /// Worker, transport, and the producer consumed.
    consumers: HashMap<ConsumerId, (usize, TransportId, ProducerId)>,
}

impl Places {
    fn transport(&self, id: &TransportId) -> Result<usize, MediaError> {
        self.transports.get(id).map(|&(w, _)| w).ok_or_else(|| MediaError::not_found("transport", id))
    }

    fn producer(&self, id: &ProducerId) -> Result<(usize, u32), MediaError> {
        self.producers.get(id).map(|&(w, _, key)| (w, key)).ok_or_else(|| MediaError::not_found("producer", id))
    }

    fn consumer(&self, id: &ConsumerId) -> Result<usize, MediaError> {
        self.consumers.get(id).map(|&(w, ..)| w).ok_or_else(|| MediaError::not_found("consumer", id))
    }

    /// Forgets consumers the engine closed.
    fn forget_consumers(&mut self, closed: &[ClosedConsumer]) {
        for c in closed {
            self.consumers.remove(&c.consumer);
        }
    }
}

/// One room's router: the room's places over the media workers and the typed engine
/// API. The room has a home worker, which runs its speaker detector; each transport
/// is placed on the worker forwarding the fewest packets per second, and every later
/// command goes to the worker holding its transport, producer or consumer.
#[derive(Debug)]
pub struct RouterHandle {
    workers: Arc<[WorkerHandle]>,
    /// The host candidates of each worker's port.
    candidates: Arc<[Arc<[IceCandidate]>]>,
    /// The worker that runs the room's speaker detector.
    home: usize,
    /// The room's key on its workers.
    room: RoomKey,
    /// The server certificate's fingerprints, sha-1 to sha-512.
    fingerprints: Arc<[DtlsFingerprint]>,
    /// A short lock, never held across `.await`: only the handle's own calls touch it.
    places: Mutex<Places>,
}

impl RouterHandle {
    /// Opens a room at home on worker `home` (released on drop); returns the handle
    /// and the room's upward channel (voice activity), which ends when the handle is
    /// dropped.
    pub(crate) fn new(
        workers: Arc<[WorkerHandle]>,
        home: usize,
        candidates: Arc<[Arc<[IceCandidate]>]>,
        fingerprints: Arc<[DtlsFingerprint]>,
    ) -> (Self, RouterEvents) {
        let room = NEXT_ROOM.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = speaker::channel();
        let home_worker = &workers[home];
        home_worker.counts.rooms.fetch_add(1, Ordering::Relaxed);
        home_worker.post(move |w| w.open_room(room, tx));
        let places = Mutex::new(Places::default());
        (RouterHandle { workers, candidates, home, room, fingerprints, places }, rx)
    }

    /// The index of the room's home worker (its speaker detector).
    pub fn worker_index(&self) -> usize {
        self.home
    }

    /// The index of the worker holding a transport of the room, if it exists.
    pub fn transport_worker(&self, id: &TransportId) -> Option<usize> {
        self.places().transport(id).ok()
    }

    fn places(&self) -> std::sync::MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker(&self, index: usize) -> &WorkerHandle {
        // Indexes come from `placement` or `places`, which only hold valid ones.
        &self.workers[index]
    }

    /// What a lite (connected listener) transport's client sent; `None` while it keeps
    /// its `Rtc` (tests).
    #[cfg(test)]
    pub(crate) async fn lite_counters(&self, id: TransportId) -> Option<crate::lite::LiteCounters> {
        let index = self.places().transport(&id).ok()?;
        self.worker(index).call(move |w| Ok(w.lite_counters(&id))).await.ok().flatten()
    }

    /// Creates a WebRTC transport owned by `owner` on the least loaded worker: its ICE
    /// parameters, candidates and DTLS fingerprints, for the client.
    pub async fn create_transport(
        &self,
        id: TransportId,
        owner: PeerId,
        direction: Direction,
    ) -> Result<CreateTransportResult, MediaError> {
        let index = crate::least_loaded(self.workers.iter().map(|w| &*w.counts)).unwrap_or(0);
        let (transport, peer) = (id.clone(), owner.clone());
        let ice_parameters = self.worker(index).call(move |w| w.create_transport(transport, peer, direction)).await?;
        self.places().transports.insert(id.clone(), (index, owner));
        Ok(CreateTransportResult {
            id,
            ice_parameters,
            ice_candidates: self.candidates[index].to_vec(),
            dtls_parameters: DtlsParameters { role: DtlsRole::Auto, fingerprints: self.fingerprints.to_vec() },
        })
    }

    /// Starts DTLS on a transport of `owner` with the client's role and fingerprints
    /// (the strongest one is verified once the handshake is done).
    pub async fn connect(&self, id: TransportId, owner: PeerId, dtls: DtlsParameters) -> Result<(), MediaError> {
        let expected = expected_fingerprint(&dtls.fingerprints)?;
        let index = self.places().transport(&id)?;
        self.worker(index).call(move |w| w.connect_transport(&id, &owner, expected, dtls.role)).await
    }

    /// New server ICE credentials for a transport of `owner`.
    pub async fn restart_ice(&self, id: TransportId, owner: PeerId) -> Result<IceParameters, MediaError> {
        let index = self.places().transport(&id)?;
        self.worker(index).call(move |w| w.restart_ice(&id, &owner)).await
    }

    /// Starts receiving a producer's Opus stream on a send transport of `owner`.
    pub async fn produce(
        &self,
        id: ProducerId,
        transport: TransportId,
        owner: PeerId,
        kind: MediaKind,
        rtp_parameters: &RtpParameters,
    ) -> Result<(), MediaError> {
        let stream = router::producer_stream(kind, rtp_parameters)?;
        let index = self.places().transport(&transport)?;
        let (room, home) = (self.room, self.home);
        let key = NEXT_SPEAKER.fetch_add(1, Ordering::Relaxed);
        let (producer, peer, on) = (id.clone(), owner.clone(), transport.clone());
        self.worker(index).call(move |w| w.produce((room, home, key), producer, &on, &peer, stream)).await?;
        self.places().producers.insert(id.clone(), (index, transport, key));
        self.worker(home).post(move |w| w.speaker_add(room, key, owner, id));
        Ok(())
    }

    /// A paused consumer of `producer` on a recv transport of `owner`, with RTP
    /// parameters for a device with `caps`. A producer on another worker is
    /// subscribed to first: its worker hands its packets over to this one.
    pub async fn consume(
        &self,
        id: ConsumerId,
        transport: TransportId,
        owner: PeerId,
        producer: ProducerId,
        caps: RtpCapabilities,
    ) -> Result<ConsumeResult, MediaError> {
        router::check_can_consume(&caps)?;
        let (index, source) = {
            let places = self.places();
            (places.transport(&transport)?, places.producer(&producer)?.0)
        };
        let subscription = if source == index {
            None
        } else {
            let p = producer.clone();
            Some(self.worker(source).call(move |w| w.subscribe(&p, index)).await?)
        };
        let key = subscription.as_ref().map(|s| s.key);
        let (consumer, on, of) = (id.clone(), transport.clone(), producer.clone());
        let consumed =
            self.worker(index).call(move |w| w.consume(consumer, &on, &owner, (of, subscription), &caps)).await;
        match (&consumed, key) {
            (Ok(_), _) => {
                let mut places = self.places();
                // The producer may have closed while it was consumed (its closing
                // leaves the places after its worker closed it and its consumers there):
                // answer as if the close had come first, so the places never keep a
                // consumer that is gone. On another worker the close may not have
                // reached this consumer yet: remove it alone there (the close still has
                // to find, close and report that worker's other consumers of it).
                if !places.producers.contains_key(&producer) {
                    drop(places);
                    if source != index {
                        self.worker(index).post(move |w| drop(w.remove_consumer(&id)));
                    }
                    return Err(MediaError::not_found("producer", &producer));
                }
                places.consumers.insert(id, (index, transport, producer));
            }
            (Err(_), Some(key)) => self.worker(source).post(move |w| w.unsubscribe(key, index)),
            (Err(_), None) => {}
        }
        consumed
    }

    /// Pauses or resumes a producer of `owner`. Only its worker is told (and the
    /// room's home, for the speaker detector): consumers on other workers get none of
    /// its packets while it is paused, and its first packet after a resume carries the
    /// new resume epoch, which resynchronizes them (`cross`).
    pub async fn set_producer_paused(&self, id: ProducerId, owner: PeerId, paused: bool) -> Result<(), MediaError> {
        let (index, key) = self.places().producer(&id)?;
        self.worker(index).call(move |w| w.set_producer_paused(&id, &owner, paused)).await?;
        let room = self.room;
        self.worker(self.home).post(move |w| w.speaker_paused(room, key, paused));
        Ok(())
    }

    /// Pauses or resumes a consumer of `owner`.
    pub async fn set_consumer_paused(&self, id: ConsumerId, owner: PeerId, paused: bool) -> Result<(), MediaError> {
        let index = self.places().consumer(&id)?;
        self.worker(index).call(move |w| w.set_consumer_paused(&id, &owner, paused)).await
    }

    /// Closes a producer of `owner`; returns the consumers closed with it.
    pub async fn close_producer(&self, id: ProducerId, owner: PeerId) -> Result<Vec<ClosedConsumer>, MediaError> {
        let (index, _) = self.places().producer(&id)?;
        let producer = id.clone();
        let mut closed = self.worker(index).call(move |w| w.close_owned_producer(&producer, &owner)).await?;
        closed.extend(self.producers_closed(index, vec![id]).await);
        self.places().forget_consumers(&closed);
        Ok(closed)
    }

    /// Producers of worker `index` closed: their consumers on the other workers close
    /// (returned), they leave the speaker detector and the room's places.
    async fn producers_closed(&self, index: usize, ids: Vec<ProducerId>) -> Vec<ClosedConsumer> {
        if ids.is_empty() {
            return Vec::new();
        }
        // Out of the places first: a `consume` racing with the close sees it (`consume`).
        let keys: Vec<u32> = {
            let mut places = self.places();
            ids.iter().filter_map(|p| places.producers.remove(p)).map(|(_, _, key)| key).collect()
        };
        let mut closed = Vec::new();
        for other in self.workers.iter().filter(|w| w.index != index) {
            let gone = ids.clone();
            let here = other.call(move |w| Ok(gone.iter().flat_map(|p| w.close_remote_producer(p)).collect())).await;
            closed.extend(here.unwrap_or_else(|_: MediaError| Vec::new()));
        }
        let room = self.room;
        self.worker(self.home).post(move |w| keys.into_iter().for_each(|key| w.speaker_remove(room, key)));
        closed
    }

    /// Closes a consumer of `owner`.
    pub async fn close_consumer(&self, id: ConsumerId, owner: PeerId) -> Result<(), MediaError> {
        let index = self.places().consumer(&id)?;
        let consumer = id.clone();
        self.worker(index).call(move |w| w.close_consumer(&consumer, &owner)).await?;
        self.places().consumers.remove(&id);
        Ok(())
    }

    /// Closes every transport of `owner` with its producers and consumers; returns the
    /// consumers of other peers closed because one of those producers closed. A worker
    /// that does not answer (its thread died) is logged and skipped: what the others
    /// closed is still returned and leaves the places, so their owners are told.
    pub async fn close_peer(&self, owner: PeerId) -> Vec<ClosedConsumer> {
        let mut closed = Vec::new();
        for worker in self.workers.iter() {
            let peer = owner.clone();
            match worker.call(move |w| Ok(w.close_peer(&peer))).await {
                Ok((here, producers)) => {
                    closed.extend(here);
                    closed.extend(self.producers_closed(worker.index, producers).await);
                }
                Err(e) => {
                    tracing::warn!(worker = worker.index, error = %e, "closing a peer: a media worker did not answer")
                }
            }
        }
        let mut places = self.places();
        let Places { transports, producers, consumers } = &mut *places;
        transports.retain(|_, (_, o)| o != &owner);
        producers.retain(|_, (_, t, _)| transports.contains_key(t));
        consumers.retain(|_, (_, t, _)| transports.contains_key(t));
        places.forget_consumers(&closed);
        closed
    }

    /// Statistics of a transport, producer or consumer of `owner`. Whether a
    /// consumer's producer is paused is the producer's worker's to say.
    pub async fn stats(&self, id: String, owner: PeerId) -> Result<Stats, MediaError> {
        let (index, far_producer) = {
            let places = self.places();
            let transport = places.transports.get(&TransportId::from(id.as_str())).map(|&(w, _)| (w, None));
            let producer = || places.producers.get(&ProducerId::from(id.as_str())).map(|&(w, ..)| (w, None));
            let consumer = || {
                let (w, _, producer) = places.consumers.get(&ConsumerId::from(id.as_str()))?;
                let source = places.producer(producer).ok().map(|(source, _)| source);
                Some((*w, source.filter(|s| s != w).map(|s| (s, producer.clone()))))
            };
            match transport.or_else(producer).or_else(consumer) {
                Some(found) => found,
                None => return Err(MediaError::not_found("transport, producer or consumer", &id)),
            }
        };
        let producer_paused = match far_producer {
            Some((source, producer)) => {
                Some(self.worker(source).call(move |w| Ok(w.producer_paused(&producer))).await?)
            }
            None => None,
        };
        self.worker(index).call(move |w| w.stats(&id, &owner, producer_paused)).await
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        let home = self.worker(self.home);
        home.counts.rooms.fetch_sub(1, Ordering::Relaxed);
        let room = self.room;
        home.post(move |w| w.close_room(room));
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use dspeak_schema::media::{Direction, Stats};
    use dspeak_schema::ortc::{MediaKind, RtpCapabilities, RtpParameters};
    use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};

    use crate::RouterHandle;
    use crate::test_client::{engine, pymediasoup};

    async fn producer_paused(router: &RouterHandle, consumer: &str, owner: &PeerId) -> bool {
        match router.stats(consumer.into(), owner.clone()).await.unwrap() {
            Stats::Consumer { producer_paused, .. } => producer_paused,
            other => panic!("consumer stats, got {other:?}"),
        }
    }

    /// Peer `a` producing `p` on send transport `s`; peer `b` with recv transport `r`,
    /// and pymediasoup's receive capabilities to consume with.
    struct Call {
        a: PeerId,
        b: PeerId,
        recv: TransportId,
        producer: ProducerId,
        caps: RtpCapabilities,
    }

    /// Sets up a [`Call`]; returns it with the workers its two transports are on.
    async fn call(router: &RouterHandle) -> (Call, (Option<usize>, Option<usize>)) {
        let (a, b) = (PeerId::from("a"), PeerId::from("b"));
        let (send, recv) = (TransportId::from("s"), TransportId::from("r"));
        router.create_transport(send.clone(), a.clone(), Direction::Send).await.unwrap();
        router.create_transport(recv.clone(), b.clone(), Direction::Recv).await.unwrap();
        let placed = (router.transport_worker(&send), router.transport_worker(&recv));
        let rtp: RtpParameters = serde_json::from_value(pymediasoup("produce.params.json", "rtpParameters")).unwrap();
        let caps: RtpCapabilities =
            serde_json::from_value(pymediasoup("consume.params.json", "rtpCapabilities")).unwrap();
        let producer = ProducerId::from("p");
        router.produce(producer.clone(), send, a.clone(), MediaKind::Audio, &rtp).await.unwrap();
        (Call { a, b, recv, producer, caps }, placed)
    }

    /// Holds worker `index` until the returned sender sends (or is dropped).
    fn hold(router: &RouterHandle, index: usize) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        router.workers[index].post(move |_| {
            let _ = held.recv();
        });
        release
    }

    /// Polls `f` once.
    async fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
    }

    /// Another session pauses a producer after a consume subscribed on the
    /// producer's worker and before the consumer is made on its own worker (the
    /// interleaving is forced by holding the producer's worker): the consumer's stats
    /// still show the pause, and then the resume.
    #[tokio::test]
    async fn a_far_consumer_made_across_a_pause_sees_it() {
        let engine = engine(2);
        let (router, _events) = engine.router();
        let (Call { a, b, recv, producer, caps }, placed) = call(&router).await;
        assert_eq!(placed, (Some(0), Some(1)));
        // Hold the producer's worker while the consume asks it to subscribe.
        let release = hold(&router, 0);
        let consume = router.consume(ConsumerId::from("c"), recv, b.clone(), producer.clone(), caps);
        let mut consume = std::pin::pin!(consume);
        assert!(poll_once(consume.as_mut()).await.is_pending(), "the subscription waits for the held worker");
        release.send(()).unwrap();
        // The subscription runs, then the pause, before the consumer is made.
        router.set_producer_paused(producer.clone(), a.clone(), true).await.unwrap();
        let consumed = consume.await.unwrap();
        assert!(!consumed.producer_paused, "it subscribed before the pause");
        assert!(producer_paused(&router, "c", &b).await, "its stats show the pause");
        router.set_producer_paused(producer, a, false).await.unwrap();
        assert!(!producer_paused(&router, "c", &b).await, "and the resume");
        engine.stop();
    }

    /// A producer closes right after its worker made a consumer of it, and the close
    /// finishes before the consume does: the consume answers "not found" (as if the
    /// close had come first), the close reports the consumer closed, and the room's
    /// places do not keep it.
    #[tokio::test]
    async fn a_consume_overtaken_by_its_producers_close_leaves_nothing() {
        let engine = engine(1);
        let (router, _events) = engine.router();
        let (Call { a, b, recv, producer, caps }, _) = call(&router).await;
        // Hold the worker; the consume's command reaches it first, the close's after.
        let release = hold(&router, 0);
        let consume = router.consume(ConsumerId::from("c"), recv, b, producer.clone(), caps);
        let mut consume = std::pin::pin!(consume);
        assert!(poll_once(consume.as_mut()).await.is_pending(), "the consume waits for the held worker");
        let close = router.close_producer(producer, a);
        let mut close = std::pin::pin!(close);
        assert!(poll_once(close.as_mut()).await.is_pending(), "the close waits for the held worker");
        release.send(()).unwrap();
        // The close finishes first.
        let closed = close.await.unwrap();
        assert_eq!(closed.iter().map(|c| c.consumer.to_string()).collect::<Vec<_>>(), ["c"]);
        let consumed = consume.await;
        assert!(consumed.is_err(), "the producer is gone: {consumed:?}");
        assert!(router.places().consumers.is_empty(), "no consumer left in the places");
        engine.stop();
    }

    /// Three workers: peer `a` closes its producer on worker 0 while the close is held
    /// at worker 1, and a consume of it on worker 2 finishes in between and is undone.
    /// The undo removes that consumer alone: peer `x`'s consumer of the producer on
    /// worker 2 is still closed by the close, and reported.
    #[tokio::test]
    async fn an_undone_far_consume_leaves_the_others_to_the_close() {
        let engine = engine(3);
        let (router, _events) = engine.router();
        let (Call { a, producer, caps, .. }, placed) = call(&router).await;
        assert_eq!(placed, (Some(0), Some(1)));
        let (x, y) = (PeerId::from("x"), PeerId::from("y"));
        let transports = [("rx", &x), ("d0", &a), ("d1", &a), ("ry", &y)];
        for (id, owner) in transports {
            router.create_transport(TransportId::from(id), owner.clone(), Direction::Recv).await.unwrap();
        }
        let placed: Vec<_> =
            transports.iter().map(|(id, _)| router.transport_worker(&TransportId::from(*id))).collect();
        assert_eq!(placed, [Some(2), Some(0), Some(1), Some(2)]);
        let (rx, ry) = (TransportId::from("rx"), TransportId::from("ry"));
        router.consume(ConsumerId::from("cx"), rx, x, producer.clone(), caps.clone()).await.unwrap();
        // y's consume subscribes on worker 0 and is made on worker 2; its answer waits
        // unread.
        let (on_0, on_2) = (hold(&router, 0), hold(&router, 2));
        let consume = router.consume(ConsumerId::from("cy"), ry, y, producer.clone(), caps);
        let mut consume = std::pin::pin!(consume);
        assert!(poll_once(consume.as_mut()).await.is_pending(), "subscribing on worker 0");
        on_0.send(()).unwrap();
        router.workers[0].call(|_| Ok(())).await.unwrap();
        assert!(poll_once(consume.as_mut()).await.is_pending(), "being made on worker 2");
        on_2.send(()).unwrap();
        router.workers[2].call(|_| Ok(())).await.unwrap();
        // The close: worker 0 closes the producer, the places forget it, and worker 1
        // (held) is next.
        let release = hold(&router, 1);
        let close = router.close_producer(producer.clone(), a);
        let mut close = std::pin::pin!(close);
        assert!(poll_once(close.as_mut()).await.is_pending());
        router.workers[0].call(|_| Ok(())).await.unwrap();
        assert!(poll_once(close.as_mut()).await.is_pending(), "the close waits for worker 1");
        assert!(!router.places().producers.contains_key(&producer));
        // y's consume now finds the producer gone and is undone on worker 2.
        assert!(consume.await.is_err());
        router.workers[2].call(|_| Ok(())).await.unwrap();
        release.send(()).unwrap();
        let closed = close.await.unwrap();
        assert_eq!(closed.iter().map(|c| c.consumer.to_string()).collect::<Vec<_>>(), ["cx"], "x is told");
        assert!(router.places().consumers.is_empty());
        engine.stop();
    }

    /// Two transports on one worker learn the same client address (a new peer behind
    /// the NAT mapping an old session still holds): the later check moves the route,
    /// and closing the old transport leaves it with the new one.
    #[tokio::test]
    async fn closing_a_transport_keeps_a_route_another_transport_learnt_since() {
        let engine = engine(1);
        let (router, _events) = engine.router();
        let (old, new) = (TransportId::from("old"), TransportId::from("new"));
        router.create_transport(old.clone(), PeerId::from("a"), Direction::Recv).await.unwrap();
        router.create_transport(new.clone(), PeerId::from("b"), Direction::Recv).await.unwrap();
        let client: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let route = || router.workers[0].call(move |w| Ok(w.route_of(client)));
        let (o, n) = (old.clone(), new.clone());
        let learnt = router.workers[0].call(move |w| {
            w.learn_for_test(&o, client);
            w.learn_for_test(&n, client);
            Ok(())
        });
        learnt.await.unwrap();
        assert_eq!(route().await.unwrap(), Some(new.clone()), "the later check moves the route");
        router.close_peer(PeerId::from("a")).await;
        assert_eq!(route().await.unwrap(), Some(new), "the other transport keeps it");
        router.close_peer(PeerId::from("b")).await;
        assert_eq!(route().await.unwrap(), None, "its own close removes it");
        engine.stop();
    }

    /// A worker whose thread died does not stop `close_peer`: what the live workers
    /// closed is still reported, and leaves the places.
    #[tokio::test]
    async fn close_peer_reports_what_the_live_workers_closed() {
        let engine = engine(2);
        let (router, _events) = engine.router();
        let (Call { a, b, producer, caps, .. }, placed) = call(&router).await;
        assert_eq!(placed, (Some(0), Some(1)));
        let (near, far) = (TransportId::from("r0"), TransportId::from("d1"));
        router.create_transport(near.clone(), b.clone(), Direction::Recv).await.unwrap();
        router.create_transport(far.clone(), a.clone(), Direction::Recv).await.unwrap();
        assert_eq!((router.transport_worker(&near), router.transport_worker(&far)), (Some(0), Some(1)));
        router.consume(ConsumerId::from("c0"), near, b, producer, caps).await.unwrap();
        router.workers[1].post(|_| panic!("this test stops worker 1"));
        assert!(router.workers[1].call(|_| Ok(())).await.is_err(), "worker 1 is gone");
        let closed = router.close_peer(a).await;
        assert_eq!(closed.iter().map(|c| c.consumer.to_string()).collect::<Vec<_>>(), ["c0"]);
        assert!(router.places().consumers.is_empty());
        engine.stop();
    }
}
