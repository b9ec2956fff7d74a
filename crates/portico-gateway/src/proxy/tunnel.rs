//! Tunnels: connections that switched protocols (WebSocket, or any other `Upgrade`).
//!
//! When the upstream answers `101 Switching Protocols`, the client gets that answer like any
//! other. Once it has been written, the client's connection is handed over (each side with
//! any bytes read after its `101`), and Portico copies
//! bytes both ways until either side closes, or until nothing has moved either way for the
//! service's read timeout (as a proxy's read timeout closes an idle WebSocket; clients that
//! stay quiet longer send pings). The request stays in flight while its tunnel is open, and
//! its access log line and metrics, with the bytes that went each way, are written when the
//! tunnel closes.

use super::body::Progress;
use crate::server::ClientUpgrade;
use crate::upstream::Upgraded;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Both sides of a switch of protocols: the client's waits for the `101` to be written.
pub(crate) struct Tunnel {
    pub client: ClientUpgrade,
    pub upstream: Upgraded,
    /// The tunnel closes when nothing has moved either way for this long.
    pub idle: Duration,
}

impl Tunnel {
    /// Copies bytes both ways until the tunnel closes; returns the bytes sent to the client,
    /// and counts those from the client in `from_client` (the request's body count).
    pub async fn run(self, from_client: Option<Arc<Progress>>) -> u64 {
        let Some(client) = self.client.connection().await else {
            tracing::debug!("a switch of protocols did not complete");
            return 0;
        };
        let activity = Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
        };
        let mut client = Watched { io: client, activity: &activity, writes_to_client: true };
        let mut upstream = Watched { io: self.upstream, activity: &activity, writes_to_client: false };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            let deadline = activity.last() + self.idle;
            tokio::select! {
                copied = &mut copy => {
                    if let Err(error) = copied {
                        tracing::debug!(%error, "a tunnel ended with an error");
                    }
                    break;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // Bytes may have moved since the deadline was set: only a quiet tunnel closes.
                    if activity.last() + self.idle <= Instant::now() {
                        break;
                    }
                }
            }
        }
        if let Some(progress) = from_client {
            progress.add_received(activity.from_client.load(Ordering::Relaxed));
        }
        activity.to_client.load(Ordering::Relaxed)
    }
}

/// When bytes last moved through a tunnel, and how many went to the client.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read on either side.
    last_ms: AtomicU64,
    to_client: AtomicU64,
    from_client: AtomicU64,
}

impl Activity {
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn moved(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// One side of a tunnel, noting each read in the tunnel's activity.
struct Watched<'a, T> {
    io: T,
    activity: &'a Activity,
    /// This is the client's side (bytes written to it went to the client), not the
    /// upstream's (bytes written to it came from the client).
    writes_to_client: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.moved();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        let count = if self.writes_to_client { &self.activity.to_client } else { &self.activity.from_client };
        count.fetch_add(written as u64, Ordering::Relaxed);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
