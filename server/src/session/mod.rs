//! Sessions: one per WebSocket connection, each an actor that owns its state.
//!
//! A [`Session`] owns everything its client created: its room membership, transports,
//! producers and consumers. Requests reach it as jobs on one unbounded channel and
//! run one at a time, so the requests of a session are applied in the order they
//! arrive (see `api` for why that is also the wire order). When the connection closes,
//! every strong [`SessionHandle`] is dropped, the job channel ends, and the actor
//! closes everything the session owned before it stops.
//!
//! The methods themselves live in one file per API area.

mod consumers;
mod producers;
mod rooms;
mod transports;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::collections::{HashMap, HashSet};

use dspeak_schema::{ConsumerId, PeerId, ProducerId, SessionId, TransportId};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::Shared;
use crate::auth::Grants;
use crate::error::Error;
use crate::events::{self, EventReceiver, EventSender};
use crate::limits::TokenBucket;
use crate::room::Room;

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
    joined: Option<Joined>,
}

/// What a session has while it is in a room: everything it owns there.
struct Joined {
    room: Arc<Room>,
    peer_id: PeerId,
    grants: Grants,
    broadcasts: TokenBucket,
    /// Ids of what the session created; the engine keeps the media facts.
    transports: HashSet<TransportId>,
    producers: HashSet<ProducerId>,
    /// Consumers with the producer each consumes.
    consumers: HashMap<ConsumerId, ProducerId>,
}

impl Joined {
    fn new(room: Arc<Room>, peer_id: PeerId, grants: Grants, broadcast_rate: u32) -> Self {
        Joined {
            room,
            peer_id,
            grants,
            broadcasts: TokenBucket::per_second(broadcast_rate),
            transports: HashSet::new(),
            producers: HashSet::new(),
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
    pub(crate) fn spawn(shared: Arc<Shared>) -> SessionHandle {
        let id = SessionId::new(uuid::Uuid::new_v4().to_string());
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = events::channel(shared.config.event_queue);
        let handle = SessionHandle { jobs, events: events.clone() };
        let session = Session {
            id: id.clone(),
            shared: shared.clone(),
            me: handle.downgrade(),
            events,
            events_rx: Some(events_rx),
            joined: None,
        };
        shared.counts.sessions.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("session", id = %id);
        tokio::spawn(session.run(jobs_rx).instrument(span));
        handle
    }

    /// The session's own event queue (for events it causes itself, like `pong`).
    pub(crate) fn events(&self) -> &EventSender {
        &self.events
    }

    /// Runs `f` on the session's actor and returns its result.
    ///
    /// The job is queued when `call` is called, not when the future is first polled:
    /// callers rely on this to keep the arrival order of requests.
    pub(crate) fn call<R, F>(&self, f: F) -> impl Future<Output = Result<R, Error>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Session) -> BoxFuture<'a, Result<R, Error>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |s| {
            Box::pin(async move {
                let _ = tx.send(f(s).await);
            })
        });
        let queued = self.jobs.send(job).is_ok();
        async move {
            if !queued {
                return Err(Error::Unavailable);
            }
            rx.await.unwrap_or(Err(Error::Unavailable))
        }
    }

    /// Evicts the session from its room: its event queue overflowed.
    pub(crate) fn evict_slow(&self) {
        self.downgrade().post(|s| Box::pin(s.evict_slow()));
    }

    fn downgrade(&self) -> WeakSessionHandle {
        WeakSessionHandle { jobs: self.jobs.downgrade() }
    }
}

impl WeakSessionHandle {
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
        }
        self.leave_room().await;
        self.shared.counts.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("session closed");
    }

    fn joined(&self) -> Result<&Joined, Error> {
        self.joined.as_ref().ok_or(Error::NotJoined)
    }

    fn joined_mut(&mut self) -> Result<&mut Joined, Error> {
        self.joined.as_mut().ok_or(Error::NotJoined)
    }

    /// Takes the event stream (once per session).
    pub(crate) fn take_events(&mut self) -> Result<(SessionId, EventReceiver), Error> {
        let rx = self
            .events_rx
            .take()
            .ok_or_else(|| Error::InvalidState("this session is already subscribed to its events".into()))?;
        let mut rx = rx;
        rx.set_subscribed(true);
        Ok((self.id.clone(), rx))
    }

    /// Gives back the event stream when its subscription ends, so the session can
    /// subscribe again.
    pub(crate) async fn return_events(&mut self, mut rx: EventReceiver) {
        rx.set_subscribed(false);
        self.events_rx = Some(rx);
    }

    /// A weak handle to this session.
    pub(crate) fn handle(&self) -> WeakSessionHandle {
        self.me.clone()
    }
}

/// Fails with `payloadTooLarge` when `value` serializes to more than `limit` bytes.
fn check_json_size(what: &'static str, value: &serde_json::Value, limit: usize) -> Result<(), Error> {
    let size = serde_json::to_string(value).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > limit { Err(Error::TooLarge { what, size, limit }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_to_a_closed_session_is_unavailable() {
        // A session whose actor is gone (the connection closed, or the server is
        // shutting down) answers `unavailable` instead of hanging.
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (events, _events_rx) = events::channel(1);
        let handle = SessionHandle { jobs, events };
        drop(jobs_rx);
        let result = handle.call(|_| Box::pin(async { Ok(()) })).await;
        assert!(matches!(result, Err(Error::Unavailable)));
        assert_eq!(Error::Unavailable.code(), Some(dspeak_schema::ErrorCode::Unavailable));
    }
}
