//! The session and room area: `join`, `leave`, `broadcast`, slow-consumer eviction.

use dspeak_schema::rooms::{BroadcastParams, BroadcastResult, Empty, JoinParams, JoinResult};
use dspeak_schema::{Event, PeerId};

use super::{Joined, Session, check_json_size};
use crate::auth;
use crate::error::Error;
use crate::room::{Member, RoomLimits};
use dspeak_media::router;

/// Longest room name and display name, in characters.
const MAX_NAME_CHARS: usize = 64;

fn check_name(what: &'static str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::InvalidParams(format!("{what} must not be empty")));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::TooLarge { what, size: chars, limit: MAX_NAME_CHARS });
    }
    Ok(())
}

impl Session {
    /// `join`: enters a room (created on first join).
    pub(crate) async fn join(&mut self, p: JoinParams) -> Result<JoinResult, Error> {
        if let Some(j) = &self.joined {
            return Err(Error::AlreadyJoined(j.room.name().to_owned()));
        }
        check_name("room", &p.room)?;
        check_name("displayName", &p.display_name)?;
        let config = &self.shared.config;
        let secret = config.auth_secret.as_ref().map(|s| s.expose());
        let grants = auth::admit(secret, p.token.as_deref(), &p.room)?;
        let display_name = grants.name.clone().unwrap_or(p.display_name);
        check_name("displayName", &display_name)?;
        let peer_id = PeerId::new(uuid::Uuid::new_v4().to_string());
        let member = Member {
            peer_id: peer_id.clone(),
            identity: grants.identity.clone(),
            display_name,
            events: self.events.clone(),
            session: self.me.clone(),
        };
        let limits = RoomLimits { max_rooms: config.limits.max_rooms, max_peers: config.max_peers_per_room };
        let joined = self.shared.rooms.join(&p.room, member, limits, &self.shared.engine)?;
        tracing::info!(room = %p.room, peer = %peer_id, identity = ?grants.identity, "joined");
        self.joined = Some(Joined::new(joined.room, peer_id.clone(), grants, config.limits.broadcast_rate));
        Ok(JoinResult {
            peer_id,
            session_id: self.id.clone(),
            peers: joined.peers,
            producers: joined.producers,
            router_rtp_capabilities: router::capabilities(),
        })
    }

    /// `leave`: leaves the room, closing everything the session had in it.
    pub(crate) async fn leave(&mut self) -> Result<Empty, Error> {
        self.joined()?;
        self.leave_room().await;
        Ok(Empty {})
    }

    /// Leaves the room if joined (also on disconnect and eviction): closes the
    /// session's producers (announced), transports and consumers, then leaves.
    pub(super) async fn leave_room(&mut self) {
        let Some(j) = self.joined.take() else { return };
        for producer in &j.producers {
            j.room.remove_producer(producer);
        }
        let closed = j.room.router().close_peer(j.peer_id.clone()).await.unwrap_or_default();
        j.room.notify_closed_consumers(closed);
        self.shared.rooms.leave(&j.room, &j.peer_id);
        tracing::info!(room = %j.room.name(), peer = %j.peer_id, "left");
    }

    /// `broadcast`: queues the payload for every other member of the room.
    pub(crate) async fn broadcast(&mut self, p: BroadcastParams) -> Result<BroadcastResult, Error> {
        let limit = self.shared.config.max_broadcast_bytes;
        let rate = self.shared.config.limits.broadcast_rate;
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        if !j.grants.broadcast {
            return Err(Error::Forbidden("the access token does not grant canBroadcast".into()));
        }
        if !j.broadcasts.try_take() {
            return Err(Error::LimitExceeded(format!("at most {rate} broadcasts per second")));
        }
        check_json_size("payload", &p.payload, limit)?;
        let event = Event::Broadcast { from: j.peer_id.clone(), payload: p.payload };
        let delivered = j.room.fan_out(Some(&j.peer_id), &event);
        Ok(BroadcastResult { delivered })
    }

    /// The session's event queue overflowed: it leaves its room so the room does not
    /// wait on it, and its stream ends with `limitExceeded` once drained.
    pub(crate) async fn evict_slow(&mut self) {
        tracing::warn!("evicted: event queue overflow");
        self.evict(Error::LimitExceeded(
            "event queue overflow: events were not read fast enough; the session left its room".into(),
        ))
        .await;
    }

    /// A newer session joined the room with the same identity: this one leaves, and
    /// its stream ends with `forbidden` saying why.
    pub(crate) async fn replaced(&mut self) {
        tracing::info!("replaced by a newer session of the same identity");
        self.evict(Error::Forbidden("replaced: the same identity joined the room from another session".into())).await;
    }

    async fn evict(&mut self, reason: Error) {
        self.leave_room().await;
        self.events.end_stream(reason);
    }
}
