//! The hand-off between workers: how one room spans every core.
//!
//! Every ordered pair of workers (X, Y) shares one bounded, lock-free
//! single-producer/single-consumer byte ring (`rtrb`): only X writes, only Y reads.
//! X writes a [`Record`] per producer packet once per worker that has consumers of
//! that producer (not once per consumer), and a compact audio-level sample for the
//! room's home worker, which runs the room's speaker detector. After a wake-up X
//! wakes each worker it wrote to once ([`Links::wake_pending`]), not per packet. Y
//! drains its rings in its own loop, the rings taking turns ([`Inbound::drain`], so
//! a busy ring never holds up another), and fans the packets out exactly as it does
//! its local producers' (`worker::forward`). A full ring drops the record (the caller
//! counts it); nothing here blocks or allocates per packet.
//!
//! Control (subscribe, unsubscribe, close) never goes through the rings, which may
//! drop: it goes through the workers' command channels, in order.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

/// Bytes of each ring: about 1,500 records of a 150-byte Opus packet, over 1.5 s of
/// a busy worker's wake-ups; a ring that fills means its reader is stuck.
const RING_BYTES: usize = 256 * 1024;

/// Record kinds.
const PACKET: u8 = 1;
const LEVEL: u8 = 2;
/// Fixed part of a packet record after its kind: producer key, epoch, sequence,
/// timestamp, marker, level byte (0xff: none), arrival, payload length.
const PACKET_FIXED: usize = 8 + 4 + 8 + 4 + 1 + 1 + 8 + 2;
/// Fixed part of a level record after its kind: room, speaker key, level, arrival.
const LEVEL_FIXED: usize = 8 + 4 + 1 + 8;
/// Records one inbound ring gives per round of a drain before the next ring's turn.
const QUANTUM: usize = 32;
/// The longest payload a record carries (larger packets are never forwarded anyway:
/// the worker's receive buffer is 2,048 bytes).
const MAX_PAYLOAD: usize = 2048;

/// One producer packet as the fan-out needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handoff<'a> {
    /// The producer's engine-wide key.
    pub(crate) producer: u64,
    /// Bumped by every resume of the producer: consumers resynchronize their sequence.
    pub(crate) epoch: u32,
    /// The producer's extended sequence number.
    pub(crate) seq: u64,
    pub(crate) timestamp: u32,
    pub(crate) marker: bool,
    /// The RFC 6464 byte consumers get (`egress::level_byte`).
    pub(crate) level: Option<u8>,
    pub(crate) arrival: Instant,
    pub(crate) payload: &'a [u8],
}

/// An audio-level sample for the room's speaker detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LevelSample {
    pub(crate) room: u64,
    pub(crate) speaker: u32,
    /// RFC 6464: 0 loudest, 127 silence.
    pub(crate) level: u8,
    pub(crate) arrival: Instant,
}

/// What a worker reads from a ring.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Packet(Handoff<'a>),
    Level(LevelSample),
}

/// Another worker's command channel, held weakly so that workers never keep each
/// other's channels open.
pub(crate) type Peer<C> = mpsc::WeakUnboundedSender<C>;

/// Every worker's command channel, set once all have started.
pub(crate) type Peers<C> = Arc<OnceLock<Vec<Peer<C>>>>;

/// One worker's ends of the rings, its wake-up, and its peers' command channels.
pub(crate) struct Links<C> {
    /// This worker's index.
    pub(crate) index: usize,
    /// To each other worker (`None` at this worker's own index).
    outbound: Vec<Option<Outbound>>,
    /// From each other worker.
    inbound: Vec<Option<rtrb::Consumer<u8>>>,
    /// Which inbound ring the next drain goes on with ([`Inbound::drain`]).
    inbound_turn: Turn,
    /// Woken by the workers that wrote to this one.
    pub(crate) wake: Arc<Notify>,
    /// Arrival times travel as nanoseconds since this instant (the same in every worker).
    epoch: Instant,
    peers: Peers<C>,
    /// Record being written, and payload being read (reused).
    scratch: Vec<u8>,
}

