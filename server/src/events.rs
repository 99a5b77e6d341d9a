//! Per-session event queues, and how a session's event stream ends.
//!
//! Every session has one bounded queue of serialized events. Fan-out never waits:
//! [`EventSender::push`] does not block on the reader. When a session's queue is full
//! the session is too slow to keep up: it is evicted from its room (others see
//! `peerLeft`) and its event stream ends with an error once the queued events are
//! delivered. The same path ends the stream of a session replaced by a newer one of the
//! same identity.
//!
//! Every pushed event gets the session's next sequence number (`seq`, from 1) and is
//! also kept in a bounded replay log (`--resume-buffer`). While the session is
//! detached (its connection dropped, waiting for `resume`) events go to the log
//! only; `resume` takes the ones the client missed from it ([`EventSender::resume`]).
//! The number is written into each event as it is sent ([`with_seq`]): the
//! serialized event itself stays shared by every recipient.
//!
//! The queue and the replay log are one ring of shared events, one pointer (8 bytes)
//! each: numbers are consecutive, so an entry's `seq` follows from its place. It holds
//! the events not yet delivered and the last `--resume-buffer` ones, never more, starts
//! unallocated and gives its capacity back once a burst is read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use dspeak_schema::Event;
use futures_util::task::AtomicWaker;
use serde_json::value::RawValue;

use crate::error::StreamEnd;

/// A serialized event, shared by every recipient of one fan-out. A thin pointer (the
/// box holds the text's length), so each queued or logged copy costs 8 bytes.
pub(crate) type RawEvent = Arc<Box<RawValue>>;

