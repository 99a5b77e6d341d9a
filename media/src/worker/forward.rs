//! The per-packet path, outside str0m: RTP received from producers is written to
//! each consumer with its prebuilt header (SSRC, payload type, `mid`), the sequence
//! number, timestamp, marker and the producer packet's audio level patched, sealed in place with the consumer
//! transport's SRTP context into the worker's arena, and sent to the client address
//! that has consent. Also the consumers' sender reports (SRTCP), about once a second.
//! [`Egress::fan_out`] serves local producers and those of other workers alike
//! (`remote`): policing and sequence rewriting are the same for both.
//!
//! str0m has no stream on a consumer's SSRC, so the worker is the only sender of RTP
//! and RTCP on it: no SRTP index (and no AES-GCM nonce) is ever used twice.

use std::time::{Instant, SystemTime};

use str0m::rtp::RtpPacket;

use slab::Slab;

use super::{Consumer, ConsumerKey, SEND_BATCH, TransportKey, Worker};
use crate::cross::{Handoff, LevelSample};
use crate::egress::{self, SENDER_REPORT_MAX};
use crate::router::OPUS_CLOCK_RATE;
use crate::traffic::DropReason;
use crate::traffic::LocalTraffic;
use crate::transport::{Transport, Unsendable};
use crate::udp::{Arena, MediaSocket, Route};

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

    /// Checks one producer packet, hands it to the workers with consumers of it
    /// (`cross`) and its level to the room's detector, and writes it to every active
    /// local consumer.
    fn forward(&mut self, from: TransportKey, packet: &RtpPacket, now: Instant) {
        let Worker { transports, producers, consumers, rooms, links, traffic, arena, tcp_arena, socket, .. } = self;
        let Some(transport) = transports.get(from) else {
            return;
        };
        let Some(producer_id) = transport.producers.get(&*packet.header.ssrc) else {
            return;
        };
        let Some(producer) = producers.get_mut(producer_id) else {
            return;
        };
        let payload = &packet.payload[..];
        producer.packets += 1;
        producer.bytes += payload.len() as u64;
        traffic.packets_received += 1;
        traffic.bytes_received += payload.len() as u64;
        if producer.paused {
            return traffic.drop(DropReason::ProducerPaused);
        }
        if *packet.header.payload_type != producer.stream.payload_type {
            return traffic.drop(DropReason::PayloadType);
        }
        if !producer.policer.admit(now, payload.len()) {
            let dropped = producer.policer.dropped;
            if dropped.is_power_of_two() {
                tracing::debug!(producer = %producer_id, dropped, "policing a producer over its rate");
            }
            return traffic.drop(DropReason::Policed);
        }
        let ext = &packet.header.ext_vals;
        if let Some(level) = ext.audio_level {
            let sample = LevelSample {
                room: producer.room,
                speaker: producer.speaker_key,
                level: level.unsigned_abs(),
                arrival: now,
            };
            if producer.home == links.index {
                super::speakers::observe(rooms, &sample);
            } else if !links.push_level(producer.home, &sample) {
                traffic.drop(DropReason::HandoffFull);
            }
        }
        let handoff = Handoff {
            producer: producer.key,
            epoch: producer.epoch,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            level: egress::level_byte(ext.audio_level, ext.voice_activity),
            arrival: now,
            payload,
        };
        for &(to, _) in &producer.subscribers {
            if links.push_packet(to, &handoff) {
                traffic.handed_over += 1;
            } else {
                traffic.drop(DropReason::HandoffFull);
            }
        }
        Egress { consumers, transports, arena, tcp_arena, socket, traffic }.fan_out(&producer.consumers, &handoff, now);
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
            let Ok(to) = target.outbound(now) else {
                continue;
            };
            let index = *to.srtcp_index;
            let arena = match to.route {
                Route::Udp(_) => &mut self.arena,
                Route::Tcp(_) => &mut self.tcp_arena,
            };
            let srtp = to.srtp;
            let max = SENDER_REPORT_MAX + srtp.profile().rtcp_overhead();
            let sealed = arena.push(to.addr, to.route, max, |buf| {
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
                *to.srtcp_index = (index + 1) & 0x7fff_ffff;
                to.counters.count_sent(sealed);
            }
            if self.arena.len() >= SEND_BATCH {
                self.socket.send_arena(&mut self.arena);
            }
        }
    }
}

