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
    /// Anthropic's token count of a messages request.
    CountTokens,
}

impl Operation {
    /// What it asks for, in words for an error.
    pub fn noun(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
            Operation::CountTokens => "token counts",
        }
    }
}

/// One request to a provider: what, of which of its models, streamed or not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub operation: Operation,
    pub model: &'a str,
    pub stream: bool,
}

pub(crate) struct Provider {
    pub name: Arc<str>,
    /// The name as the `x-portico-provider` header of its answers.
    pub name_header: Option<HeaderValue>,
    pub kind: ProviderKind,
    pub dialect: Dialect,
    pub scheme: Scheme,
    pub authority: Authority,
    host: HeaderValue,
    /// The base URL's path, without a trailing `/`.
    base_path: Box<str>,
    api_version: Box<str>,
    /// The path of each operation (by `Operation as usize`) whose path names no model.
    fixed_paths: [Option<PathAndQuery>; 3],
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
        let mut compiled = Provider {
            name: provider.name.as_str().into(),
            name_header: HeaderValue::from_str(&provider.name).ok(),
            kind: provider.kind,
            dialect: dialect(provider.kind),
            scheme,
            authority,
            host,
            base_path: base.path().trim_end_matches('/').into(),
            api_version: provider.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION).into(),
            fixed_paths: Default::default(),
            keys: KeyPool { keys: keys.into() },
            connect_timeout: Duration::from_millis(provider.connect_timeout_ms),
            timeout: Duration::from_millis(provider.timeout_ms),
        };
        for operation in [Operation::Chat, Operation::Embeddings, Operation::CountTokens] {
            let path = compiled.path(operation, None, false);
            compiled.fixed_paths[operation as usize] = path.and_then(|path| PathAndQuery::from_maybe_shared(path).ok());
        }
        Ok(compiled)
    }

    /// Whether the provider can answer `operation`.
    pub fn can(&self, operation: Operation) -> bool {
        match operation {
            Operation::Chat => true,
            Operation::Embeddings => !matches!(self.kind, ProviderKind::Anthropic | ProviderKind::Gemini),
            Operation::CountTokens => self.kind == ProviderKind::Anthropic,
        }
    }

    /// The request for `ask`, signed with key `key`. `client` holds the client's headers;
    /// Anthropic's version and beta flags pass on from it.
    pub fn request(
        &self,
        ask: Ask<'_>,
        key: usize,
        body: Bytes,
        client: &HeaderMap,
        request_id: &HeaderValue,
    ) -> Result<Request<Bytes>, String> {
        let Ask { operation, model, stream } = ask;
        let path = match &self.fixed_paths[operation as usize] {
            Some(path) => path.clone(),
            None => PathAndQuery::from_maybe_shared(self.path(operation, Some(model), stream).unwrap_or_default())
                .map_err(|e| format!("bad provider path: {e}"))?,
        };
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from(path);
        // Room for what is set below; the map is handed back once the head is written.
        *request.headers_mut() = crate::proxy::empty_map(6);
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

    /// Where `operation` is sent. Gemini's and Azure's paths name the model: without one,
    /// they are none.
    fn path(&self, operation: Operation, model: Option<&str>, stream: bool) -> Option<String> {
        let base = &self.base_path;
        Some(match (self.kind, operation) {
            (_, Operation::CountTokens) => format!("{base}/messages/count_tokens"),
            (ProviderKind::Anthropic, _) => format!("{base}/messages"),
            (ProviderKind::Gemini, _) if stream => {
                format!("{base}/models/{}:streamGenerateContent?alt=sse", encode(model?))
            }
            (ProviderKind::Gemini, _) => format!("{base}/models/{}:generateContent", encode(model?)),
            (ProviderKind::Azure, Operation::Chat) => {
                format!("{base}/deployments/{}/chat/completions?api-version={}", encode(model?), self.api_version)
            }
            (ProviderKind::Azure, Operation::Embeddings) => {
                format!("{base}/deployments/{}/embeddings?api-version={}", encode(model?), self.api_version)
            }
            (_, Operation::Chat) => format!("{base}/chat/completions"),
            (_, Operation::Embeddings) => format!("{base}/embeddings"),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(yaml: &str) -> Provider {
        let config: AiProvider = yaml_serde::from_str(yaml).expect("yaml");
        Provider::compile(&config, &UpstreamStates::default(), None).expect("compiles")
    }

    /// Where each kind of provider is asked, with which key header: from the providers' API
    /// references.
    #[test]
    fn each_kind_is_asked_at_its_own_address_with_its_own_key_header() {
        let cases = [
            ("{name: o, kind: openai, keys: [{name: k, key: sk-1}]}", Operation::Chat, false,
             "/v1/chat/completions", "api.openai.com", "authorization", "Bearer sk-1"),
            ("{name: a, kind: azure, base_url: 'https://res.openai.azure.com/openai', keys: [{name: k, key: az-1}]}",
             Operation::Chat, true, "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
             "res.openai.azure.com", "api-key", "az-1"),
            ("{name: a, kind: azure, base_url: 'https://res.openai.azure.com/openai/', api_version: 2025-01-01-preview, keys: [{name: k, key: az-1}]}",
             Operation::Embeddings, false, "/openai/deployments/my-gpt/embeddings?api-version=2025-01-01-preview",
             "res.openai.azure.com", "api-key", "az-1"),
            ("{name: c, kind: anthropic, keys: [{name: k, key: sk-ant}]}", Operation::Chat, true,
             "/v1/messages", "api.anthropic.com", "x-api-key", "sk-ant"),
            ("{name: c, kind: anthropic, keys: [{name: k, key: sk-ant}]}", Operation::CountTokens, false,
             "/v1/messages/count_tokens", "api.anthropic.com", "x-api-key", "sk-ant"),
            ("{name: g, kind: gemini, keys: [{name: k, key: AIza}]}", Operation::Chat, false,
             "/v1beta/models/my-gpt:generateContent", "generativelanguage.googleapis.com", "x-goog-api-key", "AIza"),
            ("{name: g, kind: gemini, keys: [{name: k, key: AIza}]}", Operation::Chat, true,
             "/v1beta/models/my-gpt:streamGenerateContent?alt=sse", "generativelanguage.googleapis.com", "x-goog-api-key", "AIza"),
            ("{name: m, kind: mistral, keys: [{name: k, key: mk}]}", Operation::Embeddings, false,
             "/v1/embeddings", "api.mistral.ai", "authorization", "Bearer mk"),
            ("{name: l, kind: ollama}", Operation::Chat, true, "/v1/chat/completions", "127.0.0.1:11434", "", ""),
            ("{name: v, kind: openai_compatible, base_url: 'http://vllm:8000/v1', keys: [{name: k, key: t}]}",
             Operation::Chat, false, "/v1/chat/completions", "vllm:8000", "authorization", "Bearer t"),
        ];
        let id = HeaderValue::from_static("req-1");
        for (yaml, operation, stream, path, host, key_header, key) in cases {
            let provider = provider(yaml);
            let request = provider
                .request(Ask { operation, model: "my-gpt", stream }, 0, Bytes::new(), &HeaderMap::new(), &id)
                .expect("a request");
            assert_eq!(request.uri().to_string(), path, "{yaml}");
            assert_eq!(request.headers()[header::HOST], host, "{yaml}");
            if key_header.is_empty() {
                assert!(!request.headers().contains_key(header::AUTHORIZATION), "{yaml}");
            } else {
                assert_eq!(request.headers()[key_header], key, "{yaml}");
                assert!(request.headers()[key_header].is_sensitive(), "keys are marked sensitive: {yaml}");
            }
        }
    }

    const CLAUDE: Ask<'static> = Ask { operation: Operation::Chat, model: "claude", stream: false };

    #[test]
    fn anthropic_version_and_beta_flags_come_from_the_client_when_it_sent_them() {
        let provider = provider("{name: c, kind: anthropic, keys: [{name: k, key: sk-ant}]}");
        let id = HeaderValue::from_static("req-1");
        let request = provider.request(CLAUDE, 0, Bytes::new(), &HeaderMap::new(), &id).expect("request");
        assert_eq!(request.headers()["anthropic-version"], "2023-06-01");
        let mut client = HeaderMap::new();
        client.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        client.insert("anthropic-beta", HeaderValue::from_static("interleaved-thinking-2025-05-14"));
        let request = provider.request(CLAUDE, 0, Bytes::new(), &client, &id).expect("request");
        assert_eq!(request.headers()["anthropic-version"], "2024-01-01");
        assert_eq!(request.headers()["anthropic-beta"], "interleaved-thinking-2025-05-14");
    }
}
