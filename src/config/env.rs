//! `$VAR` / `${VAR}` expansion, applied to the string scalars of the parsed YAML tree rather
//! than to the raw text: a variable's value then stays one scalar and cannot inject YAML
//! structure (a password containing `\n  admin: true` is just a password).
//!
//! `$$` is a literal `$`; a `$` followed by something that cannot start a name is literal too.
//! A missing variable is an error, never "".
//!
//! `staticPasswords[*].hash` is never expanded: bcrypt and argon2 hashes are full of `$`
//! (`$2a$10$...`, `$argon2id$v=19$...`), and Dex configs carry them verbatim. Use
//! `hashFromEnv` to take a hash from the environment.

use serde_yaml_ng::Value;

use super::path::{index_path, key_path};
use super::ConfigError;

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands one string. Errors are messages (the caller adds the path).
pub fn expand_str(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let body = &after[1..];
                match body.find('}') {
                    Some(end)
                        if body[..end].starts_with(is_name_start)
                            && body[..end].chars().all(is_name_char) =>
                    {
                        let name = &body[..end];
                        match env(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                errors.push(format!("environment variable `{name}` is not set"))
                            }
                        }
                        rest = &body[end + 1..];
                    }
                    Some(end) => {
                        errors.push(format!(
                            "`${{{}}}` is not a valid variable reference (names are letters, digits and _; write `$$` for a literal `$`)",
                            &body[..end]
                        ));
                        rest = &body[end + 1..];
                    }
                    None => {
                        errors.push("unterminated `${` (write `$$` for a literal `$`)".to_string());
                        rest = "";
                    }
                }
            }
            Some(c) if is_name_start(c) => {
                let len = after
                    .char_indices()
                    .find(|(_, c)| !is_name_char(*c))
                    .map_or(after.len(), |(i, _)| i);
                let name = &after[..len];
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => errors.push(format!("environment variable `{name}` is not set")),
                }
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// True for `staticPasswords[N].hash`, whose value is never expanded.
fn is_password_hash(path: &str) -> bool {
    path.strip_prefix("staticPasswords[")
        .and_then(|p| p.strip_suffix("].hash"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Expands every string scalar under `value` in place, collecting every failure.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) => {
            if !s.contains('$') || is_password_hash(path) {
                return;
            }
            match expand_str(s, env) {
                Ok(expanded) => *s = expanded,
                Err(messages) => errors.extend(messages.into_iter().map(|message| ConfigError {
                    path: path.to_string(),
                    message,
                })),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &index_path(path, i), env, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = super::path::key_to_string(k);
                expand_tree(v, &key_path(path, &key), env, errors);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, env, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.example".into()),
            "PORT" => Some("5432".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms() {
        assert_eq!(
            expand_str("$HOST:${PORT}", &env).unwrap(),
            "db.example:5432"
        );
        assert_eq!(expand_str("${HOST}x", &env).unwrap(), "db.examplex");
        assert_eq!(expand_str("a${EMPTY}b", &env).unwrap(), "ab");
    }

    #[test]
    fn name_ends_at_first_non_name_char() {
        assert_eq!(expand_str("$HOST.local", &env).unwrap(), "db.example.local");
        assert_eq!(expand_str("$PORT/x", &env).unwrap(), "5432/x");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(expand_str("pa$$word", &env).unwrap(), "pa$word");
        assert_eq!(expand_str("$$HOST", &env).unwrap(), "$HOST");
        assert_eq!(expand_str("$$$HOST", &env).unwrap(), "$db.example");
    }

    #[test]
    fn dollar_not_followed_by_a_name_is_literal() {
        assert_eq!(expand_str("cost: 5$", &env).unwrap(), "cost: 5$");
        assert_eq!(expand_str("$1 and $-", &env).unwrap(), "$1 and $-");
        assert_eq!(expand_str("a $ b", &env).unwrap(), "a $ b");
    }

    #[test]
    fn missing_variables_are_all_reported() {
        let errs = expand_str("$NOPE and ${ALSO_NOPE}", &env).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "environment variable `NOPE` is not set".to_string(),
                "environment variable `ALSO_NOPE` is not set".to_string()
            ]
        );
    }

    #[test]
    fn malformed_braces_are_errors() {
        assert!(expand_str("${HOST", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand_str("${1X}", &env).unwrap_err()[0].contains("not a valid variable"));
    }

    #[test]
    fn hash_path_detection() {
        assert!(is_password_hash("staticPasswords[0].hash"));
        assert!(is_password_hash("staticPasswords[12].hash"));
        assert!(!is_password_hash("staticPasswords[0].hashFromEnv"));
        assert!(!is_password_hash("staticPasswords[].hash"));
        assert!(!is_password_hash("staticClients[0].hash"));
    }
}
