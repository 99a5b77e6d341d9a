//! Per-session event queues, and how a session's event stream ends.
//!
//! Every session has one bounded queue of serialized events. Fan-out never waits:
//! [`EventSender::push`] uses `try_send`. When a session's queue is full the session is
//! too slow to keep up: it is evicted from its room (others see `peerLeft`) and its
//! event stream ends with an error once the queued events are delivered. The same
//! path ends the stream of a session replaced by a newer one of the same identity.
//!
//! Every pushed event gets the session's next sequence number (`seq`, from 1) and is
//! also kept in a bounded replay log (`--resume-buffer`). While the session is
//! detached (its connection dropped, waiting for `resume`) events go to the log
//! only; `resume` takes the ones the client missed from it ([`EventSender::resume`]).
//! The number is written into each event as it is sent ([`with_seq`]): the
//! serialized event itself stays shared by every recipient.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use dspeak_schema::Event;
use futures_util::task::AtomicWaker;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::error::StreamEnd;

/// A serialized event, shared by every recipient of one fan-out.
pub(crate) type RawEvent = Arc<RawValue>;

/// Serializes an event once for any number of recipients.
pub(crate) fn serialize(event: &Event) -> RawEvent {
    // Events are plain data (strings, numbers, `serde_json::Value`): serializing them
    // cannot fail.
    Arc::from(serde_json::value::to_raw_value(event).expect("events always serialize"))
}

/// An event with its number in the session.
#[derive(Clone, Debug)]
pub(crate) struct Sequenced {
    /// The event's `seq`.
    pub(crate) seq: u32,
    /// The event, shared by every recipient.
    pub(crate) event: RawEvent,
}

/// `event` as sent to one session, in two parts written one after the other: its
/// opening `{"seq":N,` and the event's own members (the shared serialized event without
/// its `{`): the shape of `dspeak_schema::events::SequencedEvent`, without copying the
/// event per recipient.
pub(crate) fn with_seq(seq: u32, event: &RawValue) -> (SeqHead, &[u8]) {
    let json = event.get();
    // An event is a JSON object with at least its `type`.
    let members = json.strip_prefix('{').unwrap_or(json);
    (SeqHead::new(seq), members.as_bytes())
}

/// `{"seq":N,` for one event, on the stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqHead {
    buf: [u8; 24],
    len: usize,
}

impl SeqHead {
    fn new(seq: u32) -> Self {
        const OPEN: &[u8] = b"{\"seq\":";
        let mut buf = [0u8; 24];
        buf[..OPEN.len()].copy_from_slice(OPEN);
        let mut digits = [0u8; 10];
        let (mut n, mut count) = (seq, 0);
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut len = OPEN.len();
        for digit in digits[..count].iter().rev() {
            buf[len] = *digit;
            len += 1;
        }
        buf[len] = b',';
        SeqHead { buf, len: len + 1 }
    }

    /// The bytes to write.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The events `resume` replays, and the last number given out when it resumed: queued
/// events up to it were replayed (or already seen) and are skipped.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) events: Vec<Sequenced>,
    pub(crate) through: u32,
}

/// The events after `last_seq` are no longer in the log.
#[derive(Debug)]
pub(crate) struct Lost {
    /// The numbers still kept, e.g. `12..=267` (empty when none).
    pub(crate) kept: String,
}

/// What happened to a pushed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for delivery.
    Queued,
    /// The queue just overflowed: the session must be evicted.
    Overflowed,
    /// Dropped: the stream is gone, or the queue already overflowed.
    Dropped,
    /// Kept for `resume` only: the session is detached.
    Kept,
}

