//! `GET /api/v1/analytics/series` and `GET /api/v1/analytics/top`: traffic over time, and
//! the routes, services, consumers, statuses and errors with the most of it. Both read the
//! rollups (per minute, hour or day), never the access log's rows, so a week of traffic
//! answers as fast as an hour.

use crate::{AdminState, ApiError};
use axum::extract::{RawQuery, State};
use axum::Json;
use portico_model::{Dimension, Interval, Tally};
use portico_store::TopBy;
use serde::Serialize;
use utoipa::ToSchema;

/// The most points a series may have; past it, a coarser interval is needed.
const MAX_POINTS: i64 = 1_500;
const MAX_TOP: usize = 100;

/// The traffic of one bucket, or of a whole range.
#[derive(Serialize, ToSchema)]
pub(crate) struct Traffic {
    requests: u64,
    /// Responses with a 4xx status.
    client_errors: u64,
    /// Responses with a 5xx status.
    server_errors: u64,
    /// `server_errors / requests`, 0 without requests.
    error_rate: f64,
    bytes_in: u64,
    bytes_out: u64,
    /// Time from the request head to the last response byte, within 1%.
    latency_ms: Percentiles,
    /// What the AI calls among the requests used and cost.
    ai: AiTraffic,
}

/// AI calls' tokens and cost. Input tokens count every input token, those read from or
/// written to a prompt cache included; output tokens include reasoning.
#[derive(Serialize, ToSchema)]
pub(crate) struct AiTraffic {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    /// US dollars, of the calls whose model has a price.
    cost_usd: f64,
    /// Calls whose model has no price: their cost is unknown, and not in `cost_usd`.
    unpriced_calls: u64,
    /// Calls whose usage is Portico's estimate, the provider having reported none.
    estimated_calls: u64,
}

/// Latency percentiles in milliseconds; null without requests.
#[derive(Serialize, ToSchema)]
pub(crate) struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

impl From<&Tally> for Traffic {
    fn from(tally: &Tally) -> Traffic {
        let percentile = |q| tally.latency.quantile(q).map(|ms| (ms * 1_000.0).round() / 1_000.0);
        Traffic {
            requests: tally.requests,
            client_errors: tally.client_errors,
            server_errors: tally.server_errors,
            error_rate: if tally.requests == 0 { 0.0 } else { tally.server_errors as f64 / tally.requests as f64 },
            bytes_in: tally.bytes_in,
            bytes_out: tally.bytes_out,
            latency_ms: Percentiles { p50: percentile(0.5), p95: percentile(0.95), p99: percentile(0.99) },
            ai: AiTraffic {
                calls: tally.ai.calls,
                input_tokens: tally.ai.input_tokens,
                output_tokens: tally.ai.output_tokens,
                cached_read_tokens: tally.ai.cached_read_tokens,
                cache_write_tokens: tally.ai.cache_write_tokens,
                reasoning_tokens: tally.ai.reasoning_tokens,
                cost_usd: tally.ai.cost_nanos as f64 / 1e9,
                unpriced_calls: tally.ai.unpriced,
                estimated_calls: tally.ai.estimated,
            },
        }
    }
}

