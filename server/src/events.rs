//! Per-session event queues and the slow-consumer policy.
//!
//! Every session has one bounded queue of serialized events. Fan-out never waits:
//! [`EventSender::push`] uses `try_send`. When a session's queue is full the session is
//! too slow to keep up, so it is evicted from its room (others see `peerLeft`) and its
//! event stream ends with a `limitExceeded` error once the queued events are delivered.
//! It may join again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dspeak_schema::Event;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

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
    /// The queue was full: the session must be evicted.
    Overflowed,
    /// The session's stream is gone (unsubscribed or disconnected); dropped.
    Closed,
}

/// The sending side of one session's event queue.
#[derive(Clone, Debug)]
pub(crate) struct EventSender {
    tx: mpsc::Sender<RawEvent>,
    flags: Arc<Flags>,
}

/// State shared by both ends of a queue.
#[derive(Debug, Default)]
struct Flags {
    /// The queue filled up since the stream was (re)subscribed.
    overflowed: AtomicBool,
    /// A subscription is streaming the queue to the client.
    subscribed: AtomicBool,
}

/// The receiving side, owned by the subscription that streams events to the client.
#[derive(Debug)]
pub(crate) struct EventReceiver {
    pub(crate) rx: mpsc::Receiver<RawEvent>,
    flags: Arc<Flags>,
}

/// A new event queue with room for `capacity` events.
pub(crate) fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let flags = Arc::new(Flags::default());
    (
        EventSender {
            tx,
            flags: flags.clone(),
        },
        EventReceiver { rx, flags },
    )
}

impl EventSender {
    /// Queues an event without waiting.
    pub(crate) fn push(&self, event: RawEvent) -> Pushed {
        match self.tx.try_send(event) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.flags.overflowed.store(true, Ordering::Relaxed);
                Pushed::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Whether a subscription is currently streaming this queue.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.flags.subscribed.load(Ordering::Relaxed)
    }
}

impl EventReceiver {
    /// Whether the queue overflowed (the stream must end with an error).
    pub(crate) fn overflowed(&self) -> bool {
        self.flags.overflowed.load(Ordering::Relaxed)
    }

    /// Marks the start (`true`) or end of a subscription; a new one starts without
    /// the overflow mark.
    pub(crate) fn set_subscribed(&mut self, subscribed: bool) {
        self.flags.overflowed.store(false, Ordering::Relaxed);
        self.flags.subscribed.store(subscribed, Ordering::Relaxed);
    }
}
