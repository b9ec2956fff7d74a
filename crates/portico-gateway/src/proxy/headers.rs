//! Header handling between client and upstream: hop-by-hop headers (RFC 9110 §7.6.1), the
//! `X-Forwarded-*` family, and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::net::IpAddr;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop headers, besides `Connection` and `TE` which need a look at values.
static FIXED: [&HeaderName; 5] =
    [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TRANSFER_ENCODING, &header::UPGRADE, &header::TRAILER];

/// Header maps a thread keeps for its next heads. Every proxied request reads two heads into
/// maps (the client's request and the upstream's response), and a new map costs two
/// allocations and their frees; a map is handed back ([`recycle_map`]) once its head is
/// written, emptied and with its room kept. Each worker is one thread, so no lock is needed.
const SPARE_MAPS: usize = 64;
/// A map that grew past this many headers is let go: an odd large head should not keep
/// its room.
const KEPT_MAP_CAPACITY: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `capacity` headers, reused when the thread has one.
pub fn empty_map(capacity: usize) -> HeaderMap {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Empties `map` and keeps it for [`empty_map`].
pub fn recycle_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > KEPT_MAP_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// A header name read off the wire. The names most peers send, in the case they send them,
/// are matched byte for byte first: `HeaderName::from_bytes` lowercases and classifies every
/// name (about 120 instructions), and a request and its response carry half a dozen. A name
/// outside the standard ones is also copied to the heap by it; the common ones of those
/// (API keys, trace context, the Anthropic SDK's version) are statics here.
pub fn name_from_wire(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header::*;
    let known = match raw {
        b"X-Api-Key" | b"x-api-key" | b"X-API-Key" => X_API_KEY.clone(),
        b"X-Request-Id" | b"x-request-id" | b"X-Request-ID" => X_REQUEST_ID.clone(),
        b"X-Forwarded-For" | b"x-forwarded-for" => X_FORWARDED_FOR.clone(),
        b"traceparent" | b"Traceparent" => crate::observe::TRACEPARENT.clone(),
        b"anthropic-version" | b"Anthropic-Version" => ANTHROPIC_VERSION.clone(),
        b"Origin" | b"origin" => ORIGIN,
        b"Cookie" | b"cookie" => COOKIE,
        b"Vary" | b"vary" => VARY,
        b"ETag" | b"etag" => ETAG,
        b"Last-Modified" | b"last-modified" => LAST_MODIFIED,
        b"Content-Encoding" | b"content-encoding" => CONTENT_ENCODING,
        b"Host" | b"host" => HOST,
        b"Content-Type" | b"content-type" => CONTENT_TYPE,
        b"Content-Length" | b"content-length" => CONTENT_LENGTH,
        b"Date" | b"date" => DATE,
        b"Server" | b"server" => SERVER,
        b"Connection" | b"connection" => CONNECTION,
        b"Accept" | b"accept" => ACCEPT,
        b"Accept-Encoding" | b"accept-encoding" => ACCEPT_ENCODING,
        b"User-Agent" | b"user-agent" => USER_AGENT,
        b"Authorization" | b"authorization" => AUTHORIZATION,
        b"Cache-Control" | b"cache-control" => CACHE_CONTROL,
        b"Transfer-Encoding" | b"transfer-encoding" => TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(raw),
    };
    Ok(known)
}

/// The request headers the pipeline reads, as the client sent them (the first value of
/// each), found in one pass over the headers as they arrived. A lookup of a header that is
/// not there still hashes its name and probes the map, and most requests carry only a few
/// headers, none of them `X-Request-Id`, `traceparent`, `X-Forwarded-For` or a hop-by-hop
/// one; so the phases read these here instead. The phases before the upstream add none.
#[derive(Default)]
pub struct Sent {
    pub host: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
    pub forwarded_for: Option<HeaderValue>,
    /// `Connection`, `TE` or one of the fixed hop-by-hop headers is there.
    pub hop_by_hop: bool,
}

impl Sent {
    pub fn scan(headers: &HeaderMap) -> Sent {
        let mut sent = Sent::default();
        for (name, value) in headers {
            let kept = if name == header::HOST {
                &mut sent.host
            } else if name == X_REQUEST_ID {
                &mut sent.request_id
            } else if name == crate::observe::TRACEPARENT {
                &mut sent.traceparent
            } else if name == X_FORWARDED_FOR {
                &mut sent.forwarded_for
            } else {
                sent.hop_by_hop |= is_hop_by_hop(name);
                continue;
            };
            // A name's values come in order: the first is the one kept.
            if kept.is_none() {
                *kept = Some(value.clone());
            }
        }
        sent
    }
}

/// Whether a header of this name is hop-by-hop whatever its value (`Connection` and `TE`
/// included, which [`remove_hop_by_hop`] reads before removing).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::TE || FIXED.contains(&name)
}