/// What the fan-out writes to: the worker's consumers, transports, arenas and
/// counters, borrowed apart from the producer (local or remote) it fans out from.
pub(super) struct Egress<'w> {
    pub(super) consumers: &'w mut Slab<Consumer>,
    pub(super) transports: &'w mut Slab<Transport>,
    pub(super) arena: &'w mut Arena,
    pub(super) tcp_arena: &'w mut Arena,
    pub(super) socket: &'w MediaSocket,
    pub(super) traffic: &'w mut LocalTraffic,
}

impl Egress<'_> {
    /// Writes one producer packet to every active consumer in `keys`: the consumer's
    /// prebuilt header patched, the payload, sealed in place in the arena.
    pub(super) fn fan_out(self, keys: &[ConsumerKey], packet: &Handoff<'_>, now: Instant) {
        let Egress { consumers, transports, arena, tcp_arena, socket, traffic } = self;
        let payload = packet.payload;
        for (i, &consumer_key) in keys.iter().enumerate() {
            warm_up(consumers, transports, keys, i);
            let Some(consumer) = consumers.get_mut(consumer_key) else {
                continue;
            };
            if consumer.paused {
                traffic.drop(DropReason::ConsumerPaused);
                continue;
            }
            let Some(target) = transports.get_mut(consumer.transport) else {
                continue;
            };
            let to = match target.outbound(now) {
                Ok(to) => to,
                Err(Unsendable::NotConnected) => {
                    traffic.drop(DropReason::NotConnected);
                    continue;
                }
                Err(Unsendable::NoConsent) => {
                    traffic.drop(DropReason::NoConsent);
                    continue;
                }
            };
            let Some(seq) = consumer.seq.rewrite(packet.seq) else {
                traffic.drop(DropReason::Stale);
                continue;
            };
            let timestamp = packet.timestamp.wrapping_add(consumer.timestamp_offset);
            let header = &consumer.header;
            let srtp = to.srtp;
            let max = header.len() + payload.len() + srtp.profile().rtp_overhead();
            let queue = match to.route {
                Route::Udp(_) => &mut *arena,
                Route::Tcp(_) => &mut *tcp_arena,
            };
            let sealed = queue.push(to.addr, to.route, max, |buf| {
                let header_len = header.write(buf, seq as u16, timestamp, packet.marker, packet.level);
                buf[header_len..header_len + payload.len()].copy_from_slice(payload);
                srtp.seal_rtp(buf, header_len + payload.len(), header_len, seq).ok()
            });
            let Some(sealed) = sealed else {
                // Only a sealing failure (never expected): the packet is not sent.
                tracing::warn!(consumer = %consumer.id, "SRTP sealing failed");
                continue;
            };
            consumer.sent.sent(now, timestamp, payload.len());
            to.counters.count_sent(sealed);
            traffic.packets_sent += 1;
            traffic.bytes_sent += payload.len() as u64;
            // Send as we go, so the first consumers do not wait for the last ones.
            if arena.len() >= SEND_BATCH {
                socket.send_arena(arena);
            }
        }
    }
}

/// How many consumers ahead [`warm_up`] reaches.
const AHEAD: usize = 4;

/// Loads what the fan-out needs a few consumers ahead of the one it writes, so the
/// cache misses of a large fan-out (every consumer's slab entry and transport is cold
/// by the time a packet comes round again) overlap with this consumer's sealing
/// instead of stalling the loop: the slab entry of the consumer `2 × AHEAD` ahead, and
/// the egress record of the transport of the consumer `AHEAD` ahead (whose entry the
/// first load brought in `AHEAD` consumers ago).
#[inline]
fn warm_up(consumers: &Slab<Consumer>, transports: &Slab<Transport>, keys: &[ConsumerKey], i: usize) {
    if let Some(ahead) = keys.get(i + 2 * AHEAD).and_then(|&key| consumers.get(key)) {
        std::hint::black_box(ahead.transport);
    }
    let transport = keys.get(i + AHEAD).and_then(|&key| consumers.get(key)).and_then(|c| transports.get(c.transport));
    if let Some(transport) = transport {
        transport.out.warm_up();
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
