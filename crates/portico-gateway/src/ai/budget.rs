//! AI budgets on the request path: before a call, whether the caller's budgets still have
//! room; after it, its cost and tokens charged to them.
//!
//! Each node keeps what it knows of a budget's period in atomics. With Redis, every node
//! also adds its charges to one hash per budget and period (`HINCRBY`, expiring a day after
//! the period ends) and reads the hashes of the caller's budgets before each call (one
//! pipelined round trip, within the same 100 ms as cluster rate limits), so a budget spent
//! on one node is spent on all. Without Redis, or while it is unreachable, each node goes
//! by what it has seen itself. A call is refused once a budget is spent; a call that
//! crosses it (a stream, too) runs to its end, and the next one is refused.

use super::meter::Pending;
use crate::access::{Consumer, RedisLimits};
use portico_ai::{AiError, ErrorKind};
use portico_model::{AiBudget, AiTally, BudgetPeriod};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a node knows a budget has spent in its current period; kept across reloads.
#[derive(Debug, Default)]
pub struct Spent {
    /// The start of the period the counts are of (seconds since the epoch).
    period: AtomicI64,
    nanos: AtomicU64,
    tokens: AtomicU64,
}

impl Spent {
    /// The period the counts are of, and the counts.
    pub fn read(&self) -> (i64, u64, u64) {
        (self.period.load(Ordering::Acquire), self.nanos.load(Ordering::Acquire), self.tokens.load(Ordering::Acquire))
    }

    /// Learns that the period starting at `period` had spent at least this much (a figure
    /// saved before a restart); older periods are of no interest.
    pub fn seed(&self, period: i64, nanos: u64, tokens: u64) {
        if period < self.period.load(Ordering::Acquire) {
            return;
        }
        let (spent_nanos, spent_tokens) = self.of(period);
        spent_nanos.fetch_max(nanos, Ordering::AcqRel);
        spent_tokens.fetch_max(tokens, Ordering::AcqRel);
    }

    /// The counts of the period starting at `period`, starting it afresh if it is new.
    fn of(&self, period: i64) -> (&AtomicU64, &AtomicU64) {
        let known = self.period.load(Ordering::Acquire);
        if known < period && self.period.compare_exchange(known, period, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.nanos.store(0, Ordering::Release);
            self.tokens.store(0, Ordering::Release);
        }
        (&self.nanos, &self.tokens)
    }
}

/// Where a budget stands in its current period.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetReport {
    /// The period's start and end, in seconds since the epoch.
    pub period_start: i64,
    pub period_end: i64,
    pub spent_usd: f64,
    pub spent_tokens: u64,
    pub max_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    /// The budget is spent: calls are refused until the period ends.
    pub spent: bool,
}

/// A call refused because a budget is spent.
pub(crate) struct BudgetSpent {
    pub error: AiError,
    /// Seconds until the budget renews.
    pub renews_in: i64,
}

/// One budget, ready for the request path.
pub(crate) struct Budget {
    pub name: Arc<str>,
    /// Only calls made with this credential count.
    credential: Option<Box<str>>,
    period: BudgetPeriod,
    max_nanos: Option<u64>,
    max_tokens: Option<u64>,
    spent: Arc<Spent>,
}

/// The budgets of a snapshot, by whose calls they count.
#[derive(Default)]
pub(crate) struct Budgets {
    by_name: FxHashMap<Box<str>, Arc<Budget>>,
    by_consumer: FxHashMap<Box<str>, Vec<Arc<Budget>>>,
    by_team: FxHashMap<Box<str>, Vec<Arc<Budget>>>,
    redis: Option<Arc<RedisLimits>>,
}

