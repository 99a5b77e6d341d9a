//! Session resume: a session outlives a connection that drops without `leave`.
//!
//! A connection is *attached* to its session through an [`Attachment`] (held by the
//! connection's RPC middleware). When the connection ends, the attachment tells the
//! session. A session that is in a room and has handed out a resume token (in
//! `welcome`) then *detaches* instead of ending: it keeps its room, transports,
//! producers and consumers (media keeps flowing), the room sees `peerReconnecting`,
//! its events are only logged, and it holds a strong handle to itself for
//! `--resume-grace`. `resume` on a new connection finds it by its token in
//! [`ResumeTokens`], re-attaches it (the room sees `peerReconnected`; a still
//! half-open old connection is closed), rotates the token and hands the next event
//! stream the events the client missed. When the grace period passes first, the
//! session ends with the normal leave (`peerLeft`).
//!
//! Attachments are numbered per session (`epoch`): the end of an old connection of
//! a session that was resumed elsewhere changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use dspeak_schema::Event;
use dspeak_schema::rooms::{ResumeParams, ResumeResult};

use super::{Session, SessionHandle, WeakSessionHandle, change_rooms};
use crate::conn::Conn;
use crate::error::ResumeError;
use crate::events::Lost;

/// Bytes of randomness in a resume token (256 bits; the token is their hex).
const TOKEN_BYTES: usize = 32;

/// The resume tokens in use, each with its session (a token is removed when it is
/// used, rotated or its session ends), and how many sessions are detached.
#[derive(Debug, Default)]
pub(crate) struct ResumeTokens {
    tokens: Mutex<HashMap<String, WeakSessionHandle>>,
    detached: Arc<AtomicUsize>,
    /// The server stops: no session detaches any more.
    closed: AtomicBool,
}

/// One detached session's place among the detached sessions; freed on drop.
#[derive(Debug)]
struct DetachedSlot(Arc<AtomicUsize>);

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ResumeTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WeakSessionHandle>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions detached now.
    pub(crate) fn detached(&self) -> usize {
        self.detached.load(Ordering::Relaxed)
    }

    /// The server stops: connections that close from now on end their sessions
    /// instead of detaching them, and the sessions detached now end (each leaves its
    /// room as at the end of its grace period, so the room hears `peerLeft` and the
    /// backend its webhooks).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let sessions: Vec<WeakSessionHandle> = self.lock().values().cloned().collect();
        for session in sessions {
            session.post(|s| Box::pin(async move { s.end_if_detached("the server stops") }));
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A place for one more detached session, unless `max` are detached already.
    fn detach_slot(&self, max: usize) -> Option<DetachedSlot> {
        let taken = self.detached.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| DetachedSlot(self.detached.clone()))
    }

    /// A new token for `session`, from the OS CSPRNG.
    fn issue(&self, session: WeakSessionHandle) -> Option<String> {
        let mut bytes = [0u8; TOKEN_BYTES];
        SystemRandom::new().fill(&mut bytes).ok()?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.lock().insert(token.clone(), session);
        Some(token)
    }

    /// Takes `token` out of the registry: the session it named, if any.
    fn take(&self, token: &str) -> Option<WeakSessionHandle> {
        self.lock().remove(token)
    }

    /// How many tokens are in use.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's hold on its session: keeps it alive, and tells it when the
/// connection ends (on drop).
#[derive(Debug)]
pub(crate) struct Attachment {
    session: SessionHandle,
    epoch: u64,
}

impl Attachment {
    /// The attached session.
    pub(crate) fn session(&self) -> &SessionHandle {
        &self.session
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // The job carries a strong handle, so the session is still there to run it.
        let keep = self.session.clone();
        let epoch = self.epoch;
        let _ = self.session.jobs.send(Box::new(move |s| Box::pin(s.connection_closed(epoch, keep))));
    }
}

/// What a session knows about its attachment and resumability.
#[derive(Debug, Default)]
pub(super) struct ResumeState {
    /// The current attachment's number.
    epoch: u64,
    /// The attached connection (closed when another connection resumes the session).
    conn: Weak<Conn>,
    /// The current resume token, once `welcome` handed one out.
    token: Option<String>,
    /// Set while detached: keeps the session alive without a connection, and holds its
    /// place among the detached sessions.
    keepalive: Option<(SessionHandle, DetachedSlot)>,
    /// What the next event stream replays (set by `resume`).
    replay: Option<crate::events::Replay>,
}

impl ResumeState {
    pub(super) fn new(conn: Weak<Conn>) -> Self {
        ResumeState { conn, ..ResumeState::default() }
    }

