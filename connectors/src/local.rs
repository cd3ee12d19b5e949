//! The local password connector (Dex's `local`, usually id "local"): users and password
//! hashes come from lanyard's own storage or from Dex-style `staticPasswords` in config.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::password_hash::PasswordHasher;
use crate::{
    ConnectorError, Identity, PasswordConnector, PendingPasswordLogin, RefreshConnector, Scopes,
};

/// A user with a local password.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub email: String,
    pub username: String,
    pub user_id: String,
    /// bcrypt or argon2id hash.
    pub hash: String,
    pub groups: Vec<String>,
    pub profile: LocalProfile,
}

/// Dex's optional claims of a static password user (`name`, `preferredUsername`,
/// `emailVerified`); `None` takes Dex's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalProfile {
    /// The `name` claim; the username when `None`.
    pub name: Option<String>,
    /// The `preferred_username` claim; the username when `None`.
    pub preferred_username: Option<String>,
    /// The `email_verified` claim; true when `None`, as in Dex.
    pub email_verified: Option<bool>,
}

impl fmt::Debug for LocalUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalUser")
            .field("email", &self.email)
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .field("hash", &"<redacted>")
            .field("groups", &self.groups)
            .field("profile", &self.profile)
            .finish()
    }
}

/// Where local users live (storage, or config's static passwords).
#[async_trait]
pub trait LocalUserDirectory: Send + Sync {
    /// Looks a user up by email (case-insensitive) or username.
    async fn find(&self, login: &str) -> Result<Option<LocalUser>, ConnectorError>;
}

/// An in-memory directory, for Dex's `staticPasswords` (and tests).
#[derive(Clone, Debug, Default)]
pub struct StaticUserDirectory {
    users: Vec<LocalUser>,
    by_email: HashMap<String, usize>,
    by_username: HashMap<String, usize>,
}

impl StaticUserDirectory {
    /// Fails when two users share an email (case-insensitively), a username or a user id,
    /// since a login could then match the wrong user.
    pub fn new(users: Vec<LocalUser>) -> Result<Self, ConnectorError> {
        let mut by_email = HashMap::new();
        let mut by_username = HashMap::new();
        let mut ids = HashMap::new();
        for (i, user) in users.iter().enumerate() {
            if by_email.insert(user.email.to_lowercase(), i).is_some() {
                return Err(ConnectorError::Config(format!(
                    "static password email {:?} is listed twice",
                    user.email
                )));
            }
            if !user.username.is_empty() && by_username.insert(user.username.clone(), i).is_some() {
                return Err(ConnectorError::Config(format!(
                    "static password username {:?} is listed twice",
                    user.username
                )));
            }
            if ids.insert(user.user_id.clone(), i).is_some() {
                return Err(ConnectorError::Config(format!(
                    "static password userID {:?} is listed twice",
                    user.user_id
                )));
            }
        }
        Ok(Self {
            users,
            by_email,
            by_username,
        })
    }

    pub fn users(&self) -> &[LocalUser] {
        &self.users
    }
}

#[async_trait]
impl LocalUserDirectory for StaticUserDirectory {
    async fn find(&self, login: &str) -> Result<Option<LocalUser>, ConnectorError> {
        let index = self
            .by_email
            .get(&login.to_lowercase())
            .or_else(|| self.by_username.get(login));
        Ok(index.and_then(|&i| self.users.get(i)).cloned())
    }
}

/// Domain-separated so the fingerprint cannot be confused with any other SHA-256 we store.
const FINGERPRINT_CONTEXT: &[u8] = b"lanyard local password hash fingerprint v1\0";

/// SHA-256 of the stored hash, kept in `Identity::connector_data` so that a refresh can tell
/// whether the password changed since login without keeping the hash itself around.
pub fn hash_fingerprint(hash: &str) -> Vec<u8> {
    Sha256::new()
        .chain_update(FINGERPRINT_CONTEXT)
        .chain_update(hash.trim().as_bytes())
        .finalize()
        .to_vec()
}

/// Dex's local password connector.
pub struct LocalConnector {
    directory: Arc<dyn LocalUserDirectory>,
    hasher: Arc<PasswordHasher>,
}

impl fmt::Debug for LocalConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnector")
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}

