//! A Dex `web/` directory as `frontend.dir`: its `static/` and `themes/<theme>/` files are
//! served at Dex's paths (`/static/…`, `/theme/…` under the issuer). Dex's Go templates in
//! `templates/` are not executed; lanyard renders its own pages with the theme's logo,
//! favicon and styles.

use std::path::{Component, Path, PathBuf};

use super::WebError;

/// Dex's default theme, and what it uses for its retired theme names.
pub const DEFAULT_THEME: &str = "light";

/// The asset directories of a Dex-style `frontend.dir`.
#[derive(Debug, Clone, Default)]
pub struct DexAssets {
    /// `<dir>/static`, when present.
    static_dir: Option<PathBuf>,
    /// `<dir>/themes/<theme>`, when the directory has themes.
    theme_dir: Option<PathBuf>,
    /// Which of the files Dex's header links exist, so pages link only those.
    pub has_main_css: bool,
    pub has_theme_styles: bool,
    pub has_favicon: bool,
    pub has_logo: bool,
}

/// A file to serve.
pub struct Asset {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

impl DexAssets {
    /// The assets of `dir` for `theme` (empty: Dex's default). A directory with `themes/` but
    /// not the chosen one is an error naming what exists; one without `themes/` or `static/`
    /// (lanyard's own template overrides only) has no assets.
    pub fn load(dir: &Path, theme: Option<&str>) -> Result<Self, WebError> {
        let theme = match theme {
            None | Some("") | Some("coreos") | Some("tectonic") => DEFAULT_THEME,
            Some(t) => t,
        };
        let static_dir = Some(dir.join("static")).filter(|d| d.is_dir());
        let themes = dir.join("themes");
        let theme_dir = if themes.is_dir() {
            if !is_plain_name(theme) {
                return Err(WebError::BadTheme {
                    theme: theme.to_string(),
                    dir: themes,
                });
            }
            let chosen = themes.join(theme);
            if !chosen.is_dir() {
                return Err(WebError::BadTheme {
                    theme: theme.to_string(),
                    dir: themes,
                });
            }
            Some(chosen)
        } else {
            None
        };
        if dir.join("templates").is_dir() {
            tracing::warn!(
                dir = %dir.display(),
                "frontend.dir: Dex's Go templates in templates/ are not executed; lanyard renders its own pages with the theme (override them with minijinja templates directly in frontend.dir)"
            );
        }
        let exists = |root: &Option<PathBuf>, file: &str| {
            root.as_ref().is_some_and(|r| r.join(file).is_file())
        };
        Ok(Self {
            has_main_css: exists(&static_dir, "main.css"),
            has_theme_styles: exists(&theme_dir, "styles.css"),
            has_favicon: exists(&theme_dir, "favicon.png"),
            has_logo: exists(&theme_dir, "logo.png"),
            static_dir,
            theme_dir,
        })
    }

    /// `/theme/{path}`.
    pub fn theme_file(&self, path: &str) -> Option<Asset> {
        read_under(self.theme_dir.as_deref()?, path)
    }

    /// `/static/{path}` (lanyard's own `style.css` and `copy.js` are routed before this).
    pub fn static_file(&self, path: &str) -> Option<Asset> {
        read_under(self.static_dir.as_deref()?, path)
    }
}

/// A theme is a directory name, never a path.
fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()
}

/// The file at `rel` under `root`, if `rel` stays inside it: only plain names (no `..`, no
/// root, no drive, no backslash or NUL), and the file found, symlinks resolved, must still
/// be under `root`.
fn read_under(root: &Path, rel: &str) -> Option<Asset> {
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel_path = Path::new(rel);
    if !rel_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let file = root.join(rel_path).canonicalize().ok()?;
    if !file.starts_with(&root) || !file.is_file() {
        return None;
    }
    let bytes = std::fs::read(&file).ok()?;
    Some(Asset {
        bytes,
        content_type: content_type(&file),
    })
}

fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("webp") => "image/webp",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("themes/light")).unwrap();
        std::fs::create_dir_all(dir.path().join("static/img")).unwrap();
        std::fs::write(dir.path().join("themes/light/styles.css"), "body{}").unwrap();
        std::fs::write(dir.path().join("static/img/a.svg"), "<svg/>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        dir
    }

    #[test]
    fn files_inside_are_served_and_nothing_outside() {
        let dir = web_dir();
        let assets = DexAssets::load(dir.path(), None).unwrap();
        assert!(assets.has_theme_styles && !assets.has_logo);
        let css = assets.theme_file("styles.css").unwrap();
        assert_eq!(css.content_type, "text/css; charset=utf-8");
        assert_eq!(
            assets.static_file("img/a.svg").unwrap().content_type,
            "image/svg+xml"
        );
        for bad in [
            "../secret.txt",
            "../../secret.txt",
            "/etc/passwd",
            "img/../../secret.txt",
            "..\\secret.txt",
            "",
            "img",
        ] {
            assert!(assets.static_file(bad).is_none(), "{bad}");
            assert!(assets.theme_file(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_directory_is_not_followed() {
        let dir = web_dir();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                dir.path().join("secret.txt"),
                dir.path().join("static/leak.txt"),
            )
            .unwrap();
            let assets = DexAssets::load(dir.path(), None).unwrap();
            assert!(assets.static_file("leak.txt").is_none());
        }
    }

    #[test]
    fn a_missing_or_path_like_theme_is_an_error_naming_the_themes_directory() {
        let dir = web_dir();
        for theme in ["dark", "../static", "light/../.."] {
            let err = DexAssets::load(dir.path(), Some(theme))
                .unwrap_err()
                .to_string();
            assert!(err.contains("themes"), "{err}");
        }
        assert!(DexAssets::load(dir.path(), Some("tectonic")).is_ok());
    }
}
