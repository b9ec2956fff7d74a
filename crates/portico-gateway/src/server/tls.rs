//! TLS termination: the certificates of a snapshot, chosen by SNI at every handshake, and
//! the client certificates it accepts.
//!
//! The rustls configuration is built once; its certificate resolver and its client
//! certificate verifier read the current snapshot at each handshake, so a certificate or a
//! client CA added or replaced through the admin API applies from the next handshake on,
//! without a restart or a new listener.

use crate::SnapshotCell;
use portico_model::{parse_chain, parse_key, Certificate, MasterKey};
use rustc_hash::FxHashMap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
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
    /// Verifies client certificates against `global.client_ca`, when set.
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

impl TlsCertificates {
    /// Compiles the certificates, opening sealed keys with `master_key`, and the client CA.
    pub fn compile(
        certificates: &[Certificate],
        client_ca: Option<&str>,
        master_key: Option<&MasterKey>,
    ) -> Result<TlsCertificates, String> {
        let mut compiled = TlsCertificates::default();
        if let Some(ca) = client_ca {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_chain(ca)? {
                roots.add(cert).map_err(|e| format!("global.client_ca: a certificate cannot be used: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("global.client_ca: {e}"))?;
            compiled.clients = Some(verifier);
        }
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

/// Asks for and verifies client certificates as the snapshot's `global.client_ca` says: not
/// at all without one; optionally with one (routes with `mtls_auth` refuse clients without).
#[derive(Debug)]
struct ClientsFromSnapshot {
    snapshots: SnapshotCell,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for ClientsFromSnapshot {
    fn offer_client_auth(&self) -> bool {
        self.snapshots.load().tls.clients.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; without them a client offers whatever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.snapshots.load().tls.clients {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("client certificates are not accepted".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor of the TLS listener: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
pub(crate) fn acceptor(snapshots: SnapshotCell) -> Result<TlsAcceptor, rustls::Error> {
    let provider = provider();
    let clients = ClientsFromSnapshot { snapshots: snapshots.clone(), provider: provider.clone() };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(clients))
        .with_cert_resolver(Arc::new(FromSnapshot(snapshots)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the gateway knows of a client certificate the TLS listener verified.
pub struct ClientCert {
    /// SHA-256 of the certificate's DER.
    pub fingerprint: [u8; 32],
    /// The subject's common name, when it has one.
    pub common_name: Option<Box<str>>,
}

impl ClientCert {
    pub fn new(der: &[u8]) -> ClientCert {
        use sha2::Digest;
        ClientCert {
            fingerprint: sha2::Sha256::digest(der).into(),
            common_name: subject_common_name(der).map(Into::into),
        }
    }
}

/// The subject's common name in a DER certificate: Certificate → TBSCertificate → (version,
/// serial, signature, issuer, validity) → subject → the RDN with id-at-commonName.
fn subject_common_name(der: &[u8]) -> Option<String> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (tbs, _) = der_element(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_any(rest)?.1; // [0] version
    }
    for _ in 0..4 {
        rest = der_any(rest)?.1; // serial, signature, issuer, validity
    }
    let (mut subject, _) = der_element(rest, 0x30)?;
    while !subject.is_empty() {
        let (set, after) = der_element(subject, 0x31)?;
        subject = after;
        let (attribute, _) = der_element(set, 0x30)?;
        let (oid, value) = der_element(attribute, 0x06)?;
        if oid == [0x55, 0x04, 0x03] {
            let (tag, content, _) = der_tagged(value)?;
            // UTF8String, PrintableString, IA5String, T61String.
            return matches!(tag, 0x0c | 0x13 | 0x16 | 0x14)
                .then(|| String::from_utf8(content.to_vec()).ok())
                .flatten();
        }
    }
    None
}

/// The content of the element at the start of `der` if it has `tag`, and what follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = der_tagged(der)?;
    (found == tag).then_some((content, rest))
}

fn der_any(der: &[u8]) -> Option<(&[u8], &[u8])> {
    der_tagged(der).map(|(_, content, rest)| (content, rest))
}

/// (tag, content, rest) of the element at the start of `der` (definite lengths only, as DER).
fn der_tagged(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let len = der.get(2..2 + count)?.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + count)
    };
    let content = der.get(header..header.checked_add(len)?)?;
    Some((tag, content, &der[header + len..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_names_are_read_from_the_subject_not_the_issuer() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|_| unreachable!());
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Portico");
        params.distinguished_name.push(rcgen::DnType::CommonName, "shop-client");
        let key = rcgen::KeyPair::generate().unwrap_or_else(|_| unreachable!());
        let cert = params.self_signed(&key).unwrap_or_else(|_| unreachable!());
        assert_eq!(super::subject_common_name(cert.der()).as_deref(), Some("shop-client"));
        assert_eq!(super::subject_common_name(b"\x30\x03garbage"), None);
        assert_eq!(super::subject_common_name(&[]), None);
    }
}
