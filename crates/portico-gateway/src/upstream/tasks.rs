//! Long-running tasks kept in step with the configuration: one per key (a probe per target,
//! a resolver per service). Reconciling against the keys wanted now stops the tasks no
//! longer wanted and starts the new ones; the others run on undisturbed.

use std::collections::hash_map::{Entry, HashMap};
use std::future::Future;
use std::hash::Hash;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Waits until the snapshot or its discovered targets change (`changes`, from
/// `SnapshotCell::follow`), or shutdown is asked for. A change is marked seen as this
/// returns, before the follower loads the snapshot, so one made while it works wakes it
/// again at once.
pub(crate) async fn pause(changes: &mut watch::Receiver<()>, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        Ok(()) = changes.changed() => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, SnapshotCell};
    use std::time::Duration;
    use tokio::time::timeout;

    #[tokio::test]
    async fn followers_wake_when_the_snapshot_changes_and_not_before() {
        let cell = SnapshotCell::new(Snapshot::empty());
        let (stop, mut shutdown) = watch::channel(false);
        let mut changes = cell.follow();
        changes.borrow_and_update();
        // Longer than any polling interval a follower might use instead.
        let short = Duration::from_millis(300);
        let long = Duration::from_secs(5);
        assert!(timeout(short, pause(&mut changes, &mut shutdown)).await.is_err(), "nothing changed");

        // A change made before the follower waits again is not missed.
        cell.store(Snapshot::empty());
        assert!(timeout(long, pause(&mut changes, &mut shutdown)).await.is_ok());
        changes.borrow_and_update();
        assert!(timeout(short, pause(&mut changes, &mut shutdown)).await.is_err(), "seen already");

        cell.wake_followers();
        assert!(timeout(long, pause(&mut changes, &mut shutdown)).await.is_ok());
        changes.borrow_and_update();

        let _ = stop.send(true);
        assert!(timeout(long, pause(&mut changes, &mut shutdown)).await.is_ok(), "shutdown wakes it");
    }
}
