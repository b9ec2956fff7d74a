//! Entity names: the stable identifiers users put in URLs and YAML files.

/// A name is 1 to 64 characters of ASCII letters, digits, `.`, `_` and `-`, starting with
/// a letter or digit, so that it is safe in a URL path segment without escaping.
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(valid_char) {
        return Err(format!(
            "`{name}` is not a valid name: use ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}
