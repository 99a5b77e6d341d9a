//! The commands a [`RouterHandle`](crate::RouterHandle) runs on its worker.
//!
//! The worker owns the media facts, so every check on them is made here, once: who
//! owns a transport, producer or consumer, a transport's direction, what is paused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dspeak_schema::media::{ConsumeResult, Direction, Stats};
use dspeak_schema::ortc::{DtlsRole, IceParameters, MediaKind, RtpCapabilities};
use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};

use super::{Consumer, Producer, RoomKey, SeqRewriter, Subscription, Worker, owned_by};
use crate::dtls::Expected;
use crate::egress::{RtpHeader, SentClock};
use crate::error::MediaError;
use crate::handle::ClosedConsumer;
use crate::router::{self, ProducerStream};
use crate::transport::{Sink, Transport};

/// The next producer's engine-wide key.
static NEXT_PRODUCER: AtomicU64 = AtomicU64::new(1);

impl Worker {
    /// Creates a transport and returns its ICE parameters.
    pub(crate) fn create_transport(
        &mut self,
        id: TransportId,
        owner: PeerId,
        direction: Direction,
    ) -> Result<IceParameters, MediaError> {
        let now = Instant::now();
        let (tcp, levels) = (self.tcp.is_some(), self.reads_levels());
        let mut transport =
            Transport::new(id.clone(), owner, direction, &self.identity, &self.locals, tcp, levels, now)?
                .with_consent_timeout(self.consent_timeout);
        transport.timeout(now, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
        let ice = transport.ice_parameters();
        let ufrag = transport.local_ufrag.clone();
        let key = self.transports.insert(transport);
        if let Some(t) = self.transports.get_mut(key) {
            Self::schedule(&mut self.timers, key, t);
        }
        self.by_ufrag.insert(ufrag, key);
        self.transport_keys.insert(id, key);
        // Counted now, not at the end of the wake-up: the router handle places the
        // next transport by this count as soon as it has the answer.
        self.counts.transports.store(self.transports.len(), Ordering::Relaxed);
        Ok(ice)
    }

    /// Starts DTLS with the client's fingerprint and role.
    pub(crate) fn connect_transport(
        &mut self,
        id: &TransportId,
        owner: &PeerId,
        expected: Expected,
        role: DtlsRole,
    ) -> Result<(), MediaError> {
        let key = self.key_of(id, owner)?;
        let Some(transport) = self.transports.get_mut(key) else {
            return Err(MediaError::not_found("transport", id));
        };
        let result = transport.connect(expected, role, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
        Self::schedule(&mut self.timers, key, transport);
        result
    }

    /// New server ICE credentials for a transport.
    pub(crate) fn restart_ice(&mut self, id: &TransportId, owner: &PeerId) -> Result<IceParameters, MediaError> {
        let key = self.key_of(id, owner)?;
        let Some(transport) = self.transports.get_mut(key) else {
            return Err(MediaError::not_found("transport", id));
        };
        let old = transport.local_ufrag.clone();
        let ice = transport.restart_ice(&mut Sink { out: &mut self.out, rtp: &mut self.drained });
        let new = transport.local_ufrag.clone();
        Self::schedule(&mut self.timers, key, transport);
        self.by_ufrag.remove(&old);
        self.by_ufrag.insert(new, key);
        Ok(ice)
    }

    /// Adds a producer on a send transport of room `room`, whose speaker detector runs
    /// on worker `home` (the router handle adds it there, under `speaker_key`).
    pub(crate) fn produce(
        &mut self,
        (room, home, speaker_key): (RoomKey, usize, u32),
        id: ProducerId,
        transport_id: &TransportId,
        owner: &PeerId,
        stream: ProducerStream,
    ) -> Result<(), MediaError> {
        let key = self.key_of(transport_id, owner)?;
        let transport = self.transport_of(transport_id, owner)?;
        if transport.direction != Direction::Send {
            return Err(MediaError::InvalidState(format!(
                "transport '{transport_id}' is a recv transport; produce needs a send transport"
            )));
        }
        if transport.producers.contains_key(&stream.ssrc) {
            return Err(MediaError::InvalidState(format!(
                "ssrc {} is already produced on this transport",
                stream.ssrc
            )));
        }
        let mid = transport.declare_mid(&stream.mid)?;
        transport.expect_stream(mid, stream.ssrc);
        transport.producers.insert(stream.ssrc, id.clone());
        if let Some(ext) = stream.audio_level_id {
            transport.set_audio_level_id(ext);
        }
        let producer = Producer {
            transport: key,
            stream,
            paused: false,
            consumers: Vec::new(),
            packets: 0,
            bytes: 0,
            policer: Default::default(),
            room,
            speaker_key,
            home,
            key: NEXT_PRODUCER.fetch_add(1, Ordering::Relaxed),
            subscribers: Vec::new(),
            epoch: 0,
        };
        self.producers.insert(id, producer);
        Ok(())
    }

    /// Adds a (paused) consumer of `producer` on a recv transport of `owner`, with a
    /// new SSRC; its RTP parameters follow the consuming device's capabilities. The
    /// producer is this worker's, or another's that `remote` subscribed to.
    pub(crate) fn consume(
        &mut self,
        id: ConsumerId,
        transport_id: &TransportId,
        owner: &PeerId,
        (producer_id, remote): (ProducerId, Option<Subscription>),
        caps: &RtpCapabilities,
    ) -> Result<ConsumeResult, MediaError> {
        let key = self.key_of(transport_id, owner)?;
        let transport = self.transport_of(transport_id, owner)?;
        if transport.direction != Direction::Recv {
            return Err(MediaError::InvalidState(format!(
                "transport '{transport_id}' is a send transport; consume needs a recv transport"
            )));
        }
        let local = self.producers.get(&producer_id).map(|p| (&p.stream, p.paused));
        let Some((stream, producer_paused)) = local.or(remote.as_ref().map(|r| (&r.stream, r.paused))) else {
            return Err(MediaError::not_found("producer", &producer_id));
        };
        let stream = stream.clone();
        let random = uuid::Uuid::new_v4().as_u128();
        let ssrc = (random as u32).max(1);
        let rtp_parameters = {
            let transport = self.transport_of(transport_id, owner)?;
            let mid = (0u32..).map(|n| n.to_string()).find(|m| !transport.mids.contains(m)).unwrap_or_default();
            transport.declare_mid(&mid)?;
            router::consumer_parameters(&stream, caps, mid, ssrc)
        };
        let mid_ext = rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == router::MID_URI)
            .map(|e| e.id)
            .zip(rtp_parameters.mid.as_deref());
        let level_ext =
            rtp_parameters.header_extensions.iter().find(|e| e.uri == router::AUDIO_LEVEL_URI).map(|e| e.id);
        let cname = rtp_parameters.rtcp.cname.clone().unwrap_or_default();
        let consumer = Consumer {
            id: id.clone(),
            transport: key,
            producer: producer_id.clone(),
            mid: rtp_parameters.mid.clone().unwrap_or_default().into(),
            ssrc,
            paused: true,
            seq: SeqRewriter::new(((random >> 64) & 0x3fff) as u64),
            timestamp_offset: (random >> 96) as u32,
            header: RtpHeader::new(router::OPUS_PT, ssrc, mid_ext, level_ext),
            cname: cname.into(),
            sent: SentClock::new(Instant::now()),
        };
        let consumer_key = self.consumers.insert(consumer);
        self.consumer_keys.insert(id.clone(), consumer_key);
        match (self.producers.get_mut(&producer_id), &remote) {
            (Some(p), _) => p.consumers.push(consumer_key),
            (None, Some(sub)) => self.attach_remote(sub, &producer_id, consumer_key),
            (None, None) => {}
        }
        Ok(ConsumeResult { id, producer_id, kind: MediaKind::Audio, rtp_parameters, producer_paused })
    }

    /// Pauses or resumes a producer of `owner`.
    pub(crate) fn set_producer_paused(
        &mut self,
        id: &ProducerId,
        owner: &PeerId,
        paused: bool,
    ) -> Result<(), MediaError> {
        self.owned_producer(id, owner)?;
        let producer = self.producers.get_mut(id).ok_or_else(|| MediaError::not_found("producer", id))?;
        if producer.paused && !paused {
            producer.epoch = producer.epoch.wrapping_add(1);
            for &c in &producer.consumers {
                if let Some(c) = self.consumers.get_mut(c) {
                    c.seq.resync();
                }
            }
        }
        producer.paused = paused;
        Ok(())
    }

    /// Pauses or resumes a consumer of `owner`.
    pub(crate) fn set_consumer_paused(
        &mut self,
        id: &ConsumerId,
        owner: &PeerId,
        paused: bool,
    ) -> Result<(), MediaError> {
        let consumer = match self.consumer_keys.get(id).and_then(|&k| self.consumers.get_mut(k)) {
            Some(c) if owned_by(&self.transports, c.transport, owner) => c,
            _ => return Err(MediaError::not_found("consumer", id)),
        };
        if consumer.paused && !paused {
            consumer.seq.resync();
        }
        consumer.paused = paused;
        Ok(())
    }

    /// Closes a producer of `owner` and its consumers; returns the consumers closed.
    pub(crate) fn close_owned_producer(
        &mut self,
        id: &ProducerId,
        owner: &PeerId,
    ) -> Result<Vec<ClosedConsumer>, MediaError> {
        self.owned_producer(id, owner)?;
        Ok(self.close_producer(id))
    }

    /// Fails unless `id` is a producer on a transport of `owner`.
    fn owned_producer(&self, id: &ProducerId, owner: &PeerId) -> Result<(), MediaError> {
        match self.producers.get(id) {
            Some(p) if owned_by(&self.transports, p.transport, owner) => Ok(()),
            _ => Err(MediaError::not_found("producer", id)),
        }
    }

    /// Closes a producer and its consumers; returns the consumers closed.
    fn close_producer(&mut self, id: &ProducerId) -> Vec<ClosedConsumer> {
        let Some(producer) = self.producers.remove(id) else {
            return Vec::new();
        };
        if let Some(t) = self.transports.get_mut(producer.transport) {
            t.producers.remove(&producer.stream.ssrc);
            t.remove_mid(&producer.stream.mid);
        }
        producer
            .consumers
            .into_iter()
            .filter_map(|key| {
                let c = self.consumers.get(key)?.id.clone();
                let owner = self.remove_consumer(&c)?;
                Some(ClosedConsumer { consumer: c, producer: id.clone(), owner })
            })
            .collect()
    }

    /// Closes a consumer; returns its owner if it existed.
    pub(crate) fn remove_consumer(&mut self, id: &ConsumerId) -> Option<PeerId> {
        let key = self.consumer_keys.remove(id)?;
        let consumer = self.consumers.try_remove(key)?;
        match self.producers.get_mut(&consumer.producer) {
            Some(p) => p.consumers.retain(|&c| c != key),
            None => self.detach_remote(&consumer.producer, key),
        }
        // Its transport is gone when the transport closes; nobody needs the owner then.
        let t = self.transports.get_mut(consumer.transport)?;
        t.remove_mid(&consumer.mid);
        Some(t.owner.clone())
    }

    /// Closes a consumer of `owner`.
    pub(crate) fn close_consumer(&mut self, id: &ConsumerId, owner: &PeerId) -> Result<(), MediaError> {
        match self.consumer_keys.get(id).and_then(|&k| self.consumers.get(k)) {
            Some(c) if owned_by(&self.transports, c.transport, owner) => {
                self.remove_consumer(id);
                Ok(())
            }
            _ => Err(MediaError::not_found("consumer", id)),
        }
    }

    /// Closes every transport of `owner` with everything on it; returns consumers of
    /// other peers (on this worker) that were closed because a producer on those
    /// transports closed, and those producers.
    pub(crate) fn close_peer(&mut self, owner: &PeerId) -> (Vec<ClosedConsumer>, Vec<ProducerId>) {
        let ids: Vec<TransportId> =
            self.transports.iter().filter(|(_, t)| &t.owner == owner).map(|(_, t)| t.id.clone()).collect();
        let (mut closed, mut producers) = (Vec::new(), Vec::new());
        for id in &ids {
            self.close_transport(id, &mut closed, &mut producers);
        }
        (closed, producers)
    }

    /// Closes a transport with everything on it; adds the consumers of other peers
    /// closed because a producer on this transport closed, and those producers.
    fn close_transport(&mut self, id: &TransportId, closed: &mut Vec<ClosedConsumer>, gone: &mut Vec<ProducerId>) {
        let Some(key) = self.transport_keys.remove(id) else {
            return;
        };
        let Some(mut transport) = self.transports.try_remove(key) else {
            return;
        };
        self.by_ufrag.remove(&transport.local_ufrag);
        self.detach(key, transport.take_remotes());
        let producers: Vec<ProducerId> = transport.producers.values().cloned().collect();
        for p in producers {
            closed.extend(self.close_producer(&p));
            gone.push(p);
        }
        let consumers: Vec<ConsumerId> =
            self.consumers.iter().filter(|(_, c)| c.transport == key).map(|(_, c)| c.id.clone()).collect();
        for c in consumers {
            self.remove_consumer(&c);
        }
    }

    /// What a lite transport's client sent (SRTCP accepted and rejected), `None` while
    /// the transport keeps its `Rtc` (tests).
    #[cfg(test)]
    pub(crate) fn lite_counters(&self, id: &TransportId) -> Option<crate::lite::LiteCounters> {
        self.transport_keys.get(id).and_then(|&k| self.transports.get(k)).and_then(|t| t.lite_counters())
    }

    /// Whether producer `id` of this worker is paused (false once it is closed).
    pub(crate) fn producer_paused(&self, id: &ProducerId) -> bool {
        self.producers.get(id).is_some_and(|p| p.paused)
    }

    /// Statistics of a transport, producer or consumer of `owner`; a consumer's
    /// producer on another worker is paused as `far_paused` says (its worker's answer).
    pub(crate) fn stats(&self, id: &str, owner: &PeerId, far_paused: Option<bool>) -> Result<Stats, MediaError> {
        let transport = self.transport_keys.get(&TransportId::from(id)).and_then(|&k| self.transports.get(k));
        if let Some(t) = transport.filter(|t| &t.owner == owner) {
            return Ok(Stats::Transport {
                id: t.id.clone(),
                ice_state: format!("{:?}", t.ice_state(Instant::now())).to_lowercase(),
                dtls_state: t.dtls.as_str().into(),
                packets_received: t.out.counters.packets_received as u32,
                packets_sent: t.out.counters.packets_sent as u32,
                bytes_received: t.out.counters.bytes_received as f64,
                bytes_sent: t.out.counters.bytes_sent as f64,
            });
        }
        if let Some(p) = self.producers.get(&ProducerId::from(id)) {
            let owned = owned_by(&self.transports, p.transport, owner);
            if owned {
                return Ok(Stats::Producer {
                    id: ProducerId::from(id),
                    paused: p.paused,
                    ssrc: p.stream.ssrc,
                    packets_received: p.packets as u32,
                    bytes_received: p.bytes as f64,
                });
            }
        }
        let consumer = self.consumer_keys.get(&ConsumerId::from(id)).and_then(|&k| self.consumers.get(k));
        if let Some(c) = consumer.filter(|c| owned_by(&self.transports, c.transport, owner)) {
            let producer_paused = far_paused.unwrap_or_else(|| self.producer_paused(&c.producer));
            return Ok(Stats::Consumer {
                id: ConsumerId::from(id),
                paused: c.paused,
                producer_paused,
                ssrc: c.ssrc,
                packets_sent: c.sent.packets as u32,
                bytes_sent: c.sent.octets as f64,
            });
        }
        Err(MediaError::not_found("transport, producer or consumer", id))
    }
}