impl LocalConnector {
    pub fn new(directory: Arc<dyn LocalUserDirectory>, hasher: Arc<PasswordHasher>) -> Self {
        Self { directory, hasher }
    }

    fn identity(user: LocalUser, scopes: &Scopes) -> Identity {
        let fingerprint = hash_fingerprint(&user.hash);
        let profile = user.profile;
        Identity {
            user_id: user.user_id,
            preferred_username: profile
                .preferred_username
                .unwrap_or_else(|| user.username.clone()),
            username: profile.name.unwrap_or(user.username),
            email: user.email,
            email_verified: profile.email_verified.unwrap_or(true),
            groups: if scopes.groups {
                user.groups
            } else {
                Vec::new()
            },
            connector_data: Some(fingerprint),
        }
    }

    /// Burns one verification's worth of time; the answer is "no" either way.
    async fn reject(&self, password: &str) -> Result<Option<Identity>, ConnectorError> {
        self.hasher
            .verify_dummy(password)
            .await
            .map_err(|e| ConnectorError::Internal(e.to_string()))?;
        Ok(None)
    }

    /// Finds the user behind an identity issued earlier; the login names may have changed
    /// meaning since (an email reassigned to someone else), so the user id must match too.
    async fn current_user(&self, identity: &Identity) -> Result<Option<LocalUser>, ConnectorError> {
        for login in [&identity.email, &identity.username] {
            if login.is_empty() {
                continue;
            }
            if let Some(user) = self.directory.find(login).await? {
                if user.user_id == identity.user_id {
                    return Ok(Some(user));
                }
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl PasswordConnector for LocalConnector {
    fn prompt(&self) -> &str {
        "Email address"
    }

    /// The refusal clock starts here, so the lookup is inside the time a refusal is held to.
    async fn begin_login<'a>(
        &'a self,
        username: &str,
    ) -> Result<Box<dyn PendingPasswordLogin + 'a>, ConnectorError> {
        let started = std::time::Instant::now();
        // The directory matches the trimmed name: so does the key of an unknown name.
        let login = username.trim();
        // Empty input never reaches the directory.
        let user = if login.is_empty() {
            None
        } else {
            self.directory.find(login).await?
        };
        // The prefixes keep an unknown name from ever keying like an existing user's id.
        let account_key = match &user {
            Some(user) => format!("id:{}", user.user_id),
            None => format!("name:{}", login.to_lowercase()),
        };
        Ok(Box::new(PendingLocalLogin {
            connector: self,
            user,
            account_key,
            started,
        }))
    }
}

/// A local login between the directory lookup and the password check.
struct PendingLocalLogin<'a> {
    connector: &'a LocalConnector,
    user: Option<LocalUser>,
    account_key: String,
    started: std::time::Instant,
}

#[async_trait]
impl PendingPasswordLogin for PendingLocalLogin<'_> {
    fn account_key(&self) -> &str {
        &self.account_key
    }

    /// A refusal (unknown user, wrong password, empty input) is held to the hasher's failure
    /// floor, counted from the lookup, so it takes as long whichever kind of hash the user
    /// has, or whether there is one.
    async fn check(
        self: Box<Self>,
        scopes: &Scopes,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        let connector = self.connector;
        let outcome = connector.check_password(scopes, self.user, password).await;
        if matches!(outcome, Ok(None)) {
            connector.hasher.hold_failure(self.started).await;
        }
        outcome
    }

    async fn abandon(self: Box<Self>) {
        self.connector.hasher.hold_failure(self.started).await;
    }
}

impl LocalConnector {
    async fn check_password(
        &self,
        scopes: &Scopes,
        user: Option<LocalUser>,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        // Empty input and unknown names still cost a verification, so the response time does
        // not say which check failed.
        let Some(user) = user.filter(|_| !password.is_empty()) else {
            return self.reject(password).await;
        };
        match self.hasher.verify(&user.hash, password).await {
            Ok(true) => Ok(Some(Self::identity(user, scopes))),
            Ok(false) => Ok(None),
            Err(e) if e.is_bad_hash() => {
                // An operator problem; answering "wrong password" keeps the user's existence
                // private, and the log tells the operator which user to fix.
                tracing::error!(user_id = %user.user_id, error = %e, "stored password hash is unusable");
                self.reject(password).await
            }
            Err(e) => Err(ConnectorError::Internal(e.to_string())),
        }
    }
}

