//! The producers area: `produce`, `pauseProducer`, `resumeProducer`, `closeProducer`.

use dspeak_schema::ProducerId;
use dspeak_schema::admin::WebhookEventKind;
use dspeak_schema::media::{Direction, ProduceParams, ProduceResult, ProducerParams};
use dspeak_schema::ortc::{CodecParameters, ParameterValue, RtpParameters};
use dspeak_schema::rooms::{Empty, ProducerInfo};

use super::{Session, change_rooms, check_json_size};
use crate::error::{NotFound, NotJoined, ProduceError, ProducerError};
use dspeak_media::MediaError;

/// The longest string of a producer's parameters that is echoed to other clients.
const MAX_ECHOED_CHARS: usize = 256;

/// Checks the strings of a producer's RTP parameters that reach other clients (their
/// consumer parameters, from which mediasoup-client writes SDP lines): printable
/// ASCII without `;` (so no CR, LF or NUL either), at most [`MAX_ECHOED_CHARS`].
fn check_echoed_strings(p: &RtpParameters) -> Result<(), ProduceError> {
    let plain = |s: &str| {
        s.len() <= MAX_ECHOED_CHARS && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && !s.contains(';')
    };
    let check = |field: &dyn Fn() -> String, value: &str| {
        if plain(value) { Ok(()) } else { Err(ProduceError::UnsafeString(field())) }
    };
    let params = |field: &str, parameters: &CodecParameters| -> Result<(), ProduceError> {
        for (key, value) in parameters {
            check(&|| format!("{field}.parameters key"), key)?;
            if let ParameterValue::String(value) = value {
                check(&|| format!("{field}.parameters.{key}"), value)?;
            }
        }
        Ok(())
    };
    for (name, value) in
        [("rtpParameters.mid", &p.mid), ("rtpParameters.msid", &p.msid), ("rtpParameters.rtcp.cname", &p.rtcp.cname)]
    {
        if let Some(value) = value {
            check(&|| name.to_owned(), value)?;
        }
    }
    for (i, codec) in p.codecs.iter().enumerate() {
        check(&|| format!("rtpParameters.codecs[{i}].mimeType"), &codec.mime_type)?;
        params(&format!("rtpParameters.codecs[{i}]"), &codec.parameters)?;
    }
    for (i, ext) in p.header_extensions.iter().enumerate() {
        check(&|| format!("rtpParameters.headerExtensions[{i}].uri"), &ext.uri)?;
        params(&format!("rtpParameters.headerExtensions[{i}]"), &ext.parameters)?;
    }
    for (i, encoding) in p.encodings.iter().enumerate() {
        if let Some(rid) = &encoding.rid {
            check(&|| format!("rtpParameters.encodings[{i}].rid"), rid)?;
        }
    }
    Ok(())
}

impl Session {
    /// `produce`: starts receiving an Opus track and announces it to the room.
    pub(crate) async fn produce(&mut self, p: ProduceParams) -> Result<ProduceResult, ProduceError> {
        let j = self.joined()?;
        let limits = &self.shared.config.limits;
        if !j.grants.publish {
            return Err(ProduceError::NotGranted);
        }
        if self.shared.rooms().is_server_muted(&j.room, &j.peer_id) {
            return Err(ProduceError::ServerMuted);
        }
        if self.own_transport(&p.transport_id)? != Direction::Send {
            return Err(ProduceError::NotSendTransport(p.transport_id.to_string()));
        }
        if j.producers.len() >= limits.max_producers {
            return Err(ProduceError::TooMany { max: limits.max_producers });
        }
        if let Some(app_data) = &p.app_data {
            check_json_size("appData", app_data, limits.max_app_data_bytes)?;
        }
        check_echoed_strings(&p.rtp_parameters)?;
        let id = ProducerId::new(uuid::Uuid::new_v4().to_string());
        let owner = j.peer_id.clone();
        j.router.produce(id.clone(), p.transport_id, owner, p.kind, &p.rtp_parameters).await?;
        let j = self.joined_mut()?;
        j.producers.insert(id.clone(), p.kind);
        let info = ProducerInfo { peer_id: j.peer_id.clone(), producer_id: id.clone(), kind: p.kind, paused: false };
        let (room, me) = (j.room.clone(), j.info.clone());
        change_rooms(&self.shared, |r| r.add_producer(&room, info));
        self.shared.webhooks.emit(WebhookEventKind::ProducerAdded, &room, Some(&me), Some(&id));
        if self.shared.rooms().voice_state(&room, &me.peer_id).self_mute {
            self.pause_own_producer::<ProduceError>(id.clone(), true).await?;
        }
        tracing::info!(producer = %id, "producing");
        Ok(ProduceResult { id })
    }

    /// `pauseProducer` / `resumeProducer`.
    pub(crate) async fn set_producer_paused(
        &mut self,
        p: ProducerParams,
        paused: bool,
    ) -> Result<Empty, ProducerError> {
        let j = self.own_producer(&p.producer_id)?;
        let voice = self.shared.rooms().voice_state(&j.room, &j.peer_id);
        if !paused && voice.server_muted {
            return Err(ProducerError::ServerMuted);
        }
        if !paused && voice.self_mute {
            return Err(ProducerError::SelfMuted);
        }
        self.pause_own_producer::<ProducerError>(p.producer_id, paused).await?;
        Ok(Empty {})
    }

    /// Pauses or resumes one of this session's producers and tells the room.
    pub(super) async fn pause_own_producer<E>(&mut self, id: ProducerId, paused: bool) -> Result<(), E>
    where
        E: From<MediaError> + From<NotJoined>,
    {
        let j = self.joined()?;
        j.router.set_producer_paused(id.clone(), j.peer_id.clone(), paused).await?;
        change_rooms(&self.shared, |r| r.set_producer_paused(&j.room, &id, paused));
        Ok(())
    }

    /// The server muted this session (`adminMutePeer`): every producer is paused, as if
    /// the client had paused it. Unmuting resumes nothing; the client may resume.
    pub(super) async fn server_muted(&mut self) {
        let Ok(j) = self.joined() else { return };
        let producers: Vec<ProducerId> = j.producers.keys().cloned().collect();
        for id in producers {
            if let Err(e) = self.pause_own_producer::<ProducerError>(id.clone(), true).await {
                tracing::warn!(producer = %id, error = %e, "server mute: pausing failed");
            }
        }
    }

    /// `closeProducer`: closes it and every consumer of it.
    pub(crate) async fn close_producer(&mut self, p: ProducerParams) -> Result<Empty, ProducerError> {
        let j = self.own_producer(&p.producer_id)?;
        let closed = j.router.close_producer(p.producer_id.clone(), j.peer_id.clone()).await?;
        change_rooms(&self.shared, |r| r.remove_producer(&j.room, &p.producer_id));
        change_rooms(&self.shared, |r| r.consumers_closed(&j.room, closed));
        self.shared.webhooks.emit(WebhookEventKind::ProducerClosed, &j.room, Some(&j.info), Some(&p.producer_id));
        self.joined_mut()?.producers.remove(&p.producer_id);
        Ok(Empty {})
    }

    /// This session's producer `id`: another peer's is forbidden, others not found.
    fn own_producer(&self, id: &ProducerId) -> Result<&super::Joined, ProducerError> {
        let j = self.joined()?;
        if j.producers.contains_key(id) {
            Ok(j)
        } else if self.shared.rooms().producer(&j.room, id).is_some() {
            Err(ProducerError::NotOwner(id.to_string()))
        } else {
            Err(NotFound::new("producer", id).into())
        }
    }
}
