//! The producers area: `produce`, `pauseProducer`, `resumeProducer`, `closeProducer`.

use dspeak_schema::ProducerId;
use dspeak_schema::media::{ProduceParams, ProduceResult, ProducerParams};
use dspeak_schema::rooms::{Empty, ProducerInfo};

use super::{Session, check_json_size};
use crate::error::Error;

impl Session {
    /// `produce`: starts receiving an Opus track and announces it to the room.
    pub(crate) async fn produce(&mut self, p: ProduceParams) -> Result<ProduceResult, Error> {
        let j = self.joined()?;
        let limits = &self.shared.config.limits;
        if !j.grants.publish {
            return Err(Error::Forbidden("the access token does not grant canPublish".into()));
        }
        self.own_transport(&p.transport_id)?;
        if j.producers.len() >= limits.max_producers {
            return Err(Error::LimitExceeded(format!("a session may hold at most {} producers", limits.max_producers)));
        }
        if let Some(app_data) = &p.app_data {
            check_json_size("appData", app_data, limits.max_app_data_bytes)?;
        }
        let id = ProducerId::new(uuid::Uuid::new_v4().to_string());
        let owner = j.peer_id.clone();
        j.room.router().produce(id.clone(), p.transport_id, owner, p.kind, &p.rtp_parameters).await?;
        let j = self.joined_mut()?;
        j.producers.insert(id.clone());
        j.room.add_producer(ProducerInfo {
            peer_id: j.peer_id.clone(),
            producer_id: id.clone(),
            kind: p.kind,
            paused: false,
        });
        tracing::info!(producer = %id, "producing");
        Ok(ProduceResult { id })
    }

    /// `pauseProducer` / `resumeProducer`.
    pub(crate) async fn set_producer_paused(&mut self, p: ProducerParams, paused: bool) -> Result<Empty, Error> {
        let j = self.own_producer(&p.producer_id)?;
        j.room.router().set_producer_paused(p.producer_id.clone(), j.peer_id.clone(), paused).await?;
        j.room.set_producer_paused(&p.producer_id, paused);
        Ok(Empty {})
    }

    /// `closeProducer`: closes it and every consumer of it.
    pub(crate) async fn close_producer(&mut self, p: ProducerParams) -> Result<Empty, Error> {
        let j = self.own_producer(&p.producer_id)?;
        let closed = j.room.router().close_producer(p.producer_id.clone(), j.peer_id.clone()).await?;
        j.room.remove_producer(&p.producer_id);
        j.room.notify_closed_consumers(closed);
        self.joined_mut()?.producers.remove(&p.producer_id);
        Ok(Empty {})
    }

    /// This session's producer `id`: another peer's is forbidden, others not found.
    fn own_producer(&self, id: &ProducerId) -> Result<&super::Joined, Error> {
        let j = self.joined()?;
        if j.producers.contains(id) {
            Ok(j)
        } else if j.room.producer(id).is_some() {
            Err(Error::Forbidden(format!("producer '{id}' belongs to another peer")))
        } else {
            Err(Error::not_found("producer", id))
        }
    }
}
