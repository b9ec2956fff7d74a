//! W3C Trace Context (`traceparent`): taken from the client when it sends a valid one, made
//! when it does not, and passed upstream with Portico's own span as the parent.

use http::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The client's span (the caller of Portico), when it sent one.
    pub parent_id: Option<u64>,
    /// Portico's span for this request.
    pub span_id: u64,
    /// The span of the call to the upstream, a child of `span_id`: the upstream's parent.
    pub upstream_span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// The client's trace, continued with a new span; or a new trace, sampled with
    /// probability `ratio`. A malformed `traceparent` is ignored, as the specification says.
    pub fn from_request(traceparent: Option<&HeaderValue>, ratio: f64) -> TraceContext {
        let (span_id, upstream_span_id) = (nonzero_u64(), nonzero_u64());
        match traceparent.and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                parent_id: Some(parent_id),
                span_id,
                upstream_span_id,
                sampled: flags & 1 == 1,
            },
            None => TraceContext {
                trace_id: loop {
                    let id = fastrand::u128(..);
                    if id != 0 {
                        break id;
                    }
                },
                parent_id: None,
                span_id,
                upstream_span_id,
                sampled: ratio > 0.0 && fastrand::f64() < ratio,
            },
        }
    }

    /// `traceparent` for the upstream: same trace, Portico's upstream-call span as the parent.
    pub fn header(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex(&self.trace_id.to_be_bytes(), &mut text[3..35]);
        text[35] = b'-';
        hex(&self.upstream_span_id.to_be_bytes(), &mut text[36..52]);
        text[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// Writes `bytes` as lower-case hex into `out` (twice as long). Ids are written this way
/// for every request, so each byte is one lookup of its two digits.
pub(crate) fn hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

/// The two lower-case hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    pairs
};

/// `version-traceid-parentid-flags`, lower-case hex; all-zero ids and version `ff` are
/// invalid. Later versions may append fields after the flags.
fn parse(value: &[u8]) -> Option<(u128, u64, u8)> {
    if value.len() < 55 || (value.len() > 55 && (value[0..2] == *b"00" || value[55] != b'-')) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' || value[0..2] == *b"ff" {
        return None;
    }
    let field = |range: std::ops::Range<usize>| {
        let text = std::str::from_utf8(&value[range]).ok()?;
        text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)).then_some(text)
    };
    field(0..2)?;
    let trace_id = u128::from_str_radix(field(3..35)?, 16).ok().filter(|id| *id != 0)?;
    let parent_id = u64::from_str_radix(field(36..52)?, 16).ok().filter(|id| *id != 0)?;
    let flags = u8::from_str_radix(field(53..55)?, 16).ok()?;
    Some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(value).expect("value"))
    }

    #[test]
    fn a_client_trace_is_continued_with_a_new_span() {
        let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace = TraceContext::from_request(with(sent).as_ref(), 0.0);
        assert_eq!(trace.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(trace.parent_id, Some(0xb7ad6b7169203331));
        assert!(trace.sampled, "the client's sampling decision is kept");
        let upstream = trace.header();
        let upstream = upstream.to_str().expect("text");
        assert!(upstream.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && upstream.ends_with("-01"));
        assert_ne!(&upstream[36..52], "b7ad6b7169203331", "Portico's span is the upstream's parent");
    }

    #[test]
    fn malformed_parents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "garbage",
        ] {
            let trace = TraceContext::from_request(with(bad).as_ref(), 1.0);
            assert_eq!(trace.parent_id, None, "{bad}");
            assert!(trace.sampled, "ratio 1 samples every new trace");
        }
        // A later version may carry more fields.
        let later =
            TraceContext::from_request(with("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x").as_ref(), 1.0);
        assert_eq!(later.parent_id, Some(0xb7ad6b7169203331));
        assert!(!later.sampled);
        assert!(!TraceContext::from_request(None, 0.0).sampled);
    }
}
