//! Rooms: their members, their producers and event fan-out.
//!
//! [`Rooms`] is the registry. A room exists while it has members: created by the first
//! `join`, removed by the last `leave`. Locks here are short std mutexes, never held
//! across `.await`; lock order is registry, then room.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use dspeak_schema::rooms::{PeerInfo, ProducerInfo};
use dspeak_schema::{Event, PeerId, ProducerId};

use crate::error::Error;
use crate::events::{self, EventSender, Pushed, RawEvent};
use crate::session::WeakSessionHandle;
use dspeak_media::{ClosedConsumer, Engine, RouterHandle};

/// All rooms of the server.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

/// One room.
#[derive(Debug)]
pub(crate) struct Room {
    name: String,
    /// The room's media router: its place on a media worker, and the engine's API.
    router: RouterHandle,
    state: Mutex<RoomState>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// Members in join order.
    members: Vec<Member>,
    /// Producers in creation order.
    producers: Vec<ProducerInfo>,
}

/// A joined session as its room sees it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) peer_id: PeerId,
    /// The access token's identity, if any: unique within a room.
    pub(crate) identity: Option<String>,
    pub(crate) display_name: String,
    pub(crate) events: EventSender,
    pub(crate) session: WeakSessionHandle,
}

impl Member {
    /// Queues an event; a full queue evicts the member's session.
    fn deliver(&self, event: &RawEvent) -> bool {
        match self.events.push(event.clone()) {
            Pushed::Queued => true,
            Pushed::Overflowed => {
                self.session.post(|s| Box::pin(s.evict_slow()));
                false
            }
            Pushed::Dropped => false,
        }
    }
}

/// Limits checked on join.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoomLimits {
    pub(crate) max_rooms: usize,
    pub(crate) max_peers: usize,
}

/// What a new member learns on joining.
pub(crate) struct Joined {
    pub(crate) room: Arc<Room>,
    pub(crate) peers: Vec<PeerInfo>,
    pub(crate) producers: Vec<ProducerInfo>,
}

impl Rooms {
    /// Adds a member to a room, creating the room if needed, and tells the others.
    pub(crate) fn join(
        &self,
        name: &str,
        member: Member,
        limits: RoomLimits,
        engine: &Engine,
    ) -> Result<Joined, Error> {
        let mut rooms = lock(&self.rooms);
        let rooms_count = rooms.len();
        let room = match rooms.entry(name.to_owned()) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(_) if rooms_count >= limits.max_rooms => {
                return Err(Error::LimitExceeded(format!("the server has its maximum of {} rooms", limits.max_rooms)));
            }
            Entry::Vacant(e) => {
                let router = engine.router()?;
                tracing::info!(room = name, worker = router.worker_index(), "room created");
                e.insert(Arc::new(Room { name: name.to_owned(), router, state: Mutex::default() })).clone()
            }
        };
        let mut state = lock(&room.state);
        if state.members.len() >= limits.max_peers {
            let empty = state.members.is_empty();
            drop(state);
            if empty {
                Self::remove_room(&mut rooms, &room);
            }
            return Err(Error::RoomFull { room: name.to_owned(), limit: limits.max_peers });
        }
        if let Some(identity) = &member.identity {
            for old in state.members.iter().filter(|m| m.identity.as_ref() == Some(identity)) {
                old.session.post(|s| Box::pin(s.replaced()));
            }
        }
        let peers = state
            .members
            .iter()
            .map(|m| PeerInfo { peer_id: m.peer_id.clone(), display_name: m.display_name.clone() })
            .collect();
        let producers = state.producers.clone();
        let event = events::serialize(&Event::PeerJoined {
            peer_id: member.peer_id.clone(),
            display_name: member.display_name.clone(),
        });
        for m in &state.members {
            m.deliver(&event);
        }
        state.members.push(member);
        drop(state);
        Ok(Joined { room, peers, producers })
    }

    /// Removes a member, tells the others, and removes the room once empty.
    pub(crate) fn leave(&self, room: &Arc<Room>, peer_id: &PeerId) {
        let mut rooms = lock(&self.rooms);
        let mut state = lock(&room.state);
        state.members.retain(|m| &m.peer_id != peer_id);
        state.producers.retain(|p| &p.peer_id != peer_id);
        let empty = state.members.is_empty();
        room.fan_out_locked(&state, Some(peer_id), &Event::PeerLeft { peer_id: peer_id.clone() });
        drop(state);
        if empty {
            Self::remove_room(&mut rooms, room);
        }
    }

    fn remove_room(rooms: &mut HashMap<String, Arc<Room>>, room: &Arc<Room>) {
        if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.name);
            tracing::info!(room = %room.name, "room closed");
        }
    }

    /// Number of rooms.
    pub(crate) fn len(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Number of joined peers over all rooms.
    pub(crate) fn peers(&self) -> usize {
        let rooms: Vec<_> = lock(&self.rooms).values().cloned().collect();
        rooms.iter().map(|r| lock(&r.state).members.len()).sum()
    }
}

