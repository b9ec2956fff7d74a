//! Compiled AI providers: where requests go, with which headers, for each kind.

use super::keys::{KeyPool, PoolKey};
use crate::upstream::UpstreamStates;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use portico_ai::Dialect;
use portico_model::{AiProvider, MasterKey, ProviderKind, DEFAULT_AZURE_API_VERSION};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The Anthropic API version Portico speaks when the client did not say.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What Portico asks a provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Chat,
    Embeddings,
}

pub(crate) struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub dialect: Dialect,
    pub scheme: Scheme,
    pub authority: Authority,
    host: HeaderValue,
    /// The base URL's path, without a trailing `/`.
    base_path: Box<str>,
    api_version: Box<str>,
    pub keys: KeyPool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl Provider {
    /// Compiles `provider`, opening its keys with `master_key`; key state comes from `states`.
    pub fn compile(
        provider: &AiProvider,
        states: &UpstreamStates,
        master_key: Option<&MasterKey>,
    ) -> Result<Provider, String> {
        let base: Uri = provider.base_url().parse().map_err(|_| "base_url is not a URL".to_owned())?;
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned()) else {
            return Err("base_url needs a scheme and a host".into());
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| "base_url has a bad host".to_owned())?;
        let mut keys = Vec::new();
        for key in &provider.keys {
            let auth = match &key.key {
                Some(secret) => {
                    let plain = secret.reveal(master_key).map_err(|e| format!("keys.{}: {e}", key.name))?;
                    Some(auth_header(provider.kind, plain.trim()).map_err(|e| format!("keys.{}: {e}", key.name))?)
                }
                None => None,
            };
            let digest = Sha256::digest(auth.as_ref().map_or(&b""[..], |(_, v)| v.as_bytes()));
            let id = key_id(&provider.name, &key.name, &digest);
            let state = states.key(&id);
            keys.push(PoolKey { name: key.name.as_str().into(), id: id.into(), auth, weight: key.weight, state });
        }
        if keys.is_empty() {
            // A provider that needs no key gets one blank key, so that every request picks one.
            let id = key_id(&provider.name, "", &[]);
            keys.push(PoolKey { name: "none".into(), state: states.key(&id), id: id.into(), auth: None, weight: 1 });
        }
        Ok(Provider {
            name: provider.name.as_str().into(),
            kind: provider.kind,
            dialect: dialect(provider.kind),
            scheme,
            authority,
            host,
            base_path: base.path().trim_end_matches('/').into(),
            api_version: provider.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION).into(),
            keys: KeyPool { keys: keys.into() },
            connect_timeout: Duration::from_millis(provider.connect_timeout_ms),
            timeout: Duration::from_millis(provider.timeout_ms),
        })
    }

    /// Whether the provider can answer `operation`.
    pub fn can(&self, operation: Operation) -> bool {
        operation == Operation::Chat || !matches!(self.kind, ProviderKind::Anthropic | ProviderKind::Gemini)
    }

    /// The request for `operation` on `model`, signed with key `key`. `client` holds the
    /// client's headers; Anthropic's version and beta flags pass on from it.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        operation: Operation,
        model: &str,
        stream: bool,
        key: usize,
        body: Bytes,
        client: &HeaderMap,
        request_id: &HeaderValue,
    ) -> Result<Request<Bytes>, String> {
        let base = &self.base_path;
        let path = match (self.kind, operation) {
            (ProviderKind::Anthropic, _) => format!("{base}/messages"),
            (ProviderKind::Gemini, _) if stream => {
                format!("{base}/models/{}:streamGenerateContent?alt=sse", encode(model))
            }
            (ProviderKind::Gemini, _) => format!("{base}/models/{}:generateContent", encode(model)),
            (ProviderKind::Azure, Operation::Chat) => {
                format!("{base}/deployments/{}/chat/completions?api-version={}", encode(model), self.api_version)
            }
            (ProviderKind::Azure, Operation::Embeddings) => {
                format!("{base}/deployments/{}/embeddings?api-version={}", encode(model), self.api_version)
            }
            (_, Operation::Chat) => format!("{base}/chat/completions"),
            (_, Operation::Embeddings) => format!("{base}/embeddings"),
        };
        let path = PathAndQuery::from_maybe_shared(path).map_err(|e| format!("bad provider path: {e}"))?;
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from(path);
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(crate::proxy::X_REQUEST_ID.clone(), request_id.clone());
        if let Some((name, value)) = &self.keys.keys[key].auth {
            headers.insert(name.clone(), value.clone());
        }
        if self.kind == ProviderKind::Anthropic {
            let version = client.get("anthropic-version").cloned();
            headers.insert("anthropic-version", version.unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION)));
            if let Some(beta) = client.get("anthropic-beta") {
                headers.insert("anthropic-beta", beta.clone());
            }
        }
        Ok(request)
    }
}

fn dialect(kind: ProviderKind) -> Dialect {
    match kind {
        ProviderKind::Openai => Dialect::OpenAi,
        ProviderKind::Mistral => Dialect::Mistral,
        ProviderKind::Azure | ProviderKind::Ollama | ProviderKind::OpenaiCompatible => Dialect::OpenAiCompatible,
        ProviderKind::Anthropic => Dialect::Anthropic,
        ProviderKind::Gemini => Dialect::Gemini,
    }
}

/// The header a provider of `kind` takes its key in.
fn auth_header(kind: ProviderKind, key: &str) -> Result<(HeaderName, HeaderValue), &'static str> {
    let (name, value) = match kind {
        ProviderKind::Azure => (HeaderName::from_static("api-key"), key.to_owned()),
        ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
        ProviderKind::Gemini => (HeaderName::from_static("x-goog-api-key"), key.to_owned()),
        _ => (header::AUTHORIZATION, format!("Bearer {key}")),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| "the key holds characters a header cannot carry")?;
    value.set_sensitive(true);
    Ok((name, value))
}

fn key_id(provider: &str, key: &str, digest: &[u8]) -> String {
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{provider}/{key}/{hex}")
}

/// A model name as a path segment (Azure deployments are names, but be safe).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
