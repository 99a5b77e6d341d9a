//! Per-session event queues, and how a session's event stream ends.
//!
//! Every session has one bounded queue of serialized events. Fan-out never waits:
//! [`EventSender::push`] uses `try_send`. When a session's queue is full the session is
//! too slow to keep up: it is evicted from its room (others see `peerLeft`) and its
//! event stream ends with an error once the queued events are delivered. The same
//! path ends the stream of a session replaced by a newer one of the same identity.

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

/// What happened to a pushed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for delivery.
    Queued,
    /// The queue just overflowed: the session must be evicted.
    Overflowed,
    /// Dropped: the stream is gone, or the queue already overflowed.
    Dropped,
}

/// The sending side of one session's event queue.
#[derive(Clone, Debug)]
pub(crate) struct EventSender {
    tx: mpsc::Sender<RawEvent>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the subscription that streams events to the client.
#[derive(Debug)]
pub(crate) struct EventReceiver {
    rx: mpsc::Receiver<RawEvent>,
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
}

/// A new event queue with room for `capacity` events.
pub(crate) fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    (EventSender { tx, shared: shared.clone() }, EventReceiver { rx, shared })
}

impl EventSender {
    /// Queues an event without waiting.
    pub(crate) fn push(&self, event: RawEvent) -> Pushed {
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
    pub(crate) async fn next(&mut self) -> Result<Option<RawEvent>, StreamEnd> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next event (see `next`).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<RawEvent>, StreamEnd>> {
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

    fn timestamp(e: &RawEvent) -> i64 {
        serde_json::from_str::<serde_json::Value>(e.get()).ok().and_then(|v| v["timestamp"].as_i64()).unwrap_or(-1)
    }

    #[test]
    fn a_full_queue_overflows_once_per_subscription() {
        let (tx, mut rx) = channel(2);
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
        let (tx, mut rx) = channel(4);
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
}
