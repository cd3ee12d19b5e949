//! A stand-in for the Microsoft identity platform and Microsoft Graph, over HTTPS with its own
//! CA, answering in the documented shapes:
//! - the v2.0 authorization code flow, `/{tenant}/oauth2/v2.0/authorize` and `/token`
//!   (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow),
//!   errors as `{"error", "error_description"}` with 400;
//! - `GET /v1.0/me` (https://learn.microsoft.com/en-us/graph/api/user-get);
//! - `POST /v1.0/me/getMemberGroups`, transitive membership ids
//!   (https://learn.microsoft.com/en-us/graph/api/directoryobject-getmembergroups);
//! - `POST /v1.0/directoryObjects/getByIds`
//!   (https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids);
//! - paging with `@odata.nextLink` (https://learn.microsoft.com/en-us/graph/paging), Graph's
//!   error body `{"error": {"code", "message"}}` and throttling with 429 and `Retry-After`
//!   (https://learn.microsoft.com/en-us/graph/errors, .../graph/throttling).
//!
//! Tests point the connector at it with `apiURL` and `graphURL` (Dex's keys for national
//! clouds) and trust it through `rootCAs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::connector_config::{connector_entry_yaml, merged};
use super::https_fake::{oauth_error, HttpsHost};

pub const CLIENT_ID: &str = "fake-entra-app";
pub const CLIENT_SECRET: &str = "fake-entra-secret";
pub const TENANT: &str = "contoso.example";

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: String,
    pub display_name: String,
    pub upn: String,
    /// (object id, display name) of every group the user is in, nested ones included.
    pub groups: Vec<(String, String)>,
}

/// How Graph misbehaves while set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFault {
    /// Answer every Graph call with this status and Graph's error body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    Throttle(u64),
    /// Answer only after this long.
    Hang(Duration),
}

#[derive(Default)]
pub struct FakeState {
    users: HashMap<String, FakeUser>,
    pub signed_in: Option<String>,
    pub deny: bool,
    pub fault: Option<GraphFault>,
    /// Items per page of getMemberGroups and getByIds.
    pub page_size: usize,
    /// `expires_in` of access tokens.
    pub expires_in: u64,
    codes: HashMap<String, String>,
    access: HashMap<String, String>,
    refresh: HashMap<String, String>,
    counter: u64,
    pub refresh_grants: u64,
    /// Every Graph request, as `METHOD path?query`.
    pub graph_log: Vec<String>,
    pub last_authorize: HashMap<String, String>,
    pub last_token_form: HashMap<String, String>,
}

pub struct FakeMicrosoft {
    pub https: HttpsHost,
    state: Arc<Mutex<FakeState>>,
}

impl FakeMicrosoft {
    pub fn start() -> FakeMicrosoft {
        let state = Arc::new(Mutex::new(FakeState {
            page_size: 100,
            expires_in: 3600,
            ..Default::default()
        }));
        let https = HttpsHost::start("Fake Microsoft CA", |base| {
            router(Shared {
                state: state.clone(),
                base: base.to_string(),
            })
        });
        FakeMicrosoft { https, state }
    }

    pub fn add_user(&self, id: &str, display_name: &str, upn: &str, groups: &[(&str, &str)]) {
        self.state().users.insert(
            id.into(),
            FakeUser {
                id: id.into(),
                display_name: display_name.into(),
                upn: upn.into(),
                groups: groups
                    .iter()
                    .map(|(i, n)| ((*i).into(), (*n).into()))
                    .collect(),
            },
        );
    }

    pub fn set_groups(&self, id: &str, groups: &[(&str, &str)]) {
        let mut state = self.state();
        let user = state.users.get_mut(id).expect("known user");
        user.groups = groups
            .iter()
            .map(|(i, n)| ((*i).into(), (*n).into()))
            .collect();
    }

    pub fn sign_in(&self, id: &str) {
        self.state().signed_in = Some(id.into());
    }

    /// The user's refresh and access tokens stop working (password reset, account disabled).
    pub fn revoke_tokens_of(&self, id: &str) {
        let mut state = self.state();
        state.access.retain(|_, user| user != id);
        state.refresh.retain(|_, user| user != id);
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    /// The connector's `config:` as JSON, pointing at the fake.
    pub fn connector_config(&self, extra: Value) -> Value {
        let config = json!({
            "clientID": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "tenant": TENANT,
            "apiURL": self.https.base,
            "graphURL": self.https.base,
            "rootCAs": [self.https.ca_file.display().to_string()],
        });
        merged(config, extra)
    }

    /// A connector entry (YAML, for `connectors:`) pointing at the fake.
    pub fn connector_yaml(&self, id: &str, extra: Value) -> String {
        connector_entry_yaml("microsoft", id, "Microsoft", self.connector_config(extra))
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    base: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/me", get(me))
        .route("/v1.0/me/getMemberGroups", post(member_groups))
        .route("/v1.0/directoryObjects/getByIds", post(get_by_ids))
        .with_state(shared)
}

async fn authorize(
    State(s): State<Shared>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut state = s.lock();
    state.last_authorize = q.clone();
    if tenant != TENANT || q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (
            StatusCode::BAD_REQUEST,
            "AADSTS700016: application not found",
        )
            .into_response();
    }
    let mut target = url::Url::parse(q.get("redirect_uri").expect("redirect_uri")).expect("url");
    let oauth_state = q.get("state").cloned().unwrap_or_default();
    if state.deny {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "AADSTS65004: User declined to consent")
            .append_pair("state", &oauth_state);
    } else {
        let user = state.signed_in.clone().expect("someone signed in");
        state.counter += 1;
        let code = format!("ms-code-{}", state.counter);
        state.codes.insert(code.clone(), user);
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &oauth_state);
    }
    (StatusCode::FOUND, [("location", target.to_string())]).into_response()
}

