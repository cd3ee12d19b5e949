//! YAML paths as users read them: `staticClients[0].redirectURIs[1]`.

use serde_yaml_ng::Value;

pub fn key_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub fn index_path(prefix: &str, index: usize) -> String {
    format!("{prefix}[{index}]")
}

/// A mapping key as text; non-string keys (`1: x`) are shown the way YAML would print them.
pub fn key_to_string(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_string(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "?".to_string()),
    }
}

/// Appends a serde_path_to_error path (or some of its segments) to `prefix`.
pub fn extend<'a>(
    prefix: &str,
    path: impl IntoIterator<Item = &'a serde_path_to_error::Segment>,
) -> String {
    let mut out = prefix.to_string();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out = index_path(&out, *index),
            serde_path_to_error::Segment::Map { key } => out = key_path(&out, key),
            // Enums and untracked segments add nothing a reader could use.
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}
