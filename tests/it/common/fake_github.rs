//! A stand-in for a GitHub Enterprise host, over HTTPS with its own CA: the OAuth web flow
//! (`/login/oauth/authorize`, `/login/oauth/access_token`) and the REST endpoints the
//! connector reads under `/api/v3`, answering in GitHub's documented JSON shapes and headers
//! (Link pagination with `per_page`, `x-ratelimit-*`, `retry-after`).
//!
//! Tests point the connector at it with `hostName: <fake.host>` and `rootCA: <fake.ca_file>`,
//! exactly as an operator would for GitHub Enterprise.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::https_fake::HttpsHost;

pub const CLIENT_ID: &str = "fake-github-client";
pub const CLIENT_SECRET: &str = "fake-github-secret";

#[derive(Debug, Clone)]
pub struct FakeTeam {
    pub org: String,
    pub name: String,
    pub slug: String,
}

impl FakeTeam {
    pub fn new(org: &str, name: &str) -> Self {
        Self {
            org: org.into(),
            name: name.into(),
            slug: name.to_lowercase().replace(' ', "-"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeEmail {
    pub email: String,
    pub verified: bool,
    pub primary: bool,
}

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    pub emails: Vec<FakeEmail>,
    pub orgs: Vec<String>,
    pub teams: Vec<FakeTeam>,
}

impl FakeUser {
    /// A user with one verified primary address `<login>@example.com`.
    pub fn new(id: u64, login: &str) -> Self {
        Self {
            id,
            login: login.into(),
            name: None,
            emails: vec![FakeEmail {
                email: format!("{login}@example.com"),
                verified: true,
                primary: true,
            }],
            orgs: Vec::new(),
            teams: Vec::new(),
        }
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn in_org(mut self, org: &str) -> Self {
        self.orgs.push(org.into());
        self
    }

    /// Adds a team (and its organization).
    pub fn in_team(mut self, org: &str, team: &str) -> Self {
        if !self.orgs.iter().any(|o| o == org) {
            self.orgs.push(org.into());
        }
        self.teams.push(FakeTeam::new(org, team));
        self
    }

    pub fn with_emails(mut self, emails: &[(&str, bool, bool)]) -> Self {
        self.emails = emails
            .iter()
            .map(|(email, verified, primary)| FakeEmail {
                email: (*email).into(),
                verified: *verified,
                primary: *primary,
            })
            .collect();
        self
    }
}

/// How the REST API refuses while a rate limit is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`.
    Primary,
    /// 429 with `retry-after`.
    Secondary,
}

pub const RATE_LIMIT_RESET: u64 = 1_900_000_000;

#[derive(Default)]
pub struct FakeState {
    users: HashMap<String, FakeUser>,
    /// Who is signed in at the fake GitHub when the browser arrives at the authorize page.
    pub signed_in: Option<String>,
    /// The person clicks "Cancel" on GitHub's authorize page.
    pub deny: bool,
    pub rate_limit: Option<RateLimit>,
    codes: HashMap<String, (String, String)>,
    tokens: HashMap<String, (String, String)>,
    /// Every REST request, as `path?query`.
    pub api_log: Vec<String>,
    /// The query of the last authorize request.
    pub last_authorize: HashMap<String, String>,
    counter: u64,
    issued: u64,
}

pub struct FakeGithub {
    /// `127.0.0.1:port`, the value for `hostName`.
    pub host: String,
    /// The PEM file of the CA that signed the fake's certificate, the value for `rootCA`.
    pub ca_file: PathBuf,
    pub ca_pem: String,
    state: Arc<Mutex<FakeState>>,
    https: HttpsHost,
}

impl FakeGithub {
    pub async fn start() -> FakeGithub {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let https = HttpsHost::start("Fake GitHub Enterprise CA", |base| {
            router(Shared {
                state: state.clone(),
                base: base.to_string(),
            })
        });
        FakeGithub {
            host: https.host.clone(),
            ca_file: https.ca_file.clone(),
            ca_pem: https.ca_pem.clone(),
            state,
            https,
        }
    }

    /// A browser that trusts the fake's CA, keeps cookies and follows no redirect itself.
    pub fn browser(&self) -> reqwest::Client {
        self.https.browser()
    }

    pub fn add_user(&self, user: FakeUser) {
        self.state().users.insert(user.login.clone(), user);
    }

    /// The person at the browser is signed in to the fake GitHub as `login`.
    pub fn sign_in(&self, login: &str) {
        self.state().signed_in = Some(login.into());
    }

    pub fn set_teams(&self, login: &str, teams: &[(&str, &str)]) {
        let mut state = self.state();
        let user = state.users.get_mut(login).expect("known user");
        user.teams = teams.iter().map(|(o, t)| FakeTeam::new(o, t)).collect();
    }

    /// Revokes every token issued to `login` (the user removed the OAuth app's authorization).
    pub fn revoke_tokens_of(&self, login: &str) {
        self.state().tokens.retain(|_, (user, _)| user != login);
    }

    /// The user leaves an organization, and its teams.
    pub fn leave_org(&self, login: &str, org: &str) {
        let mut state = self.state();
        let user = state.users.get_mut(login).expect("known user");
        user.orgs.retain(|o| o != org);
        user.teams.retain(|t| t.org != org);
    }

    /// Every access token the token endpoint has handed out and not revoked.
    pub fn live_tokens(&self) -> Vec<String> {
        self.state().tokens.keys().cloned().collect()
    }

    /// How many access tokens the token endpoint has handed out.
    pub fn tokens_issued(&self) -> u64 {
        self.state().issued
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    pub fn api_log(&self) -> Vec<String> {
        self.state().api_log.clone()
    }

    /// A connector `config:` mapping (YAML, indented for a connector entry) pointing at the fake.
    pub fn connector_yaml(&self, id: &str, extra: &str) -> String {
        let mut yaml = format!(
            "- type: github\n  id: {id}\n  name: GitHub\n  config:\n    clientID: {CLIENT_ID}\n    clientSecret: {CLIENT_SECRET}\n    hostName: \"{}\"\n    rootCA: {}\n",
            self.host,
            self.ca_file.display()
        );
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            yaml.push_str("    ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        yaml
    }

    /// The connector's config as JSON, for tests that build the connector directly.
    pub fn connector_config(&self, extra: Value) -> Value {
        let mut config = json!({
            "clientID": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "hostName": self.host,
            "rootCA": self.ca_file.display().to_string(),
        });
        if let (Some(map), Value::Object(extra)) = (config.as_object_mut(), extra) {
            map.extend(extra);
        }
        config
    }
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    /// `https://host:port`, for absolute pagination links.
    base: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/login/oauth/authorize", get(authorize))
        .route("/login/oauth/access_token", post(access_token))
        .route("/api/v3/user", get(user))
        .route("/api/v3/user/emails", get(emails))
        .route("/api/v3/user/orgs", get(orgs))
        .route("/api/v3/user/teams", get(teams))
        .route("/api/v3/orgs/{org}/members/{login}", get(membership))
        .route(
            "/api/v3/orgs/{org}/public_members/{login}",
            get(|| async { StatusCode::NOT_FOUND }),
        )
        .with_state(shared)
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut state = s.lock();
    state.last_authorize = q.clone();
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "unknown OAuth application").into_response();
    }
    let Some(redirect) = q.get("redirect_uri").cloned() else {
        return (StatusCode::BAD_REQUEST, "redirect_uri missing").into_response();
    };
    let oauth_state = q.get("state").cloned().unwrap_or_default();
    let mut target = url::Url::parse(&redirect).expect("redirect_uri");
    if state.deny {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair(
                "error_description",
                "The user has denied your application access.",
            )
            .append_pair(
                "error_uri",
                "https://docs.github.com/apps/troubleshooting-authorization-request-errors/#access-denied",
            )
            .append_pair("state", &oauth_state);
        return found(target.as_str());
    }
    let login = state
        .signed_in
        .clone()
        .expect("a user signed in at the fake");
    state.counter += 1;
    let code = format!("code{}{}", state.counter, login.len());
    let scope = q.get("scope").cloned().unwrap_or_default();
    state.codes.insert(code.clone(), (login, scope));
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &oauth_state);
    found(target.as_str())
}

/// GitHub sends the browser back with 302 Found.
fn found(location: &str) -> Response {
    (StatusCode::FOUND, [("location", location.to_string())]).into_response()
}

/// GitHub answers token requests with status 200 either way: a token, or an error object.
async fn access_token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let wants_json = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let answer = |pairs: Vec<(&str, String)>| -> Response {
        if wants_json {
            let map: serde_json::Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
            Json(Value::Object(map)).into_response()
        } else {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            (
                [("content-type", "application/x-www-form-urlencoded")],
                body,
            )
                .into_response()
        }
    };
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return answer(vec![
            ("error", "incorrect_client_credentials".into()),
            (
                "error_description",
                "The client_id and/or client_secret passed are incorrect.".into(),
            ),
        ]);
    }
    let mut state = s.lock();
    let code = form.get("code").cloned().unwrap_or_default();
    let Some((login, scope)) = state.codes.remove(&code) else {
        return answer(vec![
            ("error", "bad_verification_code".into()),
            (
                "error_description",
                "The code passed is incorrect or expired.".into(),
            ),
            (
                "error_uri",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code".into(),
            ),
        ]);
    };
    state.counter += 1;
    let token = format!("gho_fake{}x{}", state.counter, login.len());
    // GitHub reports granted scopes comma-separated.
    let granted = scope.split_whitespace().collect::<Vec<_>>().join(",");
    state.tokens.insert(token.clone(), (login, granted.clone()));
    state.issued += 1;
    answer(vec![
        ("access_token", token),
        ("token_type", "bearer".into()),
        ("scope", granted),
    ])
}

