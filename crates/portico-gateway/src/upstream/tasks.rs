//! Long-running tasks kept in step with the configuration: one per key (a probe per target,
//! a resolver per service). Reconciling against the keys wanted now stops the tasks no
//! longer wanted and starts the new ones; the others run on undisturbed.

use std::collections::hash_map::{Entry, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// How often followers look for a new snapshot.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Waits until a follower's next look at the snapshot is due, or shutdown is asked for.
pub(crate) async fn pause(shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        _ = shutdown.changed() => {}
    }
}

pub(crate) struct KeyedTasks<K> {
    tasks: JoinSet<()>,
    running: HashMap<K, AbortHandle>,
}

impl<K: Eq + Hash> KeyedTasks<K> {
    pub fn new() -> KeyedTasks<K> {
        KeyedTasks { tasks: JoinSet::new(), running: HashMap::new() }
    }

    /// Makes the running tasks those of `wanted`; `start` makes the task for a new key.
    pub fn reconcile<V, F>(&mut self, wanted: HashMap<K, V>, mut start: impl FnMut(&K, V) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, value) in wanted {
            if let Entry::Vacant(slot) = self.running.entry(key) {
                let task = start(slot.key(), value);
                slot.insert(self.tasks.spawn(task));
            }
        }
        // Reap the aborted ones so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }

    /// Stops every task and waits for them to end.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}
