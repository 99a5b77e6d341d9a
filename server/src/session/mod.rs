//! Sessions: one per WebSocket connection, each an actor that owns its state.
//!
//! A [`Session`] owns everything its client created: its room membership, transports,
//! producers and consumers. Requests reach it as jobs on one unbounded channel and
//! run one at a time, so the requests of a session are applied in the order they
//! arrive (see `api` for why that is also the wire order). When the connection closes,
//! its [`Attachment`] tells the session: a joined session detaches and waits for
//! `resume` (`resume.rs`); otherwise every strong [`SessionHandle`] is dropped, the job
//! channel ends, and the actor closes everything the session owned before it stops.
//!
//! The methods themselves live in one file per API area. This module also holds the
//! room registry's lock: `change_rooms` applies one change of the `room` state machine
//! and then carries out the effects it returns (evict, replaced, consumer closed) by
//! posting them to the sessions concerned.

mod admin;
mod consumers;

pub(crate) use admin::answer_forwarded;
mod producers;
mod resume;
mod rooms;
mod speaker;
mod transports;
mod voice;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::collections::HashMap;

use dspeak_schema::media::Direction;
use dspeak_schema::ortc::MediaKind;
use dspeak_schema::rooms::PeerInfo;
use dspeak_schema::{ConsumerId, PeerId, ProducerId, SessionId, TransportId};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::Shared;
use crate::auth::Grants;
use crate::error::{CallError, NotJoined, SubscribeError, TooLarge};
use crate::events::{self, EventReceiver, EventSender, Pushed, RawEvent};
use crate::limits::TokenBucket;
use crate::room::{Effect, Mailbox, MemberNotice, Rooms};
use dspeak_media::RouterHandle;

pub(crate) use resume::{ConnSession, ResumeTokens, resume};

/// A unit of work run on a session's actor with exclusive access to it.
type Job = Box<dyn for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, ()> + Send>;

/// The state of one connection.
pub(crate) struct Session {
    id: SessionId,
    shared: Arc<Shared>,
    me: WeakSessionHandle,
    events: EventSender,
    /// Taken by the first `subscribeEvents`.
    events_rx: Option<EventReceiver>,
    /// The attachment whose subscription holds `events_rx`.
    stream_epoch: u64,
    /// A resumed session's new subscription, waiting for the old one to give the
    /// queue back.
    stream_waiter: Option<oneshot::Sender<EventStream>>,
    joined: Option<Joined>,
    /// Attachment, detachment and resume.
    resume: resume::ResumeState,
    /// Set to stop the actor after the current job (a detached session's end).
    finished: bool,
}

/// What an event subscription streams: the queue, and after a `resume` the events
/// the client missed. Until a subscription claims it ([`EventStream::claim`]), dropping
/// it hands the queue back to the session: an answer that never reached its connection
/// (it closed while `subscribeEvents` waited for the session) must not take the queue
/// with it, or the session could never subscribe again.
#[derive(Debug)]
pub(crate) struct EventStream {
    rx: Option<EventReceiver>,
    replay: Option<events::Replay>,
    owner: WeakSessionHandle,
}

impl EventStream {
    /// The queue and the replay, for the subscription that streams them (which gives
    /// the queue back when it ends).
    pub(crate) fn claim(mut self) -> Option<(EventReceiver, Option<events::Replay>)> {
        let rx = self.rx.take()?;
        Some((rx, self.replay.take()))
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            self.owner.post(move |s| Box::pin(s.return_events(rx)));
        }
    }
}

/// `subscribeEvents`' hold on the queue: now, or once an old connection's stream of
/// a resumed session gives it back.
#[derive(Debug)]
pub(crate) enum TakenEvents {
    Now(EventStream),
    Later(oneshot::Receiver<EventStream>),
}

/// The room registry of the server, with the sessions' mailboxes and the workers.
pub(crate) type ServerRooms = Rooms<SessionMailbox, Router>;

/// A room's media router, shared by the registry and the room's sessions; the room's
/// place on its worker is freed when the last of them drops it.
pub(crate) type Router = Arc<RouterHandle>;

