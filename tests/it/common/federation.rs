//! Two real lanyard servers over HTTP: a downstream whose `oidc` connector federates to an
//! upstream lanyard, and a browser that walks from one to the other and back.
//!
//! Both listen on 127.0.0.1 (cookies ignore ports), so each has its own issuer path, which
//! scopes its cookies.

use base64::Engine;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use super::server::{
    hidden_field, location, AuthRequest, Backend, TestServer, ALICE_PASSWORD, ALICE_USER_ID,
};

/// The downstream's connector id.
pub const CONNECTOR: &str = "upstream";
/// The upstream's client for the downstream lanyard.
pub const DOWNSTREAM_CLIENT: &str = "lanyard-downstream";
pub const DOWNSTREAM_SECRET: &str = "downstream-secret-with-enough-entropy";
pub const UPSTREAM_PATH: &str = "/upstream";
pub const DOWNSTREAM_PATH: &str = "/dex";

pub struct Federation {
    pub upstream: TestServer,
    pub downstream: TestServer,
}

/// What the two configs add: YAML keys under the connector's `config` (indented 4 spaces),
/// list items for the downstream's `staticClients`, top-level downstream YAML, and upstream
/// YAML after its `staticClients` items (more items, then top-level keys).
#[derive(Default, Clone, Copy)]
pub struct Setup<'a> {
    pub connector: &'a str,
    pub downstream_clients: &'a str,
    pub downstream: &'a str,
    pub upstream: &'a str,
}

pub async fn bind() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

pub fn issuer(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// The upstream's extra YAML: a confidential client whose redirect URI is the downstream's
/// callback.
pub fn upstream_yaml(downstream_issuer: &str) -> String {
    format!(
        "- id: {DOWNSTREAM_CLIENT}\n  name: Downstream lanyard\n  secret: {DOWNSTREAM_SECRET}\n  redirectURIs: ['{downstream_issuer}/callback']\n"
    )
}

/// The downstream's extra YAML: the `oidc` connector pointing at `upstream_issuer`.
pub fn downstream_yaml(upstream_issuer: &str, downstream_issuer: &str, setup: Setup) -> String {
    format!(
        r#"{clients}connectors:
- type: oidc
  id: {CONNECTOR}
  name: Upstream lanyard
  config:
    issuer: {upstream_issuer}
    clientID: {DOWNSTREAM_CLIENT}
    clientSecret: {DOWNSTREAM_SECRET}
    redirectURI: {downstream_issuer}/callback
    scopes: [profile, email, groups, offline_access]
    insecureEnableGroups: true
{connector}{downstream}"#,
        clients = setup.downstream_clients,
        connector = setup.connector,
        downstream = setup.downstream,
    )
}

impl Federation {
    pub async fn start(backend: Backend, setup: Setup<'_>) -> Option<Federation> {
        let (down_listener, down_port) = bind().await;
        let (up_listener, up_port) = bind().await;
        let down_issuer = issuer(down_port, DOWNSTREAM_PATH);
        let up_issuer = issuer(up_port, UPSTREAM_PATH);
        let upstream = TestServer::builder(backend)
            .listener(up_listener)
            .issuer_path(UPSTREAM_PATH)
            .config(&upstream_yaml(&down_issuer))
            .config(setup.upstream)
            .start()
            .await?;
        let downstream = TestServer::builder(backend)
            .listener(down_listener)
            .issuer_path(DOWNSTREAM_PATH)
            .config(&downstream_yaml(&up_issuer, &down_issuer, setup))
            .start()
            .await?;
        Some(Federation {
            upstream,
            downstream,
        })
    }

    /// The downstream's callback URL, which the upstream redirects to.
    pub fn callback(&self) -> String {
        self.downstream.url("/callback")
    }

    /// The confidential downstream client's auth request, sent to the upstream connector.
    pub fn request() -> AuthRequest {
        AuthRequest::confidential()
    }

    /// GET the downstream's /auth for `req` with `connector_id=upstream` and follow it to the
    /// connector; returns the connector's answer (a redirect to the upstream, or an error page).
    pub async fn open_connector(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
    ) -> reqwest::Response {
        let mut query = req.query();
        query.push(("connector_id".into(), CONNECTOR.into()));
        let resp = browser
            .get(self.downstream.url("/auth"))
            .query(&query)
            .send()
            .await
            .expect("downstream /auth");
        assert_eq!(
            resp.status(),
            303,
            "downstream /auth redirects to the connector"
        );
        let connector = self.downstream.absolute(&location(&resp));
        browser
            .get(&connector)
            .send()
            .await
            .expect("downstream /auth/upstream")
    }

    /// The upstream authorization URL the downstream sends the browser to.
    pub async fn upstream_auth_url(&self, browser: &reqwest::Client, req: &AuthRequest) -> String {
        let resp = self.open_connector(browser, req).await;
        assert!(
            resp.status().is_redirection(),
            "the connector redirects upstream; got {}",
            resp.status()
        );
        let url = location(&resp);
        assert!(
            url.starts_with(&self.upstream.issuer),
            "redirected to {url}"
        );
        url
    }

    /// Signs `login` in at the upstream from its /auth URL and approves there if asked;
    /// returns the upstream's redirect (to the downstream's callback).
    pub async fn upstream_sign_in(
        &self,
        browser: &reqwest::Client,
        upstream_auth: &str,
        login: &str,
        password: &str,
    ) -> String {
        let up = &self.upstream;
        let resp = browser
            .get(upstream_auth)
            .send()
            .await
            .expect("upstream /auth");
        assert_eq!(resp.status(), 303, "upstream /auth leads to its login form");
        let form_url = up.absolute(&location(&resp));
        let html = browser
            .get(&form_url)
            .send()
            .await
            .expect("form")
            .text()
            .await
            .expect("html");
        let resp = up
            .submit_login(browser, &form_url, &html, login, password)
            .await;
        assert_eq!(resp.status(), 303, "upstream login succeeds");
        let next = up.absolute(&location(&resp));
        if next.starts_with(&up.url("/approval")) {
            return approve(browser, &next).await;
        }
        next
    }

    /// The whole browser part through the upstream as alice; returns the downstream's answer
    /// to the callback (before any downstream approval).
    pub async fn through_upstream(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
        tamper: impl FnOnce(String) -> String,
    ) -> reqwest::Response {
        let upstream_auth = tamper(self.upstream_auth_url(browser, req).await);
        let callback = self
            .upstream_sign_in(browser, &upstream_auth, "alice@example.com", ALICE_PASSWORD)
            .await;
        assert!(
            callback.starts_with(&self.callback()),
            "upstream sends the browser back to the downstream: {callback}"
        );
        browser.get(&callback).send().await.expect("callback")
    }

    /// Logs alice in through the upstream; returns the code for the downstream client.
    pub async fn code(&self, browser: &reqwest::Client, req: &AuthRequest) -> String {
        let resp = self.through_upstream(browser, req, |u| u).await;
        assert_eq!(
            resp.status(),
            303,
            "the downstream accepts the callback: {}",
            resp.text().await.unwrap_or_default()
        );
        let mut next = self.downstream.absolute(&location(&resp));
        if next.starts_with(&self.downstream.url("/approval")) {
            next = approve(browser, &next).await;
        }
        assert!(next.starts_with(&req.redirect_uri), "redirect {next}");
        super::server::query_param(&next, "code").expect("code")
    }

    /// Tokens for alice at the downstream, through the upstream.
    pub async fn tokens(&self, req: &AuthRequest) -> Value {
        let browser = TestServer::new_browser();
        let code = self.code(&browser, req).await;
        let resp = self.downstream.redeem(req, &code).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("token json")
    }

    /// An ID token the upstream issued to the downstream's client (as the connector's
    /// clientID) through a real code flow, for `scope`.
    pub async fn upstream_id_token(&self, scope: &str) -> String {
        let body = self
            .upstream_tokens(
                DOWNSTREAM_CLIENT,
                DOWNSTREAM_SECRET,
                &self.callback(),
                scope,
            )
            .await;
        body["id_token"].as_str().expect("id_token").to_string()
    }

    /// The upstream's token response to the confidential client `client_id` after alice's
    /// code flow for `scope`.
    pub async fn upstream_tokens(
        &self,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
        scope: &str,
    ) -> Value {
        let req = AuthRequest {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            scope: scope.into(),
            code_verifier: None,
            ..AuthRequest::confidential()
        };
        let code = self.upstream.code_for(&req).await;
        let resp = reqwest::Client::new()
            .post(self.upstream.url("/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", req.redirect_uri.as_str()),
            ])
            .send()
            .await
            .expect("upstream token");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }
}

