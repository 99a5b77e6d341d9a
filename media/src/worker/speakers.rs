//! Voice activity on the worker: each room's [`RoomSpeakers`], opened and closed with
//! its router handle, fed one audio level per producer packet ([`observe`], the only
//! hook on the per-packet path) and ticked every [`TICK_EVERY`], when it sends the
//! room's `activeSpeaker`/`audioLevels` up to the server.

use std::time::Instant;

use rustc_hash::FxHashMap;
use str0m::rtp::RtpPacket;
use tokio::sync::mpsc;

use super::{Producer, RoomKey, Worker};
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

    /// A new key for a producer in its room's detector.
    pub(super) fn speaker_key(&mut self) -> u32 {
        self.next_speaker_key = self.next_speaker_key.wrapping_add(1);
        self.next_speaker_key
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
        (!self.rooms.is_empty() && !self.producers.is_empty()).then_some(self.next_speaker_tick)
    }
}

/// Feeds a producer packet's audio level, if it carries one, to its room's detector.
pub(super) fn observe(
    rooms: &mut FxHashMap<RoomKey, RoomSpeakers>,
    producer: &Producer,
    packet: &RtpPacket,
    now: Instant,
) {
    if let Some(level) = packet.header.ext_vals.audio_level
        && let Some(room) = rooms.get_mut(&producer.room)
    {
        room.observe(producer.speaker_key, level.unsigned_abs(), now);
    }
}
