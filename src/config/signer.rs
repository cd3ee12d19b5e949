//! Dex's `signer:` section. lanyard signs with its own keys (`keys:`), so only Dex's `local`
//! signer has a meaning here: its `keysRotationPeriod` is the keys' rotation period.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::DurationText;
use super::resolve::{positive_duration, Ctx};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigner {
    #[serde(rename = "type")]
    type_: Option<String>,
    config: Option<Value>,
}

/// Dex's `signer.LocalConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLocalSigner {
    keys_rotation_period: Option<DurationText>,
}

/// The rotation period the `signer:` section sets, if any. `expiry_signing_keys_set`: the
/// config also has `expiry.signingKeys`, which the signer overrides (as in Dex, with a warning).
pub(super) fn resolve_signer(
    value: Value,
    expiry_signing_keys_set: bool,
    ctx: &mut Ctx,
) -> Option<Duration> {
    if value.is_null() {
        return None;
    }
    let raw: RawSigner = ctx.de(value, "signer")?;
    match raw.type_.as_deref().unwrap_or_default() {
        "local" => {
            let mut config = raw.config.unwrap_or(Value::Null);
            ctx.expand(&mut config, "signer.config");
            let local: RawLocalSigner = ctx.de(config, "signer.config")?;
            let path = "signer.config.keysRotationPeriod";
            if local
                .keys_rotation_period
                .as_ref()
                .is_none_or(|d| d.0.is_empty())
            {
                ctx.err(
                    path,
                    "missing required key `keysRotationPeriod` (how long each signing key signs, e.g. 6h)",
                );
                return None;
            }
            if expiry_signing_keys_set {
                ctx.warn(
                    "expiry.signingKeys",
                    "overridden by signer.config.keysRotationPeriod, as in Dex; remove one",
                );
            }
            Some(positive_duration(
                local.keys_rotation_period,
                path,
                Duration::ZERO,
                ctx,
            ))
            .filter(|d| !d.is_zero())
        }
        "vault" => {
            ctx.err(
                "signer.type",
                "the vault signer is not supported: lanyard signs with keys it keeps in its storage, encrypted with keys.encryptionKey; remove `signer` and set the rotation in keys.rotationPeriod",
            );
            None
        }
        "" => {
            ctx.err("signer.type", "missing required key `type` (local)");
            None
        }
        other => {
            ctx.err(
                "signer.type",
                format!(
                    "unknown signer type `{other}`; expected local (lanyard's own keys, see keys:)"
                ),
            );
            None
        }
    }
}
