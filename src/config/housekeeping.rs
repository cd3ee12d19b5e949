//! lanyard's `housekeeping:`: the sweep of expired rows.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::DurationText;
use super::resolve::{positive_duration, Ctx};

/// lanyard's `housekeeping:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingConfig {
    /// How often expired logins, codes, tokens, device requests and sessions are deleted.
    pub interval: Duration,
}

/// lanyard's `housekeeping:` section: the sweep of expired rows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHousekeeping {
    interval: Option<DurationText>,
}

const DEFAULT_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

pub(super) fn resolve_housekeeping(value: Value, ctx: &mut Ctx) -> HousekeepingConfig {
    let raw: RawHousekeeping = ctx.de(value, "housekeeping").unwrap_or_default();
    HousekeepingConfig {
        interval: positive_duration(
            raw.interval,
            "housekeeping.interval",
            DEFAULT_HOUSEKEEPING_INTERVAL,
            ctx,
        ),
    }
}