fn rate_headers(remaining: u64) -> [(&'static str, String); 5] {
    [
        ("x-ratelimit-limit", "5000".into()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", RATE_LIMIT_RESET.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-resource", "core".into()),
    ]
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
        })),
    )
        .into_response()
}

/// The caller of a REST endpoint: logs the request, applies the rate limit, checks the token.
/// Returns the user and the token's scopes, or the refusal to send.
fn caller(
    s: &Shared,
    headers: &HeaderMap,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<(FakeUser, String), Box<Response>> {
    let mut state = s.lock();
    let mut logged = path.to_string();
    let mut keys: Vec<_> = query.iter().collect();
    keys.sort();
    for (i, (k, v)) in keys.into_iter().enumerate() {
        logged.push(if i == 0 { '?' } else { '&' });
        logged.push_str(&format!("{k}={v}"));
    }
    state.api_log.push(logged);
    match state.rate_limit {
        Some(RateLimit::Primary) => {
            let mut response = api_error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
            );
            for (k, v) in rate_headers(0) {
                response
                    .headers_mut()
                    .insert(k, HeaderValue::from_str(&v).expect("header"));
            }
            return Err(Box::new(response));
        }
        Some(RateLimit::Secondary) => {
            let mut response = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("60"));
            return Err(Box::new(response));
        }
        None => {}
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or_default();
    let Some((login, scopes)) = state.tokens.get(token).cloned() else {
        return Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "Bad credentials",
        )));
    };
    let user = state
        .users
        .get(&login)
        .cloned()
        .expect("token of a known user");
    Ok((user, scopes))
}