/// Removes the headers that describe one connection rather than the message: the fixed
/// list and any header the `Connection` header names. Returns the protocol the message
/// asks to switch to, if any: its `Upgrade` header when `Connection` names `upgrade` (RFC
/// 9110 §7.8; a WebSocket handshake asks for `websocket`), which the caller may put back
/// with [`keep_upgrade`].
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names finds what is there, so that only present headers are looked
    // up again: most messages carry none, or only `Connection: keep-alive`.
    let (mut connection, mut te, mut fixed) = (false, false, [false; FIXED.len()]);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if let Some(i) = FIXED.iter().position(|f| *f == name) {
            fixed[i] = true;
        }
    }
    let mut protocol = None;
    // Most messages say only `Connection: keep-alive` (or `close`), which names no header.
    // (Portico's own head parsers drop such a header; this is for messages made otherwise.)
    let names_nothing = |v: &HeaderValue| ConnectionTokens::read(v.as_bytes()).only_persistence;
    if connection && headers.get_all(header::CONNECTION).iter().all(names_nothing) {
        headers.remove(header::CONNECTION);
    } else if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close"))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        if named.contains(&header::UPGRADE) {
            protocol = headers.get(header::UPGRADE).cloned();
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for (name, present) in FIXED.iter().zip(fixed) {
        if present {
            headers.remove(*name);
        }
    }
    // `TE: trailers` may be forwarded; any other TE value is hop-by-hop.
    if te && headers.get(header::TE).is_some_and(|value| value != "trailers") {
        headers.remove(header::TE);
    }
    protocol
}

/// What a `Connection` header value says (RFC 9112 §9.3, §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// It says nothing but `close` or `keep-alive`: it names no other header and asks for no
    /// switch, so once read it can be dropped.
    pub only_persistence: bool,
}

impl ConnectionTokens {
    /// Reads the comma-separated tokens of `value`, in any case.
    pub fn read(value: &[u8]) -> ConnectionTokens {
        let mut says = ConnectionTokens { close: false, keep_alive: false, upgrade: false, only_persistence: true };
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let (close, keep_alive) = (token.eq_ignore_ascii_case(b"close"), token.eq_ignore_ascii_case(b"keep-alive"));
            says.close |= close;
            says.keep_alive |= keep_alive;
            says.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            says.only_persistence &= close || keep_alive || token.is_empty();
        }
        says
    }
}

