//! Concurrent streaming chat requests for `bench/ai.sh`: time to the first byte, the gaps
//! between pieces, and the streams that stalled.
//!
//! Usage: `sse_load URL STREAMS STALL_MS [HEADER:VALUE ...]`. Every stream is a POST of an
//! OpenAI chat request with `stream: true` (model `stream`, or `$MODEL`) on its own
//! connection, all started at once. Prints one JSON object. With `TIMELINE=1` it also
//! writes to stderr, in ms since the start, when each request was sent (`sent`), when its
//! first piece came (`first`) and each gap over half the stall limit (`gap FROM TO`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

struct Stream {
    first_byte: Option<Duration>,
    gaps: Vec<Duration>,
    /// When (since the run began) each gap longer than the stall limit ended.
    stalls_at: Vec<Duration>,
    done: bool,
}

async fn one(
    url: &hyper::Uri,
    headers: &[(String, String)],
    body: Bytes,
    run: Instant,
    stall: Duration,
    timeline: bool,
) -> Result<Stream, String> {
    let authority = url.authority().ok_or("no host")?.clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request =
        hyper::Request::post(url.path()).header("host", authority.as_str()).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let since = |at: Instant| (at - run).as_secs_f64() * 1000.0;
    if timeline {
        eprintln!("sent {:.1}", since(started));
    }
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body: Incoming = response.into_body();
    let mut stream = Stream { first_byte: None, gaps: Vec::new(), stalls_at: Vec::new(), done: false };
    let mut last = started;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else { continue };
        let now = Instant::now();
        match stream.first_byte {
            None => {
                stream.first_byte = Some(now - started);
                if timeline {
                    eprintln!("first {:.1}", since(now));
                }
            }
            Some(_) => {
                stream.gaps.push(now - last);
                if timeline && now - last > stall / 2 {
                    eprintln!("gap {:.1} {:.1}", since(last), since(now));
                }
                if now - last > stall {
                    stream.stalls_at.push(now - run);
                }
            }
        }
        last = now;
        if data.windows(6).any(|w| w == b"[DONE]") {
            stream.done = true;
        }
    }
    Ok(stream)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url: hyper::Uri = args.get(1).expect("URL").parse().expect("a URL");
    let streams: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
    let stall = Duration::from_millis(args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100));
    let headers: Vec<(String, String)> = args[4.min(args.len())..]
        .iter()
        .filter_map(|h| h.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect();
    let model = std::env::var("MODEL").unwrap_or_else(|_| "stream".into());
    let prompt = "Tell me a long story about a gateway that never buffered a single event, please.";
    let body = Bytes::from(
        serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": prompt}]})
            .to_string(),
    );
    let timeline = std::env::var_os("TIMELINE").is_some();
    let run = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (url, headers, body) = (url.clone(), headers.clone(), body.clone());
            tokio::spawn(async move { one(&url, &headers, body, run, stall, timeline).await })
        })
        .collect();
    let (mut first, mut gaps, mut completed, mut stalled, mut errors) = (Vec::new(), Vec::new(), 0, 0, Vec::new());
    let mut stalls_at = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(stream)) => {
                completed += usize::from(stream.done);
                if stream.gaps.iter().any(|g| *g > stall) {
                    stalled += 1;
                }
                first.extend(stream.first_byte.map(|d| d.as_secs_f64() * 1000.0));
                stalls_at.extend(stream.stalls_at.iter().map(|d| d.as_secs_f64() * 1000.0));
                gaps.extend(stream.gaps.iter().map(|d| d.as_secs_f64() * 1000.0));
            }
            Ok(Err(error)) => errors.push(error),
            Err(error) => errors.push(error.to_string()),
        }
    }
    first.sort_by(f64::total_cmp);
    stalls_at.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    errors.sort();
    errors.dedup();
    let result = serde_json::json!({
        "streams": streams, "completed": completed, "stalled": stalled, "errors": errors,
        "first_byte_ms": {"p50": percentile(&first, 0.5), "p99": percentile(&first, 0.99)},
        "gap_ms": {"p50": percentile(&gaps, 0.5), "p99": percentile(&gaps, 0.99), "max": gaps.last().copied().unwrap_or(0.0)},
        "stalls_at_ms": {"first": stalls_at.first(), "last": stalls_at.last(), "count": stalls_at.len()},
    });
    println!("{result}");
}
