//! A real DNS server for discovery tests: dnsmasq (Debian package `dnsmasq-base`), serving
//! only the records a test gives it, on a free loopback port, with a one-second TTL.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where dnsmasq is looked for.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq; stops when dropped.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    /// Whether dnsmasq is installed; tests that need it say they were skipped when not.
    pub fn available() -> bool {
        std::path::Path::new(DNSMASQ).exists()
    }

    /// Serves `records`: dnsmasq options such as `host-record=api.test,127.0.0.2` or
    /// `srv-host=_http._tcp.api.test,a.api.test,8080,0,10`.
    pub async fn start(records: &[String]) -> Dnsmasq {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port();
        Dnsmasq::start_on(SocketAddr::from(([127, 0, 0, 1], port)), records).await
    }

    /// Starts on the address of one that stopped: the same server with new records.
    pub async fn start_on(addr: SocketAddr, records: &[String]) -> Dnsmasq {
        let mut command = Command::new(DNSMASQ);
        command
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--local-ttl=1", "--user=root", "--pid-file="])
            .arg(format!("--port={}", addr.port()))
            .args(records.iter().map(|r| format!("--{r}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("start dnsmasq");
        // Wait until it answers over TCP (it listens on TCP and UDP alike).
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Dnsmasq { addr, child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
