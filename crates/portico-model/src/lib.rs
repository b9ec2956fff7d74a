//! Portico's configuration entities and their validation.
//!
//! Everything here is plain data: the shapes that the admin API, the YAML file and the
//! store share, and the rules that decide whether a configuration is acceptable. Nothing
//! in this crate does I/O, so every other crate can rely on it.

mod balance;
mod config;
mod discovery;
mod names;
mod pattern;
mod problem;
mod protect;
mod retry;
mod route;
mod service;
mod traffic;

pub use balance::{ActiveCheck, Algorithm, Balance, HashOn, Health, PassiveCheck, StatusSet};
pub use config::{parse_yaml, Config};
pub use discovery::{Discovery, DnsDiscovery};
pub use names::validate_name;
pub use pattern::{HostPattern, Method, MethodSet, PathPattern, Segment};
pub use problem::{Problem, Problems, MAX_MS};
pub use protect::{Bulkhead, CircuitBreaker, Fallback};
pub use retry::{Retries, RetryOn};
pub use route::{HeaderMatch, MockResponse, Route};
pub use service::{parse_address, HostHeader, Scheme, Service, Target, MAX_WEIGHT};
pub use traffic::{Fault, FaultAbort, FaultDelay, Mirror, Split, When};