/// One bucket of a series.
#[derive(Serialize, ToSchema)]
pub(crate) struct Point {
    /// The bucket's start, in milliseconds since the epoch.
    time: i64,
    #[serde(flatten)]
    traffic: Traffic,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Series {
    /// `minute`, `hour` or `day`.
    interval: &'static str,
    /// The range, in milliseconds since the epoch: the first bucket's start, and the end.
    from: i64,
    to: i64,
    dimension: &'static str,
    key: String,
    /// One point per bucket, buckets without traffic included.
    points: Vec<Point>,
    /// The whole range.
    total: Traffic,
}

/// One key of a top list.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ranked {
    key: String,
    #[serde(flatten)]
    traffic: Traffic,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Top {
    interval: &'static str,
    from: i64,
    to: i64,
    dimension: &'static str,
    /// The route whose consumers are ranked, when the list was narrowed to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    /// The consumer whose routes are ranked, when the list was narrowed to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    /// What the keys are ranked by: `requests`, `errors`, `client_errors`, `bytes`,
    /// `latency` (p95), `tokens` or `cost`.
    by: &'static str,
    items: Vec<Ranked>,
}

/// The query parameters both endpoints share, and those of each.
struct Query {
    /// Seconds since the epoch; `to` is exclusive.
    from: i64,
    to: i64,
    interval: Interval,
    dimension: Option<Dimension>,
    key: Option<String>,
    /// A route and a consumer, to narrow a series or a top list to their pair.
    route: Option<String>,
    consumer: Option<String>,
    by: (&'static str, TopBy),
    limit: usize,
}

/// The longest `range`: ten years.
const MAX_SPAN_SECS: i64 = 3_650 * 86_400;
/// Times are taken up to the end of year 9999.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// `15m`, `6h`, `7d`: a span in seconds, up to [`MAX_SPAN_SECS`].
fn span(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    // The unit is one ASCII byte, so this cut is on a character boundary.
    let n: i64 = text[..text.len() - 1].parse().ok()?;
    (1..=MAX_SPAN_SECS / unit).contains(&n).then_some(n * unit)
}

/// The interval that gives a chart a useful number of points over `seconds`.
fn interval_for(seconds: i64) -> Interval {
    match seconds {
        s if s <= 6 * 3_600 => Interval::Minute,
        s if s <= 8 * 86_400 => Interval::Hour,
        _ => Interval::Day,
    }
}

fn parse(query: Option<&str>, now_ms: i64) -> Result<Query, ApiError> {
    let (mut range, mut from, mut to, mut interval) = (None, None, None, None);
    let mut q = Query {
        from: 0,
        to: 0,
        interval: Interval::Hour,
        dimension: None,
        key: None,
        route: None,
        consumer: None,
        by: ("requests", TopBy::Requests),
        limit: 10,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let millis = || {
            value.parse::<i64>().ok().filter(|ms| (0..=MAX_TIME_MS).contains(ms)).ok_or_else(|| {
                ApiError::bad_request(format!("`{name}` must be a time in milliseconds since the epoch, not `{value}`"))
            })
        };
        match name {
            "range" => {
                range = Some(span(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`range` must be minutes, hours or days such as 15m, 6h or 7d (up to 3650d), not `{value}`"
                    ))
                })?)
            }
            "from" => from = Some(millis()?),
            "to" => to = Some(millis()?),
            "interval" => {
                interval = Some(Interval::parse(value).ok_or_else(|| {
                    ApiError::bad_request(format!("`interval` must be minute, hour or day, not `{value}`"))
                })?)
            }
            "dimension" => {
                q.dimension = Some(Dimension::parse(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`dimension` must be all, route, service, consumer, status, error, team, provider or model, not `{value}`"
                    ))
                })?)
            }
            "key" => q.key = Some(value.to_owned()),
            "route" => q.route = Some(value.to_owned()),
            "consumer" => q.consumer = Some(value.to_owned()),
            "by" => {
                let by = TopBy::EVERY.iter().find(|(text, _)| *text == value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`by` must be requests, errors, client_errors, bytes, latency, tokens or cost, not `{value}`"
                    ))
                })?;
                q.by = *by;
            }
            "limit" => {
                q.limit = value.parse().ok().filter(|n| (1..=MAX_TOP).contains(n)).ok_or_else(|| {
                    ApiError::bad_request(format!("`limit` must be from 1 to {MAX_TOP}, not `{value}`"))
                })?
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let to_ms = to.unwrap_or(now_ms);
    let from_ms = match (from, range) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give `range` or `from`, not both")),
        (Some(from), None) => from,
        (None, range) => to_ms - range.unwrap_or(86_400) * 1_000,
    };
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    q.from = from_ms.div_euclid(1_000);
    q.to = (to_ms + 999).div_euclid(1_000);
    // By the span asked for: rounding to whole seconds must not tip 6h into hours.
    q.interval = interval.unwrap_or_else(|| interval_for((to_ms - from_ms) / 1_000));
    Ok(q)
}

