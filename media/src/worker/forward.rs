//! The per-packet path, outside str0m: RTP received from producers is written to
//! each consumer with its prebuilt header (SSRC, payload type, `mid`), the sequence
//! number, timestamp, marker and the producer packet's audio level patched, sealed in place with the consumer
//! transport's SRTP context into the worker's arena, and sent to the client address
//! that has consent. Also the consumers' sender reports (SRTCP), about once a second.
//!
//! str0m has no stream on a consumer's SSRC, so the worker is the only sender of RTP
//! and RTCP on it: no SRTP index (and no AES-GCM nonce) is ever used twice.

use std::time::{Instant, SystemTime};

use str0m::rtp::RtpPacket;

use super::{SEND_BATCH, TransportKey, Worker};
use crate::egress::{self, SENDER_REPORT_MAX};
use crate::router::OPUS_CLOCK_RATE;
use crate::traffic::DropReason;
use crate::udp::Route;

/// An input sequence jump larger than this (either way) restarts the output run
/// right after the last number sent, so receivers never have to guess a rollover
/// counter across a jump (RFC 3711 Appendix A guesses within 2^15).
const MAX_SEQ_JUMP: u64 = 3_000;

/// Rewrites a producer's sequence numbers into a consumer's continuous sequence: the
/// first packet after a (re)start continues right after the last one sent, and gaps
/// from upstream loss are kept. The output is the 64-bit SRTP index: its top 48 bits
/// are the rollover counter.
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
        let jumped = |offset: i64, last_out: u64| (seq_in as i64 + offset).abs_diff(last_out as i64) > MAX_SEQ_JUMP;
        if !self.synced || jumped(self.offset, self.last_out) {
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
    /// Forwards the RTP received in this wake-up.
    pub(super) fn forward_all(&mut self, now: Instant) {
        let mut rtp = std::mem::take(&mut self.rtp);
        for (from, packet) in rtp.drain(..) {
            self.forward(from, &packet, now);
        }
        self.rtp = rtp;
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
        let payload = &packet.payload[..];
        producer.packets += 1;
        producer.bytes += payload.len() as u64;
        self.traffic.packets_received += 1;
        self.traffic.bytes_received += payload.len() as u64;
        if producer.paused {
            return self.traffic.drop(DropReason::ProducerPaused);
        }
        if *packet.header.payload_type != producer.stream.payload_type {
            return self.traffic.drop(DropReason::PayloadType);
        }
        if !producer.policer.admit(now, payload.len()) {
            let dropped = producer.policer.dropped;
            if dropped.is_power_of_two() {
                tracing::debug!(producer = %producer_id, dropped, "policing a producer over its rate");
            }
            return self.traffic.drop(DropReason::Policed);
        }
        super::speakers::observe(&mut self.rooms, producer, packet, now);
        let ext = &packet.header.ext_vals;
        let level = egress::level_byte(ext.audio_level, ext.voice_activity);
        for &consumer_key in &producer.consumers {
            let Some(consumer) = self.consumers.get_mut(consumer_key) else {
                continue;
            };
            if consumer.paused {
                self.traffic.drop(DropReason::ConsumerPaused);
                continue;
            }
            let Some(target) = self.transports.get_mut(consumer.transport) else {
                continue;
            };
            let Some(srtp) = target.srtp.as_ref().filter(|_| target.is_connected()) else {
                self.traffic.drop(DropReason::NotConnected);
                continue;
            };
            let Some(remote) = target.destination(now) else {
                self.traffic.drop(DropReason::NoConsent);
                continue;
            };
            let Some(seq) = consumer.seq.rewrite(*packet.seq_no) else {
                self.traffic.drop(DropReason::Stale);
                continue;
            };
            let timestamp = packet.header.timestamp.wrapping_add(consumer.timestamp_offset);
            let header = &consumer.header;
            let max = header.len() + payload.len() + srtp.profile().rtp_overhead();
            let arena = match remote.route {
                Route::Udp(_) => &mut self.arena,
                Route::Tcp(_) => &mut self.tcp_arena,
            };
            let sealed = arena.push(remote.addr, remote.route, max, |buf| {
                let header_len = header.write(buf, seq as u16, timestamp, packet.header.marker, level);
                buf[header_len..header_len + payload.len()].copy_from_slice(payload);
                srtp.seal_rtp(buf, header_len + payload.len(), header_len, seq).ok()
            });
            let Some(sealed) = sealed else {
                // Only a sealing failure (never expected): the packet is not sent.
                tracing::warn!(transport = %target.id, "SRTP sealing failed");
                continue;
            };
            consumer.sent.sent(now, timestamp, payload.len());
            target.count_sent(sealed);
            self.traffic.packets_sent += 1;
            self.traffic.bytes_sent += payload.len() as u64;
            // Send as we go, so the first consumers do not wait for the last ones.
            if self.arena.len() >= SEND_BATCH {
                self.socket.send_arena(&mut self.arena);
            }
        }
    }

    /// Sends the sender report + SDES of every consumer that is due one (about once a
    /// second per consumer that has sent something), sealed with SRTCP.
    pub(super) fn send_reports(&mut self, now: Instant) {
        let wall = SystemTime::now();
        for (_, consumer) in self.consumers.iter_mut() {
            if !consumer.sent.report_due(now) {
                continue;
            }
            let Some(target) = self.transports.get_mut(consumer.transport) else {
                continue;
            };
            let Some(srtp) = target.srtp.as_ref().filter(|_| target.is_connected()) else {
                continue;
            };
            let Some(remote) = target.destination(now) else {
                continue;
            };
            let index = target.srtcp_index;
            let arena = match remote.route {
                Route::Udp(_) => &mut self.arena,
                Route::Tcp(_) => &mut self.tcp_arena,
            };
            let max = SENDER_REPORT_MAX + srtp.profile().rtcp_overhead();
            let sealed = arena.push(remote.addr, remote.route, max, |buf| {
                let len = egress::write_sender_report(
                    buf,
                    consumer.ssrc,
                    &consumer.sent,
                    OPUS_CLOCK_RATE,
                    &consumer.cname,
                    now,
                    wall,
                );
                srtp.seal_rtcp(buf, len, index).ok()
            });
            if let Some(sealed) = sealed {
                target.srtcp_index = (index + 1) & 0x7fff_ffff;
                target.count_sent(sealed);
            }
            if self.arena.len() >= SEND_BATCH {
                self.socket.send_arena(&mut self.arena);
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

    /// A producer whose sequence jumps (a restart, a bug) does not make the consumer's
    /// jump: the receiver would guess the rollover counter wrong past 2^15.
    #[test]
    fn a_sequence_jump_continues_the_run() {
        let mut s = SeqRewriter::new(65_530);
        assert_eq!(s.rewrite(10), Some(65_531));
        assert_eq!(s.rewrite(11), Some(65_532));
        assert_eq!(s.rewrite(40_000), Some(65_533), "forward jump");
        assert_eq!(s.rewrite(40_001), Some(65_534));
        assert_eq!(s.rewrite(40_003), Some(65_536), "a small gap stays, across the rollover");
        assert_eq!(s.rewrite(100), Some(65_537), "backward jump");
        assert_eq!(s.rewrite(40_002), Some(65_538), "a jump back again restarts, never reuses an index");
    }
}
