//! The admin area: `adminListRooms`, `adminListPeers`, `adminRemovePeer`,
//! `adminMutePeer`, `adminCloseRoom`, `adminBroadcast`.
//!
//! Each call checks its admin token first. The calling session is never a member of
//! the room it acts on in the usual case (admin tokens cannot join); what happens to a
//! member happens on that member's own session actor, through the same paths as its
//! own requests (leaving, pausing producers), and the admin call waits for it.

use std::sync::Arc;
use std::time::Duration;

use dspeak_schema::admin::{
    AdminBroadcastParams, AdminMuteParams, AdminParams, AdminPeerParams, AdminPeers, AdminRoomParams, AdminRooms,
};
use dspeak_schema::api::Method;
use dspeak_schema::api::methods::{AdminBroadcast, AdminCloseRoom, AdminListPeers, AdminMutePeer, AdminRemovePeer};
use dspeak_schema::rooms::{BroadcastResult, Empty};
use dspeak_schema::{ErrorCode, Event, PeerId};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

/// How long an admin call waits for a member's session to act.
const MEMBER_WAIT: Duration = Duration::from_secs(5);

use super::{Session, SessionHandle, SessionMailbox, change_rooms, check_json_size};
use crate::Shared;
use crate::auth::{self, EVERY_ROOM};
use crate::cluster::Forwarded;
use crate::error::{AdminAuthError, AdminBroadcastError, AdminError, AreaError, CallError, NotFound, StreamEnd};

/// Answers an admin call on a room of this node that another node forwarded (cluster
/// mode), on a session of its own, as the JSON-RPC answer's `result` or `error`.
pub(crate) async fn answer_forwarded(shared: Arc<Shared>, method: String, params: Value) -> Value {
    let session = SessionHandle::spawn(shared, std::sync::Weak::new());
    let asked = method.clone();
    let answer = session.call(move |s| Box::pin(async move { s.forwarded_call(&method, params).await })).await;
    answer.unwrap_or_else(|e| answer_of::<()>(&asked, Err(e)))
}

/// A JSON-RPC answer's `{"result": …}` or `{"error": …}`.
fn answer_of<R: serde::Serialize>(method: &str, result: Result<R, impl AreaError>) -> Value {
    match result {
        Ok(result) => json!({ "result": result }),
        Err(e) => json!({ "error": crate::api::to_rpc_error(method, &e) }),
    }
}

/// What a forwarded call's answer means here.
fn from_answer<R: serde::de::DeserializeOwned>(answer: Value) -> Result<R, AdminError> {
    if let Some(result) = answer.get("result") {
        return serde_json::from_value(result.clone()).map_err(|e| AdminError::Remote(e.to_string()));
    }
    let message = answer["error"]["message"].as_str().unwrap_or("no error message").to_owned();
    match answer["error"]["code"].as_i64() {
        Some(code) if code == i64::from(ErrorCode::NotFound.code()) => Err(AdminError::RemoteNotFound(message)),
        _ => Err(AdminError::Remote(message)),
    }
}

/// Runs a forwarded admin method by name with its params object.
macro_rules! forwarded_call {
    ($session:ident, $method:ident, $params:ident; $($m:ty => $handler:ident),* $(,)?) => {
        match $method {
            $(<$m as Method>::NAME => match serde_json::from_value($params) {
                Ok(p) => answer_of($method, $session.$handler(p).await),
                Err(e) => answer_of::<()>($method, Err(CallError::InvalidParams(e.to_string()))),
            },)*
            _ => answer_of::<()>($method, Err(CallError::InvalidParams(format!("{} is not forwarded", $method)))),
        }
    };
}

impl Session {
    /// Runs an admin call another node forwarded.
    async fn forwarded_call(&mut self, method: &str, params: Value) -> Value {
        forwarded_call!(self, method, params;
            AdminListPeers => admin_list_peers,
            AdminRemovePeer => admin_remove_peer,
            AdminMutePeer => admin_mute_peer,
            AdminCloseRoom => admin_close_room,
            AdminBroadcast => admin_broadcast,
        )
    }

    /// Cluster mode: an admin call on a room another node hosts is sent to that node
    /// (over Redis) and its answer returned; `None`: the call is for this node.
    async fn forwarded<M: Method>(&self, room: &str, params: &M::Params) -> Option<Result<M::Result, AdminError>> {
        let cluster = self.shared.cluster.as_ref()?;
        if self.shared.rooms().contains(room) {
            return None;
        }
        let params = serde_json::to_value(params).ok()?;
        match cluster.forward(room, M::NAME, params).await {
            Forwarded::Local => None,
            Forwarded::Unreachable => Some(Err(AdminError::Unreachable(room.to_owned()))),
            Forwarded::Answer(answer) => Some(from_answer(answer)),
        }
    }

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
        if let Some(answer) = self.forwarded::<AdminListPeers>(&p.room, &p).await {
            return answer;
        }
        let peers = self.shared.rooms().admin_peers(&p.room).ok_or_else(|| NotFound::new("room", &p.room))?;
        Ok(AdminPeers { peers })
    }

    /// `adminRemovePeer`: the peer leaves; its stream ends with `removed:`.
    pub(crate) async fn admin_remove_peer(&mut self, p: AdminPeerParams) -> Result<Empty, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        if let Some(answer) = self.forwarded::<AdminRemovePeer>(&p.room, &p).await {
            return answer;
        }
        let mailbox = self.member(&p.room, &p.peer_id)?;
        self.on_member(&p.room, &p.peer_id, mailbox, |s| Box::pin(s.evict(StreamEnd::Removed))).await;
        Ok(Empty {})
    }

    /// `adminMutePeer`: sets the server-mute flag (the room gets `peerUpdated`); when
    /// muting, the peer's producers are paused on its own session.
    pub(crate) async fn admin_mute_peer(&mut self, p: AdminMuteParams) -> Result<Empty, AdminError> {
        self.admin_of(&p.token, &p.room)?;
        if let Some(answer) = self.forwarded::<AdminMutePeer>(&p.room, &p).await {
            return answer;
        }
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
        if let Some(answer) = self.forwarded::<AdminCloseRoom>(&p.room, &p).await {
            return answer;
        }
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
        if let Some(answer) = self.forwarded::<AdminBroadcast>(&p.room, &p).await {
            return answer.map_err(Into::into);
        }
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