/// What the room registry asks of sessions and workers.
type ServerEffect = Effect<SessionMailbox, Router>;

/// A session as its room reaches it: its event queue, and a weak handle to act on
/// notices.
#[derive(Clone, Debug)]
pub(crate) struct SessionMailbox {
    events: EventSender,
    session: WeakSessionHandle,
}

impl Mailbox for SessionMailbox {
    fn push(&self, event: &RawEvent) -> Pushed {
        self.events.push(event.clone())
    }
}

/// What a change of the room registry returns: its effects, maybe with a value.
trait Changed {
    type Value;
    fn split(self) -> (Self::Value, Vec<ServerEffect>);
}

impl Changed for Vec<ServerEffect> {
    type Value = ();
    fn split(self) -> ((), Vec<ServerEffect>) {
        ((), self)
    }
}

impl<R> Changed for (R, Vec<ServerEffect>) {
    type Value = R;
    fn split(self) -> (R, Vec<ServerEffect>) {
        self
    }
}

impl<R, E> Changed for Result<(R, Vec<ServerEffect>), E> {
    type Value = Result<R, E>;
    fn split(self) -> (Result<R, E>, Vec<ServerEffect>) {
        match self {
            Ok((value, effects)) => (Ok(value), effects),
            Err(e) => (Err(e), Vec::new()),
        }
    }
}

/// Removes every member of `room` without waiting for them (cluster mode: another node
/// holds the room's lease): each leaves on its own session and its stream ends as when
/// the room is closed, so its client joins again and reaches the room's one node.
pub(crate) fn remove_members(shared: &Shared, room: &str) {
    let members = shared.rooms().mailboxes(room).unwrap_or_default();
    for (peer, mailbox) in members {
        let (room, peer) = (room.to_owned(), peer);
        mailbox.session.post(move |s| {
            Box::pin(async move {
                if s.joined.as_ref().is_some_and(|j| j.room == room && j.peer_id == peer) {
                    s.evict(crate::error::StreamEnd::RoomClosed).await;
                }
            })
        });
    }
}

/// Runs `change` on the room registry, then carries out its effects with the registry
/// unlocked; returns the change's value.
fn change_rooms<C: Changed>(shared: &Shared, change: impl FnOnce(&mut ServerRooms) -> C) -> C::Value {
    let (value, effects) = change(&mut shared.rooms()).split();
    carry_out(effects);
    value
}

/// Carries out what a room change asks for.
fn carry_out(effects: Vec<ServerEffect>) {
    for effect in effects {
        match effect {
            Effect::Notice(member, notice) => member.session.post(move |s| Box::pin(s.on_notice(notice))),
            Effect::RoomOpened(router) => tracing::info!(worker = router.worker_index(), "room opened"),
            Effect::RoomClosed(router) => tracing::info!(worker = router.worker_index(), "room closed"),
        }
    }
}

/// What a session has while it is in a room: everything it owns there.
struct Joined {
    /// The room's name.
    room: String,
    /// The room's media router (its worker, and the engine's API).
    router: Router,
    peer_id: PeerId,
    /// How others see this session (also what webhooks report).
    info: PeerInfo,
    grants: Grants,
    broadcasts: TokenBucket,
    transports: HashMap<TransportId, Direction>,
    /// Producers with their media kind.
    producers: HashMap<ProducerId, MediaKind>,
    /// Consumers, with the client's paused flag of each.
    consumers: HashMap<ConsumerId, OwnConsumer>,
}

/// One of a session's consumers.
struct OwnConsumer {
    /// The producer it consumes (one consumer per producer and session).
    producer: ProducerId,
    /// Whether the client paused it (consumers start paused). The engine pauses it
    /// also while the session is deafened.
    paused: bool,
}

impl Joined {
    fn new(room: String, router: Router, info: PeerInfo, grants: Grants, broadcast_rate: u32) -> Self {
        Joined {
            room,
            router,
            peer_id: info.peer_id.clone(),
            info,
            grants,
            broadcasts: TokenBucket::per_second(broadcast_rate),
            transports: HashMap::new(),
            producers: HashMap::new(),
            consumers: HashMap::new(),
        }
    }
}

