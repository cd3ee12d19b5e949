//! lanyard's `keys:`: the signing algorithm, rotation, publication ahead of use, and the
//! key-encryption key.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::duration::format_duration;
use super::expiry::ExpiryConfig;
use super::path::key_path;
use super::raw::DurationText;
use super::resolve::{duration_at, positive_duration, Ctx};
use super::SigningAlg;

/// lanyard's `keys:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct KeysConfig {
    pub algorithm: SigningAlg,
    /// How long each key signs: `keys.rotationPeriod`, else `expiry.signingKeys`, else 6h.
    pub rotation_period: Duration,
    /// How long a key is in JWKS before it signs. At least 4 seconds (a warning below 2
    /// minutes), because verifiers cache JWKS, and replicas reload keys, every quarter of this.
    pub publish_ahead: Duration,
    /// How often each replica re-reads the signing keys from storage (and rotates when due):
    /// keys made by other replicas or `lanyard admin keys` show within this. At most a
    /// quarter of `publish_ahead`.
    pub poll_interval: Duration,
    /// The key-encryption key for private signing keys. `None`: not configured; the server
    /// decides (the dev config generates a key file).
    pub encryption_key: Option<[u8; 32]>,
}

impl fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysConfig")
            .field("algorithm", &self.algorithm)
            .field("rotation_period", &self.rotation_period)
            .field("publish_ahead", &self.publish_ahead)
            .field("poll_interval", &self.poll_interval)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKeys {
    pub algorithm: Option<String>,
    pub rotation_period: Option<DurationText>,
    pub publish_ahead: Option<DurationText>,
    pub poll_interval: Option<DurationText>,
    pub encryption_key: Option<String>,
    pub encryption_key_file: Option<String>,
    pub encryption_key_env: Option<String>,
}

const DEFAULT_PUBLISH_AHEAD: Duration = Duration::from_secs(15 * 60);

/// How often each replica re-reads the signing keys by default (or a quarter of
/// `publishAhead`, when that is shorter).
const DEFAULT_KEY_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// JWKS responses are cached, and replicas reload keys, every quarter of `publishAhead`, so
/// below this the JWKS would not be cacheable at all (max-age 0).
const MIN_PUBLISH_AHEAD: Duration = Duration::from_secs(4);

/// Below this, verifiers that ignore Cache-Control and keep a JWKS for a fixed few minutes
/// may meet a key before they have fetched it: allowed (tests, short-lived setups), with a
/// warning.
const RECOMMENDED_PUBLISH_AHEAD: Duration = Duration::from_secs(2 * 60);

/// A 32-byte key written as hex (64 digits) or base64 (standard or URL-safe, padded or not).
/// Errors never quote the input: it is a secret.
pub(crate) fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "invalid hex".to_string())?
    } else {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| "is neither base64 nor 64 hex digits".to_string())?
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "decodes to {} bytes; it must be exactly 32 (e.g. `openssl rand -base64 32`)",
            bytes.len()
        )
    })
}

