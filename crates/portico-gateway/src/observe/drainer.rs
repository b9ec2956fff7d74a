//! The thread behind a queue: it drains the queue every interval and, when told to stop,
//! drains it once more and ends. The access log's writer and the trace exporter are two.
//!
//! A thread whose drains keep finding nothing (for [`IDLE_AFTER`] drains in a row) sleeps
//! for [`IDLE_INTERVAL`] instead, so that an idle gateway does not wake it 50 times a second;
//! the first item queued after that wakes it ([`Drainer::wake_if_idle`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// Empty drains in a row after which the thread sleeps longer.
const IDLE_AFTER: u32 = 50;
/// How long an idle thread sleeps unless woken.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Drainer {
    stopping: Arc<AtomicBool>,
    /// Set while the thread sleeps the long sleep; whoever clears it wakes the thread.
    idle: Arc<AtomicBool>,
    /// The thread, to wake it without taking a lock.
    handle: Arc<OnceLock<Thread>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drainer {
    /// Starts the thread `name`, calling `drain` every `interval` until stopped; its
    /// argument is true for the last call, and it returns whether it found anything.
    pub fn start(
        &self,
        name: &str,
        interval: Duration,
        mut drain: impl FnMut(bool) -> bool + Send + 'static,
    ) -> std::io::Result<()> {
        let (stopping, idle, handle) = (self.stopping.clone(), self.idle.clone(), self.handle.clone());
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let mut empty = 0;
            loop {
                // Read before draining: what was queued before the stop is always drained.
                let stop = stopping.load(Ordering::Acquire);
                let found = drain(stop);
                if stop {
                    return;
                }
                empty = if found { 0 } else { empty + 1 };
                if empty < IDLE_AFTER {
                    std::thread::park_timeout(interval);
                    continue;
                }
                // Say so first, then look once more: an item queued before the flag was
                // seen set is found by this drain, and one queued after it wakes the thread.
                idle.store(true, Ordering::SeqCst);
                if drain(false) {
                    idle.store(false, Ordering::SeqCst);
                    empty = 0;
                    continue;
                }
                std::thread::park_timeout(IDLE_INTERVAL);
                idle.store(false, Ordering::SeqCst);
            }
        })?;
        let _ = handle.set(thread.thread().clone());
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(())
    }

    /// Wakes the thread if it sleeps because it found nothing for a while. Called after each
    /// item is queued: while the thread is busy, this is one load of a flag.
    pub fn wake_if_idle(&self) {
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            if let Some(thread) = self.handle.get() {
                thread.unpark();
            }
        }
    }

    /// Tells the thread to drain once more and end, without waiting for it.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.handle.get() {
            thread.unpark();
        }
    }

    /// Drains once more and waits for the thread to end.
    pub fn stop(&self) {
        self.request_stop();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// Waits up to `within` for `done`.
    fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        done()
    }

    #[test]
    fn an_idle_drainer_sleeps_until_something_is_queued() {
        let (pending, drained, drains) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let drainer = Drainer::default();
        let (p, d, n) = (pending.clone(), drained.clone(), drains.clone());
        drainer
            .start("drainer-test", Duration::from_millis(1), move |_| {
                n.fetch_add(1, Ordering::SeqCst);
                let taken = p.swap(0, Ordering::SeqCst);
                d.fetch_add(taken, Ordering::SeqCst);
                taken > 0
            })
            .expect("thread");
        // Nothing queued: after its empty drains it sleeps the long sleep.
        assert!(eventually(Duration::from_secs(5), || drainer.idle.load(Ordering::SeqCst)));
        let before = drains.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert!(drains.load(Ordering::SeqCst) - before <= 1, "woke while idle");

        // Something queued wakes it at once, not at the end of its sleep.
        pending.fetch_add(3, Ordering::SeqCst);
        drainer.wake_if_idle();
        assert!(eventually(Duration::from_millis(500), || drained.load(Ordering::SeqCst) == 3));

        // Stopping drains what is left.
        pending.fetch_add(2, Ordering::SeqCst);
        drainer.stop();
        assert_eq!(drained.load(Ordering::SeqCst), 5);
    }
}
