//! `lanyard admin`, run as the real binary against SQLite and PostgreSQL configs.

use crate::common;

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
use common::process::BIN;
use common::server::free_port;

const STATIC_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const PUBLIC_REDIRECT: &str = "http://127.0.0.1:8000/callback";

struct Backend {
    dir: TempDir,
    settings: StorageSettings,
    /// Where a server started on this config listens.
    port: u16,
    _postgres: Option<TestDatabase>,
}

impl Backend {
    async fn open(kind: common::server::Backend) -> Option<Backend> {
        match kind {
            common::server::Backend::Sqlite => Some(Self::sqlite()),
            common::server::Backend::Postgres => Self::postgres().await,
        }
    }

    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lanyard.db");
        let storage = format!("  type: sqlite3\n  config:\n    file: {}\n", file.display());
        let port = free_port();
        Self::write_config(&dir, &storage, port);
        Backend {
            dir,
            settings: StorageSettings::Sqlite { file },
            port,
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
        let port = free_port();
        Self::write_config(&dir, &storage, port);
        Some(Backend {
            dir,
            settings: StorageSettings::Postgres(PostgresSettings {
                url: Some(db.url().to_string()),
                ..Default::default()
            }),
            port,
            _postgres: Some(db),
        })
    }

    fn write_config(dir: &TempDir, storage: &str, port: u16) {
        let config = format!(
            r#"issuer: http://127.0.0.1:{port}
storage:
{storage}web:
  http: 127.0.0.1:{port}
logger:
  level: warn
keys:
  algorithm: ES256
  publishAhead: 2m
  pollInterval: 1s
  encryptionKey: {KEK}
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
- id: kubectl
  public: true
  redirectURIs: ['{PUBLIC_REDIRECT}']
"#
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Runs `lanyard admin ARGS` with `stdin`; the actor comes from $USER.
    fn admin(&self, args: &[&str], stdin: &str) -> Output {
        self.admin_with(&self.config(), args, stdin)
    }

    /// Like [`admin`](Self::admin) with another config file, in the backend's directory.
    fn admin_with(&self, config: &std::path::Path, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .arg("admin")
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(self.dir.path())
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

    fn ok_with(&self, config: &std::path::Path, args: &[&str]) -> (String, String) {
        let out = self.admin_with(config, args, "");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{args:?} failed: {stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
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

on_both!(
    fixture = Backend::open;
    client_secret_is_printed_once_and_stored_as_a_digest,
    clients_list_update_rotate_and_delete,
    static_clients_and_passwords_are_read_only,
    passwords_are_hashed_with_argon2id_and_never_logged,
    sessions_are_listed_and_revoked_per_user_and_client,
    keys_are_listed_rotated_and_retired_with_audit_lines,
    key_rotation_refuses_a_key_encryption_key_the_keys_were_not_sealed_with,
    a_running_server_drops_a_retired_key_and_signs_with_the_new_one,
    clients_with_script_or_file_redirect_uris_are_refused,
    passwords_shorter_than_eight_characters_are_refused,
    connectors_are_created_checked_sealed_listed_and_deleted,
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
    let err = b.fails(&["clients", "create", "--id", "x", "--grant-type", "implicit"]);
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

async fn clients_with_script_or_file_redirect_uris_are_refused(b: &Backend) {
    for uri in [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
    ] {
        let err = b.fails(&["clients", "create", "--id", "evil", "--redirect-uri", uri]);
        assert!(err.contains("\"evil\"") && err.contains(uri), "{err}");
        let err = b.fails(&[
            "clients",
            "create",
            "--id",
            "evil",
            "--public",
            "--post-logout-redirect-uri",
            uri,
        ]);
        assert!(err.contains(uri), "{err}");
    }
    assert!(b.storage().await.list_clients().await.unwrap().is_empty());

    // Native apps' reverse-domain schemes and Dex's out-of-band URI stay allowed.
    for (id, uri) in [
        ("native", "com.example.app:/callback"),
        ("oob", "urn:ietf:wg:oauth:2.0:oob"),
    ] {
        b.ok(
            &[
                "clients",
                "create",
                "--id",
                id,
                "--public",
                "--redirect-uri",
                uri,
            ],
            "",
        );
    }
    let err = b.fails(&[
        "clients",
        "update",
        "--id",
        "native",
        "--redirect-uri",
        "javascript:alert(1)",
    ]);
    assert!(err.contains("javascript:alert(1)"), "{err}");
    let native = b
        .storage()
        .await
        .get_client("native")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(native.redirect_uris, ["com.example.app:/callback"]);
}

async fn passwords_shorter_than_eight_characters_are_refused(b: &Backend) {
    for short in ["x", "seven77"] {
        let out = b.admin(
            &["passwords", "create", "--email", "dan@example.com"],
            &format!("{short}\n"),
        );
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("at least 8 characters"), "{err}");
        assert!(!err.contains(short), "{err}");
    }
    assert!(b.storage().await.list_passwords().await.unwrap().is_empty());
    b.ok(
        &["passwords", "create", "--email", "dan@example.com"],
        "eight888\n",
    );
    let out = b.admin(
        &[
            "passwords",
            "update",
            "--email",
            "dan@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!out.status.success());
    let stored = b
        .storage()
        .await
        .get_password("dan@example.com")
        .await
        .unwrap()
        .unwrap();
    let hasher = lanyard_connectors::PasswordHasher::new();
    assert!(hasher.verify(&stored.hash, "eight888").await.unwrap());
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
            scopes: None,
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

/// `keys list` as (kid, state, published until), one per key.
fn key_lines(b: &Backend) -> Vec<(String, String, String)> {
    let (out, _) = b.ok(&["keys", "list"], "");
    out.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                f.len(),
                6,
                "kid, alg, state, created, signs from, published until: {line}"
            );
            assert_eq!(f[1], "ES256");
            (f[0].to_string(), f[2].to_string(), f[5].to_string())
        })
        .collect()
}

/// The kid a `keys rotate` printed as the new signing key.
fn signing_now(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("signing now: "))
        .unwrap_or_else(|| panic!("no new key in: {stdout}"))
        .to_string()
}

fn only_signing(kid: &str) -> Vec<(String, String, String)> {
    vec![(kid.to_string(), "signing".to_string(), "-".to_string())]
}

async fn keys_are_listed_rotated_and_retired_with_audit_lines(b: &Backend) {
    assert_eq!(key_lines(b), []);
    // On an empty store a rotation makes the first key.
    let (out, stderr) = b.ok(&["keys", "rotate"], "");
    let a = signing_now(&out);
    assert_audited(&stderr, "key.rotate", &a);
    assert_eq!(key_lines(b), only_signing(&a));

    // The only signing key cannot go on its own; nothing is written.
    let err = b.fails(&["keys", "retire", &a]);
    assert!(
        err.contains(&format!("refusing to retire {a}"))
            && err.contains("only key signing")
            && err.contains("--rotate"),
        "{err}"
    );
    assert_eq!(key_lines(b), only_signing(&a));

    // Emergency rotation: the new key signs now, the old one stays published for its tokens.
    // (Within the second the old key started in, the new one would sign from the next.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (out, stderr) = b.ok(&["keys", "rotate"], "");
    let c = signing_now(&out);
    assert!(
        out.contains(&format!("{a} no longer signs; published until")),
        "{out}"
    );
    assert_audited(&stderr, "key.rotate", &c);
    let keys = key_lines(b);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        (keys[0].0.as_str(), keys[0].1.as_str()),
        (a.as_str(), "retired-published")
    );
    assert_ne!(
        keys[0].2, "-",
        "a retired key is published until a known time"
    );
    assert_eq!(keys[1], only_signing(&c)[0]);

    // A compromised retired key goes at once.
    let (out, stderr) = b.ok(&["keys", "retire", &a], "");
    assert!(
        out.contains(&format!("retired {a} (was retired-published)")),
        "{out}"
    );
    assert_audited(&stderr, "key.retire", &a);
    assert_eq!(key_lines(b), only_signing(&c));

    // The signing key goes together with a new one.
    let (out, stderr) = b.ok(&["keys", "retire", &c, "--rotate"], "");
    let d = signing_now(&out);
    assert_audited(&stderr, "key.rotate", &d);
    assert_audited(&stderr, "key.retire", &c);
    assert_eq!(key_lines(b), only_signing(&d));

    let (out, stderr) = b.ok(&["keys", "rotate", "--retire-previous"], "");
    let e = signing_now(&out);
    assert_audited(&stderr, "key.retire", &d);
    assert_eq!(key_lines(b), only_signing(&e));

    let err = b.fails(&["keys", "retire", "no-such-kid"]);
    assert!(err.contains("no signing key has the kid"), "{err}");
    // Audit lines name keys, never their material.
    let sealed = b
        .storage()
        .await
        .list_signing_keys()
        .await
        .unwrap()
        .remove(0)
        .private_key_enc;
    assert!(!stderr.contains(&hex_of(&sealed)));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn key_rotation_refuses_a_key_encryption_key_the_keys_were_not_sealed_with(b: &Backend) {
    let (out, _) = b.ok(&["keys", "rotate"], "");
    let a = signing_now(&out);
    let text = std::fs::read_to_string(b.config()).unwrap();

    let other = b.dir.path().join("other-kek.yaml");
    std::fs::write(
        &other,
        text.replace(KEK, "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
    )
    .unwrap();
    let out = b.admin_with(&other, &["keys", "rotate"], "");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot decrypt signing key {a}")),
        "{err}"
    );
    assert_eq!(key_lines(b), only_signing(&a));

    // Without a configured key the tool will not invent one the servers do not have.
    let none = b.dir.path().join("no-kek.yaml");
    std::fs::write(
        &none,
        text.replace(&format!("  encryptionKey: {KEK}\n"), ""),
    )
    .unwrap();
    let out = b.admin_with(&none, &["keys", "rotate"], "");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains("sets no keys.encryptionKey"), "{err}");
    assert!(!b.dir.path().join("encryption-key").exists());
    assert!(!b.dir.path().join("lanyard-data").exists());
    assert_eq!(key_lines(b), only_signing(&a));
    // Listing and retiring need no key-encryption key.
    let (listing, _) = b.ok_with(&none, &["keys", "list"]);
    assert!(listing.starts_with(&a), "{listing}");
}

async fn jwks_kids(issuer: &str) -> Vec<String> {
    let jwks: serde_json::Value = reqwest::get(format!("{issuer}/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The kid in the header of a fresh ID token from a login at `site`.
async fn id_token_kid(site: &common::server::Site) -> String {
    let req = common::server::AuthRequest {
        client_id: "kubectl".into(),
        redirect_uri: PUBLIC_REDIRECT.into(),
        ..common::server::AuthRequest::public()
    };
    let code = site
        .code_for_as(&req, "Alice@example.com", "password")
        .await;
    let tokens: serde_json::Value = site.redeem(&req, &code).await.json().await.unwrap();
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap()
}

async fn a_running_server_drops_a_retired_key_and_signs_with_the_new_one(b: &Backend) {
    let _server = common::process::Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(b.config())
            .current_dir(b.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let issuer = format!("http://127.0.0.1:{}", b.port);
    common::process::wait_ready(&format!("{issuer}/healthz")).await;
    let site = common::server::Site::new(issuer.clone());
    let a = id_token_kid(&site).await;
    assert_eq!(jwks_kids(&issuer).await, [a.as_str()]);

    let (out, _) = b.ok(&["keys", "retire", &a, "--rotate"], "");
    let d = signing_now(&out);

    // keys.pollInterval is 1s: the server picks the change up without a restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let kids = jwks_kids(&issuer).await;
        if kids == [d.as_str()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retired key is still published: {kids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(id_token_kid(&site).await, d);
}

const CONNECTOR_CONFIG_SQL: &str = "SELECT config FROM connectors WHERE id = $1";

async fn connectors_are_created_checked_sealed_listed_and_deleted(b: &Backend) {
    let ldap = r#"{"host": "ldap.example.com:636", "bindDN": "cn=reader", "bindPW": "bind-SECRET",
        "userSearch": {"baseDN": "ou=people,dc=example,dc=org", "username": "uid"}}"#;
    // The config comes on stdin, so its secret never is on a command line.
    let (_, stderr) = b.ok(
        &[
            "connectors",
            "create",
            "--id",
            "corp",
            "--type",
            "ldap",
            "--name",
            "Corp",
            "--config-file",
            "-",
        ],
        ldap,
    );
    assert_audited(&stderr, "connector.create", "connector:corp type:ldap");
    assert!(!stderr.contains("bind-SECRET"), "{stderr}");
    let sealed = b.column(CONNECTOR_CONFIG_SQL, "corp").await.unwrap();
    assert!(
        sealed.starts_with("kek1.") && !sealed.contains("bind-SECRET"),
        "{sealed}"
    );

    // Listed with the password database (static) and never with its config.
    let (stdout, _) = b.ok(&["connectors", "list"], "");
    assert_eq!(
        stdout,
        "corp\tldap\tCorp\tstored\t1\nlocal\tlocal\tEmail\tstatic\t0\n"
    );

    // Checked as the config file's connectors are: nothing changes on a refusal.
    let out = b.admin(
        &["connectors", "update", "--id", "corp", "--config-file", "-"],
        r#"{"host": "ldap.example.com:636"}"#,
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.contains("invalid config supplied") && stderr.contains("config.userSearch.baseDN"),
        "{stderr}"
    );
    let (stdout, stderr) = b.ok(
        &[
            "connectors",
            "update",
            "--id",
            "corp",
            "--name",
            "Corporate",
        ],
        "",
    );
    assert_eq!(stdout, "corp\tversion 2\n");
    assert_audited(&stderr, "connector.update", "connector:corp");
    let err = b.fails(&["connectors", "delete", "--id", "local"]);
    assert!(err.contains("read-only"), "{err}");

    let (_, stderr) = b.ok(&["connectors", "delete", "--id", "corp"], "");
    assert_audited(&stderr, "connector.delete", "connector:corp");
    let (stdout, _) = b.ok(&["connectors", "list"], "");
    assert_eq!(stdout, "local\tlocal\tEmail\tstatic\t0\n");
    assert!(b
        .fails(&["connectors", "delete", "--id", "corp"])
        .contains("not found"));
}
