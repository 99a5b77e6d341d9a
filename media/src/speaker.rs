//! Active-speaker detection from RFC 6464 audio levels.
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
//! The worker keeps a [`RoomSpeakers`] per room (router): the detector, the room's
//! producers and the upward channel to the server, where it sends
//! [`RouterEvent::ActiveSpeaker`] on a change and [`RouterEvent::AudioLevels`] at most
//! every [`LEVELS_EVERY`] while someone speaks. [`LevelCapture`] is how a send
//! transport's str0m `Rtc`, whose extension map is fixed when it is built, reads the
//! level on whatever id the producer declares later at `produce`.
//!
//! The unit tests drive the detector with speech-like bursts on a synthetic clock.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use dspeak_schema::{PeerId, ProducerId};
use str0m::rtp::{ExtensionSerializer, ExtensionValues};
use tokio::sync::mpsc;

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
/// How often the detector decides.
pub(crate) const TICK_EVERY: Duration = Duration::from_millis(100);
/// Shortest interval between two `audioLevels` of a room.
pub(crate) const LEVELS_EVERY: Duration = Duration::from_millis(200);
/// Events a room's upward channel holds before new ones are dropped (the worker never
/// waits on the server).
const EVENT_QUEUE: usize = 64;

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
    #[cfg(test)]
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

/// Which voice-activity events the engine produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpeakerEvents {
    /// `activeSpeaker` and `audioLevels` (the default).
    #[default]
    All,
    /// `activeSpeaker` only.
    Speaker,
    /// Neither: audio levels are not even parsed.
    Off,
}

impl SpeakerEvents {
    /// The name of the setting (`all`, `speaker`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpeakerEvents::All => "all",
            SpeakerEvents::Speaker => "speaker",
            SpeakerEvents::Off => "off",
        }
    }
}

impl std::fmt::Display for SpeakerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpeakerEvents {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [SpeakerEvents::All, SpeakerEvents::Speaker, SpeakerEvents::Off]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not one of all, speaker, off"))
    }
}

/// One producer's level in [`RouterEvent::AudioLevels`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProducerLevel {
    /// The producing peer.
    pub peer_id: PeerId,
    /// The producer.
    pub producer_id: ProducerId,
    /// Smoothed level in dBov (-50..=0), to a tenth of a dB.
    pub level: f64,
}

/// What a room's router tells the server (the engine's upward channel).
#[derive(Clone, Debug, PartialEq)]
pub enum RouterEvent {
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// The speaking peer.
        peer_id: PeerId,
        /// Its producer.
        producer_id: ProducerId,
    },
    /// The producers speaking now, loudest first (only while someone speaks).
    AudioLevels(Vec<ProducerLevel>),
}

/// The receiving end of a room's upward channel; it ends when the room's
/// [`RouterHandle`](crate::RouterHandle) is dropped.
pub type RouterEvents = mpsc::Receiver<RouterEvent>;

/// A new upward channel.
pub(crate) fn channel() -> (mpsc::Sender<RouterEvent>, RouterEvents) {
    mpsc::channel(EVENT_QUEUE)
}

/// A producer as the detector of its room knows it.
#[derive(Debug)]
struct RoomProducer {
    key: u32,
    peer_id: PeerId,
    producer_id: ProducerId,
}

/// The voice activity of one room, owned by its worker.
#[derive(Debug)]
pub(crate) struct RoomSpeakers {
    detector: SpeakerDetector<u32>,
    producers: Vec<RoomProducer>,
    events: mpsc::Sender<RouterEvent>,
    levels: bool,
    next_levels: Instant,
    /// Scratch for `levels` (reused).
    scratch: Vec<(u32, f32)>,
}

impl RoomSpeakers {
    /// A room sending its events on `events`; `levels`: whether to send `AudioLevels`.
    pub(crate) fn new(events: mpsc::Sender<RouterEvent>, levels: bool, now: Instant) -> Self {
        RoomSpeakers {
            detector: SpeakerDetector::default(),
            producers: Vec::new(),
            events,
            levels,
            next_levels: now,
            scratch: Vec::new(),
        }
    }

    /// Starts tracking a producer under the worker's `key` for it.
    pub(crate) fn add(&mut self, key: u32, peer_id: PeerId, producer_id: ProducerId) {
        self.detector.add(key);
        self.producers.push(RoomProducer { key, peer_id, producer_id });
    }

    /// Stops tracking a producer.
    pub(crate) fn remove(&mut self, key: u32) {
        self.detector.remove(key);
        self.producers.retain(|p| p.key != key);
    }

    /// A producer was paused or resumed (paused producers never speak).
    pub(crate) fn set_paused(&mut self, key: u32, paused: bool) {
        self.detector.set_paused(key, paused);
    }

    /// One packet's level (RFC 6464: 0 loudest, 127 silence).
    pub(crate) fn observe(&mut self, key: u32, level: u8, now: Instant) {
        self.detector.observe(key, level, now);
    }