/// A strong handle: keeps the session alive and sends it requests.
#[derive(Clone, Debug)]
pub(crate) struct SessionHandle {
    jobs: mpsc::UnboundedSender<Job>,
    events: EventSender,
}

/// A weak handle, held by rooms: it does not keep the session alive.
#[derive(Clone, Debug)]
pub(crate) struct WeakSessionHandle {
    jobs: mpsc::WeakUnboundedSender<Job>,
}

impl SessionHandle {
    /// Starts a new session actor for a new connection.
    pub(crate) fn spawn(shared: Arc<Shared>, conn: std::sync::Weak<crate::conn::Conn>) -> SessionHandle {
        let id = SessionId::new(uuid::Uuid::new_v4().to_string());
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = events::channel(shared.config.event_queue, shared.config.resume_buffer);
        let handle = SessionHandle { jobs, events: events.clone() };
        let session = Session {
            id: id.clone(),
            shared: shared.clone(),
            me: handle.downgrade(),
            events,
            events_rx: Some(events_rx),
            stream_epoch: 0,
            stream_waiter: None,
            joined: None,
            resume: resume::ResumeState::new(conn),
            finished: false,
        };
        shared.counts.sessions.fetch_add(1, Ordering::Relaxed);
        // `room` and `peer` are recorded on join, so every line of a joined session has them.
        let span = tracing::info_span!("session", id = %id, room = tracing::field::Empty, peer = tracing::field::Empty);
        tokio::spawn(session.run(jobs_rx).instrument(span));
        handle
    }

    /// The session's own event queue (for events it causes itself, like `pong`).
    pub(crate) fn events(&self) -> &EventSender {
        &self.events
    }

    /// Runs `f` on the session's actor and returns its result, or [`CallError::Closed`]
    /// if the actor is gone.
    ///
    /// The job is queued when `call` is called, not when the future is first polled:
    /// callers rely on this to keep the arrival order of requests.
    pub(crate) fn call<R, F>(&self, f: F) -> impl Future<Output = Result<R, CallError>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, R> + Send + 'static,
    {
        call_on(Some(&self.jobs), f)
    }

    /// Evicts the session from its room: its event queue overflowed.
    pub(crate) fn evict_slow(&self) {
        self.downgrade().post(|s| Box::pin(s.evict_slow()));
    }

    fn downgrade(&self) -> WeakSessionHandle {
        WeakSessionHandle { jobs: self.jobs.downgrade() }
    }
}

/// Queues `f` on a session's job channel (`None`: the session is gone) and returns its
/// result, or [`CallError::Closed`] if the session is gone.
fn call_on<R, F>(
    jobs: Option<&mpsc::UnboundedSender<Job>>,
    f: F,
) -> impl Future<Output = Result<R, CallError>> + Send + use<R, F>
where
    R: Send + 'static,
    F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, R> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |s| {
        Box::pin(async move {
            let _ = tx.send(f(s).await);
        })
    });
    let queued = jobs.is_some_and(|jobs| jobs.send(job).is_ok());
    async move {
        if !queued {
            return Err(CallError::Closed);
        }
        rx.await.map_err(|_| CallError::Closed)
    }
}

impl WeakSessionHandle {
    /// Runs `f` on the session if it is still alive and returns its result, or
    /// [`CallError::Closed`]. Never call it for the calling session itself: the job
    /// would wait behind the running one.
    pub(crate) fn call<R, F>(&self, f: F) -> impl Future<Output = Result<R, CallError>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, R> + Send + 'static,
    {
        call_on(self.jobs.upgrade().as_ref(), f)
    }

    /// Queues work on the session if it is still alive; fire and forget.
    pub(crate) fn post<F>(&self, f: F)
    where
        F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, ()> + Send + 'static,
    {
        if let Some(jobs) = self.jobs.upgrade() {
            let _ = jobs.send(Box::new(f));
        }
    }
}

