//! Active-speaker detection from RFC 6464 audio levels, for issue #18 item 2.
//!
//! One [`SpeakerDetector`] per room, fed one level per received packet
//! ([`SpeakerDetector::observe`]: a scan of a short vector, no allocation) and asked
//! for a decision on a timer ([`SpeakerDetector::tick`]). Each producer's level is
//! smoothed (an exponential average in dB with a ~200 ms time constant, so speech bursts
//! of ~250 ms at -9 dBov with ~100 ms at -43 dBov average well above the -50 dBov
//! threshold while silence stays below it). The loudest eligible producer (not paused,
//! a packet within [`STALE_AFTER`], smoothed above [`SPEAKING_DBOV`]) becomes the active
//! speaker; the current one is replaced only after a minimum hold of [`MIN_HOLD`], and
//! then only by one louder by [`SWITCH_MARGIN_DB`] or because it stopped qualifying.
//! [`SpeakerDetector::levels`] lists the producers above the threshold, loudest first,
//! for `audioLevels`.
//!
//! Not wired yet: the worker does not parse the extension nor run the detector, and
//! nothing emits `activeSpeaker`/`audioLevels`. The unit tests drive it with
//! speech-like bursts on a synthetic clock.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Smoothed level above which a producer counts as speaking, in dBov.
pub(crate) const SPEAKING_DBOV: f32 = -50.0;
/// How long a new active speaker is kept at least.
pub(crate) const MIN_HOLD: Duration = Duration::from_secs(1);
/// How much louder than the current speaker a challenger must be to take over.
pub(crate) const SWITCH_MARGIN_DB: f32 = 6.0;
/// A producer without a level for this long is not speaking (stopped sending, DTX).
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(500);
/// Time constant of the smoothing.
const SMOOTHING: Duration = Duration::from_millis(200);
/// The level of silence (RFC 6464's 127 means -127 dBov).
const SILENCE_DBOV: f32 = -127.0;

/// One producer's state.
#[derive(Debug)]
struct Entry<K> {
    key: K,
    /// Smoothed level in dBov.
    level: f32,
    last_at: Option<Instant>,
    paused: bool,
}

/// What `tick` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpeakerChange<K> {
    /// A new active speaker.
    Speaker(K),
}

/// The active-speaker state of one room; `K` identifies a producer.
#[derive(Debug)]
pub(crate) struct SpeakerDetector<K> {
    entries: Vec<Entry<K>>,
    /// The current speaker and since when.
    current: Option<(K, Instant)>,
}

impl<K> Default for SpeakerDetector<K> {
    fn default() -> Self {
        SpeakerDetector { entries: Vec::new(), current: None }
    }
}

impl<K: Copy + Eq> SpeakerDetector<K> {
    /// Starts tracking a producer (silent, not paused).
    pub(crate) fn add(&mut self, key: K) {
        if !self.entries.iter().any(|e| e.key == key) {
            self.entries.push(Entry { key, level: SILENCE_DBOV, last_at: None, paused: false });
        }
    }

    /// Stops tracking a producer; if it was the speaker, there is none until the next tick.
    pub(crate) fn remove(&mut self, key: K) {
        self.entries.retain(|e| e.key != key);
        if self.current.is_some_and(|(k, _)| k == key) {
            self.current = None;
        }
    }