#[async_trait]
impl RefreshConnector for LocalConnector {
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        let Some(fingerprint) = identity.connector_data.as_deref() else {
            return Err(ConnectorError::SessionEnded(
                "local session has no password fingerprint".to_owned(),
            ));
        };
        let Some(user) = self.current_user(identity).await? else {
            return Err(ConnectorError::SessionEnded(
                "local user no longer exists".to_owned(),
            ));
        };
        let current = hash_fingerprint(&user.hash);
        if !bool::from(current.as_slice().ct_eq(fingerprint)) {
            return Err(ConnectorError::SessionEnded(
                "local user's password changed since login".to_owned(),
            ));
        }
        Ok(Self::identity(user, scopes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password_hash::tests::{fast_hasher, median};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    /// A directory whose contents tests can change between login and refresh, and which
    /// counts lookups.
    #[derive(Default)]
    struct MutableDirectory {
        users: Mutex<Vec<LocalUser>>,
        lookups: AtomicUsize,
    }

    impl MutableDirectory {
        fn set(&self, users: Vec<LocalUser>) {
            *self.users.lock().unwrap() = users;
        }
    }

    #[async_trait]
    impl LocalUserDirectory for MutableDirectory {
        async fn find(&self, login: &str) -> Result<Option<LocalUser>, ConnectorError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let users = self.users.lock().unwrap();
            Ok(users
                .iter()
                .find(|u| u.email.eq_ignore_ascii_case(login) || u.username == login)
                .cloned())
        }
    }

    const ALL: Scopes = Scopes {
        offline_access: true,
        groups: true,
    };
    const NO_GROUPS: Scopes = Scopes {
        offline_access: true,
        groups: false,
    };

    async fn setup() -> (
        Arc<MutableDirectory>,
        Arc<PasswordHasher>,
        LocalConnector,
        LocalUser,
    ) {
        let hasher = Arc::new(fast_hasher(2));
        let user = LocalUser {
            email: "Jane@Example.com".into(),
            username: "jane".into(),
            user_id: "08a8684b-db88-4b73-90a9-3cd1661f5466".into(),
            hash: hasher.hash("hunter22").await.unwrap(),
            groups: vec!["admins".into(), "dev".into()],
            profile: LocalProfile::default(),
        };
        let dir = Arc::new(MutableDirectory::default());
        dir.set(vec![user.clone()]);
        let conn = LocalConnector::new(dir.clone(), Arc::clone(&hasher));
        (dir, hasher, conn, user)
    }

    #[tokio::test]
    async fn correct_password_yields_identity_with_fingerprint() {
        let (_, _, conn, user) = setup().await;
        assert_eq!(conn.prompt(), "Email address");
        let id = conn
            .login(&ALL, "jane@example.com", "hunter22")
            .await
            .unwrap()
            .expect("login succeeds");
        assert_eq!(id.user_id, user.user_id);
        assert_eq!(id.username, "jane");
        assert_eq!(id.preferred_username, "jane");
        assert_eq!(id.email, "Jane@Example.com");
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["admins", "dev"]);
        assert_eq!(id.connector_data, Some(hash_fingerprint(&user.hash)));
        assert_eq!(id.connector_data.as_ref().map(Vec::len), Some(32));

        let by_username = conn.login(&ALL, "jane", "hunter22").await.unwrap();
        assert_eq!(by_username.map(|i| i.user_id), Some(user.user_id));
    }

