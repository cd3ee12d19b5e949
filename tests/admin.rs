//! `lanyard admin`, run as the real binary against SQLite and PostgreSQL configs.

mod common {
    pub mod postgres;
}

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use lanyard::oidc::secrets::sha256_hex;
use lanyard::storage::{
    self, AccessToken, Grant, IssuedTokens, PostgresSettings, Session, SharedStorage,
    StorageSettings, UserClaims,
};
use tempfile::TempDir;

use common::postgres::TestDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
const STATIC_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

struct Backend {
    dir: TempDir,
    settings: StorageSettings,
    _postgres: Option<TestDatabase>,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lanyard.db");
        let storage = format!("  type: sqlite3\n  config:\n    file: {}\n", file.display());
        Self::write_config(&dir, &storage);
        Backend {
            dir,
            settings: StorageSettings::Sqlite { file },
            _postgres: None,
        }
    }

    async fn postgres() -> Option<Backend> {
        let db = common::postgres::fresh_database().await?;
        let dir = tempfile::tempdir().unwrap();
        let storage = format!(
            "  type: postgres\n  config:\n    connectionString: {}\n",
            db.url()
        );
        Self::write_config(&dir, &storage);
        Some(Backend {
            dir,
            settings: StorageSettings::Postgres(PostgresSettings {
                url: Some(db.url().to_string()),
                ..Default::default()
            }),
            _postgres: Some(db),
        })
    }

    fn write_config(dir: &TempDir, storage: &str) {
        let config = format!(
            r#"issuer: http://127.0.0.1:5556
storage:
{storage}web:
  http: 127.0.0.1:5556
logger:
  level: warn
enablePasswordDB: true
staticPasswords:
- email: Alice@example.com
  hash: "{STATIC_HASH}"
  username: alice
  userID: alice-id
staticClients:
- id: kubernetes
  name: Kubernetes
  secret: static-secret-value
  redirectURIs: ['https://k8s.example.com/callback']
"#
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Runs `lanyard admin ARGS` with `stdin`; the actor comes from $USER.
    fn admin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .arg("admin")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("USER", "ops-jane")
            .env_remove("LANYARD_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        let out = self.admin(args, stdin);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{args:?} failed: {stderr}");
        (stdout, stderr)
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.admin(args, "");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    async fn storage(&self) -> SharedStorage {
        storage::open(&self.settings).await.unwrap()
    }

    /// One text column of one row, read with SQL rather than through the storage trait.
    async fn column(&self, sql: &str, key: &str) -> Option<String> {
        match &self.settings {
            StorageSettings::Sqlite { file } => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
                    .await
                    .unwrap();
                sqlx::query_scalar(sql)
                    .bind(key)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
            StorageSettings::Postgres(pg) => {
                let pool = sqlx::PgPool::connect(pg.url.as_deref().unwrap())
                    .await
                    .unwrap();
                sqlx::query_scalar(sql)
                    .bind(key)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
            StorageSettings::Memory => unreachable!(),
        }
    }
}

/// An audit line names the actor, the action and the object.
fn assert_audited(stderr: &str, action: &str, object: &str) {
    assert!(
        stderr.lines().any(|l| l.contains("lanyard::audit")
            && l.contains("ops-jane")
            && l.contains(action)
            && l.contains(object)),
        "no audit line for {action} {object} in: {stderr}"
    );
}

macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::sqlite()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else { return };
                    super::$name(&backend).await;
                }
            )+
        }
    };
}

on_both!(
    client_secret_is_printed_once_and_stored_as_a_digest,
    clients_list_update_rotate_and_delete,
    static_clients_and_passwords_are_read_only,
    passwords_are_hashed_with_argon2id_and_never_logged,
    sessions_are_listed_and_revoked_per_user_and_client,
);

const DIGEST_SQL: &str = "SELECT secret_sha256 FROM clients WHERE id = $1";