/// `signer_rotation`: the rotation period of Dex's `signer:` section, which stands in for
/// `keys.rotationPeriod` (and overrides `expiry.signingKeys`).
pub(super) fn resolve_keys(
    value: Value,
    expiry: &ExpiryConfig,
    signer_rotation: Option<Duration>,
    ctx: &mut Ctx,
) -> KeysConfig {
    let raw: RawKeys = ctx.de(value, "keys").unwrap_or_default();
    let algorithm = match raw.algorithm.filter(|a| !a.is_empty()).as_deref() {
        None | Some("RS256") => SigningAlg::RS256,
        Some("ES256") => SigningAlg::ES256,
        Some(other) => {
            ctx.err(
                "keys.algorithm",
                format!("unknown signing algorithm `{other}`; expected RS256 or ES256"),
            );
            SigningAlg::RS256
        }
    };
    if signer_rotation.is_some() && raw.rotation_period.is_some() {
        ctx.err(
            "keys.rotationPeriod",
            "set the rotation period once: keys.rotationPeriod or Dex's signer.config.keysRotationPeriod, not both",
        );
    }
    let rotation_period = positive_duration(
        raw.rotation_period,
        "keys.rotationPeriod",
        signer_rotation.unwrap_or(expiry.signing_keys),
        ctx,
    );
    let publish_ahead = match duration_at(raw.publish_ahead, "keys.publishAhead", ctx) {
        Some(d) if d < MIN_PUBLISH_AHEAD => {
            ctx.err(
                "keys.publishAhead",
                format!(
                    "{} is too short; it must be at least {} because verifiers cache the JWKS for part of it",
                    format_duration(d),
                    format_duration(MIN_PUBLISH_AHEAD)
                ),
            );
            DEFAULT_PUBLISH_AHEAD
        }
        Some(d) if d < RECOMMENDED_PUBLISH_AHEAD => {
            ctx.warn(
                "keys.publishAhead",
                format!(
                    "{} is shorter than {}: a verifier that keeps the JWKS for a fixed few minutes, whatever its Cache-Control says, may see a token signed by a key it has not fetched yet",
                    format_duration(d),
                    format_duration(RECOMMENDED_PUBLISH_AHEAD)
                ),
            );
            d
        }
        Some(d) => d,
        None => DEFAULT_PUBLISH_AHEAD,
    };
    if publish_ahead >= rotation_period {
        ctx.err(
            "keys.publishAhead",
            format!(
                "{} must be shorter than the rotation period ({})",
                format_duration(publish_ahead),
                format_duration(rotation_period)
            ),
        );
    }

    // A replica learns of a key another one (or `lanyard admin keys`) created only when it
    // polls, and it must know a key before verifiers fetch JWKS ahead of its first token.
    let poll_interval = positive_duration(
        raw.poll_interval,
        "keys.pollInterval",
        DEFAULT_KEY_POLL_INTERVAL.min(publish_ahead / 4),
        ctx,
    );
    if poll_interval > publish_ahead / 4 {
        ctx.err(
            "keys.pollInterval",
            format!(
                "{} is too long; it must be at most a quarter of publishAhead ({})",
                format_duration(poll_interval),
                format_duration(publish_ahead)
            ),
        );
    }

    let sources: Vec<&str> = [
        ("encryptionKey", &raw.encryption_key),
        ("encryptionKeyFile", &raw.encryption_key_file),
        ("encryptionKeyEnv", &raw.encryption_key_env),
    ]
    .iter()
    .filter(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
    .map(|(k, _)| *k)
    .collect();
    let mut encryption_key = None;
    if sources.len() > 1 {
        ctx.err(
            "keys",
            format!(
                "set only one of encryptionKey, encryptionKeyFile, encryptionKeyEnv (found {})",
                sources.join(", ")
            ),
        );
    } else if let Some(source) = sources.first() {
        let path = key_path("keys", source);
        let text = match *source {
            "encryptionKey" => raw.encryption_key,
            "encryptionKeyFile" => {
                raw.encryption_key_file
                    .and_then(|file| match std::fs::read_to_string(&file) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            ctx.err(&path, format!("cannot read `{file}`: {e}"));
                            None
                        }
                    })
            }
            _ => raw
                .encryption_key_env
                .and_then(|name| ctx.env_var(&name, &path)),
        };
        if let Some(text) = text {
            match decode_key(&text) {
                Ok(key) => encryption_key = Some(key),
                Err(e) => ctx.err(
                    &path,
                    format!("the key-encryption key must be 32 bytes as base64 or hex: it {e}"),
                ),
            }
        }
    }

    KeysConfig {
        algorithm,
        rotation_period,
        publish_ahead,
        poll_interval,
        encryption_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_decoding_accepts_hex_and_base64_of_32_bytes() {
        let key = [7u8; 32];
        assert_eq!(decode_key(&hex::encode(key)).unwrap(), key);
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(decode_key(&b64).unwrap(), key);
        assert_eq!(decode_key(&format!("{b64}\n")).unwrap(), key);
        let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xffu8; 32]);
        assert_eq!(decode_key(&url_nopad).unwrap(), [0xff; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(decode_key(&short).unwrap_err().contains("16 bytes"));
        assert!(decode_key("not base64 !!").is_err());
    }
}
