//! The token cache: one JSON file per issuer, client and scopes, guarded by an exclusive lock
//! on a `.lock` file beside it. kubectl starts the plugin once per request, often many at
//! once; holding the lock across "read → refresh or log in → write" makes those processes
//! share one login or one refresh instead of racing (and, with rotating refresh tokens,
//! revoking each other's sessions).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;

use super::LoginError;

/// A cached ID token is used until this many seconds before its expiry, so that it does not
/// expire between being handed to kubectl and reaching the apiserver.
pub const EXPIRY_SKEW_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub issuer: String,
    pub client_id: String,
    pub id_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The ID token's `exp`.
    pub expiry: UnixTime,
}

impl CacheEntry {
    /// Whether the ID token may still be handed out at `now`.
    pub fn fresh_at(&self, now: UnixTime) -> bool {
        now.saturating_add(EXPIRY_SKEW_SECS) < self.expiry
    }
}

/// The cache file's name (without extension): hex SHA-256 of issuer, client id and scopes,
/// one per line, scopes joined by single spaces in the order given.
pub fn cache_key(issuer: &str, client_id: &str, scopes: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(issuer.as_bytes());
    h.update(b"\n");
    h.update(client_id.as_bytes());
    h.update(b"\n");
    h.update(scopes.join(" ").as_bytes());
    hex::encode(h.finalize())
}

/// `$XDG_CACHE_HOME/lanyard`, else `$HOME/.cache/lanyard`.
pub fn default_cache_dir(
    xdg_cache_home: Option<&Path>,
    home: Option<&Path>,
) -> Result<PathBuf, LoginError> {
    // The XDG spec says relative paths are invalid and must be ignored.
    if let Some(xdg) = xdg_cache_home.filter(|p| p.is_absolute()) {
        return Ok(xdg.join("lanyard"));
    }
    match home.filter(|p| !p.as_os_str().is_empty()) {
        Some(home) => Ok(home.join(".cache").join("lanyard")),
        None => Err(LoginError::NoCacheDir),
    }
}

pub struct Cache {
    dir: PathBuf,
    key: String,
}

impl Cache {
    pub fn new(dir: PathBuf, key: String) -> Self {
        Self { dir, key }
    }

