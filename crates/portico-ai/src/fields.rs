//! Request bodies read at their top level only: each field's JSON text is kept exactly as the
//! client sent it. Passing a body through to a provider of the same format then costs one
//! shallow scan and a copy with `model` replaced, instead of parsing and re-serialising every
//! message, and what the client wrote (a thinking block's signature, a number's digits) stays
//! byte for byte what the provider gets.

use crate::error::AiError;
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// A JSON object's body with its top-level fields, in order: each field's key and where its
/// JSON text lies in the body. Read once, it serves every provider a call tries.
pub struct Fields {
    body: Bytes,
    fields: Vec<(Key, Range<usize>)>,
}

/// A field's key: where it lies in the body, or, when written with escapes, the key itself.
enum Key {
    InBody(Range<usize>),
    Unescaped(Box<str>),
}

impl Fields {
    /// Reads `body`, which must be a JSON object.
    pub fn parse(body: Bytes) -> Result<Fields, AiError> {
        let Object(borrowed) = serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                AiError::invalid("", "the body must be a JSON object")
            } else {
                AiError::invalid("", format!("the body is not valid JSON: {e}"))
            }
        })?;
        // A borrowed value's text lies inside the body it was read from.
        let start = body.as_ptr() as usize;
        let range = |text: &str| {
            let offset = text.as_ptr() as usize - start;
            offset..offset + text.len()
        };
        let fields = borrowed
            .into_iter()
            .map(|(key, raw)| {
                let key = match key {
                    KeyText::Borrowed(text) => Key::InBody(range(text)),
                    KeyText::Owned(text) => Key::Unescaped(text.into()),
                };
                (key, range(raw.get()))
            })
            .collect();
        Ok(Fields { body, fields })
    }

    /// The body as sent.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The JSON text of the field `key` (the last one, if it appears twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(k, _)| self.key(k) == key.as_bytes()).map(|(_, range)| self.text(range))
    }

    fn key<'a>(&'a self, key: &'a Key) -> &'a [u8] {
        match key {
            Key::InBody(range) => &self.body[range.clone()],
            Key::Unescaped(key) => key.as_bytes(),
        }
    }

    fn text(&self, range: &Range<usize>) -> &str {
        // The range is that of a text serde_json read from the body and checked is UTF-8.
        std::str::from_utf8(&self.body[range.clone()]).unwrap_or_default()
    }

    /// The field `key` as a string; absent when missing or `null`.
    pub fn string(&self, key: &str) -> Result<Option<String>, AiError> {
        match self.get(key) {
            None | Some("null") => Ok(None),
            Some(text) => serde_json::from_str(text).map(Some).map_err(|_| AiError::invalid(key, "expected a string")),
        }
    }

    /// The field `key` as true or false; absent when missing or `null`.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, AiError> {
        match self.get(key) {
            None | Some("null") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(AiError::invalid(key, "expected true or false")),
        }
    }

    /// The object again, with `changes` made: `(key, Some(json))` sets a field (in its place,
    /// or at the end), `(key, None)` removes it. Everything else is copied as it was.
    pub fn rewrite(&self, changes: &[(&str, Option<&str>)]) -> Vec<u8> {
        let size: usize = self.fields.iter().map(|(k, v)| self.key(k).len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(size + 64);
        out.push(b'{');
        let write = |key: &str, value: &[u8], out: &mut Vec<u8>| {
            if out.len() > 1 {
                out.push(b',');
            }
            // Keys are re-escaped; writing a string to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            out.extend_from_slice(value);
        };
        let mut done = vec![false; changes.len()];
        for (key, range) in &self.fields {
            // A key serde_json read: UTF-8.
            let key = std::str::from_utf8(self.key(key)).unwrap_or_default();
            match changes.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    if let (Some(value), false) = (changes[i].1, done[i]) {
                        write(key, value.as_bytes(), &mut out);
                    }
                    done[i] = true;
                }
                None => write(key, &self.body[range.clone()], &mut out),
            }
        }
        for ((key, value), done) in changes.iter().zip(done) {
            if let (Some(value), false) = (value, done) {
                write(key, value.as_bytes(), &mut out);
            }
        }
        out.push(b'}');
        out
    }
}

/// The top-level fields of a JSON object, each with its text borrowed from the input.
struct Object<'a>(Vec<(KeyText<'a>, &'a RawValue)>);

/// A key as read: borrowed from the input, unless it had escapes to undo.
enum KeyText<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyText<'de>, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText::Borrowed(text))
            }
            fn visit_str<E>(self, text: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText::Owned(text.to_owned()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object<'a>, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Entries<'a> {
            type Value = Object<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Object<'a>, M::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<KeyText<'de>, &'de RawValue>()? {
                    fields.push(field);
                }
                Ok(Object(fields))
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_shallowly_and_rewritten_byte_for_byte() {
        let body =
            br#"{"model":"alias","messages":[{"role":"user","content":"caf\u00e9 1.0e2"}],"stream":true,"seed":null}"#;
        let fields = Fields::parse(Bytes::from_static(body)).expect("an object");
        assert_eq!(fields.string("model").expect("string").as_deref(), Some("alias"));
        assert_eq!(fields.boolean("stream").expect("bool"), Some(true));
        assert_eq!(fields.string("seed").expect("null"), None);
        assert_eq!(fields.string("absent").expect("absent"), None);
        assert!(fields.boolean("model").is_err());
        let rewritten = fields.rewrite(&[("model", Some(r#""gpt-4o""#)), ("seed", None), ("extra", Some("1"))]);
        assert_eq!(
            std::str::from_utf8(&rewritten).expect("utf-8"),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"caf\u00e9 1.0e2"}],"stream":true,"extra":1}"#,
            "what was not changed is copied as sent, escapes and number spellings included"
        );
        assert_eq!(fields.body(), &body[..], "the body is kept as sent");
        // A key written with escapes is the key it spells.
        let escaped = Fields::parse(Bytes::from_static(br#"{"mod\u0065l":"alias","n":1}"#)).expect("an object");
        assert_eq!(escaped.string("model").expect("string").as_deref(), Some("alias"));
        assert_eq!(escaped.rewrite(&[("n", Some("2"))]), br#"{"model":"alias","n":2}"#);
        assert!(Fields::parse(Bytes::from_static(b"[1]")).is_err_and(|e| e.message.contains("object")));
        assert!(Fields::parse(Bytes::from_static(b"{oops")).is_err_and(|e| e.message.contains("not valid JSON")));
    }
}
