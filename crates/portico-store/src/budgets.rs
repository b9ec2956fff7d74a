//! What AI budgets have spent, saved so that a restart does not forget it.

use crate::{Store, StoreError};
use sqlx::Row;

/// A budget's spending in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpend {
    /// The budget, what it counts and its period (as the gateway names its state).
    pub budget: String,
    /// The period's start, in seconds since the epoch.
    pub period: i64,
    pub nanos: i64,
    pub tokens: i64,
}

impl Store {
    /// Saves `spends`; a row only ever grows (two nodes saving the same budget keep the
    /// larger figure).
    pub async fn save_budget_spends(&self, spends: &[BudgetSpend]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for spend in spends {
            sqlx::query(
                "INSERT INTO ai_budget_spend (budget, period, nanos, tokens) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (budget, period) DO UPDATE SET \
                 nanos = CASE WHEN excluded.nanos > ai_budget_spend.nanos THEN excluded.nanos ELSE ai_budget_spend.nanos END, \
                 tokens = CASE WHEN excluded.tokens > ai_budget_spend.tokens THEN excluded.tokens ELSE ai_budget_spend.tokens END",
            )
            .bind(&spend.budget)
            .bind(spend.period)
            .bind(spend.nanos)
            .bind(spend.tokens)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The spending of every period that started at or after `since` (seconds).
    pub async fn budget_spends(&self, since: i64) -> Result<Vec<BudgetSpend>, StoreError> {
        let rows = sqlx::query("SELECT budget, period, nanos, tokens FROM ai_budget_spend WHERE period >= $1")
            .bind(since)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(BudgetSpend {
                    budget: row.try_get("budget")?,
                    period: row.try_get("period")?,
                    nanos: row.try_get("nanos")?,
                    tokens: row.try_get("tokens")?,
                })
            })
            .collect()
    }

    /// Removes the spending of periods that started before `before` (seconds).
    pub async fn prune_budget_spends(&self, before: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM ai_budget_spend WHERE period < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }
}
