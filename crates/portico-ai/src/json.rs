//! Reading JSON request bodies field by field, with errors that name the field.

use crate::error::AiError;
use serde_json::{Map, Value};

/// `value`, unless it is `null` (which indexing a `Value` gives for anything missing):
/// `present(&chunk["choices"][0])`. Unlike `Value::pointer`, indexing allocates nothing,
/// and this runs for every streamed event.
pub(crate) fn present(value: &Value) -> Option<&Value> {
    (!value.is_null()).then_some(value)
}

/// `base.key`, or `key` at the top.
pub(crate) fn at(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

/// `base[index]`.
pub(crate) fn index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

pub(crate) fn object<'v>(value: &'v Value, path: &str) -> Result<&'v Map<String, Value>, AiError> {
    value.as_object().ok_or_else(|| AiError::invalid(path, "expected an object"))
}

pub(crate) fn array<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>, AiError> {
    value.as_array().ok_or_else(|| AiError::invalid(path, "expected an array"))
}

/// The field `key` of `map`, absent when missing or `null`.
fn field<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(crate) fn string(map: &Map<String, Value>, key: &str, base: &str) -> Result<Option<String>, AiError> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(AiError::invalid(at(base, key), "expected a string")),
    }
}

pub(crate) fn required_string(map: &Map<String, Value>, key: &str, base: &str) -> Result<String, AiError> {
    string(map, key, base)?.ok_or_else(|| AiError::invalid(at(base, key), "is required"))
}

pub(crate) fn number(map: &Map<String, Value>, key: &str, base: &str) -> Result<Option<f64>, AiError> {
    match field(map, key) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| AiError::invalid(at(base, key), "expected a number")),
    }
}

pub(crate) fn count(map: &Map<String, Value>, key: &str, base: &str) -> Result<Option<u64>, AiError> {
    match field(map, key) {
        None => Ok(None),
        Some(value) => {
            value.as_u64().map(Some).ok_or_else(|| AiError::invalid(at(base, key), "expected a non-negative integer"))
        }
    }
}

pub(crate) fn integer(map: &Map<String, Value>, key: &str, base: &str) -> Result<Option<i64>, AiError> {
    match field(map, key) {
        None => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| AiError::invalid(at(base, key), "expected an integer")),
    }
}

pub(crate) fn boolean(map: &Map<String, Value>, key: &str, base: &str) -> Result<Option<bool>, AiError> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(AiError::invalid(at(base, key), "expected true or false")),
    }
}

/// A string or a list of strings (`stop`).
pub(crate) fn strings(map: &Map<String, Value>, key: &str, base: &str) -> Result<Vec<String>, AiError> {
    match field(map, key) {
        None => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(all)) => all
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| AiError::invalid(index(&at(base, key), i), "expected a string"))
            })
            .collect(),
        Some(_) => Err(AiError::invalid(at(base, key), "expected a string or a list of strings")),
    }
}

/// Parses a request body, which must be a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Value, AiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| AiError::invalid("", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(AiError::invalid("", "the body must be a JSON object"));
    }
    Ok(value)
}

/// Inserts `value` under `key` unless it is `None`.
pub(crate) fn put<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value.into());
    }
}

/// A usage object in its provider's typed form (see each provider's `WireUsage`). One that
/// does not fit that form reads as empty, and the gateway then estimates the usage.
pub(crate) fn usage<'v, T: serde::Deserialize<'v> + Default>(value: &'v Value) -> T {
    T::deserialize(value).unwrap_or_default()
}