    /// The current attachment's number.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the session waits for `resume` without a connection.
    pub(super) fn is_detached(&self) -> bool {
        self.keepalive.is_some()
    }

    /// What the next event stream replays after a `resume`.
    pub(super) fn take_replay(&mut self) -> Option<crate::events::Replay> {
        self.replay.take()
    }
}

impl SessionHandle {
    /// The first attachment of a new session, for the connection that created it.
    pub(crate) fn attach_first(self) -> Attachment {
        Attachment { session: self, epoch: 0 }
    }
}

/// `resume`, on the new connection's side: finds the session of `p.resume_token` and
/// attaches it to `conn`. Returns the answer and the attachment that replaces the
/// connection's own (fresh) session.
pub(crate) async fn resume(
    tokens: &ResumeTokens,
    p: ResumeParams,
    conn: Weak<Conn>,
) -> Result<(ResumeResult, Attachment), ResumeError> {
    // Single use: the token is gone from the registry whatever happens next.
    let session = tokens.take(&p.resume_token).ok_or(ResumeError::UnknownToken)?;
    let token = p.resume_token;
    let answer = session.call(move |s| Box::pin(s.resume(token, p.last_seq, conn))).await;
    answer.map_err(|_| ResumeError::UnknownToken)?
}

impl Session {
    /// The session's resume token for `welcome`, issued on first use.
    pub(super) fn resume_token(&mut self) -> String {
        if let Some(token) = &self.resume.token {
            return token.clone();
        }
        // The OS CSPRNG does not fail on Linux; without a token the session simply
        // cannot be resumed.
        let token = self.shared.resume_tokens.issue(self.me.clone()).unwrap_or_default();
        self.resume.token = Some(token.clone()).filter(|t| !t.is_empty());
        token
    }

    /// Removes the session's token from the registry (the session ends or left).
    pub(super) fn forget_resume_token(&mut self) {
        if let Some(token) = self.resume.token.take() {
            self.shared.resume_tokens.take(&token);
        }
    }

    /// The connection of attachment `epoch` ended. A joined session with a resume
    /// token detaches for the grace period (unless the server drains); any other ends
    /// once `keep` (the last strong handle) is dropped.
    async fn connection_closed(&mut self, epoch: u64, keep: SessionHandle) {
        if epoch != self.resume.epoch {
            return; // An old connection of a session resumed elsewhere.
        }
        let grace = self.shared.config.resume_grace;
        let Some(j) = &self.joined else { return };
        // A draining server lets its clients go: they move to another server. A
        // stopping one keeps nobody.
        let leaving = self.shared.drain.is_draining() || self.shared.resume_tokens.is_closed();
        if self.resume.token.is_none() || grace.is_zero() || leaving {
            return;
        }
        // Detached sessions hold what connections held; at most `--max-connections` of them.
        let Some(slot) = self.shared.resume_tokens.detach_slot(self.shared.config.max_connections as usize) else {
            tracing::warn!("connection lost; too many detached sessions to wait for a resume");
            return;
        };
        tracing::info!(grace_ms = grace.as_millis() as u64, "connection lost; waiting for resume");
        self.events.detach();
        self.resume.keepalive = Some((keep, slot));
        let event = Event::PeerReconnecting { peer_id: j.peer_id.clone() };
        change_rooms(&self.shared, |r| r.fan_out(&j.room, Some(&j.peer_id), &event));
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            me.post(move |s| Box::pin(s.grace_over(epoch)));
        });
    }

    /// The grace period of detachment `epoch` is over: if the session was not resumed
    /// meanwhile, it ends (and leaves its room).
    async fn grace_over(&mut self, epoch: u64) {
        if epoch == self.resume.epoch {
            self.end_if_detached("not resumed within the grace period");
        }
    }

    /// Ends the session if it is detached (logging `why`): it leaves its room.
    fn end_if_detached(&mut self, why: &str) {
        if self.resume.is_detached() {
            tracing::info!("{why}: the detached session ends");
            self.end_detached();
        }
    }

    /// Ends a detached session: no token, no self-hold; the actor stops after this job.
    pub(super) fn end_detached(&mut self) {
        self.forget_resume_token();
        self.resume.keepalive = None;
        self.finished = true;
    }

    /// `resume`, on the resumed session: checks the token, takes the missed events from
    /// the log, closes a still open old connection, rotates the token and tells the
    /// room. Returns the answer and the new connection's attachment.
    async fn resume(
        &mut self,
        token: String,
        last_seq: u32,
        conn: Weak<Conn>,
    ) -> Result<(ResumeResult, Attachment), ResumeError> {
        // The registry no longer holds `token`; the session may have rotated or dropped
        // it meanwhile (another resume, the grace period's end).
        if self.resume.token.as_deref() != Some(token.as_str()) {
            return Err(ResumeError::UnknownToken);
        }
        self.resume.token = None;
        let Some(j) = &self.joined else { return Err(ResumeError::UnknownToken) };
        // The new connection's hold. Someone holds a strong handle while this job runs
        // (the old attachment, or the detached session itself), so this upgrades.
        let jobs = self.me.jobs.upgrade().ok_or(ResumeError::Unavailable)?;
        let session = SessionHandle { jobs, events: self.events.clone() };
        let (peer_id, room) = (j.peer_id.clone(), j.room.clone());
        let replay = match self.events.resume(last_seq) {
            Ok(replay) => replay,
            Err(Lost { kept }) => {
                // The client joins afresh: this session leaves now rather than after the
                // grace period.
                tracing::info!(last_seq, kept, "resume failed: missed events no longer buffered");
                // Still attached (half-open as far as the client knows): that connection
                // holds a session that is over, and is closed too.
                if self.resume.keepalive.is_none()
                    && let Some(old) = self.resume.conn.upgrade()
                {
                    old.close();
                }
                self.end_detached();
                return Err(ResumeError::EventsLost { last_seq, kept });
            }
        };
        let was_detached = self.resume.keepalive.take().is_some();
        if !was_detached && let Some(old) = self.resume.conn.upgrade() {
            // Half-open: the client gave up on a connection the server still has.
            old.close();
        }
        self.resume.epoch += 1;
        self.resume.conn = conn;
        let replayed = u32::try_from(replay.events.len()).unwrap_or(u32::MAX);
        self.resume.replay = Some(replay);
        let resume_token = self.resume_token();
        if was_detached {
            let event = Event::PeerReconnected { peer_id: peer_id.clone() };
            change_rooms(&self.shared, |r| r.fan_out(&room, Some(&peer_id), &event));
        }
        tracing::info!(last_seq, replayed, "resumed");
        let result = ResumeResult { session_id: self.id.clone(), peer_id, room, resume_token, replayed };
        Ok((result, Attachment { session, epoch: self.resume.epoch }))
    }
}

