//! HTML pages: embedded templates (overridable from `frontend.dir`) rendered with escaping on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use minijinja::value::{from_args, Enumerator, Object, ObjectRepr};
use minijinja::{Environment, State, Value};

const EMBEDDED: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("choose.html", include_str!("templates/choose.html")),
    ("approval.html", include_str!("templates/approval.html")),
    ("error.html", include_str!("templates/error.html")),
    ("device.html", include_str!("templates/device.html")),
    (
        "device_done.html",
        include_str!("templates/device_done.html"),
    ),
    ("form_post.html", include_str!("templates/form_post.html")),
    ("oob.html", include_str!("templates/oob.html")),
    ("logout.html", include_str!("templates/logout.html")),
    ("signed_out.html", include_str!("templates/signed_out.html")),
    ("kubeconfig.html", include_str!("templates/kubeconfig.html")),
];

pub mod assets;
pub mod kubeconfig;

use assets::{Asset, DexAssets};

/// The stylesheet served at `/static/style.css` (CSP allows styles from self only).
pub const STYLE_CSS: &str = include_str!("static/style.css");
/// The kubeconfig page's copy buttons, served at `/static/copy.js`.
pub const COPY_JS: &str = include_str!("static/copy.js");

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("template `{name}` failed to render: {source}")]
    Render {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("frontend.dir {0} is not a readable directory")]
    BadDir(PathBuf),
    #[error("frontend.theme: `{theme}` is not a directory in {dir} (Dex's themes are `light` and `dark`)")]
    BadTheme { theme: String, dir: PathBuf },
}

/// Branding from `frontend:`.
#[derive(Debug, Clone, Default)]
pub struct Branding {
    /// Shown as the product name (Dex's `frontend.issuer`).
    pub name: String,
    pub logo_url: Option<String>,
    /// `frontend.theme`: lanyard's own pages are "light" unless it is "dark"; with a Dex
    /// `web/` directory as `frontend.dir` it also names the directory under `themes/`.
    pub theme: String,
    /// `frontend.extra`: free values for templates, as `extra.key` or Dex's `extra("key")`.
    pub extra: BTreeMap<String, String>,
}

/// `frontend.extra` in templates: a map (`extra.key`, `extra["key"]`, iteration) that can also
/// be called like Dex's template function (`extra("key")`, "" for a key that is not set).
#[derive(Debug)]
struct Extra(BTreeMap<String, String>);

impl Object for Extra {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_str()?).map(|v| Value::from(v.as_str()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|k| Value::from(k.as_str())).collect())
    }

    fn call(
        self: &Arc<Self>,
        _: &State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let (key,): (&str,) = from_args(args)?;
        Ok(Value::from(
            self.0.get(key).map(String::as_str).unwrap_or_default(),
        ))
    }
}

#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
    /// Shared: the state handlers read per request clones the templates.
    branding: Arc<Branding>,
    /// The theme and static files of a Dex `web/` directory given as `frontend.dir`.
    assets: Arc<DexAssets>,
    extra: Value,
}

impl Templates {
    pub fn new(override_dir: Option<&Path>, branding: Branding) -> Result<Self, WebError> {
        let mut env = Environment::new();
        // Escaping is on for .html by default; make it explicit so overrides cannot turn it off by name.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        let mut assets = DexAssets::default();
        if let Some(dir) = override_dir {
            if !dir.is_dir() {
                return Err(WebError::BadDir(dir.to_path_buf()));
            }
            assets = DexAssets::load(dir, Some(branding.theme.as_str()))?;
            let dir = dir.to_path_buf();
            env.set_loader(move |name| {
                let file = dir.join(name);
                match std::fs::read_to_string(&file) {
                    Ok(text) => Ok(Some(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(embedded(name)),
                    Err(e) => Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("cannot read template {}: {e}", file.display()),
                    )),
                }
            });
        } else {
            env.set_loader(|name| Ok(embedded(name)));
        }
        Ok(Self {
            env: Arc::new(env),
            extra: Value::from_object(Extra(branding.extra.clone())),
            branding: Arc::new(branding),
            assets: Arc::new(assets),
        })
    }

    /// A file of the Dex theme (`/theme/{path}`).
    pub fn theme_file(&self, path: &str) -> Option<Asset> {
        self.assets.theme_file(path)
    }

    /// A file of the Dex `static/` directory (`/static/{path}`).
    pub fn static_file(&self, path: &str) -> Option<Asset> {
        self.assets.static_file(path)
    }

    /// Renders `name` with `ctx` plus the branding (`brand`, `logo_url`, `theme`, `extra`) and the
    /// issuer-relative `base` path for links.
    pub fn render(&self, name: &str, base: &str, ctx: Value) -> Result<String, WebError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|source| WebError::Render {
                name: name.to_string(),
                source,
            })?;
        // As Dex: the theme's logo unless `frontend.logoURL` names another.
        let logo_url = self.branding.logo_url.clone().or_else(|| {
            self.assets
                .has_logo
                .then(|| format!("{base}/theme/logo.png"))
        });
        let full = minijinja::context! {
            brand => if self.branding.name.is_empty() { "lanyard" } else { self.branding.name.as_str() },
            logo_url => logo_url,
            dex_main_css => self.assets.has_main_css,
            theme_css => self.assets.has_theme_styles,
            favicon => self.assets.has_favicon,
            theme => if self.branding.theme == "dark" { "dark" } else { "light" },
            base => base,
            extra => self.extra.clone(),
            ..ctx
        };
        template.render(full).map_err(|source| WebError::Render {
            name: name.to_string(),
            source,
        })
    }
}

fn embedded(name: &str) -> Option<String> {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_input_is_escaped() {
        let t = Templates::new(None, Branding::default()).unwrap();
        let html = t
            .render(
                "error.html",
                "",
                minijinja::context! { title => "x", message => "<script>alert(1)</script>" },
            )
            .unwrap();
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn override_dir_replaces_one_template_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("error.html"), "custom {{ message }}").unwrap();
        let t = Templates::new(Some(dir.path()), Branding::default()).unwrap();
        let html = t
            .render(
                "error.html",
                "",
                minijinja::context! { title => "t", message => "<b>" },
            )
            .unwrap();
        assert_eq!(html, "custom &lt;b&gt;");
        assert!(t
            .render(
                "choose.html",
                "",
                minijinja::context! { connectors => Vec::<(String, String)>::new(), req => "r" }
            )
            .is_ok());
    }

    #[test]
    fn extra_values_read_as_a_map_and_as_dex_s_function_escaped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("error.html"),
            "{{ extra.support }}|{{ extra(\"support\") }}|{{ extra(\"unset\") }}|{{ extra.unset is defined }}",
        )
        .unwrap();
        let branding = Branding {
            extra: BTreeMap::from([("support".to_string(), "<a>help</a>".to_string())]),
            ..Branding::default()
        };
        let t = Templates::new(Some(dir.path()), branding).unwrap();
        let html = t
            .render(
                "error.html",
                "",
                minijinja::context! { title => "t", message => "m" },
            )
            .unwrap();
        assert_eq!(
            html,
            "&lt;a&gt;help&lt;&#x2f;a&gt;|&lt;a&gt;help&lt;&#x2f;a&gt;||False"
        );
    }

    #[test]
    fn missing_override_dir_is_an_error_naming_it() {
        let err = Templates::new(Some(Path::new("/nonexistent/lanyard")), Branding::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/lanyard"));
    }
}
