//! TLS termination: the certificates of a snapshot, chosen by SNI at every handshake.
//!
//! The rustls configuration is built once; its certificate resolver reads the current
//! snapshot at each handshake, so a certificate added or replaced through the admin API is
//! presented from the next handshake on, without a restart or a new listener.

use crate::SnapshotCell;
use portico_model::{parse_chain, parse_key, Certificate, MasterKey};
use rustc_hash::FxHashMap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The certificates of one snapshot, by server name.
#[derive(Default)]
pub(crate) struct TlsCertificates {
    exact: FxHashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.example.com` under `.example.com`.
    wildcard: FxHashMap<Box<str>, Arc<CertifiedKey>>,
    /// For clients that send no SNI: the first certificate by name.
    fallback: Option<Arc<CertifiedKey>>,
}

impl TlsCertificates {
    /// Compiles the certificates, opening sealed keys with `master_key`.
    pub fn compile(certificates: &[Certificate], master_key: Option<&MasterKey>) -> Result<TlsCertificates, String> {
        let mut compiled = TlsCertificates::default();
        let mut sorted: Vec<&Certificate> = certificates.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for certificate in sorted {
            let key = certified_key(certificate, master_key)
                .map_err(|message| format!("certificate `{}`: {message}", certificate.name))?;
            for sni in &certificate.snis {
                let sni = sni.to_ascii_lowercase();
                match sni.strip_prefix('*') {
                    Some(suffix) => compiled.wildcard.insert(suffix.into(), key.clone()),
                    None => compiled.exact.insert(sni.into(), key.clone()),
                };
            }
            compiled.fallback.get_or_insert(key);
        }
        Ok(compiled)
    }

    /// The certificate for `server_name`: an exact match, else the wildcard one level up.
    fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else { return self.fallback.clone() };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(name.as_str()) {
            return Some(key.clone());
        }
        let parent = name.find('.').map(|dot| &name[dot..])?;
        self.wildcard.get(parent).cloned()
    }
}

fn certified_key(certificate: &Certificate, master_key: Option<&MasterKey>) -> Result<Arc<CertifiedKey>, String> {
    let chain = parse_chain(&certificate.cert)?;
    let secret = certificate.key.as_ref().ok_or("no private key")?;
    let pem = secret.reveal(master_key).map_err(|e| e.to_string())?;
    let key = parse_key(&pem)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| "the private key does not belong to the certificate".to_owned())?;
    Ok(Arc::new(certified))
}

/// Picks the certificate from the snapshot being served.
#[derive(Debug)]
struct FromSnapshot(SnapshotCell);

impl std::fmt::Debug for SnapshotCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotCell(revision {})", self.revision())
    }
}

impl ResolvesServerCert for FromSnapshot {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().tls.find(hello.server_name())
    }
}

/// The acceptor of the TLS listener: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
pub(crate) fn acceptor(snapshots: SnapshotCell) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FromSnapshot(snapshots)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
