//! Voice activity on the worker: each room's [`RoomSpeakers`] lives on the room's home
//! worker, opened and closed with its router handle, which also adds, pauses and
//! removes the room's producers whatever worker they are on. It is fed one audio
//! level per producer packet ([`observe`], the only hook on the per-packet path):
//! directly on the home worker, through the `cross` rings from the others. It is ticked
//! every [`TICK_EVERY`], when it sends the room's `activeSpeaker`/`audioLevels` up to
//! the server: one stream per room, whatever the placement.

use std::time::Instant;

use dspeak_schema::{PeerId, ProducerId};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use super::{RoomKey, Worker};
use crate::cross::LevelSample;
use crate::speaker::{RoomSpeakers, RouterEvent, SpeakerEvents, TICK_EVERY};

impl Worker {
    /// A new room on this worker, with its upward channel (dropped at once when voice
    /// activity is off, which ends the server's side).
    pub(crate) fn open_room(&mut self, room: RoomKey, events: mpsc::Sender<RouterEvent>) {
        if self.speaker_events != SpeakerEvents::Off {
            let levels = self.speaker_events == SpeakerEvents::All;
            self.rooms.insert(room, RoomSpeakers::new(events, levels, Instant::now()));
        }
    }

    /// The room's router handle was dropped.
    pub(crate) fn close_room(&mut self, room: RoomKey) {
        self.rooms.remove(&room);
    }

    /// Whether send transports read audio levels.
    pub(super) fn reads_levels(&self) -> bool {
        self.speaker_events != SpeakerEvents::Off
    }

    /// A producer of the room (on any worker) joins its detector.
    pub(crate) fn speaker_add(&mut self, room: RoomKey, key: u32, owner: PeerId, producer: ProducerId) {
        if let Some(speakers) = self.rooms.get_mut(&room) {
            speakers.add(key, owner, producer);
        }
    }

    /// A producer of the room was paused or resumed.
    pub(crate) fn speaker_paused(&mut self, room: RoomKey, key: u32, paused: bool) {
        if let Some(speakers) = self.rooms.get_mut(&room) {
            speakers.set_paused(key, paused);
        }
    }

    /// A producer of the room closed.
    pub(crate) fn speaker_remove(&mut self, room: RoomKey, key: u32) {
        if let Some(speakers) = self.rooms.get_mut(&room) {
            speakers.remove(key);
        }
    }

    /// Runs the rooms' detectors when their tick is due.
    pub(super) fn tick_speakers(&mut self, now: Instant) {
        if now < self.next_speaker_tick {
            return;
        }
        self.next_speaker_tick = now + TICK_EVERY;
        for room in self.rooms.values_mut().filter(|r| !r.is_idle()) {
            room.tick(now);
        }
    }

    /// When the worker must wake up for the detectors, if any room may need them.
    pub(super) fn speaker_deadline(&self) -> Option<Instant> {
        self.rooms.values().any(|r| !r.is_idle()).then_some(self.next_speaker_tick)
    }
}

/// Feeds a producer packet's audio level to its room's detector (on the room's home
/// worker; other workers hand their producers' levels over through `cross`).
pub(super) fn observe(rooms: &mut FxHashMap<RoomKey, RoomSpeakers>, sample: &LevelSample) {
    if let Some(room) = rooms.get_mut(&sample.room) {
        room.observe(sample.speaker, sample.level, sample.arrival);
    }
}
