//! Incoming desired documents: the MQTT session (or a test) pushes, the convergence loop
//! pops.

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Incoming desired documents, bounded (oldest dropped), with a wake-up.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
    notify: Notify,
}

impl Inbox {
    const CAP: usize = 8;

    pub(crate) fn push(&self, bytes: Vec<u8>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= Self::CAP {
            q.pop_front();
        }
        q.push_back(bytes);
        drop(q);
        self.notify.notify_one();
    }

    pub(crate) fn pop(&self) -> Option<Vec<u8>> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// True when no document waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Resolves after the next push (or at once when a push was not waited for yet).
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}
