//! What an AI call used and cost. Tokens come from the provider's own usage, read in every
//! shape it arrives in (`portico_ai`); only when a provider reports none does Portico
//! estimate, and then the record says so. The cost is the usage at the target's price; a
//! model without a price is reported as unpriced, never as free.

use super::budget::{Budget, Budgets};
use super::limits::Reservation;
use portico_ai::Usage;
use portico_model::{AiPrice, AiTally};
use std::sync::{Arc, Mutex};

/// What one AI call used, for the access log and analytics.
#[derive(Debug, Clone, PartialEq)]
pub struct AiUsage {
    pub provider: Arc<str>,
    /// The provider's model that answered.
    pub model: Arc<str>,
    pub usage: Usage,
    /// The provider reported no usage: the counts are Portico's estimate.
    pub estimated: bool,
    /// In US dollars; `None` when the model has no price.
    pub cost: Option<f64>,
}

/// Who answers a call, and at what price: what a usage record needs besides the tokens.
#[derive(Debug, Clone)]
pub(crate) struct Billing {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub price: Option<AiPrice>,
}

impl Billing {
    /// The record of `usage`, or of the estimate when the provider reported none.
    pub fn usage(&self, usage: Option<Usage>, estimate: impl FnOnce() -> Usage) -> AiUsage {
        let (usage, estimated) = match usage.filter(|u| !u.is_empty()) {
            Some(usage) => (usage, false),
            None => (estimate(), true),
        };
        AiUsage {
            provider: self.provider.clone(),
            model: self.model.clone(),
            cost: self.price.map(|price| cost(&price, &usage)),
            usage,
            estimated,
        }
    }
}

/// What `usage` costs at `price`: each cached input token once, at its cache price, and
/// the rest of the input at the input price.
pub(crate) fn cost(price: &AiPrice, usage: &Usage) -> f64 {
    let tokens = |count: u64, per_million: f64| count as f64 * per_million;
    let dollars = tokens(usage.uncached_prompt_tokens(), price.input)
        + tokens(usage.cached_tokens, price.cached_read.unwrap_or(price.input))
        + tokens(usage.cache_write_tokens, price.cache_write.unwrap_or(price.input))
        + tokens(usage.completion_tokens, price.output);
    dollars / 1e6
}

/// Where a call's usage is left for the request's trail, shared with a streamed answer,
/// which knows its usage only when it ends; recording it charges the caller's budgets.
pub(crate) struct Meter {
    usage: Mutex<Option<AiUsage>>,
    budgets: Arc<Budgets>,
    /// The budgets the call counts against.
    charged: Vec<Arc<Budget>>,
    /// The tokens reserved under the service's rates, settled when the usage is known.
    reserved: Mutex<Vec<Reservation>>,
}

impl Meter {
    pub fn new(budgets: Arc<Budgets>, charged: Vec<Arc<Budget>>, reserved: Vec<Reservation>) -> Meter {
        Meter { usage: Mutex::default(), budgets, charged, reserved: Mutex::new(reserved) }
    }

    /// Records what the call used: it charges the budgets and settles the reservations on
    /// this node, and returns what remains to be done in Redis.
    #[must_use = "the Redis work is either awaited or spawned"]
    pub fn record(&self, usage: AiUsage) -> Vec<Pending> {
        let tokens = usage.usage.total_tokens();
        let mut pending = Vec::new();
        pending.extend(self.budgets.charge(&self.charged, usage.cost.map_or(0, AiTally::nanos), tokens));
        let reserved = std::mem::take(&mut *self.reserved.lock().unwrap_or_else(|p| p.into_inner()));
        pending.extend(reserved.into_iter().filter_map(|reservation| reservation.settle(tokens)));
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        pending
    }

    pub fn take(&self) -> Option<AiUsage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for Meter {
    /// A call that ended without usage (it failed) gives its reserved tokens back.
    fn drop(&mut self) {
        let reserved = std::mem::take(self.reserved.get_mut().unwrap_or_else(|p| p.into_inner()));
        spawn(reserved.into_iter().filter_map(|reservation| reservation.settle(0)).collect());
    }
}

/// Redis work left by a finished call: a charge to budgets, a settled reservation.
pub(crate) type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `pending` on its own, for callers that cannot wait (a stream's end, a drop): a few
/// microseconds of Redis work that nothing waits for; a node that stops before it lands
/// has still counted it locally.
pub(crate) fn spawn(pending: Vec<Pending>) {
    if pending.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(futures_util::future::join_all(pending));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_billed_once_at_their_own_price() {
        let price = AiPrice { input: 3.0, output: 15.0, cached_read: Some(0.3), cache_write: Some(3.75) };
        let usage = Usage {
            prompt_tokens: 1_100_000,
            cached_tokens: 600_000,
            cache_write_tokens: 400_000,
            completion_tokens: 200_000,
            reasoning_tokens: 50_000,
        };
        // 100k uncached × 3 + 600k read × 0.3 + 400k written × 3.75 + 200k out × 15, per million.
        let expected = 0.3 + 0.18 + 1.5 + 3.0;
        assert!((cost(&price, &usage) - expected).abs() < 1e-9, "{}", cost(&price, &usage));
        // Without cache prices, cached tokens cost what input costs.
        let plain = AiPrice { input: 1.0, output: 2.0, cached_read: None, cache_write: None };
        assert!((cost(&plain, &usage) - (1.1 + 0.4)).abs() < 1e-9);
    }
}