/// The connection's hold on its session, shared by its RPC middleware's clones:
/// `resume` swaps it for the resumed session's.
#[derive(Debug)]
pub(crate) struct ConnSession {
    attachment: Mutex<Attachment>,
    /// Calls made on the connection so far.
    calls: AtomicU64,
}

impl ConnSession {
    pub(crate) fn new(attachment: Attachment) -> Arc<Self> {
        Arc::new(ConnSession { attachment: Mutex::new(attachment), calls: AtomicU64::new(0) })
    }

    /// Counts a call; whether it is the connection's first.
    pub(crate) fn first_call(&self) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// The session calls go to now.
    pub(crate) fn current(&self) -> SessionHandle {
        self.attachment.lock().unwrap_or_else(|e| e.into_inner()).session().clone()
    }

    /// Attaches the connection to a resumed session; the connection's previous
    /// session is told its connection is gone.
    pub(crate) fn replace(&self, attachment: Attachment) {
        let old = std::mem::replace(&mut *self.attachment.lock().unwrap_or_else(|e| e.into_inner()), attachment);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_single_use() {
        let tokens = ResumeTokens::default();
        let (jobs, _rx) = tokio::sync::mpsc::unbounded_channel();
        let weak = WeakSessionHandle { jobs: jobs.downgrade() };
        let a = tokens.issue(weak.clone()).unwrap_or_default();
        let b = tokens.issue(weak).unwrap_or_default();
        assert_eq!(a.len(), TOKEN_BYTES * 2);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(tokens.len(), 2);
        assert!(tokens.take(&a).is_some());
        assert!(tokens.take(&a).is_none(), "a token works once");
        assert_eq!(tokens.len(), 1);
    }

    #[test]
    fn detached_sessions_are_capped_and_free_their_place() {
        let tokens = ResumeTokens::default();
        let first = tokens.detach_slot(2);
        let second = tokens.detach_slot(2);
        assert!(first.is_some() && second.is_some());
        assert!(tokens.detach_slot(2).is_none(), "the third waits for none");
        drop(first);
        assert!(tokens.detach_slot(2).is_some(), "a resumed or ended session frees its place");
    }
}
