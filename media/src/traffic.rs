//! Per-worker traffic counters for monitoring, read on scrape.
//!
//! The worker counts into plain integers of its own ([`LocalTraffic`]) on the
//! per-packet path: no lock, no atomic read-modify-write, no allocation. Once per
//! wake-up it publishes them with relaxed stores into the [`Traffic`] its handle
//! shares, which a scrape reads without asking the worker.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Why a worker dropped an RTP packet (or, for `Unroutable`, a datagram; for
/// `SrtcpRejected`, an RTCP packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The producer is paused: its packets go to no consumer.
    ProducerPaused,
    /// Not forwarded to one consumer because that consumer is paused.
    ConsumerPaused,
    /// Not forwarded to one consumer whose transport has not connected yet.
    NotConnected,
    /// The payload type is not the producer's.
    PayloadType,
    /// Older than what a consumer already sent (from before a pause).
    Stale,
    /// Over the producer's policed rate (`police`).
    Policed,
    /// A datagram that belongs to no transport (unknown source, unsigned ICE check).
    Unroutable,
    /// Not forwarded to one consumer whose client has sent no valid ICE check for the
    /// consent timeout (RFC 7675).
    NoConsent,
    /// Not handed to another worker with consumers of the producer because the ring
    /// to it was full (`cross`), or a level sample not handed to the room's detector.
    HandoffFull,
    /// An SRTCP packet from a lite listener transport's client that did not open:
    /// failed authentication, a replay, or too short or long (`lite`).
    SrtcpRejected,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 10] = [
        DropReason::ProducerPaused,
        DropReason::ConsumerPaused,
        DropReason::NotConnected,
        DropReason::PayloadType,
        DropReason::Stale,
        DropReason::Policed,
        DropReason::Unroutable,
        DropReason::NoConsent,
        DropReason::HandoffFull,
        DropReason::SrtcpRejected,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::ProducerPaused => "producer_paused",
            DropReason::ConsumerPaused => "consumer_paused",
            DropReason::NotConnected => "not_connected",
            DropReason::PayloadType => "payload_type",
            DropReason::Stale => "stale",
            DropReason::Policed => "policed",
            DropReason::Unroutable => "unroutable",
            DropReason::NoConsent => "no_consent",
            DropReason::HandoffFull => "handoff_full",
            DropReason::SrtcpRejected => "srtcp_rejected",
        }
    }
}

/// The worker's own running totals.
#[derive(Debug, Default)]
pub(crate) struct LocalTraffic {
    pub(crate) packets_received: u64,
    /// RTP payload bytes received from producers.
    pub(crate) bytes_received: u64,
    pub(crate) packets_sent: u64,
    /// RTP payload bytes sent to consumers.
    pub(crate) bytes_sent: u64,
    /// Producer packets handed to other workers (one per subscribing worker).
    pub(crate) handed_over: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl LocalTraffic {
    /// Counts one dropped packet.
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    /// Makes the totals visible to scrapes.
    pub(crate) fn publish(&self, to: &Traffic) {
        to.packets_received.store(self.packets_received, Ordering::Relaxed);
        to.bytes_received.store(self.bytes_received, Ordering::Relaxed);
        to.packets_sent.store(self.packets_sent, Ordering::Relaxed);
        to.bytes_sent.store(self.bytes_sent, Ordering::Relaxed);
        to.handed_over.store(self.handed_over, Ordering::Relaxed);
        for (shared, local) in to.dropped.iter().zip(self.dropped) {
            shared.store(local, Ordering::Relaxed);
        }
    }
}

/// The published totals of one worker, and its thread id (for its CPU time).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    handed_over: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// The worker thread's kernel thread id, 0 until it runs (Linux only).
    tid: AtomicI32,
}

/// A copy of one worker's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// RTP packets received from producers.
    pub packets_received: u64,
    /// RTP payload bytes received from producers.
    pub bytes_received: u64,
    /// RTP packets sent to consumers.
    pub packets_sent: u64,
    /// RTP payload bytes sent to consumers.
    pub bytes_sent: u64,
    /// Producer packets handed to other workers with consumers of the producer (one
    /// per packet and subscribing worker).
    pub handed_over: u64,
    /// Dropped packets, indexed by [`DropReason`] (`reason as usize`).
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Traffic {
    /// Reads the published totals.
    pub(crate) fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            packets_received: self.packets_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            packets_sent: self.packets_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
            dropped: std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed)),
        }
    }

    /// Records the calling thread as the worker's thread.
    pub(crate) fn set_current_thread(&self) {
        #[cfg(target_os = "linux")]
        self.tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    }

    /// The worker thread's kernel id, once it runs.
    pub(crate) fn thread_id(&self) -> Option<i32> {
        Some(self.tid.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_makes_local_totals_visible() {
        let mut local = LocalTraffic::default();
        local.packets_received += 3;
        local.bytes_sent += 120;
        local.drop(DropReason::Stale);
        local.drop(DropReason::Stale);
        local.drop(DropReason::Unroutable);
        let shared = Traffic::default();
        assert_eq!(shared.snapshot(), TrafficSnapshot::default());
        local.publish(&shared);
        let s = shared.snapshot();
        assert_eq!((s.packets_received, s.bytes_sent), (3, 120));
        assert_eq!(s.dropped[DropReason::Stale as usize], 2);
        assert_eq!(s.dropped[DropReason::Unroutable as usize], 1);
        assert_eq!(s.dropped.iter().sum::<u64>(), 3);
    }
}
