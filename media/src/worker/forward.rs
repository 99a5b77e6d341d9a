//! The per-packet path: RTP received from producers, written to their consumers'
//! transports with SSRC, payload type, sequence number and timestamp rewritten.

use std::time::Instant;

use str0m::rtp::RtpPacket;

use super::{SEND_BATCH, TransportKey, Worker, flush};
use crate::traffic::DropReason;
use crate::transport::Sink;

/// Rewrites a producer's sequence numbers into a consumer's continuous sequence: the
/// first packet after a (re)start continues right after the last one sent, and gaps
/// from upstream loss are kept.
#[derive(Debug)]
pub(super) struct SeqRewriter {
    last_out: u64,
    offset: i64,
    /// Lowest output number of the current run; older packets are dropped.
    run_start: u64,
    synced: bool,
}

impl SeqRewriter {
    pub(super) fn new(start: u64) -> Self {
        SeqRewriter { last_out: start, offset: 0, run_start: start, synced: false }
    }

    fn rewrite(&mut self, seq_in: u64) -> Option<u64> {
        if !self.synced {
            self.offset = (self.last_out + 1) as i64 - seq_in as i64;
            self.run_start = self.last_out + 1;
            self.synced = true;
        }
        let out = u64::try_from(seq_in as i64 + self.offset).ok()?;
        if out < self.run_start {
            return None;
        }
        self.last_out = self.last_out.max(out);
        Some(out)
    }

    pub(super) fn resync(&mut self) {
        self.synced = false;
    }
}

impl Worker {
    /// Forwards the RTP received in this wake-up, then lets every transport written to
    /// send what it got (one str0m timeout each, however many packets).
    pub(super) fn forward_all(&mut self, now: Instant) {
        let mut rtp = std::mem::take(&mut self.rtp);
        for (from, packet) in rtp.drain(..) {
            self.forward(from, &packet, now);
        }
        self.rtp = rtp;
        for key in self.written.drain(..) {
            if let Some(t) = self.transports.get_mut(key) {
                t.timeout(now, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
                Self::schedule(&mut self.timers, key, t);
            }
            // Send as we go, so the first consumers do not wait for the last ones.
            if self.out.len() >= SEND_BATCH {
                self.tcp_dropped += flush(&self.socket, self.tcp.as_ref(), &mut self.out);
            }
        }
        // Consumer transports never yield RTP; drop anything unexpected.
        self.drained.clear();
    }

    /// Writes one producer packet to every active consumer of it.
    fn forward(&mut self, from: TransportKey, packet: &RtpPacket, now: Instant) {
        let Some(transport) = self.transports.get(from) else {
            return;
        };
        let Some(producer_id) = transport.producers.get(&*packet.header.ssrc) else {
            return;
        };
        let Some(producer) = self.producers.get_mut(producer_id) else {
            return;
        };
        producer.packets += 1;
        producer.bytes += packet.payload.len() as u64;
        self.traffic.packets_received += 1;
        self.traffic.bytes_received += packet.payload.len() as u64;
        if producer.paused {
            return self.traffic.drop(DropReason::ProducerPaused);
        }
        if *packet.header.payload_type != producer.stream.payload_type {
            return self.traffic.drop(DropReason::PayloadType);
        }
        if !producer.policer.admit(now, packet.payload.len()) {
            let dropped = producer.policer.dropped;
            if dropped.is_power_of_two() {
                tracing::debug!(producer = %producer_id, dropped, "policing a producer over its rate");
            }
            return self.traffic.drop(DropReason::Policed);
        }
        super::speakers::observe(&mut self.rooms, producer, packet, now);
        for consumer_id in &producer.consumers {
            let Some(consumer) = self.consumers.get_mut(consumer_id) else {
                continue;
            };
            if consumer.paused {
                self.traffic.drop(DropReason::ConsumerPaused);
                continue;
            }
            let Some(target) = self.transports.get_mut(consumer.transport) else {
                continue;
            };
            if !target.is_connected() {
                self.traffic.drop(DropReason::NotConnected);
                continue;
            }
            let Some(seq) = consumer.seq.rewrite(*packet.seq_no) else {
                self.traffic.drop(DropReason::Stale);
                continue;
            };
            let timestamp = packet.header.timestamp.wrapping_add(consumer.timestamp_offset);
            let first = !target.written;
            if target.write_rtp(now, consumer.ssrc, seq, timestamp, packet.header.marker, packet.payload.clone()) {
                consumer.packets += 1;
                consumer.bytes += packet.payload.len() as u64;
                self.traffic.packets_sent += 1;
                self.traffic.bytes_sent += packet.payload.len() as u64;
                if first {
                    self.written.push(consumer.transport);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeqRewriter;

    #[test]
    fn sequence_continues_across_pauses_and_keeps_gaps() {
        let mut s = SeqRewriter::new(100);
        assert_eq!(s.rewrite(5000), Some(101));
        assert_eq!(s.rewrite(5001), Some(102));
        assert_eq!(s.rewrite(5003), Some(104), "upstream loss stays a gap");
        assert_eq!(s.rewrite(5002), Some(103), "reordered packets pass");
        s.resync();
        assert_eq!(s.rewrite(9000), Some(105), "after a pause the stream continues");
        assert_eq!(s.rewrite(8999), None, "packets from before the pause are dropped");
        assert_eq!(s.rewrite(9001), Some(106));
    }
}
