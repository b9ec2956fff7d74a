//! TLS to upstream targets: which roots verify them, and which client certificate Portico
//! presents (mTLS to upstreams).

use portico_model::{parse_chain, parse_key, MasterKey, UpstreamTls};
use rustls::{ClientConfig, RootCertStore};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A service's TLS settings, ready for its connection pools.
pub(crate) struct ClientTls {
    /// Identifies the settings: pools are shared by services with the same ones, and kept
    /// across reloads that leave them alone.
    pub id: u64,
    pub config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Builds the client configuration, opening a sealed client key with `master_key`.
    pub fn new(tls: &UpstreamTls, master_key: Option<&MasterKey>) -> Result<ClientTls, String> {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for cert in parse_chain(ca)? {
                    roots.add(cert).map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                let key = parse_key(&key.reveal(master_key).map_err(|e| e.to_string())?)?;
                builder
                    .with_client_auth_cert(parse_chain(cert)?, key)
                    .map_err(|e| format!("the client certificate cannot be used: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tls.hash(&mut hasher);
        Ok(ClientTls { id: hasher.finish(), config: Arc::new(config) })
    }
}