impl Room {
    /// The room's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The room's media router.
    pub(crate) fn router(&self) -> &RouterHandle {
        &self.router
    }

    /// Sends an event to every member but `except`; returns how many got it queued.
    pub(crate) fn fan_out(&self, except: Option<&PeerId>, event: &Event) -> u32 {
        self.fan_out_locked(&lock(&self.state), except, event)
    }

    fn fan_out_locked(&self, state: &RoomState, except: Option<&PeerId>, event: &Event) -> u32 {
        let event = events::serialize(event);
        let mut delivered = 0;
        for m in state.members.iter().filter(|m| Some(&m.peer_id) != except) {
            delivered += u32::from(m.deliver(&event));
        }
        delivered
    }

    /// Records a new producer and announces it to the others.
    pub(crate) fn add_producer(&self, info: ProducerInfo) {
        let mut state = lock(&self.state);
        let event = Event::ProducerAdded {
            peer_id: info.peer_id.clone(),
            producer_id: info.producer_id.clone(),
            kind: info.kind,
        };
        state.producers.push(info.clone());
        self.fan_out_locked(&state, Some(&info.peer_id), &event);
    }

    /// Looks up a producer of this room.
    pub(crate) fn producer(&self, id: &ProducerId) -> Option<ProducerInfo> {
        lock(&self.state).producers.iter().find(|p| &p.producer_id == id).cloned()
    }

    /// Sets a producer's paused flag and announces the change to the others.
    pub(crate) fn set_producer_paused(&self, id: &ProducerId, paused: bool) {
        let mut state = lock(&self.state);
        let Some(p) = state.producers.iter_mut().find(|p| &p.producer_id == id) else {
            return;
        };
        if p.paused == paused {
            return;
        }
        p.paused = paused;
        let (peer_id, producer_id) = (p.peer_id.clone(), p.producer_id.clone());
        let event = if paused {
            Event::ProducerPaused { peer_id: peer_id.clone(), producer_id }
        } else {
            Event::ProducerResumed { peer_id: peer_id.clone(), producer_id }
        };
        self.fan_out_locked(&state, Some(&peer_id), &event);
    }

    /// Removes a producer and announces it to the others.
    pub(crate) fn remove_producer(&self, id: &ProducerId) {
        let mut state = lock(&self.state);
        let Some(pos) = state.producers.iter().position(|p| &p.producer_id == id) else {
            return;
        };
        let p = state.producers.remove(pos);
        let event = Event::ProducerClosed { peer_id: p.peer_id.clone(), producer_id: p.producer_id };
        self.fan_out_locked(&state, Some(&p.peer_id), &event);
    }

    /// Tells the owners of consumers the engine closed (their producer closed).
    pub(crate) fn notify_closed_consumers(&self, closed: Vec<ClosedConsumer>) {
        let state = lock(&self.state);
        for c in closed {
            if let Some(m) = state.members.iter().find(|m| m.peer_id == c.owner) {
                m.session.post(move |s| Box::pin(s.consumer_closed(c.consumer, c.producer)));
            }
        }
    }
}

/// Locks a mutex, recovering the data if a panic poisoned it (state stays consistent:
/// no code panics between related updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
