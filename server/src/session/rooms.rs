//! The session and room area: `join`, `leave`, `broadcast`, slow-consumer eviction.

use std::sync::Arc;

use dspeak_schema::admin::WebhookEventKind;
use dspeak_schema::rooms::{BroadcastParams, BroadcastResult, Empty, JoinParams, JoinResult, PeerInfo, VoiceState};
use dspeak_schema::{Event, PeerId};

use super::{Joined, Session, change_rooms, check_json_size};
use crate::auth;
use crate::cluster::Placement;
use crate::error::{BroadcastError, JoinError, NotJoined, PlacementError, StreamEnd, TooLarge};
use crate::room::{Effect, Member, RoomLimits};
use dspeak_media::router;

/// Longest room name and display name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Room for a JSON-RPC answer's envelope around `join`'s result (`jsonrpc`, a request id
/// of up to about 100 characters).
const ANSWER_ENVELOPE: usize = 128;

fn check_name(what: &'static str, value: &str) -> Result<(), JoinError> {
    if value.trim().is_empty() {
        return Err(JoinError::EmptyName(what));
    }
    if value.chars().any(char::is_control) {
        return Err(JoinError::ControlChar(what));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(TooLarge { what, size: chars, limit: MAX_NAME_CHARS }.into());
    }
    Ok(())
}

impl Session {
    /// `join`: enters a room (created on first join).
    pub(crate) async fn join(&mut self, p: JoinParams) -> Result<JoinResult, JoinError> {
        if let Some(j) = &self.joined {
            return Err(JoinError::AlreadyJoined(j.room.clone()));
        }
        check_name("room", &p.room)?;
        check_name("displayName", &p.display_name)?;
        let config = &self.shared.config;
        let secret = config.auth_secret.as_ref().map(|s| s.expose());
        let grants = auth::admit(secret, p.token.as_deref(), &p.room, config.max_token_ttl_secs)?;
        self.check_placement(&p.room).await?;
        // A draining server opens no room. In cluster mode placement keeps an open room
        // on its draining owner, so the owner still admits joins to it: a member whose
        // connection dropped can come back nowhere else.
        let open_here = || self.shared.cluster.is_some() && self.shared.rooms().contains(&p.room);
        if self.shared.drain.is_draining() && !open_here() {
            return Err(JoinError::Draining);
        }
        let display_name = grants.name.clone().unwrap_or(p.display_name);
        check_name("displayName", &display_name)?;
        let peer_id = PeerId::new(uuid::Uuid::new_v4().to_string());
        let info = PeerInfo {
            peer_id: peer_id.clone(),
            display_name,
            identity: grants.identity.clone(),
            metadata: grants.metadata.clone(),
            self_mute: false,
            self_deaf: false,
            server_muted: false,
        };
        let member = Member {
            peer_id: peer_id.clone(),
            identity: info.identity.clone(),
            display_name: info.display_name.clone(),
            metadata: info.metadata.clone(),
            voice: VoiceState::default(),
            mailbox: self.mailbox(),
        };
        let router_rtp_capabilities = router::capabilities();
        // What the answer takes besides the peers and producers it lists.
        let mut answer = JoinResult {
            peer_id: peer_id.clone(),
            session_id: self.id.clone(),
            identity: info.identity.clone(),
            metadata: info.metadata.clone(),
            peers: Vec::new(),
            producers: Vec::new(),
            router_rtp_capabilities,
        };
        let fixed = serde_json::to_vec(&answer).map_or(usize::MAX, |v| v.len()) + ANSWER_ENVELOPE;
        let limits = RoomLimits {
            max_rooms: config.limits.max_rooms,
            max_peers: config.max_peers_per_room,
            max_listing_bytes: config.max_response_bytes().saturating_sub(fixed),
        };
        let (engine, now) = (&self.shared.engine, crate::unix_millis());
        // The upward channel of a room this join opens.
        let mut opened_events = None;
        let place = || {
            let (router, events) = engine.router();
            opened_events = Some(events);
            Arc::new(router)
        };
        let joined = change_rooms(&self.shared, |r| match r.join(&p.room, member, limits, now, place) {
            Ok((joined, effects)) => (Ok(joined), effects),
            Err(e) => (Err(e), Vec::new()),
        })?;
        let webhooks = &self.shared.webhooks;
        if let Some(events) = opened_events {
            super::speaker::relay(self.shared.clone(), p.room.clone(), events);
            webhooks.emit(WebhookEventKind::RoomStarted, &p.room, None, None);
        }
        webhooks.emit(WebhookEventKind::PeerJoined, &p.room, Some(&info), None);
        tracing::Span::current().record("room", p.room.as_str()).record("peer", peer_id.to_string());
        tracing::info!(room = %p.room, peer = %peer_id, identity = ?grants.identity, "joined");
        // An end no stream delivered was about the membership before: this one starts afresh.
        self.events.forget_end();
        let rate = config.limits.broadcast_rate;
        self.joined = Some(Joined::new(p.room, joined.worker, info, grants, rate));
        answer.peers = joined.peers;
        answer.producers = joined.producers;
        Ok(answer)
    }

