//! What every section's raw form shares: the top-level keys, and scalars written as Dex's Go
//! parser reads them. Each section's raw struct (in its own file) spells Dex's keys exactly as
//! Dex spells them, every field optional so that validation (not serde) decides what is
//! required and can report all of it at once.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::duration::parse_go_duration;

/// The top-level keys lanyard knows, for "did you mean" on a misspelled one.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "issuer",
    "storage",
    "web",
    "telemetry",
    "grpc",
    "expiry",
    "logger",
    "oauth2",
    "frontend",
    "signer",
    "staticClients",
    "enablePasswordDB",
    "staticPasswords",
    "connectors",
    "keys",
    "sessions",
    "kubernetes",
    "housekeeping",
];

/// A non-negative integer written as a YAML number or as a string of digits: after
/// `port: $PGPORT` expands, the value is a string.
#[derive(Debug, Clone, Copy)]
pub struct LenientU64(pub u64);

impl<'de> Deserialize<'de> for LenientU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientU64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientU64, E> {
                Ok(LenientU64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientU64, E> {
                u64::try_from(v)
                    .map(LenientU64)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientU64, E> {
                v.trim()
                    .parse()
                    .map(LenientU64)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, got `{v}`")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean written as `true`/`false` or as those words in a string (after env expansion).
#[derive(Debug, Clone, Copy)]
pub struct LenientBool(pub bool);

impl<'de> Deserialize<'de> for LenientBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LenientBool, E> {
                Ok(LenientBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientBool, E> {
                match v.trim() {
                    "true" | "True" | "TRUE" => Ok(LenientBool(true)),
                    "false" | "False" | "FALSE" => Ok(LenientBool(false)),
                    _ => Err(E::custom(format!("expected true or false, got `{v}`"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Dex writes these as integer seconds; a Go duration string ("30s") is accepted too.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or a duration like 30s")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!(
                            "expected a non-negative number of seconds, got {v}"
                        ))
                    })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                let v = v.trim();
                if let Ok(secs) = v.parse::<u64>() {
                    return Ok(Seconds(Duration::from_secs(secs)));
                }
                parse_go_duration(v)
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("invalid duration `{v}`: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written. YAML reads `reuseInterval: 5` or `signingKeys: 0` as numbers; they
/// are kept as text so that the Go duration parser accepts "0" and explains "5" (no unit).
#[derive(Debug, Clone)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 10m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