fn with_rate_headers(mut response: Response) -> Response {
    for (k, v) in rate_headers(4999) {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("header"));
    }
    response
}

/// The refusal when the token lacks `scope`.
fn missing_scope(scopes: &str, scope: &str) -> Option<Response> {
    (!scopes.split(',').any(|s| s == scope)).then(|| {
        api_error(
            StatusCode::FORBIDDEN,
            &format!("This API needs the {scope} scope"),
        )
    })
}

/// One page of `items` as GitHub serves lists: `per_page` (default 30, at most 100), `page`
/// (from 1), and a `Link` header with first/prev/next/last.
fn paginated(
    s: &Shared,
    path: &str,
    query: &HashMap<String, String>,
    items: Vec<Value>,
) -> Response {
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link = |p: usize, rel: &str| {
        format!(
            "<{}{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            s.base
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    let mut response = Json(Value::Array(body)).into_response();
    if !links.is_empty() {
        response.headers_mut().insert(
            "link",
            HeaderValue::from_str(&links.join(", ")).expect("link header"),
        );
    }
    with_rate_headers(response)
}

async fn user(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (user, _) = match caller(&s, &headers, "/api/v3/user", &q) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    with_rate_headers(
        Json(json!({
            "login": user.login,
            "id": user.id,
            "node_id": format!("U_{}", user.id),
            "avatar_url": format!("{}/avatars/u/{}", s.base, user.id),
            "url": format!("{}/api/v3/users/{}", s.base, user.login),
            "html_url": format!("{}/{}", s.base, user.login),
            "type": "User",
            "site_admin": false,
            "name": user.name,
            "company": null,
            "blog": "",
            "location": null,
            // The public profile address: GitHub leaves it null unless the user made one public.
            "email": null,
            "hireable": null,
            "bio": null,
            "public_repos": 2,
            "followers": 0,
            "following": 0,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }))
        .into_response(),
    )
}

async fn emails(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (user, scopes) = match caller(&s, &headers, "/api/v3/user/emails", &q) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if !scopes.split(',').any(|s| s == "user:email" || s == "user") {
        return api_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let items = user
        .emails
        .iter()
        .map(|e| {
            json!({
                "email": e.email,
                "verified": e.verified,
                "primary": e.primary,
                "visibility": if e.primary { Value::from("private") } else { Value::Null },
            })
        })
        .collect();
    paginated(&s, "/api/v3/user/emails", &q, items)
}

fn org_json(s: &Shared, login: &str) -> Value {
    json!({
        "login": login,
        "id": login.len() as u64 * 1000 + login.bytes().map(u64::from).sum::<u64>(),
        "node_id": format!("O_{login}"),
        "url": format!("{}/api/v3/orgs/{login}", s.base),
        "avatar_url": format!("{}/avatars/o/{login}", s.base),
        "description": null,
    })
}

async fn orgs(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (user, scopes) = match caller(&s, &headers, "/api/v3/user/orgs", &q) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Some(r) = missing_scope(&scopes, "read:org") {
        return r;
    }
    let items = user.orgs.iter().map(|o| org_json(&s, o)).collect();
    paginated(&s, "/api/v3/user/orgs", &q, items)
}

async fn teams(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (user, scopes) = match caller(&s, &headers, "/api/v3/user/teams", &q) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Some(r) = missing_scope(&scopes, "read:org") {
        return r;
    }
    let items = user
        .teams
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "id": i + 1,
                "node_id": format!("T_{i}"),
                "url": format!("{}/api/v3/teams/{}", s.base, i + 1),
                "name": t.name,
                "slug": t.slug,
                "description": null,
                "privacy": "closed",
                "permission": "pull",
                "members_count": 3,
                "repos_count": 1,
                "organization": org_json(&s, &t.org),
            })
        })
        .collect();
    paginated(&s, "/api/v3/user/teams", &q, items)
}

/// "Check organization membership for a user": 204 when both the requester and the user are
/// members; 404 when the requester is a member and the user is not; a 302 to the public list
/// when the requester is not a member.
async fn membership(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((org, login)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/v3/orgs/{org}/members/{login}");
    let (requester, scopes) = match caller(&s, &headers, &path, &q) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Some(r) = missing_scope(&scopes, "read:org") {
        return r;
    }
    let member_of = |u: &FakeUser| u.orgs.iter().any(|o| o.eq_ignore_ascii_case(&org));
    if !member_of(&requester) {
        return with_rate_headers(
            (
                StatusCode::FOUND,
                [(
                    "location",
                    format!("{}/api/v3/orgs/{org}/public_members/{login}", s.base),
                )],
            )
                .into_response(),
        );
    }
    let target = s.lock().users.get(&login).cloned();
    if target.as_ref().is_some_and(member_of) {
        with_rate_headers(StatusCode::NO_CONTENT.into_response())
    } else {
        with_rate_headers(api_error(StatusCode::NOT_FOUND, "Not Found"))
    }
}
