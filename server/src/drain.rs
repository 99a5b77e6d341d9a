//! Graceful drain: the server stops taking new calls and lets the running ones end.
//!
//! Once draining, `/readyz` answers 503, `join` is refused with `unavailable`, and
//! every session's event stream carries `serverDraining { deadlineMs }` (sessions that
//! subscribe later get it right after `welcome`). Calls in progress go on; the
//! caller of [`crate::ServerHandle::drain`] stops the server once the last room is
//! empty or the deadline passes.

use tokio::sync::watch;

/// The drain state: `None` while serving, the deadline (ms since the epoch) once
/// draining.
#[derive(Debug)]
pub(crate) struct Drain {
    deadline: watch::Sender<Option<i64>>,
}

/// What an event stream watches to learn that the server drains.
pub(crate) type DrainWatch = watch::Receiver<Option<i64>>;

impl Default for Drain {
    fn default() -> Self {
        Drain { deadline: watch::Sender::new(None) }
    }
}

impl Drain {
    /// Starts draining with this deadline; `false` if already draining (the first
    /// deadline stays).
    pub(crate) fn start(&self, deadline_ms: i64) -> bool {
        self.deadline.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            *d = Some(deadline_ms);
            true
        })
    }

    /// Whether the server is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.deadline.borrow().is_some()
    }

    /// A receiver that sees the deadline once draining starts.
    pub(crate) fn watch(&self) -> DrainWatch {
        self.deadline.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_the_first_deadline_only() {
        let drain = Drain::default();
        let mut w = drain.watch();
        assert!(!drain.is_draining());
        assert!(drain.start(1_000));
        assert!(!drain.start(2_000), "a second drain keeps the first deadline");
        w.changed().await.unwrap();
        assert_eq!(*w.borrow_and_update(), Some(1_000));
        assert!(drain.is_draining());
        // A watcher created later sees the deadline at once.
        assert_eq!(*drain.watch().borrow(), Some(1_000));
    }
}
