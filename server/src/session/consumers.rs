//! The consumers area: `consume`, `pauseConsumer`, `resumeConsumer`, `closeConsumer`,
//! `getStats`, and consumers closed because their producer closed.

use dspeak_schema::media::{ConsumeParams, ConsumeResult, ConsumerParams, Direction, GetStatsParams, Stats};
use dspeak_schema::rooms::Empty;
use dspeak_schema::{ConsumerId, Event, ProducerId};

use super::{OwnConsumer, Session};
use crate::error::{ConsumeError, ConsumerError, NotFound};
use crate::events;

impl Session {
    /// `consume`: a paused consumer of another peer's producer in the same room.
    pub(crate) async fn consume(&mut self, p: ConsumeParams) -> Result<ConsumeResult, ConsumeError> {
        let j = self.joined()?;
        let max = self.shared.config.limits.max_consumers;
        if !j.grants.subscribe {
            return Err(ConsumeError::NotGranted);
        }
        if self.own_transport(&p.transport_id)? != Direction::Recv {
            return Err(ConsumeError::NotRecvTransport(p.transport_id.to_string()));
        }
        let owner = self.shared.rooms().producer(&j.room, &p.producer_id).map(|p| p.peer_id.clone());
        let owner = owner.ok_or_else(|| NotFound::new("producer", &p.producer_id))?;
        if owner == j.peer_id {
            return Err(ConsumeError::OwnProducer);
        }
        if j.consumers.len() >= max {
            return Err(ConsumeError::TooMany { max });
        }
        // Capabilities first, so a client learns it cannot receive before anything else.
        dspeak_media::router::check_can_consume(&p.rtp_capabilities)?;
        // One consumer per producer and session: more would only multiply the
        // worker's output for one input.
        if j.consumers.values().any(|consumed| consumed.producer == p.producer_id) {
            return Err(ConsumeError::AlreadyConsuming(p.producer_id.to_string()));
        }
        let id = ConsumerId::new(uuid::Uuid::new_v4().to_string());
        let (owner, producer) = (j.peer_id.clone(), p.producer_id.clone());
        let consumed = j.router.consume(id.clone(), p.transport_id, owner, producer, p.rtp_capabilities).await?;
        self.joined_mut()?.consumers.insert(id, OwnConsumer { producer: p.producer_id, paused: true });
        Ok(consumed)
    }

    /// `pauseConsumer` / `resumeConsumer`. While the session is deafened the engine
    /// keeps the consumer paused; the client's wish applies once undeafened.
    pub(crate) async fn set_consumer_paused(
        &mut self,
        p: ConsumerParams,
        paused: bool,
    ) -> Result<Empty, ConsumerError> {
        let j = self.own_consumer(&p.consumer_id)?;
        let deaf = self.shared.rooms().voice_state(&j.room, &j.peer_id).self_deaf;
        j.router.set_consumer_paused(p.consumer_id.clone(), j.peer_id.clone(), paused || deaf).await?;
        if let Some(c) = self.joined_mut()?.consumers.get_mut(&p.consumer_id) {
            c.paused = paused;
        }
        Ok(Empty {})
    }

    /// `closeConsumer`.
    pub(crate) async fn close_consumer(&mut self, p: ConsumerParams) -> Result<Empty, ConsumerError> {
        let j = self.own_consumer(&p.consumer_id)?;
        j.router.close_consumer(p.consumer_id.clone(), j.peer_id.clone()).await?;
        self.joined_mut()?.consumers.remove(&p.consumer_id);
        Ok(Empty {})
    }

    /// `getStats`.
    pub(crate) async fn get_stats(&mut self, p: GetStatsParams) -> Result<Stats, ConsumerError> {
        let j = self.joined()?;
        Ok(j.router.stats(p.id, j.peer_id.clone()).await?)
    }

    /// The engine closed one of this session's consumers (its producer closed).
    pub(super) fn consumer_closed(&mut self, consumer_id: ConsumerId, producer_id: ProducerId) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if j.consumers.remove(&consumer_id).is_some() {
            self.events.push(events::serialize(&Event::ConsumerClosed { consumer_id, producer_id }));
        }
    }

    fn own_consumer(&self, id: &ConsumerId) -> Result<&super::Joined, ConsumerError> {
        let j = self.joined()?;
        if j.consumers.contains_key(id) { Ok(j) } else { Err(NotFound::new("consumer", id).into()) }
    }
}
