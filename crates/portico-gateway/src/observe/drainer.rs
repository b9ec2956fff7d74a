//! The thread behind a queue: it drains the queue every interval and, when told to stop,
//! drains it once more and ends. The access log's writer and the trace exporter are two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Drainer {
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drainer {
    /// Starts the thread `name`, calling `drain` every `interval` until stopped; its
    /// argument is true for the last call.
    pub fn start(
        &self,
        name: &str,
        interval: Duration,
        mut drain: impl FnMut(bool) + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping.clone();
        let handle = std::thread::Builder::new().name(name.into()).spawn(move || loop {
            // Read before draining: what was queued before the stop is always drained.
            let stop = stopping.load(Ordering::Acquire);
            drain(stop);
            if stop {
                return;
            }
            std::thread::park_timeout(interval);
        })?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    /// Tells the thread to drain once more and end, without waiting for it.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(handle) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            handle.thread().unpark();
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
