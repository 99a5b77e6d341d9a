//! Rooms as a state machine: members, producers and what each change means for others.
//!
//! [`Rooms`] is the registry: a room exists while it has members, created by the first
//! `join` and removed by the last `leave`. It does no I/O and knows nothing of sessions:
//! each method takes plain inputs, pushes the events it causes into the members'
//! [`Mailbox`]es (a non-blocking push, never a wait) and returns the [`Effect`]s the
//! caller must carry out — a member to evict, a member replaced by a newer session, a
//! consumer closed under a member, a room opened or closed on a worker. The session
//! layer owns the lock around it and carries the effects out; the unit tests below drive
//! it with plain mailboxes, without sockets or a runtime.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use dspeak_schema::admin::{AdminPeerInfo, RoomSummary};
use dspeak_schema::rooms::{PeerInfo, ProducerInfo, UnixMillis, VoiceState};
use dspeak_schema::{ConsumerId, Event, PeerId, ProducerId};

use crate::error::RoomError;
use crate::events::{self, Pushed, RawEvent};
use dspeak_media::ClosedConsumer;

/// Where a member's events go: a bounded queue that never waits.
pub(crate) trait Mailbox: Clone {
    /// Queues one serialized event.
    fn push(&self, event: &RawEvent) -> Pushed;
}

/// Something only the caller can carry out.
#[derive(Debug)]
pub(crate) enum Effect<M, W> {
    /// The member behind this mailbox must act on `notice`.
    Notice(M, MemberNotice),
    /// A room was created on this worker.
    RoomOpened(W),
    /// A room was removed from this worker (its last member left).
    RoomClosed(W),
}

/// What a member's session is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberNotice {
    /// Its event queue overflowed: it must leave the room.
    Evict,
    /// A newer session with the same identity joined `room`: the member `peer` must
    /// leave it (a session that left since, or is another member now, ignores it).
    Replaced { room: String, peer: PeerId },
    /// The engine closed one of its consumers because the producer closed.
    ConsumerClosed {
        /// The consumer closed.
        consumer: ConsumerId,
        /// The producer it consumed.
        producer: ProducerId,
    },
}

/// A joining or joined session as its room sees it.
#[derive(Debug)]
pub(crate) struct Member<M> {
    pub(crate) peer_id: PeerId,
    /// The access token's identity, if any: unique within a room.
    pub(crate) identity: Option<String>,
    pub(crate) display_name: String,
    /// The access token's `metadata`, shown to others.
    pub(crate) metadata: Option<String>,
    /// Its self-mute and self-deafen flags, and whether the admin API muted it.
    pub(crate) voice: VoiceState,
    pub(crate) mailbox: M,
}

impl<M> Member<M> {
    /// How others see this member.
    fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.peer_id.clone(),
            display_name: self.display_name.clone(),
            identity: self.identity.clone(),
            metadata: self.metadata.clone(),
            self_mute: self.voice.self_mute,
            self_deaf: self.voice.self_deaf,
            server_muted: self.voice.server_muted,
        }
    }

    /// The `voiceStateUpdated` event for its current voice state.
    fn voice_event(&self) -> Event {
        let VoiceState { self_mute, self_deaf, server_muted } = self.voice;
        Event::VoiceStateUpdated { peer_id: self.peer_id.clone(), self_mute, self_deaf, server_muted }
    }
}

/// Limits checked on join.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoomLimits {
    pub(crate) max_rooms: usize,
    pub(crate) max_peers: usize,
    /// The most bytes the peers and producers a new member learns may take as JSON
    /// (what fits in `join`'s answer).
    pub(crate) max_listing_bytes: usize,
}

/// What a new member learns on joining.
#[derive(Debug)]
pub(crate) struct Joined<W> {
    /// The room's router (its place on the media workers).
    pub(crate) worker: W,
    /// The other members, in join order.
    pub(crate) peers: Vec<PeerInfo>,
    /// The room's producers, in creation order.
    pub(crate) producers: Vec<ProducerInfo>,
}

