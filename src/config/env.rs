//! `$VAR` / `${VAR}` expansion where Dex expands: the string values under `storage.config`,
//! `connectors[].config` and `signer.config` (Dex runs `os.ExpandEnv` over exactly these), and
//! lanyard's own sections, which Dex never reads. Everywhere else a `$` is a literal `$`, so a
//! client secret `s3cr$t` or a bcrypt hash is written as it is. `DEX_EXPAND_ENV=false` turns
//! expansion off, as it does in Dex.
//!
//! Expansion works on the string scalars of the parsed YAML tree rather than on the raw text:
//! a variable's value then stays one scalar and cannot inject YAML structure (a password
//! containing `\n  admin: true` is just a password).
//!
//! The grammar is Go's `os.ExpandEnv`: `$NAME` (letters, digits, `_`), `${ANYTHING}`, and `$`
//! followed by one of `*#$@!?-` or a digit names a one-character variable; any other `$` is
//! literal. Two differences, both refusals of what Dex silently turns into "": a variable that
//! is not set is an error naming it (an empty password or client secret must not be a typo
//! away; set the variable to the empty string to mean empty), and `$$` is a literal `$` (Dex
//! reads it as the never-set variable `$`).

use serde_yaml_ng::Value;

use super::path::{index_path, key_path};
use super::ConfigError;

/// The variable that turns expansion on or off, as in Dex.
pub const EXPAND_ENV_VAR: &str = "DEX_EXPAND_ENV";

/// Whether `DEX_EXPAND_ENV` leaves expansion on (the default). Its values are Go's
/// `strconv.ParseBool`'s; Dex falls back to "on" for anything else, lanyard refuses it, since
/// whoever set it meant something.
pub fn expansion_enabled(env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    match env(EXPAND_ENV_VAR).as_deref() {
        None | Some("") => Ok(true),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(format!(
            "environment variable {EXPAND_ENV_VAR} is `{other}`; expected true or false"
        )),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Go's one-character shell variables (`$1`, `$?`, ...).
fn is_special(c: char) -> bool {
    matches!(c, '*' | '#' | '@' | '!' | '?' | '-') || c.is_ascii_digit()
}

/// Appends the value of `name`, or records that it is not set.
fn substitute(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<String>,
) {
    match env(name) {
        Some(v) => out.push_str(&v),
        None => errors.push(format!(
            "environment variable `{name}` is not set (write `$$` for a literal `$`)"
        )),
    }
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
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let body = &after[1..];
                match body.find('}') {
                    Some(0) => {
                        errors.push(
                            "`${}` names no variable (write `$$` for a literal `$`)".to_string(),
                        );
                        rest = &body[1..];
                    }
                    Some(end) => {
                        substitute(&body[..end], env, &mut out, &mut errors);
                        rest = &body[end + 1..];
                    }
                    None => {
                        errors.push("unterminated `${` (write `$$` for a literal `$`)".to_string());
                        rest = "";
                    }
                }
            }
            Some(c) if is_special(c) => {
                substitute(&after[..1], env, &mut out, &mut errors);
                rest = &after[1..];
            }
            Some(c) if is_name_char(c) => {
                let len = after
                    .char_indices()
                    .find(|(_, c)| !is_name_char(*c))
                    .map_or(after.len(), |(i, _)| i);
                substitute(&after[..len], env, &mut out, &mut errors);
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

fn expand_scalar(
    s: &mut String,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    if !s.contains('$') {
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

/// Expands the string values under `value` in place, collecting every failure. As in Dex, a
/// list's strings and mappings are expanded but a list directly inside a list is not, and
/// keys never are.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) => expand_scalar(s, path, env, errors),
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if !matches!(item, Value::Sequence(_)) {
                    expand_tree(item, &index_path(path, i), env, errors);
                }
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
        assert_eq!(expand_str("a $ b", &env).unwrap(), "a $ b");
        assert_eq!(expand_str("$.x $/ $%", &env).unwrap(), "$.x $/ $%");
    }

    #[test]
    fn go_special_variables_are_variables_too() {
        // os.ExpandEnv reads `$1`, `$-` and `${1}` as variables (always "" in Dex).
        for text in ["$1abc", "a$-", "${1}", "$?"] {
            let errs = expand_str(text, &env).unwrap_err();
            assert!(errs[0].contains("is not set"), "{text}: {errs:?}");
        }
        let one = |n: &str| (n == "1").then(|| "one".to_string());
        assert_eq!(expand_str("$1abc", &one).unwrap(), "oneabc");
    }

    #[test]
    fn braces_take_any_name_as_go_does() {
        let spaced = |n: &str| (n == "A B").then(|| "x".to_string());
        assert_eq!(expand_str("${A B}", &spaced).unwrap(), "x");
    }

    #[test]
    fn missing_variables_are_all_reported() {
        let errs = expand_str("$NOPE and ${ALSO_NOPE}", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].starts_with("environment variable `NOPE` is not set"));
        assert!(errs[1].starts_with("environment variable `ALSO_NOPE` is not set"));
    }

    #[test]
    fn malformed_braces_are_errors() {
        assert!(expand_str("${HOST", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand_str("${}", &env).unwrap_err()[0].contains("names no variable"));
    }

    #[test]
    fn lists_inside_lists_are_left_alone_as_in_dex() {
        let mut v: Value =
            serde_yaml_ng::from_str("a: [$HOST, {b: $PORT}, [$HOST]]\nc: $HOST\n").unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, "x", &env, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let want: Value =
            serde_yaml_ng::from_str("a: [db.example, {b: '5432'}, [$HOST]]\nc: db.example\n")
                .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn dex_expand_env_switch() {
        let with =
            |value: &'static str| move |n: &str| (n == EXPAND_ENV_VAR).then(|| value.to_string());
        assert_eq!(expansion_enabled(&|_| None), Ok(true));
        assert_eq!(expansion_enabled(&with("false")), Ok(false));
        assert_eq!(expansion_enabled(&with("0")), Ok(false));
        assert_eq!(expansion_enabled(&with("TRUE")), Ok(true));
        assert!(expansion_enabled(&with("nope"))
            .unwrap_err()
            .contains("DEX_EXPAND_ENV"));
    }
}
