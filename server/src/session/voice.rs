//! Voice state: `setVoiceState` (self-mute and self-deafen).
//!
//! Self-mute pauses the session's producers as `pauseProducer` does (the room sees
//! `producerPaused`); self-deafen pauses its consumers in the engine, so no packet is
//! sent to it, while each consumer keeps the client's own paused flag for when the
//! session is undeafened. The flags live on the room member, which announces every
//! change as `voiceStateUpdated`.

use dspeak_media::MediaError;
use dspeak_schema::ProducerId;
use dspeak_schema::rooms::{SetVoiceStateParams, VoiceState};

use super::{Session, change_rooms};
use crate::error::{NotJoined, VoiceStateError};

impl Session {
    /// `setVoiceState`: applies the flags to the media first, then tells the room.
    pub(crate) async fn set_voice_state(&mut self, p: SetVoiceStateParams) -> Result<VoiceState, VoiceStateError> {
        let j = self.joined()?;
        let before = self.shared.rooms().voice_state(&j.room, &j.peer_id);
        if let Some(deaf) = p.self_deaf.filter(|&d| d != before.self_deaf) {
            // Consumers the client paused stay paused either way. One whose producer
            // just closed may be gone from the engine before its notice reaches us.
            for (id, _) in j.consumers.iter().filter(|(_, c)| !c.paused) {
                match j.router.set_consumer_paused(id.clone(), j.peer_id.clone(), deaf).await {
                    Ok(()) | Err(MediaError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(mute) = p.self_mute.filter(|&m| m != before.self_mute) {
            // Unmuting resumes nothing while the server has the peer muted.
            if mute || !before.server_muted {
                let producers: Vec<ProducerId> = j.producers.keys().cloned().collect();
                for id in producers {
                    self.pause_own_producer::<VoiceStateError>(id, mute).await?;
                }
            }
        }
        let j = self.joined()?;
        let (room, peer) = (&j.room, &j.peer_id);
        let state = change_rooms(&self.shared, |r| r.set_voice_state(room, peer, p.self_mute, p.self_deaf));
        tracing::info!(self_mute = ?p.self_mute, self_deaf = ?p.self_deaf, "voice state");
        state.ok_or_else(|| NotJoined.into())
    }
}