/// Who is calling, as far as budgets care.
#[derive(Clone, Copy, Default)]
pub(crate) struct Caller<'a> {
    pub consumer: Option<&'a Consumer>,
    /// The id of the API key the consumer authenticated with.
    pub credential: Option<&'a str>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Budgets {
    /// Compiles `budgets`; `spent` gives each its state (the same one across reloads).
    pub fn compile(
        budgets: &[AiBudget],
        mut spent: impl FnMut(&str) -> Arc<Spent>,
        redis: Option<Arc<RedisLimits>>,
    ) -> Budgets {
        let mut compiled = Budgets { redis, ..Budgets::default() };
        for budget in budgets {
            let subject = match (&budget.consumer, &budget.credential, &budget.team) {
                (Some(consumer), Some(credential), _) => format!("consumer:{consumer}:{credential}"),
                (Some(consumer), None, _) => format!("consumer:{consumer}"),
                (None, _, team) => format!("team:{}", team.as_deref().unwrap_or_default()),
            };
            let entry = Arc::new(Budget {
                name: budget.name.as_str().into(),
                credential: budget.credential.as_deref().map(Box::from),
                period: budget.period,
                max_nanos: budget.max_usd.map(AiTally::nanos),
                max_tokens: budget.max_tokens,
                spent: spent(&format!("{}|{subject}|{}", budget.name, budget.period.as_str())),
            });
            compiled.by_name.insert(budget.name.as_str().into(), entry.clone());
            let list = match (&budget.consumer, &budget.team) {
                (Some(consumer), _) => compiled.by_consumer.entry(consumer.as_str().into()).or_default(),
                (None, Some(team)) => compiled.by_team.entry(team.as_str().into()).or_default(),
                (None, None) => continue,
            };
            list.push(entry);
        }
        compiled
    }

    /// The budgets `caller`'s calls count against.
    pub fn of(&self, caller: Caller<'_>) -> Vec<Arc<Budget>> {
        let Some(consumer) = caller.consumer else { return Vec::new() };
        let own = self.by_consumer.get(&*consumer.name).into_iter().flatten();
        let team = consumer.team.as_deref().and_then(|team| self.by_team.get(team)).into_iter().flatten();
        own.chain(team)
            .filter(|b| b.credential.is_none() || b.credential.as_deref() == caller.credential)
            .cloned()
            .collect()
    }

    /// Where budget `name` stands in its current period, as the cluster sees it.
    pub async fn report(&self, name: &str) -> Option<BudgetReport> {
        let budget = self.by_name.get(name)?;
        let now = now();
        self.sync(std::slice::from_ref(budget), now).await;
        let (start, end) = budget.period.bounds(now);
        let (nanos, tokens) = budget.spent.of(start);
        let (nanos, tokens) = (nanos.load(Ordering::Acquire), tokens.load(Ordering::Acquire));
        Some(BudgetReport {
            period_start: start,
            period_end: end,
            spent_usd: nanos as f64 / 1e9,
            spent_tokens: tokens,
            max_usd: budget.max_nanos.map(|n| n as f64 / 1e9),
            max_tokens: budget.max_tokens,
            spent: budget.check(now).is_err(),
        })
    }

    /// Refuses the call when one of `budgets` is spent, after learning from Redis (when
    /// there is one) what the whole cluster has spent.
    pub async fn check(&self, budgets: &[Arc<Budget>]) -> Result<(), BudgetSpent> {
        if budgets.is_empty() {
            return Ok(());
        }
        let now = now();
        self.sync(budgets, now).await;
        budgets.iter().try_for_each(|budget| budget.check(now))
    }

    /// Learns from Redis (when there is one) what the cluster has spent on `budgets`.
    async fn sync(&self, budgets: &[Arc<Budget>], now: i64) {
        if let Some(redis) = &self.redis {
            let mut pipeline = redis::pipe();
            for budget in budgets {
                pipeline.hmget(budget.key(now), &["nanos", "tokens"]);
            }
            let totals: Option<Vec<(Option<u64>, Option<u64>)>> = redis.pipeline(&pipeline).await;
            for (budget, (nanos, tokens)) in budgets.iter().zip(totals.into_iter().flatten()) {
                let (spent_nanos, spent_tokens) = budget.spent.of(budget.period.bounds(now).0);
                spent_nanos.fetch_max(nanos.unwrap_or(0), Ordering::AcqRel);
                spent_tokens.fetch_max(tokens.unwrap_or(0), Ordering::AcqRel);
            }
        }
    }

    /// Charges a finished call's cost and tokens to `budgets` here; what remains to do in
    /// Redis is returned.
    pub fn charge(&self, budgets: &[Arc<Budget>], nanos: u64, tokens: u64) -> Option<Pending> {
        if budgets.is_empty() || (nanos == 0 && tokens == 0) {
            return None;
        }
        let now = now();
        for budget in budgets {
            let (spent_nanos, spent_tokens) = budget.spent.of(budget.period.bounds(now).0);
            spent_nanos.fetch_add(nanos, Ordering::AcqRel);
            spent_tokens.fetch_add(tokens, Ordering::AcqRel);
        }
        let redis = self.redis.clone()?;
        let mut pipeline = redis::pipe();
        for budget in budgets {
            let key = budget.key(now);
            // Kept a day past the period's end, for late readers; then Redis forgets it.
            let expires = budget.period.bounds(now).1 + 86_400;
            pipeline.hincr(&key, "nanos", nanos).hincr(&key, "tokens", tokens).expire_at(&key, expires).ignore();
        }
        Some(Box::pin(async move {
            let _: Option<()> = redis.pipeline(pipeline.atomic()).await;
        }))
    }
}

impl Budget {
    /// The Redis hash of this budget's period holding `now`.
    fn key(&self, now: i64) -> String {
        format!("portico:ai_budget:{}:{}:{}", self.name, self.period.as_str(), self.period.bounds(now).0)
    }

    fn check(&self, now: i64) -> Result<(), BudgetSpent> {
        let (start, end) = self.period.bounds(now);
        let (nanos, tokens) = self.spent.of(start);
        let (nanos, tokens) = (nanos.load(Ordering::Acquire), tokens.load(Ordering::Acquire));
        let spent = match (self.max_nanos, self.max_tokens) {
            (Some(max), _) if nanos >= max => Some(format!("{:.2} of {:.2} USD", nanos as f64 / 1e9, max as f64 / 1e9)),
            (_, Some(max)) if tokens >= max => Some(format!("{tokens} of {max} tokens")),
            _ => None,
        };
        let Some(spent) = spent else { return Ok(()) };
        let renews = time::OffsetDateTime::from_unix_timestamp(end)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let message = format!(
            "the AI budget `{}` for this {} is spent ({spent}); it renews at {renews}",
            self.name,
            self.period.as_str()
        );
        let error = AiError::new(ErrorKind::RateLimited, message).with_code("budget_exceeded");
        Err(BudgetSpent { error, renews_in: end - now })
    }
}
