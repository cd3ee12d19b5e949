//! A stand-in for Google's OpenID Connect provider and the Admin SDK Directory API, over HTTPS
//! with its own CA, answering in the documented shapes:
//! - discovery, JWKS, authorize and token endpoints with RS256 ID tokens carrying `hd`,
//!   `email`, `email_verified`, `name`, and `access_type=offline` giving a refresh token
//!   (https://developers.google.com/identity/openid-connect/openid-connect,
//!   https://developers.google.com/identity/protocols/oauth2/web-server#offline);
//! - the service account flow: a JWT signed with the account's key traded at `token_uri` with
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, the JWT carrying `iss`,
//!   `scope`, `aud`, `sub` (the impersonated administrator), `iat`, `exp`
//!   (https://developers.google.com/identity/protocols/oauth2/service-account#httprest);
//! - `GET /admin/directory/v1/groups?userKey=&pageToken=` answering
//!   `{"kind": "admin#directory#groups", "groups": [...], "nextPageToken"}`
//!   (https://developers.google.com/workspace/admin/directory/reference/rest/v1/groups/list),
//!   errors as `{"error": {"code", "message", "errors", "status"}}` and 429 with `Retry-After`
//!   (https://developers.google.com/workspace/admin/directory/v1/limits).
//!
//! Tests point the connector at it with lanyard's `issuer`, `directoryURL` and `rootCAs`, and
//! with a service account key file whose `token_uri` is the fake's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::{JwsHeader, RS256};
use josekit::jwt::JwtPayload;
use serde_json::{json, Value};

use super::connector_config::{connector_entry_yaml, merged};
use super::https_fake::{client_authenticated, oauth_error, HttpsHost};

pub const CLIENT_ID: &str = "fake-google-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "fake-google-secret";
pub const SERVICE_ACCOUNT: &str = "lanyard-groups@fake-project.iam.gserviceaccount.com";
pub const GROUP_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly";

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub sub: String,
    pub email: String,
    pub name: String,
    /// The Workspace domain (`hd`), none for a personal account.
    pub hd: Option<String>,
}

/// How the Directory API misbehaves while set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryFault {
    Status(u16),
    Throttle(u64),
    Hang(Duration),
}

#[derive(Default)]
pub struct FakeState {
    users: HashMap<String, FakeUser>,
    /// Direct members of each group (users' and groups' email addresses) → the group's email.
    memberships: Vec<(String, String)>,
    pub signed_in: Option<String>,
    pub fault: Option<DirectoryFault>,
    pub page_size: usize,
    /// The administrator the service account may act as (domain-wide delegation).
    pub delegated_admin: String,
    codes: HashMap<String, (String, String)>,
    refresh: HashMap<String, String>,
    directory_tokens: HashMap<String, String>,
    counter: u64,
    pub directory_log: Vec<String>,
    pub last_authorize: HashMap<String, String>,
    /// The claims of the last service account assertion (verified with the account's key).
    pub last_assertion: Option<Value>,
}

pub struct FakeGoogle {
    pub https: HttpsHost,
    /// The service account key file (JSON, Google's format) lanyard is given.
    pub key_file: std::path::PathBuf,
    state: Arc<Mutex<FakeState>>,
}

