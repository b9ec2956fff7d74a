//! TLS certificates: which certificate the TLS listener presents for which server name.

use crate::{validate_name, HoldsSecrets, HostPattern, Problems, Secret};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A certificate chain and its private key, presented to clients whose SNI matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Server names this certificate is for: `api.example.com` or `*.example.com`.
    pub snis: Vec<String>,
    /// The certificate chain in PEM, leaf first.
    pub cert: String,
    /// The private key in PEM. Stored sealed with the master key; never shown after it is
    /// written (send the certificate back without `key` to keep the stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

impl Certificate {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        if self.snis.is_empty() {
            problems.push("snis", "list the server names this certificate is for");
        }
        for (i, sni) in self.snis.iter().enumerate() {
            match HostPattern::parse(sni) {
                Ok(HostPattern::Any) | Err(_) => problems.push(
                    format!("snis[{i}]"),
                    format!("`{sni}` is not a host name such as api.example.com or *.example.com"),
                ),
                Ok(_) => {}
            }
        }
        check_chain("cert", &self.cert, &mut problems);
        match &self.key {
            None => problems.push("key", "give the private key in PEM"),
            Some(key) if !key.is_sealed() => {
                if let Err(message) = parse_key(&key.reveal(None).unwrap_or_default()) {
                    problems.push("key", message);
                }
            }
            Some(_) => {}
        }
        problems.into_result()
    }
}

impl HoldsSecrets for Certificate {
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<Secret>)> {
        vec![("key".into(), &mut self.key)]
    }
}

/// Reports under `field` a PEM text that holds no certificate or is not PEM.
pub(crate) fn check_chain(field: &str, pem: &str, problems: &mut Problems) {
    match parse_chain(pem) {
        Ok(chain) if chain.is_empty() => problems.push(field, "no certificate found: give the certificates in PEM"),
        Ok(_) => {}
        Err(message) => problems.push(field, message),
    }
}

/// The certificates in a PEM text.
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain is not valid PEM: {e}"))
}

/// The private key in a PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("no private key found in the PEM text: {e}"))
}
