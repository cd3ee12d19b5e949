//! lanyard's `sessions:`: the browser sign-in session (SSO cookie).

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::DurationText;
use super::resolve::{duration_at, Ctx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsConfig {
    /// How long a browser stays signed in (SSO across clients); zero turns it off.
    pub lifetime: Duration,
}

/// lanyard's `sessions:` section: the browser sign-in session (SSO cookie).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSessions {
    lifetime: Option<DurationText>,
}

/// How long a browser stays signed in unless the user signs out; `0s` turns sessions off.
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub(super) fn resolve_sessions(value: Value, ctx: &mut Ctx) -> SessionsConfig {
    let raw: RawSessions = ctx.de(value, "sessions").unwrap_or_default();
    SessionsConfig {
        lifetime: duration_at(raw.lifetime, "sessions.lifetime", ctx)
            .unwrap_or(DEFAULT_SESSION_LIFETIME),
    }
}
