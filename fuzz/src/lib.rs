//! One lanyard provider per fuzzing process, on SQLite in a temporary directory, with the
//! clients the seeds name. Building it is slow, so it happens once; every input then runs
//! through the same code a request would.

use std::sync::{Arc, OnceLock};

use lanyard::config::Config;
use lanyard::oidc::Provider;
use lanyard::server::app::{self, BuildOptions};

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub provider: Arc<Provider>,
    /// A token the provider signed, for targets that mutate a valid one.
    pub signed_jwt: String,
    _dir: tempfile::TempDir,
}

/// The password is "password" (Dex's documented example hash).
const CONFIG: &str = r#"issuer: http://127.0.0.1:5556
storage:
  type: sqlite3
  config:
    file: DB_FILE
web:
  http: 127.0.0.1:5556
logger:
  level: error
keys:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
enablePasswordDB: true
oauth2:
  passwordConnector: local
staticPasswords:
- email: alice@example.com
  hash: "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W"
  username: alice
  userID: 08a8684b-db88-4b73-90a9-3cd1661f5466
staticClients:
- id: kubectl
  name: kubectl
  public: true
  redirectURIs: ['http://127.0.0.1:8000/callback']
- id: web
  name: Web
  secret: web-secret-with-enough-entropy
  redirectURIs: ['https://app.example.com/callback']
- id: robot
  name: Robot
  secret: robot-secret-with-enough-entropy
  grantTypes: [client_credentials]
"#;

/// The provider the targets drive, built once. The targets that use it build it in their
/// `init`, before libFuzzer starts timing inputs: in the unoptimised smoke build, generating
/// its first RSA key (a random prime search) took longer than a unit's 10 s timeout on a slow
/// machine, and the first input was reported as a hang.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fuzz.db");
        let yaml = CONFIG.replace("DB_FILE", &db.display().to_string());
        let config = Config::from_yaml_str(&yaml, &|_| None).expect("fuzz config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut options = BuildOptions::new(false);
        options.data_dir = dir.path().to_path_buf();
        let built = runtime
            .block_on(app::build(&config, options))
            .expect("build provider");
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), "http://127.0.0.1:5556".into());
        claims.insert("sub".into(), "fuzz".into());
        claims.insert("exp".into(), 4_102_444_800_i64.into());
        let signed_jwt = built.provider.keys.sign(&claims).expect("sign");
        Harness {
            runtime,
            provider: built.provider.clone(),
            signed_jwt,
            _dir: dir,
        }
    })
}

/// Inputs are bytes; the server only ever sees UTF-8 it has checked, and so do the targets.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