/// Traffic per minute, hour or day over a range: of everything, or of one route, service,
/// consumer, status code or error kind.
#[utoipa::path(get, path = "/api/v1/analytics/series", tag = "analytics",
    params(("range" = Option<String>, Query, description = "How far back from `to`: 15m, 6h, 7d... (default 24h)"),
           ("from" = Option<i64>, Query, description = "The range's start in ms since the epoch, instead of `range`"),
           ("to" = Option<i64>, Query, description = "The range's end in ms since the epoch (default now)"),
           ("interval" = Option<String>, Query, description = "minute, hour or day (default: minute up to 6 hours, hour up to 8 days, else day)"),
           ("dimension" = Option<String>, Query, description = "all (default), route, service, consumer, status, error, team, provider (AI) or model (AI)"),
           ("key" = Option<String>, Query, description = "The route, service or consumer name, status code or error kind; required unless the dimension is all"),
           ("route" = Option<String>, Query, description = "With `consumer`, instead of `dimension` and `key`: that consumer's traffic on that route"),
           ("consumer" = Option<String>, Query, description = "With `route`: that consumer's traffic on that route")),
    responses((status = 200, body = Series), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn series(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Series>, ApiError> {
    let q = parse(query.as_deref(), portico_store::now_ms())?;
    let (dimension, key) = match (q.route, q.consumer) {
        (Some(route), Some(consumer)) if q.dimension.is_none() && q.key.is_none() => {
            (Dimension::RouteConsumer, portico_model::pair(&route, &consumer))
        }
        (None, None) => {
            let dimension = q.dimension.unwrap_or(Dimension::All);
            match (dimension, q.key) {
                (Dimension::All, None) => (dimension, String::new()),
                (Dimension::All, Some(_)) => {
                    return Err(ApiError::bad_request("`key` needs a `dimension` other than all"))
                }
                (_, Some(key)) if !key.is_empty() => (dimension, key),
                (dimension, _) => {
                    return Err(ApiError::bad_request(format!("give the `key` of the {dimension} to chart")))
                }
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "chart one consumer's traffic on one route with `route` and `consumer` together, without `dimension` or `key`",
            ))
        }
    };
    let first = q.interval.floor(q.from);
    let points = (q.to - first + q.interval.seconds() - 1) / q.interval.seconds();
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "{points} {}s is more than {MAX_POINTS} points; ask for a coarser interval or a shorter range",
            q.interval.as_str()
        )));
    }
    let rows = state.store.traffic_series(q.interval, dimension, &key, q.from, q.to).await?;
    let mut total = Tally::default();
    let mut rows = rows.into_iter().peekable();
    let mut out = Vec::with_capacity(usize::try_from(points).unwrap_or(0));
    let mut bucket = first;
    while bucket < q.to {
        let tally = match rows.next_if(|(b, _)| *b == bucket) {
            Some((_, tally)) => tally,
            None => Tally::default(),
        };
        total.merge(&tally);
        out.push(Point { time: bucket * 1_000, traffic: Traffic::from(&tally) });
        bucket += q.interval.seconds();
    }
    Ok(Json(Series {
        interval: q.interval.as_str(),
        from: first * 1_000,
        to: q.to * 1_000,
        dimension: dimension.as_str(),
        key,
        points: out,
        total: Traffic::from(&total),
    }))
}

