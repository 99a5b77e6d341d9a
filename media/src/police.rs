//! Producer policing: what one producer may make its worker forward.
//!
//! An Opus producer may send at most 100 packets per second and 512 kbit/s, each
//! averaged over one second (a token bucket holding one second's worth). Packets past
//! either are dropped before forwarding, and counted, so one sender cannot make its
//! worker send more than that to each of its consumers.

use std::time::Instant;

/// Packets a producer may send per second.
const PACKETS_PER_SECOND: f64 = 100.0;
/// Payload bytes a producer may send per second (512 kbit/s).
const BYTES_PER_SECOND: f64 = 512_000.0 / 8.0;

/// The policer of one producer.
#[derive(Debug)]
pub(crate) struct Policer {
    packets: f64,
    bytes: f64,
    last: Option<Instant>,
    /// Packets dropped so far.
    pub(crate) dropped: u64,
}

impl Default for Policer {
    fn default() -> Self {
        Policer { packets: PACKETS_PER_SECOND, bytes: BYTES_PER_SECOND, last: None, dropped: 0 }
    }
}

impl Policer {
    /// Whether a packet of `len` payload bytes arriving at `now` may be forwarded.
    pub(crate) fn admit(&mut self, now: Instant, len: usize) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.packets = (self.packets + elapsed * PACKETS_PER_SECOND).min(PACKETS_PER_SECOND);
            self.bytes = (self.bytes + elapsed * BYTES_PER_SECOND).min(BYTES_PER_SECOND);
        }
        self.last = Some(now);
        let len = len as f64;
        if self.packets >= 1.0 && self.bytes >= len {
            self.packets -= 1.0;
            self.bytes -= len;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Offers `rate` packets per second of `len` bytes for `seconds`; returns how many
    /// were admitted.
    fn admitted(rate: u32, len: usize, seconds: u32) -> u32 {
        let mut policer = Policer::default();
        let start = Instant::now();
        let step = Duration::from_secs(1) / rate;
        (0..rate * seconds).filter(|i| policer.admit(start + step * *i, len)).count() as u32
    }

    #[test]
    fn opus_at_50_packets_a_second_passes_untouched() {
        assert_eq!(admitted(50, 160, 10), 500);
    }

    #[test]
    fn a_flood_of_2000_packets_a_second_is_cut_to_100() {
        let passed = admitted(2000, 100, 10);
        // One second's burst, then 100 a second.
        assert!((1000..=1100).contains(&passed), "{passed} of 20000 passed");
    }

    #[test]
    fn big_packets_are_held_to_512_kbit_a_second() {
        // 90 packets/s of 1200 bytes = 864 kbit/s: the byte budget binds.
        let passed = admitted(90, 1200, 10);
        let kbit_per_s = f64::from(passed) * 1200.0 * 8.0 / 10.0 / 1000.0;
        assert!(kbit_per_s <= 512.0 * 1.1, "{kbit_per_s} kbit/s");
        assert!(kbit_per_s >= 512.0 * 0.9, "{kbit_per_s} kbit/s");
    }
}