impl<C> std::fmt::Debug for Links<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("index", &self.index).finish_non_exhaustive()
    }
}

struct Outbound {
    ring: rtrb::Producer<u8>,
    wake: Arc<Notify>,
    /// Written to since the last wake-up.
    pending: bool,
}

/// The rings between `n` workers, one [`Links`] per worker, and the slot where the
/// workers' command channels go once they run.
pub(crate) fn mesh<C>(n: usize) -> (Vec<Links<C>>, Peers<C>) {
    let wakes: Vec<Arc<Notify>> = (0..n).map(|_| Arc::new(Notify::new())).collect();
    let peers = Arc::new(OnceLock::new());
    let epoch = Instant::now();
    let mut links: Vec<Links<C>> = (0..n)
        .map(|index| Links {
            index,
            outbound: (0..n).map(|_| None).collect(),
            inbound: (0..n).map(|_| None).collect(),
            inbound_turn: Turn::default(),
            wake: wakes[index].clone(),
            epoch,
            peers: peers.clone(),
            scratch: Vec::with_capacity(MAX_PAYLOAD + PACKET_FIXED + 1),
        })
        .collect();
    for from in 0..n {
        for to in (0..n).filter(|&to| to != from) {
            let (tx, rx) = rtrb::RingBuffer::new(RING_BYTES);
            links[from].outbound[to] = Some(Outbound { ring: tx, wake: wakes[to].clone(), pending: false });
            links[to].inbound[from] = Some(rx);
        }
    }
    (links, peers)
}

impl<C> Links<C> {
    /// Writes a packet for worker `to`; false if its ring is full (or `to` is unknown).
    pub(crate) fn push_packet(&mut self, to: usize, p: &Handoff<'_>) -> bool {
        if p.payload.len() > MAX_PAYLOAD {
            return false;
        }
        let at = self.nanos(p.arrival);
        let s = &mut self.scratch;
        s.clear();
        s.push(PACKET);
        s.extend_from_slice(&p.producer.to_le_bytes());
        s.extend_from_slice(&p.epoch.to_le_bytes());
        s.extend_from_slice(&p.seq.to_le_bytes());
        s.extend_from_slice(&p.timestamp.to_le_bytes());
        s.push(u8::from(p.marker));
        s.push(p.level.unwrap_or(0xff));
        s.extend_from_slice(&at.to_le_bytes());
        s.extend_from_slice(&(p.payload.len() as u16).to_le_bytes());
        s.extend_from_slice(p.payload);
        self.push(to)
    }

    /// Writes a level sample for worker `to`; false if its ring is full.
    pub(crate) fn push_level(&mut self, to: usize, l: &LevelSample) -> bool {
        let at = self.nanos(l.arrival);
        let s = &mut self.scratch;
        s.clear();
        s.push(LEVEL);
        s.extend_from_slice(&l.room.to_le_bytes());
        s.extend_from_slice(&l.speaker.to_le_bytes());
        s.push(l.level);
        s.extend_from_slice(&at.to_le_bytes());
        self.push(to)
    }

    /// Writes the scratch record as one unit: a reader sees all of it or none.
    fn push(&mut self, to: usize) -> bool {
        let Some(Some(out)) = self.outbound.get_mut(to) else { return false };
        let written = out.ring.push_entire_slice(&self.scratch).is_ok();
        out.pending |= written;
        written
    }

    /// Wakes every worker written to since the last call, once.
    pub(crate) fn wake_pending(&mut self) {
        for out in self.outbound.iter_mut().flatten().filter(|o| o.pending) {
            out.pending = false;
            out.wake.notify_one();
        }
    }

