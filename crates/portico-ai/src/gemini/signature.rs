//! Thought signatures carried inside tool call ids: `<id>_ts_<base64url of the signature>`.
//! Ids stay within `[A-Za-z0-9_-]`, which every format accepts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const SEPARATOR: &str = "_ts_";

/// The id a client sees for a call with `signature`.
pub(crate) fn embed(id: &str, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{id}{SEPARATOR}{}", URL_SAFE_NO_PAD.encode(signature)),
        None => id.to_owned(),
    }
}

/// The id Gemini gave, and the signature, from an id a client sent back.
pub(crate) fn extract(id: &str) -> (&str, Option<String>) {
    match id.split_once(SEPARATOR) {
        Some((base, encoded)) => match URL_SAFE_NO_PAD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(signature) => (base, Some(signature)),
            None => (id, None),
        },
        None => (id, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_survive_the_round_trip_inside_ids() {
        let signature = "CiQB0e2Kb+/x==";
        let id = embed("call_1a2b", Some(signature));
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{id}");
        assert_eq!(extract(&id), ("call_1a2b", Some(signature.to_owned())));
        assert_eq!(extract("toolu_01"), ("toolu_01", None));
        assert_eq!(embed("call_x", None), "call_x");
    }
}