/// All rooms of the server, by name; `W` is a room's router (its place on the media workers).
#[derive(Debug)]
pub(crate) struct Rooms<M, W> {
    rooms: HashMap<String, Room<M, W>>,
}

/// One room.
#[derive(Debug)]
struct Room<M, W> {
    worker: W,
    /// When the room was created.
    created_at_ms: UnixMillis,
    /// Members in join order.
    members: Vec<Member<M>>,
    /// Producers in creation order.
    producers: Vec<ProducerInfo>,
}

/// Effects of one change.
type Effects<M, W> = Vec<Effect<M, W>>;

impl<M, W> Default for Rooms<M, W> {
    fn default() -> Self {
        Rooms { rooms: HashMap::new() }
    }
}

/// The size of a join answer's listing of a room, its peers and producers, as JSON.
fn listing_len(peers: &[PeerInfo], producers: &[ProducerInfo]) -> usize {
    // Wire types (strings, numbers, options) always serialize.
    let len = |json: serde_json::Result<Vec<u8>>| json.map_or(usize::MAX, |v| v.len());
    len(serde_json::to_vec(peers)).saturating_add(len(serde_json::to_vec(producers)))
}

impl<M: Mailbox, W: Clone> Rooms<M, W> {
    /// Adds a member to room `name`, creating the room (at time `now`) on a worker from
    /// `place` if needed; the others get `peerJoined`, and older members with the same
    /// identity are replaced.
    pub(crate) fn join(
        &mut self,
        name: &str,
        member: Member<M>,
        limits: RoomLimits,
        now: UnixMillis,
        place: impl FnOnce() -> W,
    ) -> Result<(Joined<W>, Effects<M, W>), RoomError> {
        let mut fx = Vec::new();
        let count = self.rooms.len();
        let room = match self.rooms.entry(name.to_owned()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if count >= limits.max_rooms => {
                return Err(RoomError::TooManyRooms { limit: limits.max_rooms });
            }
            Entry::Vacant(_) if limits.max_peers == 0 => {
                return Err(RoomError::Full { room: name.to_owned(), limit: 0 });
            }
            // Even an empty room's listing must fit: refused before the room exists,
            // so a refusal leaves no empty room behind.
            Entry::Vacant(_) if listing_len(&[], &[]) > limits.max_listing_bytes => {
                let (size, limit) = (listing_len(&[], &[]), limits.max_listing_bytes);
                return Err(RoomError::ListingTooLarge { room: name.to_owned(), size, limit });
            }
            Entry::Vacant(e) => {
                let worker = place();
                fx.push(Effect::RoomOpened(worker.clone()));
                e.insert(Room { worker, created_at_ms: now, members: Vec::new(), producers: Vec::new() })
            }
        };
        if room.members.len() >= limits.max_peers {
            return Err(RoomError::Full { room: name.to_owned(), limit: limits.max_peers });
        }
        if let Some(identity) = &member.identity {
            for old in room.members.iter().filter(|m| m.identity.as_ref() == Some(identity)) {
                let notice = MemberNotice::Replaced { room: name.to_owned(), peer: old.peer_id.clone() };
                fx.push(Effect::Notice(old.mailbox.clone(), notice));
            }
        }
        let peers: Vec<PeerInfo> = room.members.iter().map(Member::info).collect();
        // Checked before anyone hears of the new member.
        let size = listing_len(&peers, &room.producers);
        if size > limits.max_listing_bytes {
            return Err(RoomError::ListingTooLarge { room: name.to_owned(), size, limit: limits.max_listing_bytes });
        }
        let event = Event::PeerJoined {
            peer_id: member.peer_id.clone(),
            display_name: member.display_name.clone(),
            identity: member.identity.clone(),
            metadata: member.metadata.clone(),
        };
        room.fan_out(None, &event, &mut fx);
        room.members.push(member);
        let joined = Joined { worker: room.worker.clone(), peers, producers: room.producers.clone() };
        Ok((joined, fx))
    }

