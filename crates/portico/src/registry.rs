//! Following the service registry: live instances become the targets of the services that
//! discover them. Instances are polled from the store, which every node of a cluster shares,
//! so an instance registered through any node reaches all of them.

use portico_gateway::{Discovered, SnapshotCell, UpstreamStates};
use portico_store::{now_ms, Store};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// How often live instances are read. An instance is taken out of rotation one poll before
/// its registration lapses, so that it leaves within its TTL, not up to a poll after it.
pub const REGISTRY_POLL: Duration = Duration::from_millis(100);

pub async fn follow_registry(
    store: Store,
    discovered: Discovered,
    snapshots: SnapshotCell,
    upstreams: UpstreamStates,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut poll = tokio::time::interval(REGISTRY_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = snapshots.follow();
    let mut failing = false;
    loop {
        changes.borrow_and_update();
        if snapshots.load().registry_names().is_empty() {
            // No service discovers from the registry: nothing to poll until the
            // configuration changes.
            tokio::select! {
                Ok(()) = changes.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = poll.tick() => {}
            _ = shutdown.changed() => return,
        }
        match store.live_instances(None).await {
            Ok(instances) => {
                failing = false;
                let mut by_name: HashMap<String, Vec<(String, u32)>> = HashMap::new();
                let lapsing_before_next_poll = now_ms() + REGISTRY_POLL.as_millis() as i64;
                for instance in instances.into_iter().filter(|i| i.expires_at > lapsing_before_next_poll) {
                    by_name.entry(instance.service).or_default().push((instance.address, instance.weight));
                }
                discovered.update_registry(&by_name, &snapshots, &upstreams);
            }
            // The last known instances keep serving while the store is away.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the registry; keeping the known instances");
            }
            Err(_) => {}
        }
    }
}