    /// Whether the room has producers to watch.
    pub(crate) fn is_idle(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides at `now` and sends what changed; never waits (a full channel drops).
    pub(crate) fn tick(&mut self, now: Instant) {
        if let Some(SpeakerChange::Speaker(key)) = self.detector.tick(now)
            && let Some(p) = self.producers.iter().find(|p| p.key == key)
        {
            let event = RouterEvent::ActiveSpeaker { peer_id: p.peer_id.clone(), producer_id: p.producer_id.clone() };
            let _ = self.events.try_send(event);
        }
        if self.levels && now >= self.next_levels {
            self.detector.levels(now, &mut self.scratch);
            if !self.scratch.is_empty() {
                self.next_levels = now + LEVELS_EVERY;
                let levels = self
                    .scratch
                    .iter()
                    .filter_map(|&(key, level)| {
                        let p = self.producers.iter().find(|p| p.key == key)?;
                        let level = (f64::from(level) * 10.0).round() / 10.0;
                        Some(ProducerLevel { peer_id: p.peer_id.clone(), producer_id: p.producer_id.clone(), level })
                    })
                    .collect();
                let _ = self.events.try_send(RouterEvent::AudioLevels(levels));
            }
        }
    }
}

/// A str0m header-extension serializer that parses an RFC 6464 audio level on one
/// id, once that id is chosen.
///
/// str0m fixes a transport's extension map when its `Rtc` is built, but a producer's
/// ids arrive later with `produce`. So a send transport registers one `LevelCapture`
/// for each one-byte id (1-14), all sharing one `wanted` id; `produce` sets it. The
/// one whose id is wanted parses the level into str0m's own
/// `ExtensionValues::audio_level`/`voice_activity` (no allocation); the others ignore
/// their element.
#[derive(Debug)]
pub(crate) struct LevelCapture {
    id: u8,
    wanted: Arc<AtomicU8>,
}

impl LevelCapture {
    /// The serializer for extension `id`, parsing when `wanted` holds `id`.
    pub(crate) fn new(id: u8, wanted: Arc<AtomicU8>) -> Self {
        LevelCapture { id, wanted }
    }

    /// A URI str0m can tell apart from the other ids' (it is never signalled).
    pub(crate) fn uri(id: u8) -> String {
        format!("urn:dspeak:level-capture:{id}")
    }
}

impl ExtensionSerializer for LevelCapture {
    fn write_to(&self, _buf: &mut [u8], _ev: &ExtensionValues) -> usize {
        0 // send transports never send RTP
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        let Some(&byte) = buf.first() else { return false };
        if self.wanted.load(Ordering::Relaxed) != self.id {
            return false;
        }
        // RFC 6464: the V bit, then the level as -dBov (0..=127).
        ev.audio_level = Some(-((byte & 0x7f) as i8));
        ev.voice_activity = Some(byte & 0x80 != 0);
        true
    }

    fn is_video(&self) -> bool {
        false
    }

    fn is_audio(&self) -> bool {
        true
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

    #[test]
    fn level_capture_parses_only_the_wanted_id() {
        let wanted = Arc::new(AtomicU8::new(0));
        let (one, two) = (LevelCapture::new(1, wanted.clone()), LevelCapture::new(2, wanted.clone()));
        let mut ev = ExtensionValues::default();
        assert!(!one.parse_value(&[0x89], &mut ev), "no id chosen yet");
        wanted.store(1, Ordering::Relaxed);
        assert!(!two.parse_value(&[0x2b], &mut ev));
        assert_eq!(ev.audio_level, None);
        assert!(one.parse_value(&[0x89], &mut ev));
        assert_eq!((ev.audio_level, ev.voice_activity), (Some(-9), Some(true)), "Chromium: V bit set");
        assert!(one.parse_value(&[0x7f], &mut ev));
        assert_eq!((ev.audio_level, ev.voice_activity), (Some(-127), Some(false)), "aiortc: V bit off");
        assert!(!one.parse_value(&[], &mut ev), "an empty element is ignored");
    }

    #[test]
    fn a_room_sends_the_speaker_once_and_levels_at_most_every_200_ms_while_someone_speaks() {
        let t0 = Instant::now();
        let (tx, mut rx) = channel();
        let mut room = RoomSpeakers::new(tx, true, t0);
        let (loud, quiet) = (PeerId::new("loud"), PeerId::new("quiet"));
        room.add(1, loud.clone(), ProducerId::new("p1"));
        room.add(2, quiet.clone(), ProducerId::new("p2"));
        for ms in (0..1000).step_by(20) {
            let t = t0 + Duration::from_millis(ms);
            room.observe(1, speech(Duration::from_millis(ms)), t);
            room.observe(2, 30, t);
            if ms % 100 == 0 {
                room.tick(t);
            }
        }
        let mut speakers = Vec::new();
        let mut levels = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                RouterEvent::ActiveSpeaker { peer_id, .. } => speakers.push(peer_id),
                RouterEvent::AudioLevels(l) => levels.push(l),
            }
        }
        assert_eq!(speakers, std::slice::from_ref(&loud));
        assert!((4..=5).contains(&levels.len()), "one per 200 ms over 1 s: {}", levels.len());
        let last = levels.last().unwrap();
        assert_eq!(last.iter().map(|l| &l.peer_id).collect::<Vec<_>>(), [&loud, &quiet], "loudest first");
        // Silence from both: no more levels.
        let t1 = t0 + Duration::from_millis(1000);
        for ms in (0..2000).step_by(20) {
            let t = t1 + Duration::from_millis(ms);
            room.observe(1, 127, t);
            room.observe(2, 127, t);
            if ms % 100 == 0 {
                room.tick(t);
            }
        }
        let mut after = 0;
        while let Ok(event) = rx.try_recv() {
            after += usize::from(matches!(event, RouterEvent::AudioLevels(_)));
        }
        assert!(after <= 3, "levels only while the smoothed level decays: {after}");
        let t2 = t1 + Duration::from_millis(2000);
        room.tick(t2);
        room.tick(t2 + LEVELS_EVERY);
        assert!(rx.try_recv().is_err(), "nobody speaks: nothing sent");
    }

    #[test]
    fn speaker_events_parse_and_print() {
        for v in [SpeakerEvents::All, SpeakerEvents::Speaker, SpeakerEvents::Off] {
            assert_eq!(v.to_string().parse::<SpeakerEvents>(), Ok(v));
        }
        assert!("loud".parse::<SpeakerEvents>().is_err());
    }
}