    /// Marks a producer paused (ignored) or resumed.
    pub(crate) fn set_paused(&mut self, key: K, paused: bool) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.paused = paused;
            e.level = SILENCE_DBOV;
        }
    }

    /// Feeds one packet's RFC 6464 level (0 = loudest, 127 = silence: -level dBov).
    pub(crate) fn observe(&mut self, key: K, level: u8, now: Instant) {
        let Some(e) = self.entries.iter_mut().find(|e| e.key == key) else { return };
        if e.paused {
            return;
        }
        let dbov = -f32::from(level.min(127));
        let weight = match e.last_at {
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f32();
                1.0 - (-dt / SMOOTHING.as_secs_f32()).exp()
            }
            None => 1.0,
        };
        e.level += (dbov - e.level) * weight;
        e.last_at = Some(now);
    }

    /// The current active speaker.
    pub(crate) fn speaker(&self) -> Option<K> {
        self.current.map(|(k, _)| k)
    }

    /// Decides the active speaker at `now`; returns the change, if any.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<SpeakerChange<K>> {
        let loudest = self
            .entries
            .iter()
            .filter_map(|e| self.speaking(e, now).map(|level| (e.key, level)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let (candidate, candidate_level) = loudest?;
        match self.current {
            Some((current, _)) if current == candidate => None,
            Some((_, since)) if now.saturating_duration_since(since) < MIN_HOLD => None,
            Some((current, _)) => {
                let current_level = self.entries.iter().find(|e| e.key == current).and_then(|e| self.speaking(e, now));
                if current_level.is_some_and(|l| candidate_level < l + SWITCH_MARGIN_DB) {
                    return None;
                }
                self.current = Some((candidate, now));
                Some(SpeakerChange::Speaker(candidate))
            }
            None => {
                self.current = Some((candidate, now));
                Some(SpeakerChange::Speaker(candidate))
            }
        }
    }

    /// The producers speaking at `now` with their smoothed level in dBov, loudest first,
    /// into `out` (cleared first; reuse it to avoid allocating).
    pub(crate) fn levels(&self, now: Instant, out: &mut Vec<(K, f32)>) {
        out.clear();
        out.extend(self.entries.iter().filter_map(|e| self.speaking(e, now).map(|l| (e.key, l))));
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
    }

    /// The smoothed level of `e` if it is speaking at `now`.
    fn speaking(&self, e: &Entry<K>, now: Instant) -> Option<f32> {
        let fresh = e.last_at.is_some_and(|t| now.saturating_duration_since(t) < STALE_AFTER);
        (fresh && !e.paused && e.level > SPEAKING_DBOV).then_some(e.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    /// A producer and its level (RFC 6464) over time.
    type Signal = (u8, fn(Duration) -> u8);

    /// Speech: 250 ms at -9 dBov, 100 ms at -43 dBov, repeated.
    fn speech(t: Duration) -> u8 {
        if t.as_millis() % 350 < 250 { 9 } else { 43 }
    }

    /// Background of a muted-but-sending microphone.
    fn silence(_: Duration) -> u8 {
        127
    }

    /// Feeds `from..to` (ms since `t0`) of each producer's signal, ticking every 100 ms;
    /// returns the changes with their time in ms.
    fn run(d: &mut SpeakerDetector<u8>, t0: Instant, from: u64, to: u64, signals: &[Signal]) -> Vec<(u64, u8)> {
        let mut changes = Vec::new();
        let mut ms = from;
        while ms < to {
            let t = Duration::from_millis(ms);
            for (key, signal) in signals {
                d.observe(*key, signal(t), t0 + t);
            }
            if ms.is_multiple_of(100)
                && let Some(SpeakerChange::Speaker(k)) = d.tick(t0 + t)
            {
                changes.push((ms, k));
            }
            ms += PACKET.as_millis() as u64;
        }
        changes
    }

    fn detector(keys: &[u8]) -> SpeakerDetector<u8> {
        let mut d = SpeakerDetector::default();
        for &k in keys {
            d.add(k);
        }
        d
    }

    #[test]
    fn the_speaking_peer_is_picked_over_a_silent_one_and_listed_louder() {
        let t0 = Instant::now();
        let mut d = detector(&[1, 2]);
        let changes = run(&mut d, t0, 0, 3000, &[(1, speech), (2, silence)]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, 1);
        assert!(changes[0].0 <= 1500, "picked after {} ms", changes[0].0);
        let mut levels = Vec::new();
        d.levels(t0 + Duration::from_millis(3000), &mut levels);
        assert_eq!(levels.iter().map(|l| l.0).collect::<Vec<_>>(), [1], "silence is not listed");
        assert!(levels[0].1 > SPEAKING_DBOV && levels[0].1 < -5.0, "{levels:?}");
    }

    #[test]
    fn it_switches_within_two_seconds_when_the_other_takes_over() {
        let t0 = Instant::now();
        let mut d = detector(&[1, 2]);
        run(&mut d, t0, 0, 3000, &[(1, speech), (2, silence)]);
        assert_eq!(d.speaker(), Some(1));
        let changes = run(&mut d, t0, 3000, 6000, &[(1, silence), (2, speech)]);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [2], "{changes:?}");
        assert!(changes[0].0 - 3000 <= 2000, "switched after {} ms", changes[0].0 - 3000);
    }

    #[test]
    fn a_short_interjection_does_not_take_over_within_the_hold() {
        let t0 = Instant::now();
        let mut d = detector(&[1, 2]);
        run(&mut d, t0, 0, 1000, &[(1, speech), (2, silence)]);
        // Both speak equally: the current speaker keeps the floor (hysteresis).
        let changes = run(&mut d, t0, 1000, 4000, &[(1, speech), (2, speech)]);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(d.speaker(), Some(1));
    }

    #[test]
    fn paused_and_stale_producers_are_ignored() {
        let t0 = Instant::now();
        let mut d = detector(&[1, 2]);
        d.set_paused(1, true);
        let changes = run(&mut d, t0, 0, 2000, &[(1, speech), (2, silence)]);
        assert!(changes.is_empty(), "a paused producer never speaks: {changes:?}");
        d.set_paused(1, false);
        run(&mut d, t0, 2000, 4000, &[(1, speech)]);
        assert_eq!(d.speaker(), Some(1));
        let mut levels = Vec::new();
        d.levels(t0 + Duration::from_millis(4000) + STALE_AFTER, &mut levels);
        assert!(levels.is_empty(), "no packet for {STALE_AFTER:?}: not speaking");
        d.remove(1);
        assert_eq!(d.speaker(), None);
    }
}
