//! Tool parameter schemas trimmed to the OpenAPI subset Gemini accepts: other keywords
//! (`additionalProperties`, `$schema`, `const`, `exclusiveMinimum`, ...) make it refuse the
//! whole request with "Invalid JSON payload ... Unknown name".

use serde_json::{Map, Value};

/// The keywords Gemini's `Schema` knows.
const KEPT: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// `schema` with only what Gemini accepts; `const` becomes a one-value `enum` and
/// `type: [T, "null"]` becomes `type: T, nullable: true`.
pub(crate) fn trim(schema: &Value) -> Value {
    let Some(map) = schema.as_object() else { return schema.clone() };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                let properties = value.as_object().map(|p| p.iter().map(|(k, v)| (k.clone(), trim(v))).collect());
                out.insert(key.clone(), Value::Object(properties.unwrap_or_default()));
            }
            "items" => {
                out.insert(key.clone(), trim(value));
            }
            "anyOf" => {
                let options = value.as_array().map(|o| o.iter().map(trim).collect()).unwrap_or_default();
                out.insert(key.clone(), Value::Array(options));
            }
            "type" => match value {
                Value::Array(types) => {
                    let mut named = types.iter().filter(|t| t.as_str() != Some("null"));
                    if let Some(first) = named.next() {
                        out.insert("type".into(), first.clone());
                    }
                    if types.iter().any(|t| t.as_str() == Some("null")) {
                        out.insert("nullable".into(), true.into());
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), Value::Array(vec![value.clone()]));
            }
            _ if KEPT.contains(&key.as_str()) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_gemini_refuses_is_trimmed_or_rewritten() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
            "properties": {
                "city": {"type": "string", "description": "A city"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "days": {"type": "integer", "exclusiveMinimum": 0, "maximum": 14},
                "kind": {"const": "forecast"},
                "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}}
            },
            "required": ["city"]
        });
        assert_eq!(
            trim(&schema),
            json!({"type": "object", "required": ["city"], "properties": {
                "city": {"type": "string", "description": "A city"},
                "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                "days": {"type": "integer", "maximum": 14},
                "kind": {"enum": ["forecast"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            }})
        );
    }
}
