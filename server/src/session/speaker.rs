//! Voice activity: a room's `activeSpeaker` and `audioLevels`, relayed from its media
//! router's upward channel to every member of the room.
//!
//! One task per room, started by the `join` that opens the room; it ends when the
//! room's router handle is dropped (the room closed), which ends the channel. Events
//! about peers that are not members (left since, or of an older room of the same name)
//! are dropped. (Peers, not producers: a producer reaches the engine just before the
//! room registry, and a speaker named in between would never be announced.)

use std::sync::Arc;

use dspeak_media::{RouterEvent, RouterEvents};
use dspeak_schema::Event;
use dspeak_schema::events::AudioLevel;

use super::change_rooms;
use crate::Shared;

/// Relays the events of room `room`'s router until its channel ends.
pub(super) fn relay(shared: Arc<Shared>, room: String, mut events: RouterEvents) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            change_rooms(&shared, |r| {
                let event = match event {
                    RouterEvent::ActiveSpeaker { peer_id, producer_id } => {
                        if r.mailbox(&room, &peer_id).is_none() {
                            return Vec::new();
                        }
                        Event::ActiveSpeaker { peer_id, producer_id }
                    }
                    RouterEvent::AudioLevels(levels) => {
                        let levels: Vec<AudioLevel> = levels
                            .into_iter()
                            .filter(|l| r.mailbox(&room, &l.peer_id).is_some())
                            .map(|l| AudioLevel { peer_id: l.peer_id, producer_id: l.producer_id, level: l.level })
                            .collect();
                        if levels.is_empty() {
                            return Vec::new();
                        }
                        Event::AudioLevels { levels }
                    }
                };
                r.fan_out(&room, None, &event).1
            });
        }
    });
}
