//! Embeddings (`POST /v1/embeddings`, OpenAI's format at both ends).
//!
//! Providers are always asked for floats, and Portico writes the base64 a client asks for
//! (the OpenAI SDKs ask for it by default): some providers refuse `encoding_format`, and a
//! client that asked for base64 and got floats reads garbage.

use base64::Engine;
use portico_ai::{AiError, Fields};
use serde_json::Value;

/// Checks the request; returns whether the client wants base64.
pub(crate) fn prepare(body: &Fields) -> Result<bool, AiError> {
    match body.get("input").map(|text| text.as_bytes().first()) {
        Some(Some(b'"' | b'[')) => {}
        Some(_) => return Err(AiError::invalid("input", "expected a string or an array")),
        None => return Err(AiError::invalid("input", "is required")),
    }
    match body.string("encoding_format").map_err(|_| invalid_format())?.as_deref() {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(_) => Err(invalid_format()),
    }
}

fn invalid_format() -> AiError {
    AiError::invalid("encoding_format", "expected `float` or `base64`")
}

/// The provider's request body for `model` (as a JSON string): no `encoding_format`.
pub(crate) fn request_body(body: &Fields, model: &str) -> Vec<u8> {
    body.rewrite(&[("model", Some(model)), ("encoding_format", None)])
}

/// The provider's answer, with each embedding as base64 of little-endian `f32`s when
/// `base64` is asked for.
pub(crate) fn answer(body: &[u8], base64: bool) -> Result<Vec<u8>, AiError> {
    if !base64 {
        return Ok(body.to_vec());
    }
    let unreadable = || AiError::new(portico_ai::ErrorKind::Api, "the provider's embeddings could not be read");
    let mut value: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let data = value.get_mut("data").and_then(Value::as_array_mut).ok_or_else(unreadable)?;
    for item in data {
        let Some(embedding) = item.get_mut("embedding") else { continue };
        if let Value::Array(numbers) = embedding {
            let mut bytes = Vec::with_capacity(numbers.len() * 4);
            for number in numbers.iter() {
                let float = number.as_f64().ok_or_else(unreadable)? as f32;
                bytes.extend_from_slice(&float.to_le_bytes());
            }
            *embedding = base64::engine::general_purpose::STANDARD.encode(bytes).into();
        }
    }
    Ok(serde_json::to_vec(&value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_become_little_endian_base64_when_asked() {
        let body = json!({"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0, "embedding": [1.0, -2.5]}],
                          "usage": {"prompt_tokens": 2, "total_tokens": 2}});
        let out: Value =
            serde_json::from_slice(&answer(body.to_string().as_bytes(), true).expect("answer")).expect("json");
        let encoded = out["data"][0]["embedding"].as_str().expect("base64");
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("decodes");
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        assert_eq!(out["usage"], body["usage"]);
        let same = answer(body.to_string().as_bytes(), false).expect("answer");
        assert_eq!(same, body.to_string().as_bytes());
    }

    #[test]
    fn providers_never_see_the_encoding_format() {
        let check =
            |body: Value| prepare(&Fields::parse(body.to_string().into()).expect("object")).map_err(|e| e.param);
        let body = json!({"model": "alias", "input": ["a"], "encoding_format": "base64", "dimensions": 8});
        assert_eq!(check(body.clone()), Ok(true));
        let fields = Fields::parse(body.to_string().into()).expect("object");
        let sent: Value = serde_json::from_slice(&request_body(&fields, r#""text-embedding-3-small""#)).expect("json");
        assert_eq!(sent, json!({"model": "text-embedding-3-small", "input": ["a"], "dimensions": 8}));
        assert_eq!(check(json!({"model": "m"})), Err(Some("input".to_owned())));
        assert_eq!(check(json!({"input": 3})), Err(Some("input".to_owned())));
        assert_eq!(check(json!({"input": "x", "encoding_format": "int8"})), Err(Some("encoding_format".to_owned())));
    }
}
