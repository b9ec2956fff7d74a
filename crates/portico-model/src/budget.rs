//! AI budgets: a cap on what a consumer, a team or one API key may spend on AI calls per
//! day or month, in money, in tokens, or both.

use crate::{validate_name, Problems};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A spending cap on AI calls. Whose calls count is named by exactly one of `consumer`,
/// `team`, or `consumer` with `credential` (one API key of the consumer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiBudget {
    /// Unique name; the budget's state is kept under it.
    #[serde(default)]
    pub name: String,
    /// The consumer whose calls count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// With `consumer`: only the calls made with this credential (its `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The team whose consumers' calls count together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// `day` or `month`, in UTC: the budget starts afresh at each one's start.
    pub period: BudgetPeriod,
    /// The most US dollars the calls of a period may cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
    /// The most tokens (input and output) the calls of a period may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// The start of the period holding `at` and the start of the next one, in seconds
    /// since the Unix epoch (UTC).
    pub fn bounds(self, at: i64) -> (i64, i64) {
        const DAY: i64 = 86_400;
        let day = at.div_euclid(DAY) * DAY;
        match self {
            BudgetPeriod::Day => (day, day + DAY),
            BudgetPeriod::Month => {
                use time::{Date, Month, OffsetDateTime};
                // Every timestamp Portico sees is within the dates `time` handles.
                let date = OffsetDateTime::from_unix_timestamp(day).map_or(Date::MIN, |t| t.date());
                let (year, month) = (date.year(), date.month());
                let (next_year, next_month) =
                    if month == Month::December { (year + 1, month.next()) } else { (year, month.next()) };
                let first = |year, month| Date::from_calendar_date(year, month, 1).unwrap_or(date);
                let seconds = |date: Date| date.midnight().assume_utc().unix_timestamp();
                (seconds(first(year, month)), seconds(first(next_year, next_month)))
            }
        }
    }
}

impl AiBudget {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        match (&self.consumer, &self.team) {
            (None, None) => problems.push("consumer", "name the consumer or the team whose calls count"),
            (Some(_), Some(_)) => problems.push("team", "a budget counts a consumer's calls or a team's, not both"),
            _ => {}
        }
        if self.credential.is_some() && self.consumer.is_none() {
            problems.push("credential", "a credential belongs to a consumer: name it too");
        }
        if self.max_usd.is_none() && self.max_tokens.is_none() {
            problems.push("max_usd", "give max_usd, max_tokens, or both");
        }
        if self.max_usd.is_some_and(|usd| !usd.is_finite() || usd < 0.0) {
            problems.push("max_usd", "must be an amount of 0 or more");
        }
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_on_the_first_of_the_month() {
        let t = 1_796_200_000; // 2026-12-02T08:26:40Z
        assert_eq!(BudgetPeriod::Day.bounds(t), (1_796_169_600, 1_796_256_000));
        // 2026-12-01 to 2027-01-01.
        assert_eq!(BudgetPeriod::Month.bounds(t), (1_796_083_200, 1_798_761_600));
        // February of a leap year: 2028-02-01 to 2028-03-01, 29 days.
        let (start, end) = BudgetPeriod::Month.bounds(1_833_000_000);
        assert_eq!((start, end - start), (1_832_976_000, 29 * 86_400));
    }

    #[test]
    fn a_budget_names_one_subject_and_a_limit() {
        let budget = |yaml: &str| yaml_serde::from_str::<AiBudget>(yaml).expect("yaml");
        assert!(budget("{name: b, team: research, period: month, max_usd: 500}").validate().is_ok());
        assert!(budget("{name: b, consumer: shop, credential: ci, period: day, max_tokens: 1000}").validate().is_ok());
        let problems = budget("{name: b, team: t, consumer: c, period: day, max_usd: -1}").validate().err();
        let paths: Vec<String> = problems.map(|p| p.0.into_iter().map(|p| p.path).collect()).unwrap_or_default();
        assert_eq!(paths, ["team", "max_usd"]);
        let problems = budget("{name: b, credential: k, period: day}").validate().err();
        let paths: Vec<String> = problems.map(|p| p.0.into_iter().map(|p| p.path).collect()).unwrap_or_default();
        assert_eq!(paths, ["consumer", "credential", "max_usd"]);
    }
}