impl FakeGoogle {
    pub fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(FakeState {
            page_size: 200,
            delegated_admin: "admin@example.com".into(),
            ..Default::default()
        }));
        let issuer_key = RsaKeyPair::generate(2048).expect("issuer key");
        let account_key = RsaKeyPair::generate(2048).expect("service account key");
        let account_public = String::from_utf8(account_key.to_pem_public_key()).expect("pem");
        let account_private = String::from_utf8(account_key.to_pem_private_key()).expect("pem");
        let https = HttpsHost::start("Fake Google CA", |base| {
            router(Shared {
                state: state.clone(),
                base: base.to_string(),
                issuer_key: Arc::new(issuer_key),
                account_public: Arc::new(account_public),
            })
        });
        let key_file = https.dir().join("service-account.json");
        std::fs::write(
            &key_file,
            serde_json::to_vec_pretty(&json!({
                "type": "service_account",
                "project_id": "fake-project",
                "private_key_id": "key-1",
                "private_key": account_private,
                "client_email": SERVICE_ACCOUNT,
                "client_id": "1000000000000",
                "auth_uri": format!("{}/o/oauth2/auth", https.base),
                "token_uri": format!("{}/token", https.base),
            }))
            .expect("json"),
        )
        .expect("write key file");
        FakeGoogle {
            https,
            key_file,
            state,
        }
    }

    pub fn add_user(&self, sub: &str, email: &str, name: &str, hd: Option<&str>) {
        self.state().users.insert(
            sub.into(),
            FakeUser {
                sub: sub.into(),
                email: email.into(),
                name: name.into(),
                hd: hd.map(str::to_string),
            },
        );
    }

    /// `member` (a user's or a group's address) is a direct member of `group`.
    pub fn add_member(&self, member: &str, group: &str) {
        self.state()
            .memberships
            .push((member.to_string(), group.to_string()));
    }

    pub fn remove_member(&self, member: &str, group: &str) {
        self.state()
            .memberships
            .retain(|(m, g)| !(m == member && g == group));
    }

    pub fn sign_in(&self, sub: &str) {
        self.state().signed_in = Some(sub.into());
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    pub fn connector_config(&self, extra: Value) -> Value {
        let config = json!({
            "clientID": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "issuer": self.https.base,
            "directoryURL": self.https.base,
            "rootCAs": [self.https.ca_file.display().to_string()],
            "serviceAccountFilePath": self.key_file.display().to_string(),
            "domainToAdminEmail": {"*": "admin@example.com"},
        });
        merged(config, extra)
    }

    pub fn connector_yaml(&self, id: &str, extra: Value) -> String {
        connector_entry_yaml("google", id, "Google", self.connector_config(extra))
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    base: String,
    issuer_key: Arc<RsaKeyPair>,
    account_public: Arc<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    fn id_token(&self, user: &FakeUser, nonce: Option<&str>) -> String {
        let now = std::time::SystemTime::now();
        let mut payload = JwtPayload::new();
        payload.set_issuer(&self.base);
        payload.set_subject(&user.sub);
        payload.set_audience(vec![CLIENT_ID]);
        payload.set_issued_at(&now);
        payload.set_expires_at(&(now + Duration::from_secs(3600)));
        let mut set = |k: &str, v: Value| payload.set_claim(k, Some(v)).expect("claim");
        set("email", json!(user.email));
        set("email_verified", json!(true));
        set("name", json!(user.name));
        if let Some(hd) = &user.hd {
            set("hd", json!(hd));
        }
        if let Some(nonce) = nonce {
            set("nonce", json!(nonce));
        }
        let mut header = JwsHeader::new();
        header.set_key_id("google-1");
        header.set_token_type("JWT");
        let signer = RS256
            .signer_from_jwk(&self.issuer_key.to_jwk_private_key())
            .expect("signer");
        josekit::jwt::encode_with_signer(&payload, &header, &signer).expect("sign")
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/v3/certs", get(jwks))
        .route("/o/oauth2/v2/auth", get(authorize))
        .route("/token", post(token))
        .route("/admin/directory/v1/groups", get(groups))
        .with_state(shared)
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": s.base,
        "authorization_endpoint": format!("{}/o/oauth2/v2/auth", s.base),
        "token_endpoint": format!("{}/token", s.base),
        "userinfo_endpoint": format!("{}/v1/userinfo", s.base),
        "jwks_uri": format!("{}/oauth2/v3/certs", s.base),
        "response_types_supported": ["code", "token", "id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "code_challenge_methods_supported": ["plain", "S256"],
    }))
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    let mut jwk = s.issuer_key.to_jwk_public_key();
    jwk.set_key_id("google-1");
    jwk.set_algorithm("RS256");
    jwk.set_key_use("sig");
    Json(json!({"keys": [jwk.as_ref()]}))
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut state = s.lock();
    state.last_authorize = q.clone();
    let mut target = url::Url::parse(q.get("redirect_uri").expect("redirect_uri")).expect("url");
    let sub = state.signed_in.clone().expect("someone signed in");
    state.counter += 1;
    let code = format!("g-code-{}", state.counter);
    let nonce = q.get("nonce").cloned().unwrap_or_default();
    state.codes.insert(code.clone(), (sub, nonce));
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair(
            "state",
            q.get("state").map(String::as_str).unwrap_or_default(),
        );
    (StatusCode::FOUND, [("location", target.to_string())]).into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return service_account_token(&s, &form);
    }
    if !client_authenticated(&headers, &form, CLIENT_ID, CLIENT_SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})),
        )
            .into_response();
    }
    let mut state = s.lock();
    let (sub, nonce) = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => match form.get("code").and_then(|c| state.codes.remove(c)) {
            Some((sub, nonce)) => (sub, Some(nonce)),
            None => return oauth_error("invalid_grant", "Malformed auth code."),
        },
        Some("refresh_token") => {
            match form
                .get("refresh_token")
                .and_then(|r| state.refresh.get(r).cloned())
            {
                Some(sub) => (sub, None),
                None => return oauth_error("invalid_grant", "Token has been expired or revoked."),
            }
        }
        _ => return oauth_error("unsupported_grant_type", "Invalid grant_type"),
    };
    let Some(user) = state.users.get(&sub).cloned() else {
        return oauth_error("invalid_grant", "Account deleted.");
    };
    state.counter += 1;
    let refresh = format!("g-refresh-{}", state.counter);
    let mut body = json!({
        "access_token": format!("g-access-{}", state.counter),
        "expires_in": 3599,
        "token_type": "Bearer",
        "scope": "openid email profile",
        "id_token": s.id_token(&user, nonce.as_deref().filter(|n| !n.is_empty())),
    });
    // Google sends a refresh token for the code when offline access was asked for.
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        body["refresh_token"] = json!(refresh);
        state.refresh.insert(refresh, sub);
    }
    Json(body).into_response()
}