    #[tokio::test]
    async fn groups_are_omitted_without_the_groups_scope() {
        let (_, _, conn, _) = setup().await;
        let id = conn
            .login(&NO_GROUPS, "jane", "hunter22")
            .await
            .unwrap()
            .unwrap();
        assert!(id.groups.is_empty());
        let refreshed = conn.refresh(&NO_GROUPS, &id).await.unwrap();
        assert!(refreshed.groups.is_empty());
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_both_none() {
        let (_, _, conn, _) = setup().await;
        assert!(conn.login(&ALL, "jane", "hunter2").await.unwrap().is_none());
        assert!(conn
            .login(&ALL, "nobody", "hunter22")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn dex_static_password_with_bcrypt_logs_in() {
        let hasher = Arc::new(fast_hasher(1));
        let dir = StaticUserDirectory::new(vec![LocalUser {
            email: "admin@example.com".into(),
            username: "admin".into(),
            user_id: "08a8684b-db88-4b73-90a9-3cd1661f5466".into(),
            hash: "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into(),
            groups: vec![],
            profile: LocalProfile::default(),
        }])
        .unwrap();
        let conn = LocalConnector::new(Arc::new(dir), hasher);
        let id = conn
            .login(&ALL, "ADMIN@example.com", "password")
            .await
            .unwrap();
        assert_eq!(id.map(|i| i.username), Some("admin".to_owned()));
        assert!(conn
            .login(&ALL, "admin@example.com", "passw0rd")
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn static_directory_rejects_duplicate_emails() {
        let u = LocalUser {
            email: "a@example.com".into(),
            username: "a".into(),
            user_id: "1".into(),
            hash: String::new(),
            groups: vec![],
            profile: LocalProfile::default(),
        };
        let mut dup = u.clone();
        dup.email = "A@EXAMPLE.COM".into();
        dup.username = "b".into();
        dup.user_id = "2".into();
        assert!(matches!(
            StaticUserDirectory::new(vec![u, dup]),
            Err(ConnectorError::Config(_))
        ));
    }

    #[tokio::test]
    async fn empty_input_is_rejected_with_a_hash_and_an_empty_name_without_a_lookup() {
        let (dir, hasher, conn, _) = setup().await;
        hasher.warm_up().await.unwrap();
        let before = hasher.completed();
        assert!(conn.login(&ALL, "  ", "hunter22").await.unwrap().is_none());
        assert_eq!(dir.lookups.load(Ordering::SeqCst), 0);
        assert!(conn.login(&ALL, "jane", "").await.unwrap().is_none());
        assert_eq!(
            hasher.completed() - before,
            2,
            "each rejection ran one dummy verification"
        );
    }

    #[tokio::test]
    async fn every_spelling_that_logs_in_has_the_same_account_key() {
        let (_, _, conn, _) = setup().await;
        let typed = [
            "jane@example.com",
            " jane@example.com",
            "jane@example.com\t",
            "\u{a0}JANE@Example.com\u{2003}",
        ];
        for t in typed {
            assert!(
                conn.login(&ALL, t, "hunter22").await.unwrap().is_some(),
                "{t:?}"
            );
            let key = conn.begin_login(t).await.unwrap().account_key().to_owned();
            assert_eq!(key, "id:08a8684b-db88-4b73-90a9-3cd1661f5466", "{t:?}");
        }
    }

    #[tokio::test]
    async fn the_username_and_the_email_of_one_user_share_the_account_key() {
        let (_, _, conn, user) = setup().await;
        let id_key = format!("id:{}", user.user_id);
        for name in ["jane", "jane@example.com", " JANE@example.com "] {
            let pending = conn.begin_login(name).await.unwrap();
            assert_eq!(pending.account_key(), id_key, "{name:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_name_keys_on_its_spelling_and_never_as_a_user_id() {
        let (_, _, conn, user) = setup().await;
        let key = |name: &'static str| {
            let conn = &conn;
            async move {
                conn.begin_login(name)
                    .await
                    .unwrap()
                    .account_key()
                    .to_owned()
            }
        };
        assert_eq!(key(" Ghost\t").await, "name:ghost");
        assert_eq!(key("\u{a0}Ghost ").await, "name:ghost");
        // An unknown name spelled like an id key still keys as a name.
        let lookalike = format!("id:{}", user.user_id);
        let pending = conn.begin_login(&lookalike).await.unwrap();
        assert_ne!(pending.account_key(), lookalike);
    }

    #[tokio::test]
    async fn a_login_refused_before_its_check_is_held_like_a_failed_one() {
        let (_, hasher, conn, _) = setup().await;
        hasher.warm_up().await.unwrap();
        let floor = hasher.failure_floor();
        assert!(!floor.is_zero());
        for name in ["jane", "ghost"] {
            let started = Instant::now();
            conn.begin_login(name).await.unwrap().abandon().await;
            assert!(
                started.elapsed() >= floor,
                "{name}: {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn unusable_stored_hash_reads_as_wrong_password() {
        let (dir, _, conn, mut user) = setup().await;
        user.hash = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".into();
        dir.set(vec![user]);
        assert!(conn
            .login(&ALL, "jane", "hunter22")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn unknown_user_takes_about_as_long_as_a_wrong_password() {
        let (_, hasher, conn, _) = setup().await;
        hasher.warm_up().await.unwrap();
        let (mut wrong, mut unknown, mut empty) = (Vec::new(), Vec::new(), Vec::new());
        // Many interleaved rounds and a wide band: other tests load the same cores, and the
        // failure this guards against (skipping the dummy hash) reads as ~0.0.
        for _ in 0..15 {
            let t = Instant::now();
            assert!(conn.login(&ALL, "jane", "nope").await.unwrap().is_none());
            wrong.push(t.elapsed());
            let t = Instant::now();
            assert!(conn.login(&ALL, "ghost", "nope").await.unwrap().is_none());
            unknown.push(t.elapsed());
            let t = Instant::now();
            assert!(conn.login(&ALL, "jane", "").await.unwrap().is_none());
            empty.push(t.elapsed());
        }
        let wrong = median(wrong).as_secs_f64();
        for (name, times) in [("unknown user", unknown), ("empty password", empty)] {
            let ratio = median(times).as_secs_f64() / wrong;
            assert!(
                (0.33..=3.0).contains(&ratio),
                "{name} / wrong password = {ratio:.2}"
            );
        }
    }

    #[tokio::test]
    async fn refresh_returns_current_groups_and_username() {
        let (dir, _, conn, mut user) = setup().await;
        let id = conn.login(&ALL, "jane", "hunter22").await.unwrap().unwrap();
        user.groups = vec!["dev".into(), "oncall".into()];
        user.username = "jane.doe".into();
        dir.set(vec![user.clone()]);
        let refreshed = conn.refresh(&ALL, &id).await.unwrap();
        assert_eq!(refreshed.groups, vec!["dev", "oncall"]);
        assert_eq!(refreshed.username, "jane.doe");
        assert_eq!(refreshed.preferred_username, "jane.doe");
        assert_eq!(refreshed.user_id, id.user_id);
        assert_eq!(refreshed.connector_data, id.connector_data);
    }

    #[tokio::test]
    async fn refresh_after_user_deleted_ends_session() {
        let (dir, _, conn, _) = setup().await;
        let id = conn.login(&ALL, "jane", "hunter22").await.unwrap().unwrap();
        dir.set(vec![]);
        assert!(matches!(
            conn.refresh(&ALL, &id).await,
            Err(ConnectorError::SessionEnded(_))
        ));
    }

    #[tokio::test]
    async fn refresh_after_email_reassigned_to_another_user_ends_session() {
        let (dir, hasher, conn, user) = setup().await;
        let id = conn.login(&ALL, "jane", "hunter22").await.unwrap().unwrap();
        dir.set(vec![LocalUser {
            user_id: "someone-else".into(),
            hash: hasher.hash("other").await.unwrap(),
            ..user
        }]);
        assert!(matches!(
            conn.refresh(&ALL, &id).await,
            Err(ConnectorError::SessionEnded(_))
        ));
    }

    #[tokio::test]
    async fn refresh_after_password_changed_ends_session() {
        let (dir, hasher, conn, mut user) = setup().await;
        let id = conn.login(&ALL, "jane", "hunter22").await.unwrap().unwrap();
        // Same password, new salt: still a changed credential record.
        user.hash = hasher.hash("hunter22").await.unwrap();
        dir.set(vec![user]);
        assert!(matches!(
            conn.refresh(&ALL, &id).await,
            Err(ConnectorError::SessionEnded(_))
        ));
    }

    #[tokio::test]
    async fn refresh_without_fingerprint_ends_session() {
        let (_, _, conn, _) = setup().await;
        let mut id = conn.login(&ALL, "jane", "hunter22").await.unwrap().unwrap();
        id.connector_data = None;
        assert!(matches!(
            conn.refresh(&ALL, &id).await,
            Err(ConnectorError::SessionEnded(_))
        ));
    }

    #[test]
    fn local_user_debug_redacts_hash() {
        let u = LocalUser {
            email: "a@example.com".into(),
            username: "a".into(),
            user_id: "1".into(),
            hash: "$2a$10$secretsecret".into(),
            groups: vec![],
            profile: LocalProfile::default(),
        };
        assert!(!format!("{u:?}").contains("secretsecret"));
    }
}