/// The sending side of one session's event queue.
#[derive(Clone, Debug)]
pub(crate) struct EventSender {
    tx: mpsc::Sender<Sequenced>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the subscription that streams events to the client.
#[derive(Debug)]
pub(crate) struct EventReceiver {
    rx: mpsc::Receiver<Sequenced>,
    shared: Arc<Shared>,
}

/// State both ends see.
#[derive(Debug, Default)]
struct Shared {
    /// The queue overflowed since the stream was (re)subscribed.
    overflowed: AtomicBool,
    /// A subscription is streaming the queue to the client.
    subscribed: AtomicBool,
    /// Why the stream must end, once its queued events are out.
    end: Mutex<Option<StreamEnd>>,
    /// The receiver waiting for an event or the end.
    ended: AtomicWaker,
    /// Numbering and the replay log; taken for one push at a time, so numbers follow
    /// queue order.
    log: Mutex<Log>,
}

/// The session's event numbering and its last events.
#[derive(Debug, Default)]
struct Log {
    /// The last number given out (0: none yet).
    last: u32,
    /// The last `capacity` events.
    kept: VecDeque<Sequenced>,
    capacity: usize,
    /// The session is detached: events are logged, not queued.
    detached: bool,
}

/// A new event queue with room for `capacity` events, keeping the last `replay` events
/// for `resume`.
pub(crate) fn channel(capacity: usize, replay: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let log = Log { capacity: replay, ..Log::default() };
    let shared = Arc::new(Shared { log: Mutex::new(log), ..Shared::default() });
    (EventSender { tx, shared: shared.clone() }, EventReceiver { rx, shared })
}

impl EventSender {
    /// Numbers an event, logs it for `resume` and queues it without waiting (only
    /// logs it while the session is detached).
    pub(crate) fn push(&self, event: RawEvent) -> Pushed {
        let mut log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log.last = log.last.wrapping_add(1);
        let event = Sequenced { seq: log.last, event };
        if log.capacity > 0 {
            if log.kept.len() == log.capacity {
                log.kept.pop_front();
            }
            log.kept.push_back(event.clone());
        }
        if log.detached {
            return Pushed::Kept;
        }
        match self.tx.try_send(event) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.shared.overflowed.swap(true, Ordering::Relaxed) {
                    Pushed::Dropped
                } else {
                    Pushed::Overflowed
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Dropped,
        }
    }

    /// Detaches the session: from now on events are only logged, for `resume`.
    pub(crate) fn detach(&self) {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).detached = true;
    }

    /// Re-attaches the session for a client that got every event up to `last_seq`:
    /// returns the events after it from the log, and queues new events again. Fails
    /// (and stays detached) when some of those events are no longer kept.
    pub(crate) fn resume(&self, last_seq: u32) -> Result<Replay, Lost> {
        let mut log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        let first_kept = log.kept.front().map_or(log.last.wrapping_add(1), |e| e.seq);
        if last_seq > log.last || last_seq.wrapping_add(1) < first_kept {
            let kept = match (log.kept.front(), log.kept.back()) {
                (Some(first), Some(last)) => format!("{}..={}", first.seq, last.seq),
                _ => String::new(),
            };
            return Err(Lost { kept });
        }
        log.detached = false;
        let events = log.kept.iter().filter(|e| e.seq > last_seq).cloned().collect();
        Ok(Replay { events, through: log.last })
    }

    /// Whether a subscription is currently streaming this queue.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Relaxed)
    }

    /// Ends the current stream with `reason` after the events already queued.
    pub(crate) fn end_stream(&self, reason: StreamEnd) {
        *self.shared.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.shared.ended.wake();
    }
}

impl EventReceiver {
    /// The next event; `Err` with the reason once the stream must end (after the
    /// queued events); `Ok(None)` if every sender is gone.
    #[cfg(test)]
    pub(crate) async fn next(&mut self) -> Result<Option<Sequenced>, StreamEnd> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next event (see `next`).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Sequenced>, StreamEnd>> {
        if let Poll::Ready(event) = self.rx.poll_recv(cx) {
            return Poll::Ready(Ok(event));
        }
        self.shared.ended.register(cx.waker());
        let end = self.shared.end.lock().unwrap_or_else(|e| e.into_inner()).take();
        match end {
            // An event queued just before the end goes first.
            Some(reason) => match self.rx.try_recv() {
                Ok(event) => {
                    *self.shared.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    Poll::Ready(Ok(Some(event)))
                }
                Err(_) => Poll::Ready(Err(reason)),
            },
            None => Poll::Pending,
        }
    }

