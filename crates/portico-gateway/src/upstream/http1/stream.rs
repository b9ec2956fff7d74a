//! The byte stream under an upstream connection: plain TCP or TLS over TCP.

use crate::upstream::ClientTls;
use http::uri::{Authority, Scheme};
use portico_model::UpstreamTls;
use rustls::pki_types::ServerName;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub(crate) enum Stream {
    Plain(TcpStream),
    // Boxed: a TLS session is a few KiB, and plain connections should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a connection to `authority` (TLS for `https`, verified by `tls`), within `timeout`
/// for TCP and TLS together. A timeout is reported as [`io::ErrorKind::TimedOut`].
pub(crate) async fn connect(
    scheme: &Scheme,
    authority: &Authority,
    tls: &TlsConnector,
    timeout: Duration,
) -> io::Result<Stream> {
    let https = *scheme == Scheme::HTTPS;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    // An IPv6 address comes in brackets in an authority, and without them in a socket address.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let opening = async {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Stream::Tls(Box::new(tls.connect(name, tcp).await?)))
    };
    tokio::time::timeout(timeout, opening).await.unwrap_or_else(|_| {
        Err(io::Error::new(io::ErrorKind::TimedOut, "the upstream did not accept the connection in time"))
    })
}

/// TLS settings for upstream connections: `config`, or the defaults of a service without
/// TLS settings (the public roots, no client certificate), offering HTTP/1.1 only in ALPN.
pub(crate) fn tls_connector(config: Option<Arc<rustls::ClientConfig>>) -> TlsConnector {
    // The defaults cannot fail to build: no certificate or key is parsed for them.
    let config = config.unwrap_or_else(|| {
        ClientTls::new(&UpstreamTls::default(), None).expect("the default TLS settings are valid").config
    });
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
