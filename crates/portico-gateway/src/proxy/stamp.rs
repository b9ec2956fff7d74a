//! The headers Portico sets on every response it sends: `X-Request-Id`, `Server-Timing`
//! and the rate-limit state.
//!
//! They travel beside the response, in its body, rather than in its header map: an
//! HTTP/1.1 head gets them written straight in as lines (inserting each into the map would
//! hash its name and could grow the map, on every request), and an HTTP/2 response gets
//! them in its map just before hyper sends it. Either way they replace headers of the same
//! names that the upstream sent.

use super::headers::X_REQUEST_ID;
use crate::access::LimitHeaders;
use crate::observe::{Text, SERVER_TIMING};
use crate::server::HeadLines;
use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) struct Stamp {
    pub request_id: HeaderValue,
    pub server_timing: Option<Text>,
    pub limit: Option<LimitHeaders>,
}

impl HeadLines for Stamp {
    fn replaces(&self, name: &HeaderName) -> bool {
        *name == X_REQUEST_ID
            || (self.server_timing.is_some() && *name == SERVER_TIMING)
            || (self.limit.is_some() && LimitHeaders::names(name))
    }

    fn write_lines(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(timing) = &self.server_timing {
            out.extend_from_slice(b"server-timing: ");
            out.extend_from_slice(timing.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(limit) = &self.limit {
            limit.write_lines(out);
        }
    }
}

impl Stamp {
    /// Sets the headers in `headers`, for a response that is not written by Portico's own
    /// HTTP/1.1 engine.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID.clone(), self.request_id);
        if let Some(value) = self.server_timing.and_then(|t| HeaderValue::from_bytes(t.as_bytes()).ok()) {
            headers.insert(SERVER_TIMING.clone(), value);
        }
        if let Some(limit) = self.limit {
            limit.insert_into(headers);
        }
    }
}
