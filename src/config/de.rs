//! Deserialising one piece of the tree at a time, so that errors in different sections are
//! all reported, each with its YAML path, and unknown keys get a "did you mean".

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;

use super::path::{extend, key_path};
use super::ConfigError;

/// Deserialises `value` (found at `path`) into `T`, recording a path-named error on failure.
/// A YAML `null` (a key with nothing after it) counts as absent.
///
/// Dex reads its config the way Go's `encoding/json` does, through a YAML-to-JSON step that
/// knows the target types, and lanyard accepts what that accepts: a key that matches a known
/// key ignoring case (`Host:` for `host:`) is read as that key, with a warning; a number or
/// boolean where text is expected (`tlsMinVersion: 1.2`) is read as its text. Each is fixed
/// in the tree where serde stopped, and the tree read again.
pub fn deserialize_at<T: DeserializeOwned + Default>(
    mut value: Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<T> {
    if value.is_null() {
        return Some(T::default());
    }
    // Every fix removes one miscased key or one non-text scalar, so this ends; the bound only
    // keeps a mistake here from looping.
    for _ in 0..10_000 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(err) => {
                let message = err.inner().to_string();
                let segments: Vec<&Segment> = err.path().iter().collect();
                match fix(&mut value, path, &segments, &message) {
                    Some(Ok(warning)) => {
                        warnings.extend(warning);
                        continue;
                    }
                    Some(Err(error)) => errors.push(error),
                    None => errors.push(describe(extend(path, err.path()), &message)),
                }
                return None;
            }
        }
    }
    errors.push(ConfigError {
        path: path.to_string(),
        message: "too many keys to correct".to_string(),
    });
    None
}

/// Corrects what Dex would have accepted where serde stopped: `Some(Ok(warning))` when the
/// tree was changed, `Some(Err(_))` when the key cannot be corrected, `None` when the error is
/// a real one.
fn fix(
    root: &mut Value,
    base: &str,
    segments: &[&Segment],
    message: &str,
) -> Option<Result<Option<ConfigError>, ConfigError>> {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let (key, expected) = names.split_first()?;
        let canonical = expected
            .iter()
            .find(|e| *e != key && e.to_lowercase() == key.to_lowercase())?;
        // serde_path_to_error may or may not have entered the unknown key already.
        let parent_segments = match segments.split_last() {
            Some((Segment::Map { key: last }, parent)) if last == key => parent,
            _ => segments,
        };
        let parent_path = extend(base, parent_segments.iter().copied());
        let Value::Mapping(map) = node_at(root, parent_segments)? else {
            return None;
        };
        let at = key_path(&parent_path, key);
        if map.contains_key(canonical.as_str()) {
            return Some(Err(ConfigError {
                path: at,
                message: format!("`{key}` and `{canonical}` are the same key (keys match ignoring case, as in Dex); keep only `{canonical}`"),
            }));
        }
        let v = map.remove(key.as_str())?;
        map.insert(Value::String(canonical.clone()), v);
        return Some(Ok(Some(ConfigError {
            path: at,
            message: format!(
                "read as `{canonical}` (Dex matches keys ignoring case); write `{canonical}`"
            ),
        })));
    }
    if message.starts_with("invalid type: ") && message.ends_with("expected a string") {
        let at = extend(base, segments.iter().copied());
        let node = node_at(root, segments)?;
        let text = match node {
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u.to_string(),
                (None, Some(i), _) => i.to_string(),
                // Go's YAML-to-JSON step formats a float with 32 bits' precision: 1.2, not
                // 1.2000000476837158.
                (None, None, Some(f)) => (f as f32).to_string(),
                _ => return None,
            },
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        *node = Value::String(text.clone());
        // Dex documents `tlsMinVersion: 1.2` unquoted; a number elsewhere may not be what was
        // written (`0123`, `1.10`), so it is worth a line.
        let warning =
            (!at.ends_with("tlsMinVersion") && !at.ends_with("tlsMaxVersion")).then(|| {
                ConfigError {
                    path: at,
                    message: format!(
                        "read as the text `{text}`; quote the value to keep it exactly as written"
                    ),
                }
            });
        return Some(Ok(warning));
    }
    None
}

/// The node a serde_path_to_error path leads to inside `root`.
fn node_at<'a>(mut node: &'a mut Value, segments: &[&Segment]) -> Option<&'a mut Value> {
    for segment in segments {
        if let Value::Tagged(tagged) = node {
            node = &mut tagged.value;
        }
        node = match (segment, node) {
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index)?,
            (Segment::Map { key }, Value::Mapping(map)) => map.get_mut(key.as_str())?,
            (Segment::Enum { .. } | Segment::Unknown, other) => other,
            _ => return None,
        };
    }
    Some(node)
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

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        #[serde(rename = "clientID")]
        client_id: Option<String>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        host: Option<String>,
        items: Option<Vec<Inner>>,
        names: Option<Vec<String>>,
    }

    fn read(yaml: &str) -> (Option<Outer>, Vec<ConfigError>, Vec<ConfigError>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let out = deserialize_at::<Outer>(value, "x", &mut errors, &mut warnings);
        (out, errors, warnings)
    }

    #[test]
    fn keys_in_another_case_are_renamed_at_any_depth_with_a_warning() {
        let (out, errors, warnings) = read(
            "Host: h
items:
- ClientId: a
- clientid: b
",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let out = out.unwrap();
        assert_eq!(out.host.as_deref(), Some("h"));
        let ids: Vec<_> = out
            .items
            .unwrap()
            .into_iter()
            .map(|i| i.client_id)
            .collect();
        assert_eq!(ids, vec![Some("a".to_string()), Some("b".to_string())]);
        let at: Vec<_> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            at,
            vec!["x.Host", "x.items[0].ClientId", "x.items[1].clientid"]
        );
        assert!(warnings[1].message.contains("read as `clientID`"));
    }

    #[test]
    fn a_key_twice_in_different_case_and_unknown_keys_are_errors() {
        let (out, errors, _) = read(
            "host: a
HOST: b
",
        );
        assert!(out.is_none());
        assert_eq!(errors[0].path, "x.HOST");
        assert!(errors[0].message.contains("keep only `host`"));
        let (_, errors, _) = read(
            "hots: a
",
        );
        assert_eq!(errors[0].path, "x.hots");
        assert!(errors[0].message.contains("did you mean `host`?"));
    }

    #[test]
    fn numbers_and_booleans_become_text_where_text_is_expected() {
        let (out, errors, warnings) = read(
            "host: 1.2
names: [12, true, -3]
",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let out = out.unwrap();
        assert_eq!(out.host.as_deref(), Some("1.2"));
        assert_eq!(out.names.unwrap(), vec!["12", "true", "-3"]);
        assert_eq!(warnings.len(), 4);
        assert_eq!(warnings[0].path, "x.host");
    }

    #[test]
    fn backticked_extracts_names() {
        assert_eq!(
            backticked("`foo`, expected one of `a`, `b`"),
            vec!["foo".to_string(), "a".into(), "b".into()]
        );
    }
}
