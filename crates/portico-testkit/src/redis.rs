//! The Redis server tests may use.

/// The variable that names the Redis server tests may use; `.ci/run` sets it.
pub const REDIS_URL_VAR: &str = "PORTICO_TEST_REDIS_URL";

/// The URL of the test Redis server, or `None` (saying so on stderr) when the variable is not
/// set. Tests keep their keys apart by naming what they count uniquely.
pub fn redis_url() -> Option<String> {
    let url = std::env::var(REDIS_URL_VAR).ok();
    if url.is_none() {
        eprintln!("skipped: the Redis part of this test (set {REDIS_URL_VAR} to run it)");
    }
    url
}
