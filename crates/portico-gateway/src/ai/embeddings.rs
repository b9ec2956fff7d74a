//! Embeddings (`POST /v1/embeddings`, OpenAI's format at both ends).
//!
//! Providers are always asked for floats, and Portico writes the base64 a client asks for
//! (the OpenAI SDKs ask for it by default): some providers refuse `encoding_format`, and a
//! client that asked for base64 and got floats reads garbage.

use base64::Engine;
use portico_ai::AiError;
use serde_json::Value;

/// The request for a provider: the provider's model, no `encoding_format`. Returns whether
/// the client wants base64.
pub(crate) fn prepare(body: &Value) -> Result<bool, AiError> {
    let map = body.as_object().ok_or_else(|| AiError::invalid("", "the body must be a JSON object"))?;
    match map.get("input") {
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err(AiError::invalid("input", "expected a string or an array")),
        None => return Err(AiError::invalid("input", "is required")),
    }
    match map.get("encoding_format") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(format)) if format == "float" => Ok(false),
        Some(Value::String(format)) if format == "base64" => Ok(true),
        Some(_) => Err(AiError::invalid("encoding_format", "expected `float` or `base64`")),
    }
}

/// The provider's request body for `model`.
pub(crate) fn request_body(body: &Value, model: &str) -> Vec<u8> {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.insert("model".into(), model.into());
        map.remove("encoding_format");
    }
    serde_json::to_vec(&body).unwrap_or_default()
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
        let body = json!({"model": "alias", "input": ["a"], "encoding_format": "base64", "dimensions": 8});
        assert_eq!(prepare(&body), Ok(true));
        let sent: Value = serde_json::from_slice(&request_body(&body, "text-embedding-3-small")).expect("json");
        assert_eq!(sent, json!({"model": "text-embedding-3-small", "input": ["a"], "dimensions": 8}));
        assert_eq!(prepare(&json!({"model": "m"})).map_err(|e| e.param), Err(Some("input".to_owned())));
        assert_eq!(
            prepare(&json!({"input": "x", "encoding_format": "int8"})).map_err(|e| e.param),
            Err(Some("encoding_format".to_owned()))
        );
    }
}