/// Approves on an approval page; returns where the approval redirects.
pub async fn approve(browser: &reqwest::Client, page_url: &str) -> String {
    let page = browser.get(page_url).send().await.expect("approval page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let csrf = hidden_field(&html, "csrf").expect("csrf on approval");
    let resp = browser
        .post(page_url)
        .form(&[("csrf", csrf.as_str()), ("approval", "approve")])
        .send()
        .await
        .expect("approve");
    assert_eq!(resp.status(), 303);
    location(&resp)
}

/// The claims of a JWT, unverified (the tests check what a server put in).
pub fn jwt_claims(jwt: &str) -> Map<String, Value> {
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

pub fn jwt_header(jwt: &str) -> Map<String, Value> {
    let header = jwt.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json header")
}

/// alice's `sub` at the upstream (its local connector), and so her user id downstream.
pub fn alice_upstream_sub() -> String {
    lanyard::oidc::subject::encode_subject(ALICE_USER_ID, "local")
}

/// alice's `sub` at the downstream: Dex's encoding of (upstream sub, connector id).
pub fn alice_downstream_sub() -> String {
    lanyard::oidc::subject::encode_subject(&alice_upstream_sub(), CONNECTOR)
}

/// Signs JWTs with a key of its own: forged tokens, or a fake upstream's real ones.
pub struct Forger {
    pub kid: String,
    signer: josekit::jws::alg::rsassa::RsassaJwsSigner,
    public: josekit::jwk::Jwk,
}

impl Forger {
    pub fn new(kid: &str) -> Self {
        use josekit::jwk::KeyPair;
        let pair = josekit::jws::RS256
            .generate_key_pair(2048)
            .expect("rsa key");
        let mut public = pair.to_jwk_public_key();
        public.set_key_id(kid);
        public.set_algorithm("RS256");
        public.set_key_use("sig");
        Self {
            kid: kid.to_string(),
            signer: josekit::jws::RS256
                .signer_from_der(pair.to_der_private_key())
                .expect("signer"),
            public,
        }
    }

    pub fn jwks(&self) -> Value {
        serde_json::json!({ "keys": [Value::Object(self.public.as_ref().clone())] })
    }

    /// An RS256 JWT over `claims` whose header names `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type("JWT");
        header.set_key_id(kid);
        let payload =
            josekit::jwt::JwtPayload::from_map(claims.as_object().expect("claims object").clone())
                .expect("payload");
        josekit::jwt::encode_with_signer(&payload, &header, &self.signer).expect("sign")
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// An unsigned token (`alg: none`) over `claims`.
pub fn unsigned(claims: &Value) -> String {
    let e = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!(
        "{}.{}.",
        e(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        e(claims)
    )
}