    /// Cluster mode: the room must be hosted here (placed here if it is nowhere yet);
    /// otherwise `wrongNode` with the owner's URL, or `unavailable` while Redis is down
    /// and the room is not open here. A single node always goes on.
    async fn check_placement(&self, room: &str) -> Result<(), JoinError> {
        let Some(cluster) = &self.shared.cluster else { return Ok(()) };
        let local = self.shared.rooms().contains(room);
        match cluster.place(room, local).await? {
            Placement::Here => Ok(()),
            Placement::Elsewhere(url) => Err(PlacementError::WrongNode { room: room.to_owned(), url }.into()),
        }
    }

    /// `leave`: leaves the room, closing everything the session had in it.
    pub(crate) async fn leave(&mut self) -> Result<Empty, NotJoined> {
        self.joined()?;
        self.leave_room().await;
        Ok(Empty {})
    }

    /// Leaves the room if joined (also on disconnect and eviction): closes the
    /// session's producers (announced), transports and consumers, then leaves.
    pub(super) async fn leave_room(&mut self) {
        let Some(j) = self.joined.take() else { return };
        let webhooks = &self.shared.webhooks;
        for producer in j.producers.keys() {
            change_rooms(&self.shared, |r| r.remove_producer(&j.room, producer));
            webhooks.emit(WebhookEventKind::ProducerClosed, &j.room, Some(&j.info), Some(producer));
        }
        let closed = j.router.close_peer(j.peer_id.clone()).await;
        change_rooms(&self.shared, |r| r.consumers_closed(&j.room, closed));
        let closed = change_rooms(&self.shared, |r| {
            let effects = r.leave(&j.room, &j.peer_id);
            (effects.iter().any(|e| matches!(e, Effect::RoomClosed(_))), effects)
        });
        if let (true, Some(cluster)) = (closed, &self.shared.cluster) {
            cluster.released(&j.room);
        }
        let webhooks = &self.shared.webhooks;
        webhooks.emit(WebhookEventKind::PeerLeft, &j.room, Some(&j.info), None);
        if closed {
            webhooks.emit(WebhookEventKind::RoomFinished, &j.room, None, None);
        }
        tracing::info!(room = %j.room, peer = %j.peer_id, "left");
        tracing::Span::current().record("room", "").record("peer", "");
    }

    /// `broadcast`: queues the payload for every other member of the room.
    pub(crate) async fn broadcast(&mut self, p: BroadcastParams) -> Result<BroadcastResult, BroadcastError> {
        let limit = self.shared.config.max_broadcast_bytes;
        let rate = self.shared.config.limits.broadcast_rate;
        let j = self.joined.as_mut().ok_or(NotJoined)?;
        if !j.grants.broadcast {
            return Err(BroadcastError::NotGranted);
        }
        if !j.broadcasts.try_take() {
            return Err(BroadcastError::RateLimited { rate });
        }
        check_json_size("payload", &p.payload, limit)?;
        let event = Event::Broadcast { from: Some(j.peer_id.clone()), payload: p.payload };
        let (room, from) = (&j.room, &j.peer_id);
        let delivered = change_rooms(&self.shared, |r| r.fan_out(room, Some(from), &event));
        Ok(BroadcastResult { delivered })
    }

    /// The session's event queue overflowed: it leaves its room so the room does not
    /// wait on it, and its stream ends with `limitExceeded` once drained.
    pub(crate) async fn evict_slow(&mut self) {
        tracing::warn!("evicted: event queue overflow");
        self.shared.metrics.evicted();
        self.evict(StreamEnd::Evicted).await;
    }

    /// A newer session joined `room` with the same identity while this one was its
    /// member `peer`: if it still is, it leaves, and its stream ends with `forbidden`
    /// saying why. A session that left since (or left and joined again, as another
    /// member) is not that member any more and stays as it is.
    pub(crate) async fn replaced(&mut self, room: &str, peer: &PeerId) {
        if !self.joined.as_ref().is_some_and(|j| j.room == room && &j.peer_id == peer) {
            tracing::debug!(room, %peer, "a replacement notice for a membership this session no longer has");
            return;
        }
        tracing::info!("replaced by a newer session of the same identity");
        self.evict(StreamEnd::Replaced).await;
    }

    /// Leaves the room and ends the event stream with `reason` once drained.
    pub(super) async fn evict(&mut self, reason: StreamEnd) {
        self.leave_room().await;
        self.events.end_stream(reason);
        if self.resume.is_detached() {
            // Nothing left to resume: the session ends now.
            self.end_detached();
        }
    }
}