async fn client_secret_is_printed_once_and_stored_as_a_digest(b: &Backend) {
    let (stdout, stderr) = b.ok(
        &[
            "clients",
            "create",
            "--id",
            "ci",
            "--name",
            "CI runner",
            "--redirect-uri",
            "https://ci.example.com/cb",
            "--grant-type",
            "client_credentials",
        ],
        "",
    );
    let secret = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    // 256 bits, base64url without padding.
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(secret
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    let stored = b.column(DIGEST_SQL, "ci").await;
    assert_eq!(stored.as_deref(), Some(sha256_hex(secret).as_str()));
    assert!(!stderr.contains(secret));
    assert_audited(&stderr, "client.create", "ci");

    // A public client has no secret at all.
    let (stdout, _) = b.ok(
        &[
            "clients",
            "create",
            "--id",
            "cli",
            "--public",
            "--redirect-uri",
            "http://127.0.0.1/cb",
        ],
        "",
    );
    assert_eq!(stdout, "");
    assert_eq!(b.column(DIGEST_SQL, "cli").await, None);

    // Ids are unique.
    let err = b.fails(&["clients", "create", "--id", "ci"]);
    assert!(err.contains("already exists"), "{err}");
}

async fn clients_list_update_rotate_and_delete(b: &Backend) {
    let (first, _) = b.ok(&["clients", "create", "--id", "web"], "");
    let (listing, _) = b.ok(&["clients", "list"], "");
    assert!(
        listing.contains("kubernetes\tKubernetes\tconfidential\tstatic\t"),
        "{listing}"
    );
    assert!(
        listing.contains("web\tweb\tconfidential\tstored\t"),
        "{listing}"
    );
    assert!(!listing.contains(first.trim()) && !listing.contains("static-secret-value"));

    let (out, stderr) = b.ok(
        &[
            "clients",
            "update",
            "--id",
            "web",
            "--name",
            "Web app",
            "--redirect-uri",
            "https://a.example.com/cb",
            "--redirect-uri",
            "https://b.example.com/cb",
        ],
        "",
    );
    assert_eq!(out, "");
    assert_audited(&stderr, "client.update", "web");
    let client = b.storage().await.get_client("web").await.unwrap().unwrap();
    assert_eq!(client.name, "Web app");
    assert_eq!(
        client.redirect_uris,
        ["https://a.example.com/cb", "https://b.example.com/cb"]
    );
    assert_eq!(client.secret_sha256, Some(sha256_hex(first.trim())));

    let (second, stderr) = b.ok(&["clients", "update", "--id", "web", "--rotate-secret"], "");
    assert_ne!(second.trim(), first.trim());
    assert_eq!(
        b.column(DIGEST_SQL, "web").await,
        Some(sha256_hex(second.trim()))
    );
    assert!(!stderr.contains(second.trim()));
    assert_audited(&stderr, "client.rotate_secret", "web");

    let err = b.fails(&["clients", "update", "--id", "nope", "--name", "x"]);
    assert!(err.contains("not found"), "{err}");
    let err = b.fails(&["clients", "create", "--id", "x", "--grant-type", "password"]);
    assert!(err.contains("unsupported grant type"), "{err}");

    let (_, stderr) = b.ok(&["clients", "delete", "--id", "web"], "");
    assert_audited(&stderr, "client.delete", "web");
    assert!(b.storage().await.get_client("web").await.unwrap().is_none());
    let err = b.fails(&["clients", "delete", "--id", "web"]);
    assert!(err.contains("not found"), "{err}");
}

async fn static_clients_and_passwords_are_read_only(b: &Backend) {
    for args in [
        &["clients", "create", "--id", "kubernetes"][..],
        &["clients", "update", "--id", "kubernetes", "--rotate-secret"],
        &["clients", "delete", "--id", "kubernetes"],
        &["passwords", "create", "--email", "alice@EXAMPLE.com"],
        &["passwords", "update", "--email", "alice@example.com"],
        &["passwords", "delete", "--email", "Alice@example.com"],
    ] {
        let err = b.fails(args);
        assert!(
            err.contains("read-only") && err.contains("config"),
            "{args:?}: {err}"
        );
    }
    assert!(b.storage().await.list_clients().await.unwrap().is_empty());
    assert!(b.storage().await.list_passwords().await.unwrap().is_empty());
}

async fn passwords_are_hashed_with_argon2id_and_never_logged(b: &Backend) {
    let password = "correct horse battery staple";
    let (_, stderr) = b.ok(
        &[
            "passwords",
            "create",
            "--email",
            "Bob@Example.com",
            "--username",
            "bob",
            "--group",
            "ops",
            "--group",
            "dev",
        ],
        &format!("{password}\n"),
    );
    assert!(!stderr.contains(password));
    assert_audited(&stderr, "password.create", "bob@example.com");
    let hash = b
        .column(
            "SELECT hash FROM passwords WHERE email = $1",
            "bob@example.com",
        )
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let hasher = lanyard_connectors::PasswordHasher::new();
    assert!(hasher.verify(&hash, password).await.unwrap());

    let (listing, _) = b.ok(&["passwords", "list"], "");
    assert!(
        listing.contains("Alice@example.com\talice\talice-id\t\tstatic"),
        "{listing}"
    );
    assert!(listing.contains("bob@example.com\tbob\t"), "{listing}");
    assert!(listing.contains("\tops,dev\tstored"), "{listing}");
    assert!(!listing.contains("$argon2id$") && !listing.contains(STATIC_HASH));

    // No password, no entry.
    let err = b.fails(&["passwords", "create", "--email", "carol@example.com"]);
    assert!(err.contains("no password"), "{err}");

    let (_, stderr) = b.ok(
        &[
            "passwords",
            "update",
            "--email",
            "bob@example.com",
            "--group",
            "admins",
            "--password-stdin",
        ],
        "new-password\n",
    );
    assert!(!stderr.contains("new-password"));
    assert_audited(&stderr, "password.update", "bob@example.com");
    let stored = b
        .storage()
        .await
        .get_password("bob@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.groups, ["admins"]);
    assert!(hasher.verify(&stored.hash, "new-password").await.unwrap());
    assert!(!hasher.verify(&stored.hash, password).await.unwrap());

    let (_, stderr) = b.ok(&["passwords", "delete", "--email", "BOB@example.com"], "");
    assert_audited(&stderr, "password.delete", "bob@example.com");
    assert!(b.storage().await.list_passwords().await.unwrap().is_empty());
}

fn user(id: &str, email: &str) -> UserClaims {
    UserClaims {
        user_id: id.into(),
        username: id.into(),
        preferred_username: id.into(),
        email: email.into(),
        email_verified: true,
        groups: vec![],
    }
}

async fn sessions_are_listed_and_revoked_per_user_and_client(b: &Backend) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = b.storage().await;
    let grants = [
        (
            "g-jane-kubectl",
            "kubectl",
            user("u-jane", "jane@example.com"),
        ),
        ("g-jane-web", "web", user("u-jane", "jane@example.com")),
        ("g-bob-web", "web", user("u-bob", "bob@example.com")),
    ];
    for (id, client, claims) in grants {
        let grant = Grant {
            id: id.into(),
            client_id: client.into(),
            connector_id: "github".into(),
            claims,
            scopes: vec!["openid".into()],
            nonce: None,
            auth_time: now,
            connector_data: None,
            created_at: now,
            revoked_at: None,
        };
        let access = AccessToken {
            token_hash: format!("at-{id}"),
            grant_id: id.into(),
            client_id: client.into(),
            created_at: now,
            expires_at: now + 3600,
        };
        s.issue_grant(
            &grant,
            &IssuedTokens {
                access,
                refresh: None,
            },
        )
        .await
        .unwrap();
    }
    for (id, claims) in [
        ("s-jane", user("u-jane", "jane@example.com")),
        ("s-bob", user("u-bob", "bob@example.com")),
    ] {
        s.create_session(&Session {
            id_hash: id.into(),
            connector_id: "github".into(),
            claims,
            connector_data: None,
            auth_time: now,
            created_at: now,
            expires_at: now + 3600,
            revoked_at: None,
        })
        .await
        .unwrap();
    }

    let (listing, _) = b.ok(&["sessions", "list", "--user", "JANE@example.com"], "");
    let kinds: Vec<&str> = listing
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(kinds, ["grant", "grant", "session"], "{listing}");
    assert!(listing.contains("g-jane-kubectl\tkubectl\tgithub\tu-jane\tjane@example.com"));
    assert!(!listing.contains("bob"));
    // Session ids are cookie digests: never printed.
    assert!(!listing.contains("s-jane"));

    let err = b.fails(&["sessions", "revoke"]);
    assert!(err.contains("--all-for-user"), "{err}");

    // One client: only that client's grants.
    let (out, stderr) = b.ok(
        &[
            "sessions",
            "revoke",
            "--client",
            "web",
            "--user",
            "bob@example.com",
        ],
        "",
    );
    assert_eq!(out, "revoked 1 grants and 0 sign-in sessions\n");
    assert_audited(&stderr, "sessions.revoke", "client:web");
    assert!(s
        .get_grant("g-bob-web")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s
        .get_session("s-bob")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    // Offboarding: everything of jane's, and nothing of bob's.
    let (out, stderr) = b.ok(
        &["sessions", "revoke", "--all-for-user", "jane@example.com"],
        "",
    );
    assert_eq!(out, "revoked 2 grants and 1 sign-in sessions\n");
    assert_audited(&stderr, "sessions.revoke_all_for_user", "jane@example.com");
    for id in ["g-jane-kubectl", "g-jane-web"] {
        assert!(s.get_grant(id).await.unwrap().unwrap().revoked_at.is_some());
        assert!(s
            .get_access_token(&format!("at-{id}"), now)
            .await
            .unwrap()
            .is_none());
    }
    assert!(s
        .get_session("s-jane")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s
        .get_session("s-bob")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    let (listing, _) = b.ok(&["sessions", "list", "--user", "jane@example.com"], "");
    assert_eq!(listing, "");
    let (listing, _) = b.ok(
        &["sessions", "list", "--user", "jane@example.com", "--all"],
        "",
    );
    assert_eq!(listing.lines().count(), 3, "{listing}");
}
