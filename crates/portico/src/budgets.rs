//! What AI budgets have spent, kept in the store: restored before the first configuration is
//! served, saved every few seconds and at shutdown. Budgets live in the gateway's memory
//! (and, across a cluster, in Redis); this is what lets a restart remember them.

use portico_gateway::UpstreamStates;
use portico_store::{BudgetSpend, Store};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// How often spending is saved: what a crash may forget.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Saved spending older than this is removed (a month and a day: no period is longer).
const KEEP_SECS: i64 = 32 * 86_400;

/// Seeds the budgets' state with what the store remembers.
pub async fn restore(store: &Store, states: &UpstreamStates) {
    let since = portico_store::now_ms() / 1_000 - KEEP_SECS;
    match store.budget_spends(since).await {
        Ok(spends) => {
            for spend in spends {
                let (nanos, tokens) =
                    (u64::try_from(spend.nanos).unwrap_or(0), u64::try_from(spend.tokens).unwrap_or(0));
                states.seed_budget(&spend.budget, spend.period, nanos, tokens);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read what AI budgets had spent; they start from zero"),
    }
}

/// Saves what changed every few seconds until `shutdown` turns true (the last save comes
/// after the gateway has drained, from `Running::shutdown`).
pub async fn keep(store: Store, states: UpstreamStates, mut shutdown: watch::Receiver<bool>) {
    let mut saved = Saved::new();
    let _ = store.prune_budget_spends(portico_store::now_ms() / 1_000 - KEEP_SECS).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SAVE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        save(&store, &states, &mut saved).await;
    }
}

/// What was saved last, by budget: period, dollars (billionths), tokens.
pub type Saved = HashMap<String, (i64, u64, u64)>;

/// Saves the budgets whose spending changed since `saved`.
pub async fn save(store: &Store, states: &UpstreamStates, saved: &mut Saved) {
    let changed: Vec<(String, (i64, u64, u64))> = states
        .budget_spends()
        .into_iter()
        .map(|(id, period, nanos, tokens)| (id, (period, nanos, tokens)))
        .filter(|(id, now)| saved.get(id) != Some(now))
        .collect();
    if changed.is_empty() {
        return;
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let rows: Vec<BudgetSpend> = changed
        .iter()
        .map(|(id, (period, nanos, tokens))| BudgetSpend {
            budget: id.clone(),
            period: *period,
            nanos: count(*nanos),
            tokens: count(*tokens),
        })
        .collect();
    match store.save_budget_spends(&rows).await {
        Ok(()) => saved.extend(changed),
        Err(error) => tracing::warn!(%error, "cannot save what AI budgets have spent; trying again"),
    }
}
