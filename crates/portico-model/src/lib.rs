//! Portico's configuration entities and their validation.
//!
//! Everything here is plain data: the shapes that the admin API, the YAML file and the
//! store share, and the rules that decide whether a configuration is acceptable. Nothing
//! in this crate does I/O, so every other crate can rely on it.

mod ai;
mod analytics;
mod balance;
mod budget;
mod certificate;
mod config;
mod consumer;
mod discovery;
mod global;
mod names;
mod pattern;
mod policy;
mod problem;
mod prompt;
mod protect;
mod rate_limit;
mod retry;
mod route;
mod secret;
mod service;
mod traffic;

pub use ai::{
    validate_model_name, AiLimit, AiLimitBy, AiModel, AiPrice, AiProvider, AiRouting, AiService, AiTarget, ProviderKey,
    ProviderKind, DEFAULT_AZURE_API_VERSION,
};
pub use analytics::{pair, AiTally, Dimension, Interval, LatencySketch, Rollup, Tally};
pub use balance::{ActiveCheck, Algorithm, Balance, HashOn, Health, PassiveCheck, StatusSet};
pub use budget::{AiBudget, BudgetPeriod};
pub use certificate::{parse_chain, parse_key, Certificate};
pub use config::{parse_yaml, Config};
pub use consumer::{
    generate_key, hash_password, verify_password, BasicCredential, Consumer, Credential, KeyCredential, MtlsCredential,
    MIN_KEY_LEN,
};
pub use discovery::{Discovery, DnsDiscovery};
pub use global::Global;
pub use names::validate_name;
pub use pattern::{HostPattern, Method, MethodSet, PathPattern, Segment};
pub use policy::{
    parse_cidr, Acl, BasicAuth, Cors, IpRestriction, JwtAuth, JwtSecret, KeyAuth, MtlsAuth, Policies,
    JWT_PUBLIC_KEY_ALGORITHMS, JWT_SECRET_ALGORITHMS, MIN_JWT_SECRET_BYTES,
};
pub use problem::{Problem, Problems, MAX_MS};
pub use prompt::{AiPrompt, CompiledPrompt, PromptMessage, PromptRole, PromptVersion, RoutePrompt};
pub use protect::{Bulkhead, CircuitBreaker, Fallback};
pub use rate_limit::{Limit, LimitBy, RateLimit, Window};
pub use retry::{Retries, RetryOn};
pub use route::{AiCache, HeaderMatch, MockResponse, Route};
pub use secret::{HoldsSecrets, MasterKey, Secret, SecretError, NO_MASTER_KEY};
pub use service::{parse_address, HostHeader, Scheme, Service, Target, UpstreamTls, MAX_WEIGHT};
pub use traffic::{Fault, FaultAbort, FaultDelay, Mirror, Split, When};