/// The routes, services, consumers, status codes or error kinds with the most requests,
/// errors, bytes or latency over a range.
#[utoipa::path(get, path = "/api/v1/analytics/top", tag = "analytics",
    params(("dimension" = String, Query, description = "route, service, consumer, status, error, team, provider (AI) or model (AI)"),
           ("by" = Option<String>, Query, description = "requests (default), errors (5xx), client_errors (4xx), bytes, latency (p95), tokens (AI) or cost (AI)"),
           ("limit" = Option<usize>, Query, description = "How many, 1 to 100 (default 10)"),
           ("route" = Option<String>, Query, description = "With dimension=consumer: only the consumers of this route"),
           ("consumer" = Option<String>, Query, description = "With dimension=route: only the routes this consumer called"),
           ("range" = Option<String>, Query, description = "How far back from `to`: 15m, 6h, 7d... (default 24h)"),
           ("from" = Option<i64>, Query, description = "The range's start in ms since the epoch, instead of `range`"),
           ("to" = Option<i64>, Query, description = "The range's end in ms since the epoch (default now)"),
           ("interval" = Option<String>, Query, description = "The rollups to read: minute, hour or day (default as for series)")),
    responses((status = 200, body = Top), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn top(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Result<Json<Top>, ApiError> {
    let q = parse(query.as_deref(), portico_store::now_ms())?;
    let dimension = match q.dimension {
        Some(Dimension::All) | None => {
            return Err(ApiError::bad_request(
                "give the `dimension` to rank: route, service, consumer, status, error, team, provider or model",
            ))
        }
        Some(dimension) => dimension,
    };
    if q.key.is_some() {
        return Err(ApiError::bad_request("`key` is for series; top lists every key"));
    }
    // A route's consumers, or a consumer's routes, are the keys of a pair dimension.
    let (stored, first) =
        match (dimension, &q.route, &q.consumer) {
            (_, None, None) => (dimension, ""),
            (Dimension::Consumer, Some(route), None) => (Dimension::RouteConsumer, route.as_str()),
            (Dimension::Route, None, Some(consumer)) => (Dimension::ConsumerRoute, consumer.as_str()),
            _ => return Err(ApiError::bad_request(
                "`route` narrows the top consumers (dimension=consumer), `consumer` the top routes (dimension=route)",
            )),
        };
    let items = state.store.traffic_top(q.interval, stored, first, q.from, q.to, q.by.1, q.limit).await?;
    Ok(Json(Top {
        interval: q.interval.as_str(),
        from: q.interval.floor(q.from) * 1_000,
        to: q.to * 1_000,
        dimension: dimension.as_str(),
        route: q.route,
        consumer: q.consumer,
        by: q.by.0,
        items: items.iter().map(|(key, tally)| Ranked { key: key.clone(), traffic: Traffic::from(tally) }).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn ranges_pick_an_interval_that_charts_well() {
        let q = parse(Some("range=7d"), NOW).expect("valid");
        assert_eq!((q.to - q.from, q.interval), (7 * 86_400, Interval::Hour));
        assert_eq!(parse(Some("range=30m"), NOW).expect("valid").interval, Interval::Minute);
        // At the limits, with a `to` that is not a whole second.
        assert_eq!(parse(Some("range=6h"), NOW + 1).expect("valid").interval, Interval::Minute);
        assert_eq!(parse(Some("range=8d"), NOW + 1).expect("valid").interval, Interval::Hour);
        assert_eq!(parse(Some("range=361m"), NOW).expect("valid").interval, Interval::Hour);
        assert_eq!(parse(Some("range=90d"), NOW).expect("valid").interval, Interval::Day);
        assert_eq!(parse(None, NOW).expect("valid").interval, Interval::Hour, "24 hours by default");
        let q = parse(Some("from=1000&to=61000&interval=day"), NOW).expect("valid");
        assert_eq!((q.from, q.to, q.interval), (1, 61, Interval::Day));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, named) in [
            ("range=7w", "`range`"),
            ("range=0d", "`range`"),
            ("interval=week", "`interval`"),
            ("dimension=path", "`dimension`"),
            ("by=speed", "`by`"),
            ("limit=0", "`limit`"),
            ("from=yesterday", "`from`"),
            ("colour=red", "`colour`"),
            ("from=5000&to=1000", "`from`"),
            ("range=1h&from=1", "`range`"),
            ("range=7\u{e9}", "`range`"),
            ("range=99999999999999d", "`range`"),
            ("to=9223372036854775807", "`to`"),
            ("from=-5", "`from`"),
        ] {
            let Err(error) = parse(Some(query), NOW) else { panic!("{query} was accepted") };
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(format!("{error:?}").contains(named), "{query}: {error:?}");
        }
    }
}
