//! `expiry:`: how long tokens, logins, device requests and signing keys last.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::{DurationText, LenientBool};
use super::resolve::{duration_at, positive_duration, Ctx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryConfig {
    /// How often signing keys rotate (Dex's meaning). `keys.rotation_period` is the value in
    /// effect; this is kept as written.
    pub signing_keys: Duration,
    pub id_tokens: Duration,
    /// How long a login may take from /auth to the code. 30 minutes, not Dex's 24 hours:
    /// every abandoned login (a closed tab, a bot hitting /auth) is a stored row until it
    /// expires, and a day of them piles up for nothing; no human needs a day to log in.
    pub auth_requests: Duration,
    pub device_requests: Duration,
    pub refresh_tokens: RefreshTokenExpiry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenExpiry {
    /// A refresh token unused this long is dead. `None`: no idle limit.
    pub valid_if_not_used_for: Option<Duration>,
    /// A refresh token chain dies this long after the login. `None`: no limit.
    pub absolute_lifetime: Option<Duration>,
    /// How long the previous refresh token still works after rotation, so that a client
    /// retrying a request whose response was lost is not logged out.
    pub reuse_interval: Duration,
    pub disable_rotation: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExpiry {
    pub signing_keys: Option<DurationText>,
    pub id_tokens: Option<DurationText>,
    pub auth_requests: Option<DurationText>,
    pub device_requests: Option<DurationText>,
    pub refresh_tokens: Option<RawRefreshTokens>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRefreshTokens {
    pub disable_rotation: Option<LenientBool>,
    pub reuse_interval: Option<DurationText>,
    pub absolute_lifetime: Option<DurationText>,
    pub valid_if_not_used_for: Option<DurationText>,
}

const DEFAULT_SIGNING_KEYS: Duration = Duration::from_secs(6 * 3600);

const DEFAULT_ID_TOKENS: Duration = Duration::from_secs(24 * 3600);

const DEFAULT_AUTH_REQUESTS: Duration = Duration::from_secs(30 * 60);

const DEFAULT_DEVICE_REQUESTS: Duration = Duration::from_secs(5 * 60);

const DEFAULT_REUSE_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn resolve_expiry(value: Value, ctx: &mut Ctx) -> ExpiryConfig {
    let raw: RawExpiry = ctx.de(value, "expiry").unwrap_or_default();
    let refresh = raw.refresh_tokens.unwrap_or_default();
    let mut optional_limit =
        |value: Option<DurationText>, path: &str| match duration_at(value, path, ctx) {
            Some(d) if d.is_zero() => {
                ctx.err(path, "must be longer than 0 (leave it out for no limit)");
                None
            }
            other => other,
        };
    let valid_if_not_used_for = optional_limit(
        refresh.valid_if_not_used_for,
        "expiry.refreshTokens.validIfNotUsedFor",
    );
    let absolute_lifetime = optional_limit(
        refresh.absolute_lifetime,
        "expiry.refreshTokens.absoluteLifetime",
    );
    ExpiryConfig {
        signing_keys: positive_duration(
            raw.signing_keys,
            "expiry.signingKeys",
            DEFAULT_SIGNING_KEYS,
            ctx,
        ),
        id_tokens: positive_duration(raw.id_tokens, "expiry.idTokens", DEFAULT_ID_TOKENS, ctx),
        auth_requests: positive_duration(
            raw.auth_requests,
            "expiry.authRequests",
            DEFAULT_AUTH_REQUESTS,
            ctx,
        ),
        device_requests: positive_duration(
            raw.device_requests,
            "expiry.deviceRequests",
            DEFAULT_DEVICE_REQUESTS,
            ctx,
        ),
        refresh_tokens: RefreshTokenExpiry {
            valid_if_not_used_for,
            absolute_lifetime,
            reuse_interval: duration_at(
                refresh.reuse_interval,
                "expiry.refreshTokens.reuseInterval",
                ctx,
            )
            .unwrap_or(DEFAULT_REUSE_INTERVAL),
            disable_rotation: refresh.disable_rotation.is_some_and(|b| b.0),
        },
    }
}
