//! Producers of other workers (`cross`): the producer's worker keeps, per producer,
//! which workers subscribe (ref-counted per worker: one count per consumer there),
//! and writes each packet once per subscribing worker; a subscribing worker keeps a
//! [`RemoteProducer`] entry whose local consumers it fans out to from its rings.
//!
//! Subscribing is the router handle's job (it asks the producer's worker first, then
//! creates the consumer); unsubscribing is the consumer's worker's, one command per
//! closed consumer, in order after the subscribe it undoes.

use std::time::Instant;

use dspeak_schema::{PeerId, ProducerId};

use super::forward::Egress;
use super::{Command, ConsumerKey, Worker};
use crate::cross::Record;
use crate::error::MediaError;
use crate::handle::ClosedConsumer;
use crate::router::ProducerStream;

/// Records drained per wake-up before the loop gives other work a turn.
const DRAIN_BATCH: usize = 512;

/// What a consumer's worker needs of a producer on another worker.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    /// The producer's engine-wide key (in its packets' records).
    pub(crate) key: u64,
    /// The producer's worker.
    pub(crate) source: usize,
    pub(crate) stream: ProducerStream,
    /// Paused when subscribed (what the consumer's `consume` answers).
    pub(crate) paused: bool,
    pub(crate) epoch: u32,
}

/// A producer of another worker, as a worker with consumers of it sees it. Whether
/// it is paused is not kept here: its worker hands over none of its packets while it
/// is paused, and its consumers' stats ask its worker.
#[derive(Debug)]
pub(super) struct RemoteProducer {
    pub(super) source: usize,
    /// The producer's resume count last seen: a new one resynchronizes the consumers.
    pub(super) epoch: u32,
    pub(super) consumers: Vec<ConsumerKey>,
}

impl Worker {
    /// Worker `to` will have a consumer of producer `id` (of this worker).
    pub(crate) fn subscribe(&mut self, id: &ProducerId, to: usize) -> Result<Subscription, MediaError> {
        let p = self.producers.get_mut(id).ok_or_else(|| MediaError::not_found("producer", id))?;
        match p.subscribers.iter_mut().find(|(w, _)| *w == to) {
            Some((_, count)) => *count += 1,
            None => p.subscribers.push((to, 1)),
        }
        Ok(Subscription {
            key: p.key,
            source: self.links.index,
            stream: p.stream.clone(),
            paused: p.paused,
            epoch: p.epoch,
        })
    }

    /// One consumer of producer `key` on worker `from` went (or was never made).
    pub(crate) fn unsubscribe(&mut self, key: u64, from: usize) {
        let Some(p) = self.producers.values_mut().find(|p| p.key == key) else { return };
        if let Some(i) = p.subscribers.iter().position(|(w, _)| *w == from) {
            p.subscribers[i].1 -= 1;
            if p.subscribers[i].1 == 0 {
                p.subscribers.swap_remove(i);
            }
        }
    }

    /// Adds a local consumer to a remote producer's entry (made on first use).
    pub(super) fn attach_remote(&mut self, sub: &Subscription, id: &ProducerId, consumer: ConsumerKey) {
        let entry = self.remote.entry(sub.key).or_insert_with(|| RemoteProducer {
            source: sub.source,
            epoch: sub.epoch,
            consumers: Vec::new(),
        });
        entry.consumers.push(consumer);
        self.remote_keys.insert(id.clone(), sub.key);
    }

    /// A local consumer of a remote producer closed: the entry forgets it, goes with
    /// its last consumer, and the producer's worker is told.
    pub(super) fn detach_remote(&mut self, producer: &ProducerId, consumer: ConsumerKey) {
        let Some(&key) = self.remote_keys.get(producer) else { return };
        let Some(entry) = self.remote.get_mut(&key) else { return };
        entry.consumers.retain(|&c| c != consumer);
        let source = entry.source;
        if entry.consumers.is_empty() {
            self.remote.remove(&key);
            self.remote_keys.remove(producer);
        }
        let me = self.links.index;
        if let Some(peer) = self.links.peer(source) {
            let command: Command = Box::new(move |w| w.unsubscribe(key, me));
            let _ = peer.send(command);
        }
    }

    /// Producer `id` of another worker closed: its consumers here close too.
    pub(crate) fn close_remote_producer(&mut self, id: &ProducerId) -> Vec<ClosedConsumer> {
        let Some(key) = self.remote_keys.remove(id) else { return Vec::new() };
        let Some(entry) = self.remote.remove(&key) else { return Vec::new() };
        entry
            .consumers
            .into_iter()
            .filter_map(|k| {
                let c = self.consumers.get(k)?.id.clone();
                let owner: PeerId = self.remove_consumer(&c)?;
                Some(ClosedConsumer { consumer: c, producer: id.clone(), owner })
            })
            .collect()
    }

    /// Reads what other workers handed over: packets go to the consumers here, level
    /// samples to the rooms' detectors. Wakes itself again if records are left.
    pub(super) fn drain_inbound(&mut self, now: Instant) {
        let mut inbound = self.links.take_inbound();
        let left = inbound.drain(DRAIN_BATCH, |record| {
            let Worker { remote, consumers, transports, arena, tcp_arena, socket, traffic, rooms, .. } = &mut *self;
            match record {
                Record::Packet(h) => {
                    let Some(entry) = remote.get_mut(&h.producer) else { return };
                    if entry.epoch != h.epoch {
                        entry.epoch = h.epoch;
                        for &k in &entry.consumers {
                            if let Some(c) = consumers.get_mut(k) {
                                c.seq.resync();
                            }
                        }
                    }
                    Egress { consumers, transports, arena, tcp_arena, socket, traffic }.fan_out(
                        &entry.consumers,
                        &h,
                        now,
                    );
                }
                Record::Level(sample) => super::speakers::observe(rooms, &sample),
            }
        });
        self.links.put_back(inbound);
        if left {
            self.links.wake.notify_one();
        }
    }
}
