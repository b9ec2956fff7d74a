//! Rate limits: how many requests a key may make per time window.

use crate::Problems;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Several limits on one key, all of which must allow a request (for example 10 a second
/// and 10,000 a day). Each limit lets through its full count in any window of its length
/// and refills evenly (GCRA), so there is no burst at window edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// What the requests are counted by. A consumer limit counts requests without an
    /// identified consumer by client IP; a header limit counts requests without the header
    /// by client IP too.
    #[serde(default)]
    pub by: LimitBy,
    /// The header whose value is the key, when `by` is `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The limits; a request passes only if every one allows it.
    pub limits: Vec<Limit>,
    /// Count across every Portico node through Redis (default: each node counts alone).
    /// When Redis cannot be reached, each node falls back to counting alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// Leave out the `RateLimit-*` response headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hide_headers: bool,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitBy {
    #[default]
    Consumer,
    Route,
    Service,
    ClientIp,
    Header,
}

/// At most `requests` per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u64,
    /// The window: `second`, `minute`, `hour`, `day`, or a length such as `10s`, `15m`,
    /// `500ms`.
    #[schema(value_type = String)]
    pub per: Window,
}

/// A window length in milliseconds, written as a word or a number with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window(pub u64);

const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
const WORDS: [(&str, u64); 4] = [("second", 1_000), ("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        if let Some((_, ms)) = WORDS.iter().find(|(word, _)| *word == text) {
            return Ok(Window(*ms));
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let factor = UNITS.iter().find(|(u, _)| *u == unit).map(|(_, f)| *f);
        match (number.parse::<u64>(), factor) {
            (Ok(n), Some(factor)) if n > 0 => n
                .checked_mul(factor)
                .filter(|ms| *ms <= 366 * 86_400_000)
                .map(Window)
                .ok_or_else(|| "a window can be at most a year long".to_owned()),
            _ => Err(format!(
                "`{text}` is not a window: use second, minute, hour, day or a length such as 10s, 15m, 500ms"
            )),
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((word, _)) = WORDS.iter().find(|(_, ms)| *ms == self.0) {
            return f.write_str(word);
        }
        let (unit, factor) =
            UNITS.iter().rev().find(|(_, factor)| self.0.is_multiple_of(*factor)).copied().unwrap_or(("ms", 1));
        write!(f, "{}{unit}", self.0 / factor)
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Window, D::Error> {
        let text = String::deserialize(deserializer)?;
        Window::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl RateLimit {
    pub(crate) fn validate(&self, at: &str, problems: &mut Problems) {
        if self.limits.is_empty() {
            problems.push(format!("{at}.limits"), "give at least one limit, such as {requests: 10, per: second}");
        }
        for (i, limit) in self.limits.iter().enumerate() {
            if limit.requests == 0 || limit.requests > 1_000_000_000 {
                problems.push(format!("{at}.limits[{i}].requests"), "must be between 1 and 1000000000");
            }
        }
        match (self.by, &self.header) {
            (LimitBy::Header, None) => problems.push(format!("{at}.header"), "name the header to count by"),
            (LimitBy::Header, Some(name)) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                problems.push(format!("{at}.header"), format!("`{name}` is not a valid header name"))
            }
            (LimitBy::Header, Some(_)) => {}
            (_, Some(_)) => problems.push(format!("{at}.header"), "only used with `by: header`"),
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_words_or_lengths_and_print_back() {
        for (text, ms, printed) in
            [("second", 1_000, "second"), ("10s", 10_000, "10s"), ("60s", 60_000, "minute"), ("500ms", 500, "500ms")]
        {
            let window = Window::parse(text).expect(text);
            assert_eq!(window.0, ms);
            assert_eq!(window.to_string(), printed);
        }
        for bad in ["", "0s", "10", "s", "1w", "-1s", "400d"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_limit_names_its_header() {
        let limit = RateLimit {
            by: LimitBy::Header,
            header: None,
            limits: vec![Limit { requests: 5, per: Window(1_000) }],
            cluster: false,
            hide_headers: false,
        };
        let mut problems = Problems::default();
        limit.validate("rate_limit", &mut problems);
        assert_eq!(problems.0[0].path, "rate_limit.header");
    }
}