    pub fn entry_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.key))
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.key))
    }

    /// Creates the cache directory (0700) and takes the exclusive lock, waiting for another
    /// process that holds it (and telling the person why nothing happens meanwhile).
    pub async fn lock(&self) -> Result<CacheLock, LoginError> {
        ensure_private_dir(&self.dir)?;
        let lock_path = self.lock_path();
        let file = open_private(&lock_path, false).map_err(|e| LoginError::Cache {
            path: lock_path.clone(),
            detail: e.to_string(),
        })?;
        let file = match fs4::FileExt::try_lock(&file) {
            Ok(()) => file,
            Err(fs4::TryLockError::WouldBlock) => {
                eprintln!(
                    "lanyard: waiting for another lanyard process using {} to finish",
                    self.entry_path().display()
                );
                let path = lock_path.clone();
                tokio::task::spawn_blocking(move || fs4::FileExt::lock(&file).map(|()| file))
                    .await
                    .map_err(|e| LoginError::Cache {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?
                    .map_err(|e| LoginError::Cache {
                        path,
                        detail: format!("cannot lock: {e}"),
                    })?
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(LoginError::Cache {
                    path: lock_path,
                    detail: format!("cannot lock: {e}"),
                })
            }
        };
        Ok(CacheLock {
            _file: file,
            dir: self.dir.clone(),
            entry: self.entry_path(),
        })
    }
}

/// Proof that this process holds the cache lock; dropping it closes the file, which releases
/// the lock.
pub struct CacheLock {
    _file: File,
    dir: PathBuf,
    entry: PathBuf,
}

impl CacheLock {
    /// The cached entry; a file that is unreadable as an entry counts as no entry (it is
    /// rewritten after the next login).
    pub fn read(&self) -> Result<Option<CacheEntry>, LoginError> {
        let bytes = match std::fs::read(&self.entry) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LoginError::Cache {
                    path: self.entry.clone(),
                    detail: e.to_string(),
                })
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) => {
                eprintln!(
                    "lanyard: ignoring the unreadable cache file {}: {e}",
                    self.entry.display()
                );
                Ok(None)
            }
        }
    }

    /// Replaces the entry atomically (a private temporary file renamed over it), so that a
    /// crash never leaves half a file and the tokens are never readable by others.
    pub fn write(&self, entry: &CacheEntry) -> Result<(), LoginError> {
        let err = |detail: String| LoginError::Cache {
            path: self.entry.clone(),
            detail,
        };
        let body = serde_json::to_vec_pretty(entry).map_err(|e| err(e.to_string()))?;
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}",
            self.entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        // A leftover from a crashed process with the same pid would make create_new fail.
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let mut file = open_private(&tmp, true)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.entry)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e.to_string()));
        }
        Ok(())
    }

    pub fn remove(&self) -> Result<(), LoginError> {
        match std::fs::remove_file(&self.entry) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LoginError::Cache {
                path: self.entry.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

fn open_private(path: &Path, create_new: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Creates the directory with mode 0700, and takes group and other access away from an
/// existing one: it holds refresh tokens.
fn ensure_private_dir(dir: &Path) -> Result<(), LoginError> {
    let err = |e: std::io::Error| LoginError::CacheDir {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn entry(expiry: UnixTime) -> CacheEntry {
        CacheEntry {
            issuer: "https://login.example.com".into(),
            client_id: "kubectl".into(),
            id_token: "a.b.c".into(),
            refresh_token: Some("r".into()),
            expiry,
        }
    }

    #[test]
    fn a_token_is_fresh_until_the_skew_before_its_expiry() {
        let clock = ManualClock::new(1_000_000);
        let e = entry(1_000_000 + 3600);
        assert!(e.fresh_at(clock.now()));
        clock.advance(3600 - EXPIRY_SKEW_SECS - 1);
        assert!(e.fresh_at(clock.now()), "61s left is still fresh");
        clock.advance(1);
        assert!(!e.fresh_at(clock.now()), "60s left is refreshed");
        clock.advance(EXPIRY_SKEW_SECS + 10);
        assert!(!e.fresh_at(clock.now()), "expired");
    }

    #[test]
    fn the_key_depends_on_issuer_client_and_scopes() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = cache_key("https://i", "kubectl", &s(&["openid", "email"]));
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            hex::encode(Sha256::digest(b"https://i\nkubectl\nopenid email"))
        );
        assert_ne!(
            a,
            cache_key("https://j", "kubectl", &s(&["openid", "email"]))
        );
        assert_ne!(a, cache_key("https://i", "other", &s(&["openid", "email"])));
        assert_ne!(a, cache_key("https://i", "kubectl", &s(&["openid"])));
    }

    #[test]
    fn the_default_directory_follows_xdg_then_home() {
        assert_eq!(
            default_cache_dir(Some(Path::new("/x/cache")), Some(Path::new("/home/a"))).unwrap(),
            PathBuf::from("/x/cache/lanyard")
        );
        assert_eq!(
            default_cache_dir(Some(Path::new("relative")), Some(Path::new("/home/a"))).unwrap(),
            PathBuf::from("/home/a/.cache/lanyard")
        );
        assert_eq!(
            default_cache_dir(None, Some(Path::new("/home/a"))).unwrap(),
            PathBuf::from("/home/a/.cache/lanyard")
        );
        assert!(matches!(
            default_cache_dir(None, None),
            Err(LoginError::NoCacheDir)
        ));
    }

    #[tokio::test]
    async fn entries_are_written_privately_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("lanyard");
        let cache = Cache::new(cache_dir.clone(), "k".into());
        let lock = cache.lock().await.unwrap();
        assert_eq!(lock.read().unwrap(), None);
        lock.write(&entry(42)).unwrap();
        assert_eq!(lock.read().unwrap(), Some(entry(42)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&cache.entry_path()), 0o600);
            assert_eq!(mode(&cache_dir), 0o700);
        }
        std::fs::write(cache.entry_path(), b"not json").unwrap();
        assert_eq!(lock.read().unwrap(), None, "a broken file is no entry");
        lock.remove().unwrap();
        assert!(!cache.entry_path().exists());
        // Only the lock file and nothing else is left behind.
        let names: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["k.lock".to_string()]);
    }

    #[tokio::test]
    async fn the_lock_excludes_a_second_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), "k".into());
        let first = cache.lock().await.unwrap();
        let second = Cache::new(dir.path().to_path_buf(), "k".into());
        let waiting = tokio::spawn(async move { second.lock().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the second lock waits");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the second lock is granted after release")
            .unwrap()
            .unwrap();
    }
}