impl Session {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        tracing::debug!("session opened");
        while let Some(job) = jobs.recv().await {
            job(&mut self).await;
            if self.finished {
                break;
            }
        }
        self.forget_resume_token();
        self.leave_room().await;
        self.shared.counts.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("session closed");
    }

    fn joined(&self) -> Result<&Joined, NotJoined> {
        self.joined.as_ref().ok_or(NotJoined)
    }

    fn joined_mut(&mut self) -> Result<&mut Joined, NotJoined> {
        self.joined.as_mut().ok_or(NotJoined)
    }

    /// Takes the event stream (once per connection at a time), with the session's id
    /// and resume token for `welcome`. After a `resume`, while the old connection's
    /// subscription still holds the queue, the stream comes once it gives it back.
    pub(crate) fn take_events(&mut self) -> Result<(SessionId, String, TakenEvents), SubscribeError> {
        // A waiting subscription whose connection went away waits for nothing.
        if self.stream_waiter.as_ref().is_some_and(oneshot::Sender::is_closed) {
            self.stream_waiter = None;
        }
        let taken = match self.events_rx.take() {
            Some(mut rx) => {
                rx.set_subscribed(true);
                TakenEvents::Now(EventStream { rx: Some(rx), replay: self.resume.take_replay(), owner: self.handle() })
            }
            None if self.stream_epoch != self.resume.epoch() && self.stream_waiter.is_none() => {
                let (tx, rx) = oneshot::channel();
                self.stream_waiter = Some(tx);
                TakenEvents::Later(rx)
            }
            None => return Err(SubscribeError::AlreadySubscribed),
        };
        self.stream_epoch = self.resume.epoch();
        Ok((self.id.clone(), self.resume_token(), taken))
    }

    /// Gives back the event stream when its subscription ends, so the session can
    /// subscribe again (or hands it to the resumed connection's waiting subscription).
    pub(crate) async fn return_events(&mut self, mut rx: EventReceiver) {
        if let Some(waiter) = self.stream_waiter.take() {
            rx.set_subscribed(true);
            let stream = EventStream { rx: Some(rx), replay: self.resume.take_replay(), owner: self.handle() };
            match waiter.send(stream) {
                Ok(()) => return,
                // The waiting subscription is gone: keep the queue here.
                Err(mut stream) => match stream.rx.take() {
                    Some(back) => rx = back,
                    None => return,
                },
            }
        }
        rx.set_subscribed(false);
        self.events_rx = Some(rx);
    }

    /// A weak handle to this session.
    pub(crate) fn handle(&self) -> WeakSessionHandle {
        self.me.clone()
    }

    /// How the room registry reaches this session.
    fn mailbox(&self) -> SessionMailbox {
        SessionMailbox { events: self.events.clone(), session: self.me.clone() }
    }

    /// Acts on what the room registry asked of this session.
    async fn on_notice(&mut self, notice: MemberNotice) {
        match notice {
            MemberNotice::Evict => self.evict_slow().await,
            MemberNotice::Replaced { room, peer } => self.replaced(&room, &peer).await,
            MemberNotice::ConsumerClosed { consumer, producer } => self.consumer_closed(consumer, producer),
        }
    }
}

/// Fails with `payloadTooLarge` when `value` serializes to more than `limit` bytes.
fn check_json_size(what: &'static str, value: &serde_json::Value, limit: usize) -> Result<(), TooLarge> {
    let size = serde_json::to_string(value).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > limit { Err(TooLarge { what, size, limit }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_to_a_closed_session_is_unavailable() {
        // A session whose actor is gone (the connection closed, or the server is
        // shutting down) answers `unavailable` instead of hanging.
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (events, _events_rx) = events::channel(1, 0);
        let handle = SessionHandle { jobs, events };
        drop(jobs_rx);
        let result = handle.call(|_| Box::pin(async {})).await;
        assert!(matches!(result, Err(CallError::Closed)));
        let code = crate::error::AreaError::code(&CallError::Closed);
        assert_eq!(code, crate::error::Code::App(dspeak_schema::ErrorCode::Unavailable));
    }
}