    /// Removes a member and its producers from room `name`; the others get `peerLeft`.
    /// The room is removed once empty.
    pub(crate) fn leave(&mut self, name: &str, peer_id: &PeerId) -> Effects<M, W> {
        let mut fx = Vec::new();
        let Some(room) = self.rooms.get_mut(name) else { return fx };
        room.members.retain(|m| &m.peer_id != peer_id);
        room.producers.retain(|p| &p.peer_id != peer_id);
        if room.members.is_empty() {
            if let Some(room) = self.rooms.remove(name) {
                fx.push(Effect::RoomClosed(room.worker));
            }
        } else {
            room.fan_out(Some(peer_id), &Event::PeerLeft { peer_id: peer_id.clone() }, &mut fx);
        }
        fx
    }

    /// Sends `event` to every member of room `name` but `except`; returns how many got
    /// it queued.
    pub(crate) fn fan_out(&mut self, name: &str, except: Option<&PeerId>, event: &Event) -> (u32, Effects<M, W>) {
        let mut fx = Vec::new();
        let delivered = self.rooms.get(name).map_or(0, |room| room.fan_out(except, event, &mut fx));
        (delivered, fx)
    }

    /// Records a new producer and announces it to the other members.
    pub(crate) fn add_producer(&mut self, name: &str, info: ProducerInfo) -> Effects<M, W> {
        let mut fx = Vec::new();
        let Some(room) = self.rooms.get_mut(name) else { return fx };
        let event = Event::ProducerAdded {
            peer_id: info.peer_id.clone(),
            producer_id: info.producer_id.clone(),
            kind: info.kind,
        };
        room.fan_out(Some(&info.peer_id), &event, &mut fx);
        room.producers.push(info);
        fx
    }

    /// Looks up a producer of room `name`.
    pub(crate) fn producer(&self, name: &str, id: &ProducerId) -> Option<&ProducerInfo> {
        self.rooms.get(name)?.producers.iter().find(|p| &p.producer_id == id)
    }

    /// Sets a producer's paused flag and announces a change to the other members.
    pub(crate) fn set_producer_paused(&mut self, name: &str, id: &ProducerId, paused: bool) -> Effects<M, W> {
        let mut fx = Vec::new();
        let Some(room) = self.rooms.get_mut(name) else { return fx };
        let Some(p) = room.producers.iter_mut().find(|p| &p.producer_id == id) else { return fx };
        if p.paused == paused {
            return fx;
        }
        p.paused = paused;
        let (peer_id, producer_id) = (p.peer_id.clone(), p.producer_id.clone());
        let event = if paused {
            Event::ProducerPaused { peer_id: peer_id.clone(), producer_id }
        } else {
            Event::ProducerResumed { peer_id: peer_id.clone(), producer_id }
        };
        room.fan_out(Some(&peer_id), &event, &mut fx);
        fx
    }

    /// Removes a producer and announces it to the other members.
    pub(crate) fn remove_producer(&mut self, name: &str, id: &ProducerId) -> Effects<M, W> {
        let mut fx = Vec::new();
        let Some(room) = self.rooms.get_mut(name) else { return fx };
        let Some(pos) = room.producers.iter().position(|p| &p.producer_id == id) else { return fx };
        let p = room.producers.remove(pos);
        let event = Event::ProducerClosed { peer_id: p.peer_id.clone(), producer_id: p.producer_id };
        room.fan_out(Some(&p.peer_id), &event, &mut fx);
        fx
    }

    /// Tells the owners of consumers the engine closed (their producer closed).
    pub(crate) fn consumers_closed(&self, name: &str, closed: Vec<ClosedConsumer>) -> Effects<M, W> {
        let Some(room) = self.rooms.get(name) else { return Vec::new() };
        closed
            .into_iter()
            .filter_map(|c| {
                let owner = room.members.iter().find(|m| m.peer_id == c.owner)?;
                let notice = MemberNotice::ConsumerClosed { consumer: c.consumer, producer: c.producer };
                Some(Effect::Notice(owner.mailbox.clone(), notice))
            })
            .collect()
    }

