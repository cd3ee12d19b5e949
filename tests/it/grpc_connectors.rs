//! Connectors created through Dex's gRPC API on one replica are served by every replica at
//! once: two `lanyard serve` processes on one PostgreSQL database, the connector created,
//! changed and deleted through one's API and signed in through the other, neither restarted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lanyard::api::proto::{self, dex_client::DexClient};
use serde_json::json;

use crate::common::postgres::fresh_database;
use crate::common::process::{wait_ready, Running, BIN};
use crate::common::server::{free_port, hidden_field, location, query_param, TestServer};

const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const CLIENT: &str = "app";
const CLIENT_SECRET: &str = "app-secret-0123456789abcdef";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Replica {
    _process: Running,
    issuer: String,
    grpc: String,
}

impl Replica {
    async fn start(dir: &Path, name: &str, database_url: &str) -> Replica {
        let (web, grpc) = (free_port(), free_port());
        let issuer = format!("http://127.0.0.1:{web}");
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                r#"issuer: {issuer}
storage:
  type: postgres
  config:
    connectionString: {database_url}?sslmode=disable
web:
  http: 127.0.0.1:{web}
grpc:
  addr: 127.0.0.1:{grpc}
keys:
  encryptionKey: {ENCRYPTION_KEY}
oauth2:
  skipApprovalScreen: true
staticClients:
- id: {CLIENT}
  secret: {CLIENT_SECRET}
  redirectURIs: ['{REDIRECT}']
connectors:
- type: mockCallback
  id: static-mock
  name: Static Mock
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let process = Running(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .current_dir(dir)
                .env("DEX_API_CONNECTORS_CRUD", "true")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
        wait_ready(&format!("{issuer}/.well-known/openid-configuration")).await;
        Replica {
            _process: process,
            issuer,
            grpc: format!("http://127.0.0.1:{grpc}"),
        }
    }

    /// A stub of Dex's API on this replica, generated from proto/api.proto, over plain HTTP/2.
    fn api(
        &self,
    ) -> DexClient<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic::body::Body,
        >,
    > {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        DexClient::with_origin(http, self.grpc.parse().unwrap())
    }

    /// Signs in through the mockPassword connector `connector`; the code, or the status of
    /// the answer that ended the flow.
    async fn sign_in(&self, connector: &str, password: &str) -> Result<String, u16> {
        let browser = TestServer::new_browser();
        let resp = browser
            .get(format!("{}/auth", self.issuer))
            .query(&auth_query(Some(connector)))
            .send()
            .await
            .unwrap();
        if resp.status() != 303 {
            return Err(resp.status().as_u16());
        }
        let next = location(&resp);
        if next.starts_with(REDIRECT) {
            return Err(400);
        }
        let form_url = format!("{}{}", self.issuer, next);
        let form = browser.get(&form_url).send().await.unwrap();
        if form.status() != 200 {
            return Err(form.status().as_u16());
        }
        let csrf = hidden_field(&form.text().await.unwrap(), "csrf").unwrap();
        let resp = browser
            .post(&form_url)
            .form(&[
                ("csrf", csrf.as_str()),
                ("login", "kilgore"),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        if resp.status() != 303 {
            return Err(resp.status().as_u16());
        }
        query_param(&location(&resp), "code").ok_or(303)
    }

    /// Where /auth leads without `connector_id`: 303 and the Location when it goes straight
    /// to a connector; the connector chooser's status and page otherwise.
    async fn auth_without_connector(&self) -> (u16, String) {
        let browser = TestServer::new_browser();
        let resp = browser
            .get(format!("{}/auth", self.issuer))
            .query(&auth_query(None))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let next = location(&resp);
        if !next.contains("/login?") {
            return (303, next);
        }
        // The connector chooser.
        let page = browser
            .get(format!("{}{next}", self.issuer))
            .send()
            .await
            .unwrap();
        (page.status().as_u16(), page.text().await.unwrap())
    }

    async fn redeem(&self, code: &str) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(CLIENT, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// The /auth parameters of the static client, naming `connector` if given.
fn auth_query(connector: Option<&str>) -> Vec<(&'static str, &str)> {
    let mut query = vec![
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("state", "s"),
    ];
    query.extend(connector.map(|c| ("connector_id", c)));
    query
}

fn mock_password(password: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"username": "kilgore", "password": password})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_created_through_one_replica_signs_in_through_the_other_without_a_restart() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::start(dir.path(), "a", db.url()).await;
    let b = Replica::start(dir.path(), "b", db.url()).await;

    // b serves its own config's connectors and knows nothing of api-mock yet: it has no such
    // connector, and asking for it is refused.
    assert!(b.sign_in("api-mock", "first-pass-123").await.is_err());

    let created = a
        .api()
        .create_connector(proto::CreateConnectorReq {
            connector: Some(proto::Connector {
                id: "api-mock".into(),
                r#type: "mockPassword".into(),
                name: "API Mock".into(),
                config: mock_password("first-pass-123"),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_exists);

    // b offers it beside its own connector, without a restart.
    let (status, chooser) = b.auth_without_connector().await;
    assert_eq!(status, 200);
    assert!(chooser.contains("/auth/api-mock?"), "{chooser}");
    assert!(chooser.contains("/auth/static-mock?"), "{chooser}");
    let code = b
        .sign_in("api-mock", "first-pass-123")
        .await
        .expect("b signs in through the connector a created");
    let tokens = b.redeem(&code).await;
    let claims = crate::common::server::claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["iss"], b.issuer.as_str());
    // Dex's subject: protobuf{1: user id, 2: connector id}, base64url.
    let subject = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims["sub"].as_str().unwrap(),
    )
    .unwrap();
    assert!(subject.windows(8).any(|w| w == b"api-mock"), "{subject:?}");

    // A change through a is what b serves next.
    let updated = a
        .api()
        .update_connector(proto::UpdateConnectorReq {
            id: "api-mock".into(),
            new_config: mock_password("second-pass-456"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.not_found);
    assert_eq!(b.sign_in("api-mock", "first-pass-123").await, Err(401));
    assert!(b.sign_in("api-mock", "second-pass-456").await.is_ok());

    // Deleted through a: b stops offering it.
    let deleted = a
        .api()
        .delete_connector(proto::DeleteConnectorReq {
            id: "api-mock".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.not_found);
    assert!(b.sign_in("api-mock", "second-pass-456").await.is_err());
    // With only the config file's connector left, /auth goes straight to it.
    let (status, answer) = b.auth_without_connector().await;
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("/auth/static-mock?"), "{answer}");
}
