//! The admin area: `adminListRooms`, `adminListPeers`, `adminRemovePeer`,
//! `adminMutePeer`, `adminCloseRoom`, `adminBroadcast`.
//!
//! Each call checks its admin token first. The calling session is never a member of
//! the room it acts on in the usual case (admin tokens cannot join); what happens to a
//! member happens on that member's own session actor, through the same paths as its
//! own requests (leaving, pausing producers), and the admin call waits for it.

use std::time::Duration;

use dspeak_schema::admin::{
    AdminBroadcastParams, AdminMuteParams, AdminParams, AdminPeerParams, AdminPeers, AdminRoomParams, AdminRooms,
};
use dspeak_schema::rooms::{BroadcastResult, Empty};
use dspeak_schema::{Event, PeerId};
use futures_util::future::BoxFuture;

/// How long an admin call waits for a member's session to act.
const MEMBER_WAIT: Duration = Duration::from_secs(5);

use super::{Session, SessionMailbox, change_rooms, check_json_size};
use crate::auth::{self, EVERY_ROOM};
use crate::error::{AdminAuthError, AdminBroadcastError, AdminError, NotFound, StreamEnd};

impl Session {
    /// Checks an admin token; returns the room it may act on (`*`: every room).
    fn admin(&self, token: &str) -> Result<String, AdminAuthError> {
        let secret = self.shared.config.auth_secret.as_ref().map(|s| s.expose());
        auth::admit_admin(secret, token, self.shared.config.max_token_ttl_secs)
    }

    /// Checks an admin token for room `room`.
    fn admin_of(&self, token: &str, room: &str) -> Result<(), AdminError> {
        let granted = self.admin(token)?;
        if granted != EVERY_ROOM && granted != room {
            return Err(AdminError::WrongRoom { granted, asked: room.to_owned() });
        }
        Ok(())
    }

    /// `adminListRooms`. In a cluster: every node's rooms, the others' as of their last
    /// heartbeat (this node's alone while Redis is unreachable).
    pub(crate) async fn admin_list_rooms(&mut self, p: AdminParams) -> Result<AdminRooms, AdminAuthError> {
        let granted = self.admin(&p.token)?;
        let only = (granted != EVERY_ROOM).then_some(granted.as_str());
        let mut rooms = self.shared.rooms().summaries(only);
        if let Some(cluster) = &self.shared.cluster {
            let others = cluster.other_rooms().await.unwrap_or_default();
            rooms.extend(others.into_iter().filter(|r| only.is_none_or(|o| o == r.room)));
            rooms.sort_by(|a, b| a.room.cmp(&b.room));
        }
        Ok(AdminRooms { rooms })
    }

    /// `adminListPeers`.
    pub(crate) async fn admin_list_peers(&mut self, p: AdminRoomParams) -> Result<AdminPeers, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        let peers = self.shared.rooms().admin_peers(&p.room).ok_or_else(|| NotFound::new("room", &p.room))?;
        Ok(AdminPeers { peers })
    }

    /// `adminRemovePeer`: the peer leaves; its stream ends with `removed:`.
    pub(crate) async fn admin_remove_peer(&mut self, p: AdminPeerParams) -> Result<Empty, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        let mailbox = self.member(&p.room, &p.peer_id)?;
        self.on_member(&p.room, &p.peer_id, mailbox, |s| Box::pin(s.evict(StreamEnd::Removed))).await;
        Ok(Empty {})
    }

    /// `adminMutePeer`: sets the server-mute flag (the room gets `peerUpdated`); when
    /// muting, the peer's producers are paused on its own session.
    pub(crate) async fn admin_mute_peer(&mut self, p: AdminMuteParams) -> Result<Empty, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        let mailbox = self.member(&p.room, &p.peer_id)?;
        let (room, peer) = (&p.room, &p.peer_id);
        let found = change_rooms(&self.shared, |r| match r.set_server_muted(room, peer, p.muted) {
            Some(effects) => (true, effects),
            None => (false, Vec::new()),
        });
        if !found {
            return Err(NotFound::new("peer", peer).into());
        }
        if p.muted {
            self.on_member(room, peer, mailbox, |s| Box::pin(s.server_muted())).await;
        }
        tracing::info!(room, peer = %peer, muted = p.muted, "server mute");
        Ok(Empty {})
    }

    /// `adminCloseRoom`: every member is removed; the room closes with the last one.
    pub(crate) async fn admin_close_room(&mut self, p: AdminRoomParams) -> Result<Empty, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        let members = self.shared.rooms().mailboxes(&p.room).ok_or_else(|| NotFound::new("room", &p.room))?;
        for (peer, mailbox) in members {
            self.on_member(&p.room, &peer, mailbox, |s| Box::pin(s.evict(StreamEnd::RoomClosed))).await;
        }
        tracing::info!(room = p.room, "room closed by the admin API");
        Ok(Empty {})
    }

    /// `adminBroadcast`: a `broadcast` with `from: null` to every member.
    pub(crate) async fn admin_broadcast(
        &mut self,
        p: AdminBroadcastParams,
    ) -> Result<BroadcastResult, AdminBroadcastError> {
        self.admin_of(&p.token, &p.room)?;
        check_json_size("payload", &p.payload, self.shared.config.max_broadcast_bytes)?;
        let room = &p.room;
        let event = Event::Broadcast { from: None, payload: p.payload };
        let delivered = change_rooms(&self.shared, |r| {
            if r.contains(room) {
                let (delivered, effects) = r.fan_out(room, None, &event);
                (Some(delivered), effects)
            } else {
                (None, Vec::new())
            }
        });
        let delivered = delivered.ok_or_else(|| AdminError::from(NotFound::new("room", room)))?;
        Ok(BroadcastResult { delivered })
    }

    /// The mailbox of member `peer` of `room`: `notFound` for no such room or peer.
    fn member(&self, room: &str, peer: &PeerId) -> Result<SessionMailbox, AdminError> {
        let rooms = self.shared.rooms();
        if !rooms.contains(room) {
            return Err(NotFound::new("room", room).into());
        }
        rooms.mailbox(room, peer).ok_or_else(|| NotFound::new("peer", peer).into())
    }

    /// Runs `f` on the session of member `peer` of `room` and waits for it, if that
    /// session is still that member (it may have left meanwhile). The caller's own
    /// session runs it directly: queueing it would wait behind this very call.
    async fn on_member<F>(&mut self, room: &str, peer: &PeerId, mailbox: SessionMailbox, f: F)
    where
        F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, ()> + Send + 'static,
    {
        let is = |s: &Session, room: &str, peer: &PeerId| {
            s.joined.as_ref().is_some_and(|j| j.room == room && &j.peer_id == peer)
        };
        if is(self, room, peer) {
            return f(self).await;
        }
        let (in_room, member) = (room.to_owned(), peer.clone());
        let done = mailbox.session.call(move |s| {
            Box::pin(async move {
                if is(s, &in_room, &member) {
                    f(s).await;
                }
            })
        });
        // A closed session has left the room already. The wait is bounded: two joined
        // sessions acting on each other with admin tokens would otherwise wait on each
        // other forever; after the timeout the job still runs, only later.
        if tokio::time::timeout(MEMBER_WAIT, done).await.is_err() {
            tracing::warn!(room, peer = %peer, "admin action on a busy session continues in the background");
        }
    }
}