    /// Summaries of the rooms (all, or only room `only`), by name.
    pub(crate) fn summaries(&self, only: Option<&str>) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(name, room)| RoomSummary {
                room: name.clone(),
                peers: u32::try_from(room.members.len()).unwrap_or(u32::MAX),
                producers: u32::try_from(room.producers.len()).unwrap_or(u32::MAX),
                created_at_ms: room.created_at_ms,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// The members of room `name` with their producers and server-mute state, in join
    /// order; `None` if there is no such room.
    pub(crate) fn admin_peers(&self, name: &str) -> Option<Vec<AdminPeerInfo>> {
        let room = self.rooms.get(name)?;
        let peers = room.members.iter().map(|m| {
            let info = m.info();
            AdminPeerInfo {
                peer_id: info.peer_id,
                display_name: info.display_name,
                identity: info.identity,
                metadata: info.metadata,
                producers: room.producers.iter().filter(|p| p.peer_id == m.peer_id).cloned().collect(),
                server_muted: m.voice.server_muted,
            }
        });
        Some(peers.collect())
    }

    /// Whether room `name` exists.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// The mailboxes of room `name`'s members (`None`: no such room).
    pub(crate) fn mailboxes(&self, name: &str) -> Option<Vec<(PeerId, M)>> {
        let room = self.rooms.get(name)?;
        Some(room.members.iter().map(|m| (m.peer_id.clone(), m.mailbox.clone())).collect())
    }

    /// The mailbox of member `peer_id` of room `name`.
    pub(crate) fn mailbox(&self, name: &str, peer_id: &PeerId) -> Option<M> {
        self.rooms.get(name)?.members.iter().find(|m| &m.peer_id == peer_id).map(|m| m.mailbox.clone())
    }

    /// The voice state of member `peer_id` of room `name` (all off if there is none).
    pub(crate) fn voice_state(&self, name: &str, peer_id: &PeerId) -> VoiceState {
        self.rooms
            .get(name)
            .and_then(|r| r.members.iter().find(|m| &m.peer_id == peer_id))
            .map_or_else(VoiceState::default, |m| m.voice)
    }

    /// Whether the server muted member `peer_id` of room `name`.
    pub(crate) fn is_server_muted(&self, name: &str, peer_id: &PeerId) -> bool {
        self.voice_state(name, peer_id).server_muted
    }

    /// Sets member `peer_id`'s server-mute flag; on a change every member (the peer
    /// too) gets `peerUpdated` and `voiceStateUpdated`. `None` if there is no such member.
    pub(crate) fn set_server_muted(&mut self, name: &str, peer_id: &PeerId, muted: bool) -> Option<Effects<M, W>> {
        let room = self.rooms.get_mut(name)?;
        let member = room.members.iter_mut().find(|m| &m.peer_id == peer_id)?;
        let mut fx = Vec::new();
        if std::mem::replace(&mut member.voice.server_muted, muted) != muted {
            let voice = member.voice_event();
            room.fan_out(None, &Event::PeerUpdated { peer_id: peer_id.clone(), server_muted: muted }, &mut fx);
            room.fan_out(None, &voice, &mut fx);
        }
        Some(fx)
    }

    /// Sets member `peer_id`'s self-mute and self-deafen flags (those given); on a
    /// change every member (the peer too) gets `voiceStateUpdated`. Returns the new
    /// state, `None` if there is no such member.
    pub(crate) fn set_voice_state(
        &mut self,
        name: &str,
        peer_id: &PeerId,
        self_mute: Option<bool>,
        self_deaf: Option<bool>,
    ) -> (Option<VoiceState>, Effects<M, W>) {
        let mut fx = Vec::new();
        let Some(room) = self.rooms.get_mut(name) else { return (None, fx) };
        let Some(member) = room.members.iter_mut().find(|m| &m.peer_id == peer_id) else { return (None, fx) };
        let before = member.voice;
        member.voice.self_mute = self_mute.unwrap_or(before.self_mute);
        member.voice.self_deaf = self_deaf.unwrap_or(before.self_deaf);
        let after = member.voice;
        if after != before {
            let event = member.voice_event();
            room.fan_out(None, &event, &mut fx);
        }
        (Some(after), fx)
    }

    /// Number of rooms.
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Number of members over all rooms.
    pub(crate) fn peers(&self) -> usize {
        self.rooms.values().map(|r| r.members.len()).sum()
    }
}

impl<M: Mailbox, W> Room<M, W> {
    /// Serializes `event` once and pushes it to every member but `except`; a member
    /// whose queue overflows is to be evicted. Returns how many got it queued.
    fn fan_out(&self, except: Option<&PeerId>, event: &Event, fx: &mut Effects<M, W>) -> u32 {
        let event = events::serialize(event);
        let mut delivered = 0;
        for m in self.members.iter().filter(|m| Some(&m.peer_id) != except) {
            match m.mailbox.push(&event) {
                Pushed::Queued | Pushed::Kept => delivered += 1,
                Pushed::Overflowed => fx.push(Effect::Notice(m.mailbox.clone(), MemberNotice::Evict)),
                Pushed::Dropped => {}
            }
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use dspeak_schema::ortc::MediaKind;
    use serde_json::Value;

    use super::*;

    /// A mailbox that records events as JSON, holding at most `capacity`.
    #[derive(Clone, Debug)]
    struct Inbox {
        name: &'static str,
        capacity: usize,
        events: Rc<RefCell<Vec<Value>>>,
        overflowed: Rc<RefCell<bool>>,
    }

    impl Inbox {
        fn new(name: &'static str, capacity: usize) -> Self {
            Inbox { name, capacity, events: Rc::default(), overflowed: Rc::default() }
        }

        /// The `type`s of the events received so far, emptying the inbox.
        fn take_types(&self) -> Vec<String> {
            self.events.borrow_mut().drain(..).map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
        }
    }

    impl Mailbox for Inbox {
        fn push(&self, event: &RawEvent) -> Pushed {
            let mut events = self.events.borrow_mut();
            if events.len() < self.capacity {
                events.push(serde_json::from_str(event.get()).unwrap_or_default());
                Pushed::Queued
            } else if std::mem::replace(&mut *self.overflowed.borrow_mut(), true) {
                Pushed::Dropped
            } else {
                Pushed::Overflowed
            }
        }
    }

    type TestRooms = Rooms<Inbox, &'static str>;
    type TestEffect = Effect<Inbox, &'static str>;

    const LIMITS: RoomLimits = RoomLimits { max_rooms: 2, max_peers: 3, max_listing_bytes: usize::MAX };

    fn member(inbox: &Inbox, identity: Option<&str>) -> Member<Inbox> {
        Member {
            peer_id: PeerId::from(inbox.name),
            identity: identity.map(str::to_owned),
            display_name: inbox.name.to_uppercase(),
            metadata: None,
            voice: VoiceState::default(),
            mailbox: inbox.clone(),
        }
    }

    fn join(rooms: &mut TestRooms, room: &str, inbox: &Inbox) -> (Joined<&'static str>, Vec<TestEffect>) {
        rooms.join(room, member(inbox, None), LIMITS, 7, || "w0").expect("join")
    }

    /// Effects as short strings, for comparing.
    fn describe(fx: &[TestEffect]) -> Vec<String> {
        fx.iter()
            .map(|e| match e {
                Effect::Notice(m, notice) => format!("{}: {notice:?}", m.name),
                Effect::RoomOpened(w) => format!("opened on {w}"),
                Effect::RoomClosed(w) => format!("closed on {w}"),
            })
            .collect()
    }

    fn producer(peer: &str, id: &str) -> ProducerInfo {
        ProducerInfo {
            peer_id: PeerId::from(peer),
            producer_id: ProducerId::from(id),
            kind: MediaKind::Audio,
            paused: false,
        }
    }

    #[test]
    fn join_creates_the_room_announces_and_lists_the_others() {
        let mut rooms = TestRooms::default();
        let (ann, bob) = (Inbox::new("ann", 8), Inbox::new("bob", 8));
        let (joined, fx) = join(&mut rooms, "r", &ann);
        assert_eq!(describe(&fx), ["opened on w0"]);
        assert!(joined.peers.is_empty() && joined.producers.is_empty());
        assert!(rooms.add_producer("r", producer("ann", "p1")).is_empty());

        let (joined, fx) = rooms.join("r", member(&bob, None), LIMITS, 8, || unreachable!("the room exists")).unwrap();
        assert!(fx.is_empty());
        assert_eq!(joined.worker, "w0");
        let ann_info = PeerInfo {
            peer_id: PeerId::from("ann"),
            display_name: "ANN".into(),
            identity: None,
            metadata: None,
            self_mute: false,
            self_deaf: false,
            server_muted: false,
        };
        assert_eq!(joined.peers, [ann_info]);
        assert_eq!(joined.producers, [producer("ann", "p1")]);
        assert_eq!(ann.take_types(), ["peerJoined"]);
        assert!(bob.take_types().is_empty(), "a member is not told about itself");
        assert_eq!((rooms.len(), rooms.peers()), (1, 2));
    }

    /// Room `r` with ann and bob, bob producing `p1`; ann's inbox emptied.
    fn ann_and_bob_producing() -> (TestRooms, Inbox, Inbox) {
        let mut rooms = TestRooms::default();
        let (ann, bob) = (Inbox::new("ann", 8), Inbox::new("bob", 8));
        join(&mut rooms, "r", &ann);
        join(&mut rooms, "r", &bob);
        rooms.add_producer("r", producer("bob", "p1"));
        ann.take_types();
        (rooms, ann, bob)
    }

    #[test]
    fn leave_announces_drops_the_producers_and_closes_the_empty_room() {
        let (mut rooms, ann, _bob) = ann_and_bob_producing();

        assert!(rooms.leave("r", &PeerId::from("bob")).is_empty());
        assert_eq!(ann.take_types(), ["peerLeft"]);
        assert!(rooms.producer("r", &ProducerId::from("p1")).is_none());
        assert_eq!(describe(&rooms.leave("r", &PeerId::from("ann"))), ["closed on w0"]);
        assert_eq!((rooms.len(), rooms.peers()), (0, 0));
        assert!(rooms.leave("r", &PeerId::from("ann")).is_empty(), "leaving twice is harmless");
    }

    #[test]
    fn limits_refuse_without_changing_anything() {
        let mut rooms = TestRooms::default();
        let inboxes: Vec<Inbox> = ["a", "b", "c", "d", "e"].into_iter().map(|n| Inbox::new(n, 8)).collect();
        for i in &inboxes[..3] {
            join(&mut rooms, "r1", i);
        }
        let full = rooms.join("r1", member(&inboxes[3], None), LIMITS, 9, || "w0");
        assert!(matches!(full, Err(RoomError::Full { limit: 3, .. })), "{full:?}");
        join(&mut rooms, "r2", &inboxes[3]);
        let third = rooms.join("r3", member(&inboxes[4], None), LIMITS, 9, || unreachable!("no room is created"));
        assert!(matches!(third, Err(RoomError::TooManyRooms { limit: 2 })), "{third:?}");
        let no_peers = RoomLimits { max_peers: 0, max_rooms: 9, ..LIMITS };
        assert!(rooms.join("r4", member(&inboxes[4], None), no_peers, 9, || unreachable!()).is_err());
        assert_eq!((rooms.len(), rooms.peers()), (2, 4));
        // A member whose listing would not fit in one answer is refused before the
        // others hear of it.
        let tight = RoomLimits { max_listing_bytes: 64, ..LIMITS };
        let listed = rooms.join("r2", member(&inboxes[4], None), tight, 9, || unreachable!());
        assert!(matches!(listed, Err(RoomError::ListingTooLarge { limit: 64, .. })), "{listed:?}");
        assert_eq!(rooms.peers(), 4);
        assert!(inboxes[3].take_types().is_empty(), "no peerJoined for the refused member");
        // Not even an empty listing fits: no room is made (and none left behind).
        let none = RoomLimits { max_listing_bytes: 3, max_rooms: 9, ..LIMITS };
        let refused = rooms.join("r5", member(&inboxes[4], None), none, 9, || unreachable!("no room is created"));
        assert!(matches!(refused, Err(RoomError::ListingTooLarge { size: 4, limit: 3, .. })), "{refused:?}");
        assert_eq!((rooms.len(), rooms.peers()), (2, 4));
    }

    #[test]
    fn the_same_identity_replaces_the_older_member() {
        let mut rooms = TestRooms::default();
        let (old, new, other) = (Inbox::new("old", 8), Inbox::new("new", 8), Inbox::new("other", 8));
        rooms.join("r", member(&old, Some("user-1")), LIMITS, 9, || "w0").unwrap();
        rooms.join("r", member(&other, Some("user-2")), LIMITS, 9, || "w0").unwrap();
        let (_, fx) = rooms.join("r", member(&new, Some("user-1")), LIMITS, 9, || "w0").unwrap();
        assert_eq!(describe(&fx), [r#"old: Replaced { room: "r", peer: PeerId("old") }"#]);
        // The old member stays until its session leaves; it still hears the join.
        assert_eq!(old.take_types(), ["peerJoined", "peerJoined"]);
    }

    #[test]
    fn a_full_mailbox_evicts_its_member_once_and_others_still_get_the_event() {
        let mut rooms = TestRooms::default();
        let (ann, slow) = (Inbox::new("ann", 8), Inbox::new("slow", 1));
        join(&mut rooms, "r", &slow);
        join(&mut rooms, "r", &ann); // slow's one slot: peerJoined
        let event = Event::Broadcast { from: Some(PeerId::from("ann")), payload: Value::from(1) };
        let (delivered, fx) = rooms.fan_out("r", Some(&PeerId::from("ann")), &event);
        assert_eq!((delivered, describe(&fx)), (0, vec!["slow: Evict".to_owned()]));
        let (_, fx) = rooms.fan_out("r", None, &event);
        assert_eq!(describe(&fx), Vec::<String>::new(), "an overflowed mailbox is evicted once");
        assert_eq!(ann.take_types(), ["broadcast"]);
    }

    #[test]
    fn producer_lifecycle_is_announced_to_the_others_only() {
        let mut rooms = TestRooms::default();
        let (ann, bob) = (Inbox::new("ann", 8), Inbox::new("bob", 8));
        join(&mut rooms, "r", &ann);
        join(&mut rooms, "r", &bob);
        ann.take_types();
        let id = ProducerId::from("p1");
        rooms.add_producer("r", producer("ann", "p1"));
        rooms.set_producer_paused("r", &id, true);
        rooms.set_producer_paused("r", &id, true); // no change, no event
        assert!(rooms.producer("r", &id).is_some_and(|p| p.paused));
        rooms.set_producer_paused("r", &id, false);
        rooms.remove_producer("r", &id);
        rooms.remove_producer("r", &id); // gone already
        assert_eq!(bob.take_types(), ["producerAdded", "producerPaused", "producerResumed", "producerClosed"]);
        assert!(ann.take_types().is_empty());
        assert!(rooms.producer("r", &id).is_none());
    }

    #[test]
    fn server_mute_is_announced_to_everyone_once_and_listed() {
        let (mut rooms, ann, bob) = ann_and_bob_producing();
        let bob_id = PeerId::from("bob");
        assert!(rooms.set_server_muted("r", &bob_id, true).is_some_and(|fx| fx.is_empty()));
        assert!(rooms.is_server_muted("r", &bob_id));
        assert_eq!(ann.take_types(), ["peerUpdated", "voiceStateUpdated"]);
        assert_eq!(bob.take_types(), ["peerUpdated", "voiceStateUpdated"], "the muted peer is told too");
        rooms.set_server_muted("r", &bob_id, true);
        assert!(ann.take_types().is_empty(), "no change, no event");
        let peers = rooms.admin_peers("r").expect("the room exists");
        assert_eq!(
            peers.iter().map(|p| (p.peer_id.as_str(), p.server_muted, p.producers.len())).collect::<Vec<_>>(),
            [("ann", false, 0), ("bob", true, 1)]
        );
        assert!(rooms.set_server_muted("r", &PeerId::from("nobody"), true).is_none());
        assert!(rooms.admin_peers("nowhere").is_none());
    }

    #[test]
    fn voice_state_changes_are_announced_to_everyone_once_and_listed() {
        let (mut rooms, ann, bob) = ann_and_bob_producing();
        let bob_id = PeerId::from("bob");
        let (state, fx) = rooms.set_voice_state("r", &bob_id, Some(true), None);
        assert!(fx.is_empty());
        assert_eq!(state, Some(VoiceState { self_mute: true, self_deaf: false, server_muted: false }));
        let (state, _) = rooms.set_voice_state("r", &bob_id, None, Some(true));
        assert_eq!(state, Some(VoiceState { self_mute: true, self_deaf: true, server_muted: false }), "kept mute");
        assert_eq!(ann.take_types(), ["voiceStateUpdated", "voiceStateUpdated"]);
        assert_eq!(bob.take_types(), ["voiceStateUpdated", "voiceStateUpdated"], "the peer is told too");
        rooms.set_voice_state("r", &bob_id, Some(true), Some(true));
        rooms.set_voice_state("r", &bob_id, None, None);
        assert!(ann.take_types().is_empty(), "no change, no event");
        assert_eq!(
            rooms.voice_state("r", &bob_id),
            VoiceState { self_mute: true, self_deaf: true, server_muted: false }
        );
        let newcomer = Inbox::new("cat", 8);
        let (joined, _) = join(&mut rooms, "r", &newcomer);
        let listed = joined.peers.iter().find(|p| p.peer_id == bob_id).expect("bob is listed");
        assert!((listed.self_mute, listed.self_deaf, listed.server_muted) == (true, true, false), "{listed:?}");
        assert_eq!(rooms.set_voice_state("r", &PeerId::from("nobody"), Some(true), None).0, None);
        assert_eq!(rooms.set_voice_state("nowhere", &bob_id, Some(true), None).0, None);
    }

    #[test]
    fn summaries_list_rooms_by_name_with_counts_and_creation_time() {
        let mut rooms = TestRooms::default();
        let (ann, bob) = (Inbox::new("ann", 8), Inbox::new("bob", 8));
        join(&mut rooms, "b", &ann);
        join(&mut rooms, "a", &bob);
        rooms.add_producer("a", producer("bob", "p1"));
        let summary =
            |room: &str, peers, producers| RoomSummary { room: room.into(), peers, producers, created_at_ms: 7 };
        assert_eq!(rooms.summaries(None), [summary("a", 1, 1), summary("b", 1, 0)]);
        assert_eq!(rooms.summaries(Some("b")), [summary("b", 1, 0)]);
        assert!(rooms.summaries(Some("c")).is_empty());
    }

    #[test]
    fn closed_consumers_reach_their_owners_if_still_members() {
        let mut rooms = TestRooms::default();
        let (ann, bob) = (Inbox::new("ann", 8), Inbox::new("bob", 8));
        join(&mut rooms, "r", &ann);
        join(&mut rooms, "r", &bob);
        let closed = |owner: &str, consumer: &str| ClosedConsumer {
            consumer: ConsumerId::from(consumer),
            producer: ProducerId::from("p1"),
            owner: PeerId::from(owner),
        };
        let fx = rooms.consumers_closed("r", vec![closed("bob", "c1"), closed("gone", "c2")]);
        assert_eq!(
            describe(&fx),
            [r#"bob: ConsumerClosed { consumer: ConsumerId("c1"), producer: ProducerId("p1") }"#]
        );
        assert!(rooms.consumers_closed("nowhere", vec![closed("bob", "c3")]).is_empty());
    }
}
