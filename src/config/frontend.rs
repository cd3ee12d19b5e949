//! `frontend:`: how the pages look.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::resolve::Ctx;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendConfig {
    /// The name shown on pages (Dex's `frontend.issuer`).
    pub issuer: Option<String>,
    pub logo_url: Option<String>,
    /// A directory whose templates and static files override the embedded ones.
    pub dir: Option<PathBuf>,
    pub theme: Option<String>,
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFrontend {
    dir: Option<String>,
    #[serde(rename = "logoURL")]
    logo_url: Option<String>,
    issuer: Option<String>,
    theme: Option<String>,
    extra: Option<BTreeMap<String, String>>,
}

pub(super) fn resolve_frontend(value: Value, ctx: &mut Ctx) -> FrontendConfig {
    let raw: RawFrontend = ctx.de(value, "frontend").unwrap_or_default();
    let logo_url = raw.logo_url.filter(|u| !u.is_empty());
    let dir = raw.dir.filter(|s| !s.is_empty()).map(PathBuf::from);
    // The server refuses to start without it (as Dex does), so check-config must say so too.
    if let Some(dir) = &dir {
        if !dir.is_dir() {
            ctx.err(
                "frontend.dir",
                format!("`{}` is not a readable directory", dir.display()),
            );
        }
    }
    FrontendConfig {
        issuer: raw.issuer.filter(|s| !s.is_empty()),
        logo_url,
        dir,
        theme: raw.theme.filter(|s| !s.is_empty()),
        extra: raw.extra.unwrap_or_default(),
    }
}