/// Serializes an event once for any number of recipients.
pub(crate) fn serialize(event: &Event) -> RawEvent {
    // Events are plain data (strings, numbers, `serde_json::Value`): serializing them
    // cannot fail.
    Arc::new(serde_json::value::to_raw_value(event).expect("events always serialize"))
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
#[derive(Debug)]
pub(crate) struct EventSender {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the subscription that streams events to the client.
#[derive(Debug)]
pub(crate) struct EventReceiver {
    shared: Arc<Shared>,
}

/// State both ends see.
#[derive(Debug)]
struct Shared {
    /// The queue overflowed since the stream was (re)subscribed.
    overflowed: AtomicBool,
    /// A subscription is streaming the queue to the client.
    subscribed: AtomicBool,
    /// Live [`EventSender`]s: with none left, the stream ends after the queued events.
    senders: AtomicUsize,
    /// Why the stream must end, once its queued events are out.
    end: Mutex<Option<StreamEnd>>,
    /// The receiver waiting for an event or the end.
    ended: AtomicWaker,
    /// Numbering, the queue and the replay log; taken for one push at a time, so
    /// numbers follow queue order.
    log: Mutex<Log>,
}

/// The session's event numbering, its undelivered events and its last events.
#[derive(Debug, Default)]
struct Log {
    /// The last number given out (0: none yet).
    last: u32,
    /// Consecutive events ending with number `last`: the queued ones not delivered
    /// yet, then `tail` ones after them that were not queued, and at least the last
    /// `replay` ones.
    ring: VecDeque<RawEvent>,
    /// Queued events not delivered yet.
    unread: usize,
    /// Events after the undelivered ones that were not queued (counted only while
    /// some are undelivered).
    tail: usize,
    /// The most undelivered events.
    capacity: usize,
    /// How many of the last events `resume` can replay.
    replay: usize,
    /// The session is detached: events are logged, not queued.
    detached: bool,
    /// The receiver is gone: nothing is queued any more.
    closed: bool,
    /// The receiver waiting for an event.
    waker: Option<Waker>,
}

/// A new event queue with room for `capacity` events, keeping the last `replay` events
/// for `resume`.
pub(crate) fn channel(capacity: usize, replay: usize) -> (EventSender, EventReceiver) {
    let log = Log { capacity: capacity.max(1), replay, ..Log::default() };
    let shared = Arc::new(Shared {
        overflowed: AtomicBool::new(false),
        subscribed: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        end: Mutex::new(None),
        ended: AtomicWaker::new(),
        log: Mutex::new(log),
    });
    (EventSender { shared: shared.clone() }, EventReceiver { shared })
}

impl Log {
    /// The number of the event at `index` in the ring.
    fn seq_at(&self, index: usize) -> u32 {
        let behind = self.ring.len() - 1 - index;
        self.last.wrapping_sub(behind as u32)
    }

    /// Takes the next queued event off the queue (it stays in the replay log).
    fn take_next(&mut self) -> Option<Sequenced> {
        if self.unread == 0 {
            return None;
        }
        let index = self.ring.len() - self.tail - self.unread;
        let event = Sequenced { seq: self.seq_at(index), event: self.ring[index].clone() };
        self.unread -= 1;
        self.trim(0);
        Some(event)
    }

    /// The last `replay` events (fewer if fewer are kept): what `resume` may use.
    fn replayable(&self) -> std::collections::vec_deque::Iter<'_, RawEvent> {
        self.ring.range(self.ring.len().saturating_sub(self.replay)..)
    }

    /// Drops from the front what neither the queue nor the replay log needs, leaving
    /// room for `incoming` events about to be pushed, and gives capacity back after a
    /// burst. Events that were not queued are kept behind undelivered ones only while
    /// a queue that overflowed drains before its stream ends; at most `2 × capacity +
    /// replay` are ever kept (past that its oldest undelivered events go), no more
    /// than the queue and the log held apart.
    fn trim(&mut self, incoming: usize) {
        let needed = if self.unread > 0 { self.unread + self.tail } else { 0 };
        let keep = needed.max(self.replay.saturating_sub(incoming)).min(2 * self.capacity + self.replay);
        while self.ring.len() > keep {
            // The front is undelivered when everything from it on is needed.
            if self.unread > 0 && self.ring.len() == self.unread + self.tail {
                self.unread -= 1;
            }
            self.ring.pop_front();
        }
        if self.unread == 0 {
            self.tail = 0;
        }
        // Back to the replay window once a burst is read (it fits exactly: pushes make
        // room before they add); above it, to twice what is kept once a quarter is.
        let (len, cap) = (self.ring.len(), self.ring.capacity());
        let target = if len <= self.replay { self.replay } else { 2 * len };
        if cap > 16 && cap > target && (len <= self.replay || len < cap / 4) {
            self.ring.shrink_to(target);
        }
    }
}

impl Clone for EventSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        EventSender { shared: self.shared.clone() }
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.shared.lock_log().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl Shared {
    fn lock_log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventSender {
    /// Numbers an event, logs it for `resume` and queues it without waiting (only
    /// logs it while the session is detached).
    pub(crate) fn push(&self, event: RawEvent) -> Pushed {
        let mut log = self.shared.lock_log();
        log.trim(1);
        log.last = log.last.wrapping_add(1);
        log.ring.push_back(event);
        let pushed = if log.detached {
            Pushed::Kept
        } else if log.closed {
            Pushed::Dropped
        } else if log.unread < log.capacity && (log.tail == 0 || log.unread == 0) {
            // Queued events are consecutive: none is queued behind one that was not.
            log.unread += 1;
            log.tail = 0;
            Pushed::Queued
        } else if self.shared.overflowed.swap(true, Ordering::Relaxed) {
            Pushed::Dropped
        } else {
            Pushed::Overflowed
        };
        if pushed != Pushed::Queued && log.unread > 0 {
            log.tail += 1;
        }
        log.trim(0);
        let waker = if pushed == Pushed::Queued { log.waker.take() } else { None };
        drop(log);
        if let Some(waker) = waker {
            waker.wake();
        }
        pushed
    }

    /// Detaches the session: from now on events are only logged, for `resume`. Events
    /// queued and not delivered are dropped from the queue: a resumed stream skips
    /// them anyway (they are replayed from the log, or the client had them).
    pub(crate) fn detach(&self) {
        let mut log = self.shared.lock_log();
        log.detached = true;
        log.unread = 0;
        log.trim(0);
    }

    /// Re-attaches the session for a client that got every event up to `last_seq`:
    /// returns the events after it from the log, and queues new events again. Fails
    /// (and stays detached) when some of those events are no longer kept.
    pub(crate) fn resume(&self, last_seq: u32) -> Result<Replay, Lost> {
        let mut log = self.shared.lock_log();
        let kept = log.replayable().len();
        let first_kept = log.last.wrapping_sub(kept as u32).wrapping_add(1);
        if last_seq > log.last || last_seq.wrapping_add(1) < first_kept {
            let kept = if kept == 0 { String::new() } else { format!("{first_kept}..={}", log.last) };
            return Err(Lost { kept });
        }
        log.detached = false;
        let missed = log.last.wrapping_sub(last_seq) as usize;
        let start = log.ring.len() - missed;
        let events =
            (start..log.ring.len()).map(|i| Sequenced { seq: log.seq_at(i), event: log.ring[i].clone() }).collect();
        Ok(Replay { events, through: log.last })
    }

    /// Whether a subscription is currently streaming this queue.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Relaxed)
    }

    /// Ends the current stream with `reason` after the events already queued; with no
    /// stream open, the next subscription gets it (after `welcome`), unless the session
    /// joins a room first ([`EventSender::forget_end`]).
    pub(crate) fn end_stream(&self, reason: StreamEnd) {
        *self.shared.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.shared.ended.wake();
    }

    /// Drops an end no stream delivered: it was about a membership the session has
    /// left, and a new one starts afresh.
    pub(crate) fn forget_end(&self) {
        self.shared.end.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl EventReceiver {
    /// The next event; `Err` with the reason once the stream must end (after the
    /// queued events); `Ok(None)` if every sender is gone.
    #[cfg(test)]
    pub(crate) async fn next(&mut self) -> Result<Option<Sequenced>, StreamEnd> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next queued event, if any.
    fn try_next(&mut self) -> Option<Sequenced> {
        self.shared.lock_log().take_next()
    }

    /// Polls for the next event (see `next`).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Sequenced>, StreamEnd>> {
        {
            let mut log = self.shared.lock_log();
            if let Some(event) = log.take_next() {
                return Poll::Ready(Ok(Some(event)));
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(Ok(None));
            }
            // Registered under the lock a push takes: no event slips in unannounced.
            if !log.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                log.waker = Some(cx.waker().clone());
            }
        }
        self.shared.ended.register(cx.waker());
        let end = self.shared.end.lock().unwrap_or_else(|e| e.into_inner()).take();
        match end {
            // An event queued just before the end goes first.
            Some(reason) => match self.try_next() {
                Some(event) => {
                    *self.shared.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    Poll::Ready(Ok(Some(event)))
                }
                None => Poll::Ready(Err(reason)),
            },
            None => Poll::Pending,
        }
    }

    /// Marks the start (`true`) or end of a subscription. An end set while no stream
    /// was open stays for the new one: it is why the session is no longer a member
    /// (replaced, removed, its room closed), which its client must hear.
    pub(crate) fn set_subscribed(&mut self, subscribed: bool) {
        self.shared.overflowed.store(false, Ordering::Relaxed);
        self.shared.subscribed.store(subscribed, Ordering::Relaxed);
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut log = self.shared.lock_log();
        log.closed = true;
        log.unread = 0;
        log.waker = None;
        log.trim(0);
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
        // 1 and 2, queued before the detach, left the queue with it (a resumed stream
        // skips them: replayed or seen); 3 and 4 were never queued.
        assert_eq!([next(), next()], [Some(5), None]);
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

    /// One session's queue and log in a room of `members`, as after a join into it:
    /// `members` events pushed, the first `read` of them read by the client. Returns
    /// the heap bytes the session keeps (the shared events not counted).
    fn kept_bytes(members: usize, read: usize, replay: usize) -> (usize, usize) {
        let shared: Vec<RawEvent> = (0..members as i64).map(event).collect();
        let mut kept = None;
        let info = allocation_counter::measure(|| {
            let (tx, mut rx) = channel(4096, replay);
            for e in &shared {
                tx.push(e.clone());
            }
            for _ in 0..read {
                let _ = rx.next().now_or_never();
            }
            kept = Some((tx, rx));
        });
        (info.bytes_current as usize, info.bytes_max as usize)
    }

    #[test]
    fn memory_of_a_queue_is_8_bytes_per_event_and_shrinks_back_once_read() {
        // Printed figures: BENCHMARKS.md §9 (`cargo test -p dspeak-server --lib memory -- --nocapture`).
        let (empty, _) = kept_bytes(0, 0, 256);
        let (unread, _) = kept_bytes(1000, 0, 256);
        let (window, peak) = kept_bytes(2000, 2000, 256);
        let (no_log, _) = kept_bytes(2000, 2000, 0);
        println!(
            "memory: new queue {empty} B; 1,000 unread {unread} B; read, 256 logged {window} B (peak {peak}); read, no log {no_log} B"
        );
        assert!(empty <= 256, "a new queue allocates nothing but its shared state: {empty} B");
        assert!(unread <= empty + 1024 * 8 + 512, "1,000 unread events take {unread} B: 8 per event, one ring");
        assert!(window <= empty + 256 * 8, "after the burst is read, the 256-event log takes {window} B");
        assert!(no_log <= empty + 16 * 8, "with no log and nothing unread at most a small ring is left: {no_log} B");
    }

    #[test]
    fn memory_of_the_previous_layout_for_comparison() {
        // The layout before (a tokio `mpsc` of 24-byte `(seq, Arc<RawValue>)` and a
        // separate 256-entry `VecDeque` of them), measured the same way: BENCHMARKS.md §9.
        type Old = (u32, Arc<RawValue>);
        let shared: Vec<Arc<RawValue>> = (0..1000i64).map(|n| Arc::from(event(n).as_ref().clone())).collect();
        let mut kept = None;
        let info = allocation_counter::measure(|| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Old>(4096);
            let mut log: VecDeque<Old> = VecDeque::new();
            for (seq, e) in shared.iter().enumerate() {
                if log.len() == 256 {
                    log.pop_front();
                }
                log.push_back((seq as u32, e.clone()));
                let _ = tx.try_send((seq as u32, e.clone()));
            }
            kept = Some((tx, rx, log));
        });
        println!("memory: previous layout, 1,000 unread {} B", info.bytes_current);
        assert!(info.bytes_current > 0);
    }

    #[test]
    fn events_arrive_in_order_across_bursts_and_the_log_follows() {
        let (tx, mut rx) = channel(64, 16);
        let mut seen = 0;
        for burst in 1..=40usize {
            for _ in 0..burst {
                assert_eq!(tx.push(event(0)), Pushed::Queued);
            }
            while let Some(Ok(Some(e))) = rx.next().now_or_never() {
                seen += 1;
                assert_eq!(e.seq, seen, "in order, none lost");
            }
        }
        let last = seen;
        let replay = tx.resume(last - 16).map_err(|l| l.kept).unwrap_or_default();
        assert_eq!(replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(), (last - 15..=last).collect::<Vec<_>>());
        assert!(tx.resume(last - 17).is_err(), "only the last 16 are kept");
    }
}