/// Puts back the two headers a switch of protocols needs on the next hop, after the
/// hop-by-hop headers have gone.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The client's address as a header value; made once per connection.
pub fn client_address(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds the client to `X-Forwarded-For`. (`X-Forwarded-Proto` and `X-Forwarded-Host`, like
/// `Host` and `X-Request-Id`, are written with the request head: see `exchange`.)
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue, sent: &Sent) {
    let forwarded_for = match sent.forwarded_for.as_ref().and_then(|v| v.to_str().ok()) {
        Some(previous) => HeaderValue::from_str(&format!("{previous}, {}", client.to_str().unwrap_or(""))).ok(),
        None => Some(client.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// The `X-Forwarded-Proto` value for a client connection.
pub fn forwarded_proto(tls: bool) -> &'static HeaderValue {
    if tls {
        &HTTPS
    } else {
        &HTTP
    }
}

/// The request id: the client's `X-Request-Id` if it is reasonable, otherwise a new one.
pub fn request_id(sent: &Sent) -> HeaderValue {
    match &sent.request_id {
        Some(id) if (1..=128).contains(&id.len()) && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) => id.clone(),
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 hex digits. Ids only need to be unique, not secret, so a fast
/// non-cryptographic generator is enough.
pub fn new_request_id() -> HeaderValue {
    let mut text = [0u8; 32];
    crate::observe::trace::hex(&fastrand::u128(..).to_be_bytes(), &mut text);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4: pairs
/// separated by `; `).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().flat_map(|value| value.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii_start();
        let rest = pair.strip_prefix(name.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// The bytes the request head takes on the wire, near enough to enforce a limit.
pub fn head_size(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn a_plain_keep_alive_goes_and_leaves_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn an_upgrade_is_asked_for_by_connection_and_upgrade_together() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(remove_hop_by_hop(&mut headers.clone()), None, "Upgrade alone is only an offer");
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(remove_hop_by_hop(&mut headers), Some(HeaderValue::from_static("websocket")));
        assert!(headers.is_empty());
        keep_upgrade(&mut headers, HeaderValue::from_static("websocket"));
        assert_eq!(
            (headers["connection"].as_bytes(), headers["upgrade"].as_bytes()),
            (&b"upgrade"[..], &b"websocket"[..])
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        let client = client_address("127.0.0.1".parse().expect("ip"));
        let sent = Sent::scan(&headers);
        append_forwarded_for(&mut headers, &client, &sent);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let sent = Sent::scan(&headers);
        append_forwarded_for(&mut headers, &client, &sent);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; session=abc; sessionx=no"));
        headers.append(header::COOKIE, HeaderValue::from_static("late=2"));
        assert_eq!(cookie(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "late"), Some(&b"2"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut headers = HeaderMap::new();
        let id = |headers: &HeaderMap| request_id(&Sent::scan(headers));
        let made = id(&headers);
        assert_eq!(made.len(), 32);
        assert_ne!(made, id(&headers));
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(id(&headers), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(id(&headers).len(), 32);
    }

    #[test]
    fn a_recycled_map_comes_back_empty_and_a_grown_one_is_let_go() {
        let mut used = empty_map(8);
        used.insert(header::HOST, HeaderValue::from_static("a"));
        used.append("x-a", HeaderValue::from_static("1"));
        used.append("x-a", HeaderValue::from_static("2"));
        let room = used.capacity();
        recycle_map(used);
        let reused = empty_map(4);
        assert!(reused.is_empty() && reused.get("x-a").is_none());
        assert_eq!(reused.capacity(), room, "the room is kept");
        // Asking for more room than a spare map has still gets it.
        recycle_map(reused);
        assert!(empty_map(40).capacity() >= 40);

        let mut large = HeaderMap::with_capacity(KEPT_MAP_CAPACITY + 1);
        large.insert(header::HOST, HeaderValue::from_static("a"));
        recycle_map(large);
        assert!(empty_map(1).capacity() <= KEPT_MAP_CAPACITY);
    }

    #[test]
    fn names_off_the_wire_are_the_same_whichever_way_they_are_read() {
        let names = [
            "Host",
            "Content-Type",
            "Content-Length",
            "Date",
            "Server",
            "Connection",
            "Accept",
            "Accept-Encoding",
            "User-Agent",
            "Authorization",
            "Cache-Control",
            "Transfer-Encoding",
            "X-Request-Id",
            "ETag",
            "X-Api-Key",
            "X-API-Key",
            "X-Forwarded-For",
            "traceparent",
            "Anthropic-Version",
            "Origin",
            "Cookie",
            "Vary",
            "Last-Modified",
            "Content-Encoding",
            "X-Unknown-To-Portico",
        ];
        for name in names {
            for raw in [name.to_owned(), name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
                let read = name_from_wire(raw.as_bytes()).expect("a valid name");
                assert_eq!(read, HeaderName::from_bytes(raw.as_bytes()).expect("a valid name"), "{raw}");
                assert_eq!(read.as_str(), name.to_ascii_lowercase());
            }
        }
        for bad in [&b"Content Type"[..], b"", b"Host:", b"\xffHost"] {
            assert!(name_from_wire(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_pass_finds_the_headers_the_pipeline_reads() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("*/*"));
        let sent = Sent::scan(&headers);
        let found = |sent: &Sent| {
            [sent.request_id.is_some(), sent.traceparent.is_some(), sent.forwarded_for.is_some(), sent.hop_by_hop]
        };
        assert!(sent.host.is_none() && found(&sent) == [false; 4]);
        headers.append(header::HOST, HeaderValue::from_static("api.test"));
        headers.append(header::HOST, HeaderValue::from_static("other.test"));
        headers.insert("X-Request-Id", HeaderValue::from_static("a"));
        headers.insert("traceparent", HeaderValue::from_static("b"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let sent = Sent::scan(&headers);
        assert_eq!(sent.host.as_ref().map(HeaderValue::as_bytes), Some(&b"api.test"[..]), "the first Host");
        assert_eq!(found(&sent), [true, true, true, false]);
        for name in ["connection", "te", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer"] {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            assert!(Sent::scan(&headers).hop_by_hop, "{name}");
        }
    }
}
