//! POSTs from a background thread (the access log writer, the trace exporter) to a collector,
//! through a small runtime of the thread's own.

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::io;
use std::time::Duration;

/// A collector gets this many tries per batch.
const TRIES: u32 = 3;
/// Longest wait for a collector per try.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Poster {
    url: http::Uri,
    content_type: &'static str,
    runtime: tokio::runtime::Runtime,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Poster {
    pub fn new(url: http::Uri, content_type: &'static str) -> io::Result<Poster> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Poster { url, content_type, runtime, client })
    }

    /// POSTs `body`, trying again after a connection failure, a 429 or a 5xx.
    pub fn post(&self, body: Vec<u8>) -> io::Result<()> {
        let body = Bytes::from(body);
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            let request = http::Request::post(self.url.clone())
                .header(http::header::CONTENT_TYPE, self.content_type)
                .body(Full::new(body.clone()))
                .map_err(io::Error::other)?;
            let sent =
                self.runtime.block_on(async { tokio::time::timeout(TIMEOUT, self.client.request(request)).await });
            match sent {
                Ok(Ok(response)) if response.status().is_success() => return Ok(()),
                Ok(Ok(response)) => {
                    let status = response.status();
                    last = format!("the collector answered {status}");
                    if status != http::StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        break;
                    }
                }
                Ok(Err(error)) => last = error.to_string(),
                Err(_) => last = "the collector did not answer in time".into(),
            }
        }
        Err(io::Error::other(last))
    }
}