async fn token(State(s): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut state = s.lock();
    state.last_token_form = form.clone();
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return oauth_error(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let user = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => match form.get("code").and_then(|c| state.codes.remove(c)) {
            Some(user) => user,
            None => {
                return oauth_error(
                    "invalid_grant",
                    "AADSTS70008: The provided authorization code has expired.",
                )
            }
        },
        Some("refresh_token") => {
            let found = form
                .get("refresh_token")
                .and_then(|r| state.refresh.get(r).cloned());
            match found {
                Some(user) => {
                    state.refresh_grants += 1;
                    user
                }
                None => {
                    return oauth_error(
                        "invalid_grant",
                        "AADSTS700082: The refresh token has expired.",
                    )
                }
            }
        }
        _ => return oauth_error("unsupported_grant_type", "unknown grant"),
    };
    state.counter += 1;
    let access = format!("ms-access-{}", state.counter);
    let refresh = format!("ms-refresh-{}", state.counter);
    state.access.insert(access.clone(), user.clone());
    state.refresh.insert(refresh.clone(), user);
    Json(json!({
        "token_type": "Bearer",
        "scope": form.get("scope").cloned().unwrap_or_default(),
        "expires_in": state.expires_in,
        "access_token": access,
        "refresh_token": refresh,
    }))
    .into_response()
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "innerError": {}}})),
    )
        .into_response()
}

/// The user behind the bearer token, or the refusal Graph would give (a fault set on the fake
/// comes first).
async fn caller(s: &Shared, headers: &HeaderMap, logged: String) -> Result<FakeUser, Response> {
    let fault = {
        let mut state = s.lock();
        state.graph_log.push(logged);
        state.fault
    };
    match fault {
        Some(GraphFault::Status(401)) => {
            return Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ))
        }
        Some(GraphFault::Status(403)) => {
            return Err(graph_error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ))
        }
        Some(GraphFault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("status");
            return Err(graph_error(
                status,
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            ));
        }
        Some(GraphFault::Throttle(seconds)) => {
            let mut response = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry after the specified interval.",
            );
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().expect("header"));
            return Err(response);
        }
        Some(GraphFault::Hang(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let state = s.lock();
    state
        .access
        .get(token)
        .and_then(|id| state.users.get(id))
        .cloned()
        .ok_or_else(|| {
            graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            )
        })
}

async fn me(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let select = q.get("$select").cloned().unwrap_or_default();
    match caller(&s, &headers, format!("GET /v1.0/me?$select={select}")).await {
        Ok(u) => Json(json!({
            "@odata.context": format!("{}/v1.0/$metadata#users(id,displayName,userPrincipalName)/$entity", s.base),
            "id": u.id, "displayName": u.display_name, "userPrincipalName": u.upn,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// One page of `items` starting at `$skiptoken` (an index, as far as this fake goes), with a
/// `@odata.nextLink` back to `path` when more remain.
fn page(s: &Shared, path: &str, q: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let size = s.lock().page_size.max(1);
    let start: usize = q
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#Collection(Edm.String)", s.base),
        "value": items.get(start..end).unwrap_or_default(),
    });
    if end < items.len() {
        body["@odata.nextLink"] = json!(format!("{}{path}?$skiptoken={end}", s.base));
    }
    Json(body).into_response()
}

async fn member_groups(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let skip = q.get("$skiptoken").cloned().unwrap_or_default();
    let user = match caller(
        &s,
        &headers,
        format!("POST /v1.0/me/getMemberGroups?$skiptoken={skip} {body}"),
    )
    .await
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    if body
        .get("securityEnabledOnly")
        .and_then(Value::as_bool)
        .is_none()
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "securityEnabledOnly is required",
        );
    }
    let ids = user.groups.iter().map(|(id, _)| json!(id)).collect();
    page(&s, "/v1.0/me/getMemberGroups", &q, ids)
}

async fn get_by_ids(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let skip = q.get("$skiptoken").cloned().unwrap_or_default();
    let user = match caller(
        &s,
        &headers,
        format!("POST /v1.0/directoryObjects/getByIds?$skiptoken={skip}"),
    )
    .await
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    let asked: Vec<String> = body["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let objects = asked
        .iter()
        .filter_map(|id| user.groups.iter().find(|(gid, _)| gid == id))
        .map(|(id, name)| json!({"@odata.type": "#microsoft.graph.group", "id": id, "displayName": name}))
        .collect();
    page(&s, "/v1.0/directoryObjects/getByIds", &q, objects)
}