    /// Takes the inbound rings and the read buffer, to drain them while the worker is
    /// borrowed; give them back with [`Links::put_back`].
    pub(crate) fn take_inbound(&mut self) -> Inbound {
        Inbound {
            rings: std::mem::take(&mut self.inbound),
            buf: std::mem::take(&mut self.scratch),
            epoch: self.epoch,
            turn: self.inbound_turn,
        }
    }

    /// Returns what [`Links::take_inbound`] took.
    pub(crate) fn put_back(&mut self, inbound: Inbound) {
        self.inbound_turn = inbound.turn;
        self.inbound = inbound.rings;
        self.scratch = inbound.buf;
    }

    /// Another worker's command channel, if it still runs.
    pub(crate) fn peer(&self, index: usize) -> Option<mpsc::UnboundedSender<C>> {
        self.peers.get()?.get(index)?.upgrade()
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A worker's inbound rings, taken out for draining.
pub(crate) struct Inbound {
    rings: Vec<Option<rtrb::Consumer<u8>>>,
    buf: Vec<u8>,
    epoch: Instant,
    turn: Turn,
}

/// Whose turn it is among the inbound rings, across drains: the ring, and the
/// records it already gave in this turn.
#[derive(Clone, Copy, Debug, Default)]
struct Turn {
    ring: usize,
    taken: usize,
}

impl Inbound {
    /// Reads up to `max` records into `f`. The rings take turns, each giving up to
    /// [`QUANTUM`] records per turn, and a turn cut short by `max` goes on in the next
    /// drain: every ring with records is served within one drain when `max` allows,
    /// and under sustained overload each gets the same share. Returns whether records
    /// are left.
    pub(crate) fn drain(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> bool {
        let n = self.rings.len();
        // `idle`: rings in a row that gave nothing; `n` of them means all are empty.
        let (mut budget, mut idle) = (max, 0);
        while budget > 0 && idle < n {
            let mut took = 0;
            if let Some(ring) = &mut self.rings[self.turn.ring] {
                while self.turn.taken < QUANTUM && took < budget {
                    let Some(record) = pop(ring, &mut self.buf, self.epoch) else { break };
                    f(record);
                    (took, self.turn.taken) = (took + 1, self.turn.taken + 1);
                }
            }
            budget -= took;
            idle = if took == 0 { idle + 1 } else { 0 };
            // The turn ends with the quantum, or with an empty ring (budget left).
            if budget > 0 || self.turn.taken == QUANTUM {
                self.turn = Turn { ring: (self.turn.ring + 1) % n, taken: 0 };
            }
        }
        budget == 0 && self.rings.iter().flatten().any(|r| !r.is_empty())
    }
}

/// Reads one record; `None` when the ring is empty.
fn pop<'b>(ring: &mut rtrb::Consumer<u8>, buf: &'b mut Vec<u8>, epoch: Instant) -> Option<Record<'b>> {
    let mut kind = [0u8];
    ring.pop_entire_slice(&mut kind).ok()?;
    // The writer committed the whole record at once, so the rest is there.
    let fixed = if kind[0] == PACKET { PACKET_FIXED } else { LEVEL_FIXED };
    buf.resize(fixed, 0);
    ring.pop_entire_slice(&mut buf[..fixed]).ok()?;
    let mut r = Reader(&buf[..fixed]);
    if kind[0] == LEVEL {
        let (room, speaker, level, at) = (r.u64(), r.u32(), r.u8(), r.u64());
        let arrival = epoch + Duration::from_nanos(at);
        return Some(Record::Level(LevelSample { room, speaker, level, arrival }));
    }
    let (producer, epoch_no, seq, timestamp, marker, level, at, len) =
        (r.u64(), r.u32(), r.u64(), r.u32(), r.u8() != 0, r.u8(), r.u64(), r.u16() as usize);
    buf.resize(len, 0);
    ring.pop_entire_slice(&mut buf[..len]).ok()?;
    Some(Record::Packet(Handoff {
        producer,
        epoch: epoch_no,
        seq,
        timestamp,
        marker,
        level: (level != 0xff).then_some(level),
        arrival: epoch + Duration::from_nanos(at),
        payload: &buf[..len],
    }))
}

/// Little-endian fields off the front of a slice (its length was checked).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cross_in_order_and_a_full_ring_refuses_whole_records() {
        let (mut links, _) = mesh::<()>(2);
        let now = Instant::now();
        let payload = [7u8; 150];
        let packet = |seq| Handoff {
            producer: 9,
            epoch: 2,
            seq,
            timestamp: 960 * seq as u32,
            marker: seq == 0,
            level: Some(0x85),
            arrival: now,
            payload: &payload,
        };
        assert!(links[0].push_packet(1, &packet(0)));
        let sample = LevelSample { room: 3, speaker: 4, level: 30, arrival: now };
        assert!(links[0].push_level(1, &sample));
        assert!(!links[0].push_packet(0, &packet(0)), "no ring to itself");
        let mut inbound = links[1].take_inbound();
        let mut seen = Vec::new();
        let left = inbound.drain(16, |r| match r {
            Record::Packet(p) => {
                assert_eq!((p.producer, p.epoch, p.marker, p.level, p.payload), (9, 2, true, Some(0x85), &payload[..]));
                assert!(p.arrival.duration_since(now) < Duration::from_micros(1));
                seen.push(p.seq);
            }
            Record::Level(l) => {
                assert_eq!((l.room, l.speaker, l.level), (3, 4, 30));
                seen.push(u64::MAX);
            }
        });
        assert!(!left);
        assert_eq!(seen, vec![0, u64::MAX]);
        links[1].put_back(inbound);
        // Fill the ring: every accepted record is read back whole, in order.
        let mut accepted = 0;
        while links[0].push_packet(1, &packet(accepted)) {
            accepted += 1;
        }
        assert!(accepted > 1000, "{accepted} records of 150 bytes");
        let mut inbound = links[1].take_inbound();
        let mut next = 0;
        while inbound.drain(100, |r| {
            let Record::Packet(p) = r else { panic!("a packet") };
            assert_eq!(p.seq, next);
            next += 1;
        }) {}
        assert_eq!(next, accepted);
    }

    /// Worker 2 reads from workers 0 and 1. However busy the first ring is, the
    /// second is served in the same drain, and under sustained overload both get
    /// about the same share.
    #[test]
    fn a_busy_ring_does_not_starve_a_later_one() {
        let (mut links, _) = mesh::<()>(3);
        let now = Instant::now();
        let payload = [7u8; 150];
        let packet = |producer, seq| Handoff {
            producer,
            epoch: 0,
            seq,
            timestamp: 0,
            marker: false,
            level: None,
            arrival: now,
            payload: &payload,
        };
        for seq in 0..1000 {
            assert!(links[0].push_packet(2, &packet(0, seq)));
        }
        for seq in 0..10 {
            assert!(links[1].push_packet(2, &packet(1, seq)));
        }
        let mut from = [0u64; 2];
        let drain = |links: &mut Vec<Links<()>>, from: &mut [u64; 2]| {
            let mut inbound = links[2].take_inbound();
            let left = inbound.drain(100, |r| {
                let Record::Packet(p) = r else { panic!("a packet") };
                from[p.producer as usize] += 1;
            });
            links[2].put_back(inbound);
            left
        };
        assert!(drain(&mut links, &mut from), "records are left");
        assert_eq!(from, [90, 10], "the later ring's records go in the same drain");
        // Both rings kept full: they take turns, across drains too.
        from = [0, 0];
        for _ in 0..20 {
            for (writer, link) in links.iter_mut().take(2).enumerate() {
                while link.push_packet(2, &packet(writer as u64, 0)) {}
            }
            assert!(drain(&mut links, &mut from));
        }
        assert_eq!(from[0] + from[1], 2000);
        assert!(from[0].abs_diff(from[1]) <= QUANTUM as u64, "shares under overload: {from:?}");
    }
}
