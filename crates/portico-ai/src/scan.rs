//! One top-level field of a JSON object, found without reading the rest.
//!
//! A provider's whole answer is passed to the client as it came; the gateway only wants its
//! `usage`. Deserialising the answer to skip `choices` costs more than everything else the
//! gateway does with it, so this walks the object's top level instead: strings are skipped
//! with `memchr`, nested values by counting brackets. Nothing is validated beyond what
//! finding the field needs; the field's own text is then read by serde_json, which checks it.

use memchr::memchr2;

/// The JSON text of `object`'s top-level field `key` (the last one, if it appears twice),
/// or `None` when `object` has no such field or is not a JSON object. Keys are compared as
/// written, so a key spelt with escapes is not found.
pub(crate) fn field<'a>(object: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut at = skip_space(object, 0);
    if object.get(at) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    loop {
        at = skip_space(object, at + 1);
        match object.get(at)? {
            b'"' => {}
            b'}' => return found,
            _ => return None,
        }
        let key_end = string_end(object, at)?;
        let this = &object[at + 1..key_end - 1];
        at = skip_space(object, key_end);
        if object.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(object, at + 1);
        let end = value_end(object, start)?;
        if this == key.as_bytes() {
            found = Some(&object[start..end]);
        }
        at = skip_space(object, end);
        match object.get(at)? {
            b',' => {}
            b'}' => return found,
            _ => return None,
        }
    }
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the string that opens at `start` (on its `"`).
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        at += memchr2(b'"', b'\\', text.get(at..)?)?;
        if text[at] == b'"' {
            return Some(at + 1);
        }
        at += 2; // a backslash and the character it escapes
    }
}

/// Just past the value that starts at `start`.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match text.get(start)? {
        b'"' => string_end(text, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match text.get(at)? {
                    b'"' => {
                        at = string_end(text, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next delimiter.
        _ => {
            let length =
                text[start..].iter().position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            Some(start + length.unwrap_or(text.len() - start))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    fn text(object: &str, key: &str) -> Option<String> {
        field(object.as_bytes(), key).map(|value| String::from_utf8(value.to_vec()).expect("utf-8"))
    }

    #[test]
    fn finds_a_top_level_field_past_nested_values_and_strings() {
        let answer = r#" { "id" : "x\"}]{" , "choices":[{"message":{"content":"\"usage\": {\\"}}],
            "n": -1.5e3, "ok": true, "usage" : {"prompt_tokens": 9, "nested": [1, {"a": "]"}]} } "#;
        assert_eq!(text(answer, "usage").as_deref(), Some(r#"{"prompt_tokens": 9, "nested": [1, {"a": "]"}]}"#));
        assert_eq!(text(answer, "n").as_deref(), Some("-1.5e3"));
        assert_eq!(text(answer, "ok").as_deref(), Some("true"));
        assert_eq!(text(answer, "id").as_deref(), Some(r#""x\"}]{""#));
        assert_eq!(text(answer, "content"), None, "a nested key is not a top-level field");
        assert_eq!(text(r#"{"usage":1,"usage":2}"#, "usage").as_deref(), Some("2"), "the last one counts");
        assert_eq!(text("{}", "usage"), None);
    }

    #[test]
    fn malformed_or_cut_off_text_finds_nothing_and_never_panics() {
        for bad in [
            "",
            "[]",
            "null",
            "{",
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"{"usage":{"a":1}"#,
            r#"{"usage":"open"#,
            r#"{"a":"\"#,
            r#"{"a":1 "usage":2}"#,
            r#"{usage:2}"#,
            r#"{"a" 1}"#,
            r#"{"a":[}}}"#,
        ] {
            assert_eq!(text(bad, "usage"), None, "{bad:?}");
        }
    }
}