/// The JWT bearer grant: the assertion must be signed by the account's key, name the account,
/// this token endpoint, the group scope and the administrator it may act as.
fn service_account_token(s: &Shared, form: &HashMap<String, String>) -> Response {
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let verifier = RS256
        .verifier_from_pem(s.account_public.as_bytes())
        .expect("verifier");
    let Ok((payload, _)) = josekit::jwt::decode_with_verifier(&assertion, &verifier) else {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    };
    let claims = Value::Object(payload.claims_set().clone());
    let mut state = s.lock();
    state.last_assertion = Some(claims.clone());
    let expected_aud = format!("{}/token", s.base);
    if claims["iss"] != SERVICE_ACCOUNT
        || claims["aud"] != expected_aud.as_str()
        || claims["scope"] != GROUP_SCOPE
    {
        return oauth_error("invalid_grant", "Invalid JWT: iss, aud or scope.");
    }
    if claims["sub"] != state.delegated_admin.as_str() {
        return oauth_error(
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        );
    }
    state.counter += 1;
    let token = format!("ya29.directory-{}", state.counter);
    state.directory_tokens.insert(
        token.clone(),
        claims["sub"].as_str().unwrap_or_default().into(),
    );
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

fn google_error(status: StatusCode, message: &str, reason: &str) -> Response {
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(), "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status.canonical_reason().unwrap_or_default().to_uppercase().replace(' ', "_"),
        }})),
    )
        .into_response()
}

async fn groups(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let member = q.get("userKey").cloned().unwrap_or_default();
    let fault = {
        let mut state = s.lock();
        state.directory_log.push(format!(
            "userKey={member} pageToken={}",
            q.get("pageToken").cloned().unwrap_or_default()
        ));
        state.fault
    };
    match fault {
        Some(DirectoryFault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("status");
            let (message, reason) = match code {
                401 => ("Login Required.", "required"),
                403 => ("Not Authorized to access this resource/api", "forbidden"),
                _ => ("Backend Error", "backendError"),
            };
            return google_error(status, message, reason);
        }
        Some(DirectoryFault::Throttle(seconds)) => {
            let mut r = google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded",
                "rateLimitExceeded",
            );
            r.headers_mut()
                .insert("retry-after", seconds.to_string().parse().expect("header"));
            return r;
        }
        Some(DirectoryFault::Hang(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let state = s.lock();
    if !state.directory_tokens.contains_key(&token) {
        return google_error(StatusCode::UNAUTHORIZED, "Invalid Credentials", "authError");
    }
    let all: Vec<Value> = state
        .memberships
        .iter()
        .filter(|(m, _)| *m == member)
        .map(|(_, g)| json!({"kind": "admin#directory#group", "id": format!("id-{g}"), "email": g, "name": g}))
        .collect();
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let end = (start + state.page_size.max(1)).min(all.len());
    let mut body = json!({
        "kind": "admin#directory#groups",
        "etag": "\"fake\"",
        "groups": all.get(start..end).unwrap_or_default(),
    });
    if end < all.len() {
        body["nextPageToken"] = json!(end.to_string());
    }
    Json(body).into_response()
}