    /// Marks the start (`true`) or end of a subscription; a new one starts afresh.
    pub(crate) fn set_subscribed(&mut self, subscribed: bool) {
        self.shared.overflowed.store(false, Ordering::Relaxed);
        self.shared.subscribed.store(subscribed, Ordering::Relaxed);
        if subscribed {
            self.shared.end.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn event(n: i64) -> RawEvent {
        serialize(&Event::Pong { timestamp: n })
    }

    fn timestamp(e: &Sequenced) -> i64 {
        serde_json::from_str::<serde_json::Value>(e.event.get())
            .ok()
            .and_then(|v| v["timestamp"].as_i64())
            .unwrap_or(-1)
    }

    #[test]
    fn a_full_queue_overflows_once_per_subscription() {
        let (tx, mut rx) = channel(2, 0);
        assert_eq!([tx.push(event(1)), tx.push(event(2))], [Pushed::Queued; 2]);
        assert_eq!(tx.push(event(3)), Pushed::Overflowed, "the first push that does not fit evicts");
        assert_eq!(tx.push(event(4)), Pushed::Dropped, "later ones are dropped: eviction is under way");
        rx.set_subscribed(true);
        assert!(tx.is_subscribed());
        assert_eq!(tx.push(event(5)), Pushed::Overflowed, "a new subscription starts afresh");
        drop(rx);
        assert_eq!(tx.push(event(6)), Pushed::Dropped, "nobody reads any more");
    }

    #[test]
    fn a_stream_ends_with_its_reason_after_the_queued_events() {
        // No runtime: every step is ready, so one poll each is enough.
        let (tx, mut rx) = channel(4, 0);
        tx.push(event(1));
        tx.push(event(2));
        tx.end_stream(StreamEnd::Replaced);
        let mut next = || rx.next().now_or_never().expect("ready without waiting");
        assert_eq!(next().ok().flatten().map(|e| timestamp(&e)), Some(1));
        assert_eq!(next().ok().flatten().map(|e| timestamp(&e)), Some(2));
        assert!(matches!(next(), Err(StreamEnd::Replaced)));
        drop(tx);
        assert!(matches!(next(), Ok(None)), "with every sender gone the stream just ends");
    }

    #[test]
    fn the_seq_is_written_as_the_first_member_of_the_event() {
        let event = Event::PeerLeft { peer_id: dspeak_schema::PeerId::new("p1".to_owned()) };
        let serialized = serialize(&event);
        let (head, members) = with_seq(7, &serialized);
        let sent = String::from_utf8([head.as_bytes(), members].concat()).unwrap_or_default();
        let typed = dspeak_schema::events::SequencedEvent { seq: 7, event };
        assert_eq!(sent, serde_json::to_string(&typed).unwrap_or_default());
        let back: dspeak_schema::events::SequencedEvent = serde_json::from_str(&sent).unwrap_or(typed.clone());
        assert_eq!(back.seq, 7);
        for seq in [0, 9, 10, 4_294_967_295] {
            let (head, _) = with_seq(seq, &serialized);
            assert_eq!(head.as_bytes(), format!("{{\"seq\":{seq},").as_bytes());
        }
    }

    #[test]
    fn a_detached_session_logs_and_resume_replays_what_was_missed() {
        let (tx, mut rx) = channel(8, 3);
        assert_eq!(tx.push(event(1)), Pushed::Queued);
        assert_eq!(tx.push(event(2)), Pushed::Queued);
        tx.detach();
        assert_eq!(tx.push(event(3)), Pushed::Kept);
        assert_eq!(tx.push(event(4)), Pushed::Kept);
        // The client got seq 1; 2..=4 are kept (the log holds 3).
        let replay = tx.resume(1).map_err(|l| l.kept).unwrap_or_default();
        assert_eq!(replay.events.iter().map(|e| (e.seq, timestamp(e))).collect::<Vec<_>>(), [(2, 2), (3, 3), (4, 4)]);
        assert_eq!(replay.through, 4);
        // Attached again: new events are queued with the next numbers.
        assert_eq!(tx.push(event(5)), Pushed::Queued);
        let mut next = || rx.next().now_or_never().and_then(|e| e.ok().flatten()).map(|e| e.seq);
        assert_eq!([next(), next(), next()], [Some(1), Some(2), Some(5)], "3 and 4 were never queued");
    }

    #[test]
    fn resume_fails_when_missed_events_are_gone_or_the_seq_is_ahead() {
        let (tx, _rx) = channel(8, 2);
        tx.detach();
        for n in 1..=5 {
            tx.push(event(n));
        }
        assert_eq!(tx.resume(2).map(|r| r.through).map_err(|l| l.kept), Err("4..=5".to_owned()), "3 is gone");
        assert!(tx.resume(6).is_err(), "ahead of the last event");
        assert_eq!(tx.resume(3).map(|r| r.events.len()).ok(), Some(2));
        assert_eq!(tx.resume(5).map(|r| r.events.len()).ok(), Some(0), "nothing missed");
        let (tx, _rx) = channel(8, 0);
        assert_eq!(tx.resume(0).map(|r| r.through).ok(), Some(0), "no buffer, nothing missed");
        tx.push(event(1));
        assert!(tx.resume(0).is_err(), "no buffer and one missed");
    }
}
