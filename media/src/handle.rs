//! [`RouterHandle`]: the typed API of the media engine, one per room.
//!
//! Every method is async: it validates what needs no state, sends one command to the
//! room's worker and awaits the answer. The caller passes the ids it generated and
//! the peer it acts for; the worker checks ownership, direction and state, so a
//! session can only touch what its peer owns. The handle holds the room's place on its
//! worker: dropping it frees the place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One room's router: its place on a media worker and the typed engine API.
#[derive(Debug)]
pub struct RouterHandle {
    worker: WorkerHandle,
    /// The room's key on its worker.
    room: RoomKey,
    /// The host candidates of the worker's port.
    candidates: Arc<[IceCandidate]>,
    /// The server certificate's fingerprints, sha-1 to sha-512.
    fingerprints: Arc<[DtlsFingerprint]>,
}

impl RouterHandle {
    /// Takes a place on `worker` (released on drop); returns the handle and the room's
    /// upward channel (voice activity), which ends when the handle is dropped.
    pub(crate) fn new(
        worker: WorkerHandle,
        candidates: Arc<[IceCandidate]>,
        fingerprints: Arc<[DtlsFingerprint]>,
    ) -> (Self, RouterEvents) {
        worker.counts.rooms.fetch_add(1, Ordering::Relaxed);
        let room = NEXT_ROOM.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = speaker::channel();
        worker.post(move |w| w.open_room(room, tx));
        (RouterHandle { worker, room, candidates, fingerprints }, rx)
    }

    /// The index of the worker the room is on.
    pub fn worker_index(&self) -> usize {
        self.worker.index
    }

    /// What a lite (connected listener) transport's client sent; `None` while it keeps
    /// its `Rtc` (tests).
    #[cfg(test)]
    pub(crate) async fn lite_counters(&self, id: TransportId) -> Option<crate::lite::LiteCounters> {
        self.worker.call(move |w| Ok(w.lite_counters(&id))).await.ok().flatten()
    }

    /// Creates a WebRTC transport owned by `owner`: its ICE parameters, candidates and
    /// DTLS fingerprints, for the client.
    pub async fn create_transport(
        &self,
        id: TransportId,
        owner: PeerId,
        direction: Direction,
    ) -> Result<CreateTransportResult, MediaError> {
        let transport = id.clone();
        let ice_parameters = self.worker.call(move |w| w.create_transport(transport, owner, direction)).await?;
        Ok(CreateTransportResult {
            id,
            ice_parameters,
            ice_candidates: self.candidates.to_vec(),
            dtls_parameters: DtlsParameters { role: DtlsRole::Auto, fingerprints: self.fingerprints.to_vec() },
        })
    }

    /// Starts DTLS on a transport of `owner` with the client's role and fingerprints
    /// (the strongest one is verified once the handshake is done).
    pub async fn connect(&self, id: TransportId, owner: PeerId, dtls: DtlsParameters) -> Result<(), MediaError> {
        let expected = expected_fingerprint(&dtls.fingerprints)?;
        self.worker.call(move |w| w.connect_transport(&id, &owner, expected, dtls.role)).await
    }

    /// New server ICE credentials for a transport of `owner`.
    pub async fn restart_ice(&self, id: TransportId, owner: PeerId) -> Result<IceParameters, MediaError> {
        self.worker.call(move |w| w.restart_ice(&id, &owner)).await
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
        let room = self.room;
        self.worker.call(move |w| w.produce(room, id, &transport, &owner, stream)).await
    }

    /// A paused consumer of `producer` on a recv transport of `owner`, with RTP
    /// parameters for a device with `caps`.
    pub async fn consume(
        &self,
        id: ConsumerId,
        transport: TransportId,
        owner: PeerId,
        producer: ProducerId,
        caps: RtpCapabilities,
    ) -> Result<ConsumeResult, MediaError> {
        router::check_can_consume(&caps)?;
        self.worker.call(move |w| w.consume(id, &transport, &owner, producer, &caps)).await
    }

    /// Pauses or resumes a producer of `owner`.
    pub async fn set_producer_paused(&self, id: ProducerId, owner: PeerId, paused: bool) -> Result<(), MediaError> {
        self.worker.call(move |w| w.set_producer_paused(&id, &owner, paused)).await
    }

    /// Pauses or resumes a consumer of `owner`.
    pub async fn set_consumer_paused(&self, id: ConsumerId, owner: PeerId, paused: bool) -> Result<(), MediaError> {
        self.worker.call(move |w| w.set_consumer_paused(&id, &owner, paused)).await
    }

    /// Closes a producer of `owner`; returns the consumers closed with it.
    pub async fn close_producer(&self, id: ProducerId, owner: PeerId) -> Result<Vec<ClosedConsumer>, MediaError> {
        self.worker.call(move |w| w.close_owned_producer(&id, &owner)).await
    }

    /// Closes a consumer of `owner`.
    pub async fn close_consumer(&self, id: ConsumerId, owner: PeerId) -> Result<(), MediaError> {
        self.worker.call(move |w| w.close_consumer(&id, &owner)).await
    }

    /// Closes every transport of `owner` with its producers and consumers; returns the
    /// consumers of other peers closed because one of those producers closed.
    pub async fn close_peer(&self, owner: PeerId) -> Result<Vec<ClosedConsumer>, MediaError> {
        self.worker.call(move |w| Ok(w.close_peer(&owner))).await
    }

    /// Statistics of a transport, producer or consumer of `owner`.
    pub async fn stats(&self, id: String, owner: PeerId) -> Result<Stats, MediaError> {
        self.worker.call(move |w| w.stats(&id, &owner)).await
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.worker.counts.rooms.fetch_sub(1, Ordering::Relaxed);
        let room = self.room;
        self.worker.post(move |w| w.close_room(room));
    }
}
