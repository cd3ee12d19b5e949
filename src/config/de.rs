//! Deserialising one piece of the tree at a time, so that errors in different sections are
//! all reported, each with its YAML path, and unknown keys get a "did you mean".

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::path::{extend, key_path};
use super::ConfigError;

/// Deserialises `value` (found at `path`) into `T`, recording a path-named error on failure.
/// A YAML `null` (a key with nothing after it) counts as absent.
pub fn deserialize_at<T: DeserializeOwned + Default>(
    value: Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if value.is_null() {
        return Some(T::default());
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(err) => {
            let at = extend(path, err.path());
            errors.push(describe(at, &err.inner().to_string()));
            None
        }
    }
}

/// Turns serde's message into ours; in particular "unknown field `x`, expected one of ..."
/// becomes an unknown-key error at the key's own path with the closest known key.
fn describe(path: String, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        if let Some((key, expected)) = names.split_first() {
            // serde_path_to_error may or may not have entered the unknown key already.
            let at = if path == *key || path.ends_with(&format!(".{key}")) {
                path
            } else {
                key_path(&path, key)
            };
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            return unknown_key(&at, key, &expected);
        }
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return ConfigError {
            path,
            message: format!("missing required key {rest}"),
        };
    }
    ConfigError {
        path,
        message: plain_words(message),
    }
}

/// serde speaks of sequences, maps and the raw structs' Rust names; users wrote lists and
/// mappings.
fn plain_words(message: &str) -> String {
    let mut out = message
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected a mapping");
    while let Some(start) = out.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let name_end = out[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(out.len(), |i| name_start + i);
        out.replace_range(start..name_end, "expected a mapping");
    }
    out
}

/// The error for a key that does not belong where it was found.
pub fn unknown_key(path: &str, key: &str, expected: &[&str]) -> ConfigError {
    let message = match suggest(key, expected) {
        Some(best) => format!("unknown key `{key}`; did you mean `{best}`?"),
        None if expected.is_empty() => format!("unknown key `{key}`; no keys are allowed here"),
        None => format!(
            "unknown key `{key}`; expected one of {}",
            expected
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    ConfigError {
        path: path.to_string(),
        message,
    }
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, part)| part.to_string())
        .collect()
}

/// The known key closest to `key`, if any is close enough to be what was meant. Case is
/// ignored first, because the usual mistake with Dex's keys is `redirectUris` for
/// `redirectURIs` or `userId` for `userID`.
pub fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_lowercase();
    if let Some(exact) = candidates.iter().find(|c| c.to_lowercase() == lower) {
        return Some(exact);
    }
    let mut best: Option<(&'a str, usize)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
        if best.is_none_or(|(_, d)| distance < d) {
            best = Some((candidate, distance));
        }
    }
    let (candidate, distance) = best?;
    let allowed = (key.chars().count().max(candidate.len()) / 3).max(1);
    (distance <= allowed).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_case_insensitive_match_first() {
        assert_eq!(
            suggest("redirectUris", &["id", "redirectURIs", "trustedPeers"]),
            Some("redirectURIs")
        );
        assert_eq!(suggest("userId", &["email", "userID"]), Some("userID"));
    }

    #[test]
    fn suggests_close_typos_only() {
        assert_eq!(suggest("htp", &["http", "https", "headers"]), Some("http"));
        assert_eq!(
            suggest("staticClient", &["staticClients", "staticPasswords"]),
            Some("staticClients")
        );
        assert_eq!(suggest("kubernetes", &["http", "https", "headers"]), None);
    }

    #[test]
    fn serde_jargon_becomes_yaml_words() {
        assert_eq!(
            plain_words("invalid type: string \"x\", expected struct RawWeb"),
            "invalid type: string \"x\", expected a mapping"
        );
        assert_eq!(
            plain_words("invalid type: string \"x\", expected a sequence"),
            "invalid type: string \"x\", expected a list"
        );
    }

    #[test]
    fn backticked_extracts_names() {
        assert_eq!(
            backticked("`foo`, expected one of `a`, `b`"),
            vec!["foo".to_string(), "a".into(), "b".into()]
        );
    }
}
