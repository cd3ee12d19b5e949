//! Microsoft Entra ID (and personal Microsoft accounts) as an upstream (`type: microsoft`):
//! the OAuth 2.0 code flow of the Microsoft identity platform (v2.0 endpoints), then Microsoft
//! Graph for who the user is and which groups they are in.
//!
//! Behaviour follows Dex's Microsoft connector: the same settings, the same `user_id` (Graph's
//! object id), the same email (the user principal name), the same groups (Graph's
//! `getMemberGroups`, which is transitive, named through `getByIds` unless
//! `groupNameFormat: id`), so RBAC bindings written for Dex keep matching. Two differences,
//! both refusals: group settings with a shared tenant (which Dex silently ignores) are
//! config errors, and a `@odata.nextLink` to another host than Graph is not followed.

mod config;

use async_trait::async_trait;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::oidc::Now;
use crate::upstream::api::{self, REQUEST_TIMEOUT};
use crate::upstream::{self, describe, error_chain, Api, ApiError};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    UpstreamRedirect,
};

pub use config::{GroupNameFormat, MicrosoftConfig, DEFAULT_API_URL, DEFAULT_GRAPH_URL};

const SCOPE_USER: &str = "user.read";
const SCOPE_GROUPS: &str = "directory.read.all";
const SCOPE_OFFLINE: &str = "offline_access";
const GRAPH: &str = "Microsoft Graph";
/// `getByIds` takes at most 1000 ids per request.
const IDS_PER_REQUEST: usize = 1000;
/// A bound on `@odata.nextLink` chains, far beyond any real membership list.
const MAX_PAGES: usize = 200;
/// An access token this close to its expiry is refreshed instead of used.
const EXPIRY_MARGIN_SECS: i64 = 60;

type OAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// What a session keeps for refresh (Dex's field names; `expiry` in Unix seconds).
#[derive(Serialize, Deserialize)]
struct ConnectorData {
    #[serde(rename = "accessToken")]
    access_token: String,
    #[serde(rename = "refreshToken", default)]
    refresh_token: String,
    #[serde(default)]
    expiry: i64,
}

/// `GET /me`: the fields Dex selects.
#[derive(Deserialize)]
struct GraphUser {
    id: String,
    #[serde(rename = "displayName", default)]
    display_name: Option<String>,
    #[serde(rename = "userPrincipalName", default)]
    user_principal_name: Option<String>,
}

/// A page of a Graph collection.
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct DirectoryObject {
    id: String,
    #[serde(rename = "displayName", default)]
    display_name: Option<String>,
}

/// Why no identity came out of Graph.
enum LookupError {
    Api(ApiError),
    /// Graph answered, but lanyard's rules keep the user out.
    Denied(String),
}

impl From<ApiError> for LookupError {
    fn from(e: ApiError) -> Self {
        LookupError::Api(e)
    }
}

pub struct MicrosoftConnector {
    oauth: OAuthClient,
    redirect_uri: String,
    config: MicrosoftConfig,
    group_name_format: GroupNameFormat,
    http: reqwest::Client,
    timeout: std::time::Duration,
    now: Now,
}

impl std::fmt::Debug for MicrosoftConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrosoftConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MicrosoftConnector {
    /// `callback_url` is lanyard's `/callback`; a configured `redirectURI` must equal it.
    pub fn new(
        config: &MicrosoftConfig,
        callback_url: &str,
        now: Now,
    ) -> Result<Self, ConnectorError> {
        Self::with_timeout(config, callback_url, now, REQUEST_TIMEOUT)
    }

    /// Like [`new`](Self::new) with another request timeout (tests of a silent upstream).
    pub fn with_timeout(
        config: &MicrosoftConfig,
        callback_url: &str,
        now: Now,
        timeout: std::time::Duration,
    ) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        if !config.redirect_uri.is_empty() && config.redirect_uri != callback_url {
            return Err(ConnectorError::Config(format!(
                "redirectURI `{}` is not this server's callback URL `{callback_url}`; Microsoft sends the browser back to redirectURI, so set it to the callback URL (or leave it out)",
                config.redirect_uri
            )));
        }
        let bad_url = |what: &str, e: &dyn std::fmt::Display| {
            ConnectorError::Config(format!("the Microsoft {what} is not a valid URL: {e}"))
        };
        let base = format!("{}/{}/oauth2/v2.0", config.api_url(), config.tenant());
        let oauth = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.clone()))
            .set_auth_uri(
                AuthUrl::new(format!("{base}/authorize"))
                    .map_err(|e| bad_url("authorization URL", &e))?,
            )
            .set_token_uri(
                TokenUrl::new(format!("{base}/token")).map_err(|e| bad_url("token URL", &e))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(callback_url.to_string())
                    .map_err(|e| bad_url("redirect URI", &e))?,
            )
            // The identity platform documents client_secret as a form parameter.
            .set_auth_type(AuthType::RequestBody);
        let group_name_format = config
            .group_name_format()
            .ok_or_else(|| ConnectorError::Config("groupNameFormat: not name or id".into()))?;
        Ok(Self {
            oauth,
            redirect_uri: callback_url.to_string(),
            config: config.clone(),
            group_name_format,
            http: api::client(&config.root_cas, timeout)?,
            timeout,
            now,
        })
    }

    /// Dex's rule: groups are read inside one organization, when listed or asked for.
    fn groups_required(&self, scopes: &Scopes) -> bool {
        (!self.config.groups.is_empty() || scopes.groups) && self.config.is_org_tenant()
    }

    /// The scopes asked of Microsoft, in Dex's order.
    pub fn upstream_scopes(&self, scopes: &Scopes) -> Vec<String> {
        let mut out: Vec<String> = if self.config.scopes.is_empty() {
            vec![SCOPE_USER.into()]
        } else {
            self.config.scopes.clone()
        };
        if self.groups_required(scopes) {
            out.push(SCOPE_GROUPS.into());
        }
        if scopes.offline_access {
            out.push(SCOPE_OFFLINE.into());
        }
        out
    }

    fn api(&self) -> Api {
        Api {
            name: GRAPH,
            timeout: self.timeout,
        }
    }

    fn session_data(
        &self,
        token: &impl TokenResponse,
        old_refresh: Option<&str>,
    ) -> Result<Vec<u8>, ConnectorError> {
        let expiry = token
            .expires_in()
            .map(|d| (self.now)() + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
            .unwrap_or(0);
        serde_json::to_vec(&ConnectorData {
            access_token: token.access_token().secret().clone(),
            refresh_token: token
                .refresh_token()
                .map(|r| r.secret().clone())
                .or_else(|| old_refresh.map(str::to_string))
                .unwrap_or_default(),
            expiry,
        })
        .map_err(|e| ConnectorError::Internal(e.to_string()))
    }

    /// Who the token's user is, with groups when they are read, under the connector's rules.
    async fn lookup(&self, scopes: &Scopes, token: &str) -> Result<Identity, LookupError> {
        let url = format!(
            "{}/v1.0/me?$select=id,displayName,userPrincipalName",
            self.config.graph_url()
        );
        let user: GraphUser = self
            .api()
            .json("/v1.0/me", self.http.get(url).bearer_auth(token))
            .await?;
        let mut email = user.user_principal_name.unwrap_or_default();
        if self.config.email_to_lowercase {
            email = email.to_lowercase();
        }
        let groups = if self.groups_required(scopes) {
            self.groups(token, &user.id).await?
        } else {
            Vec::new()
        };
        Ok(Identity {
            user_id: user.id,
            username: user.display_name.unwrap_or_default(),
            preferred_username: String::new(),
            email,
            email_verified: true,
            groups,
            connector_data: None,
        })
    }

    /// The user's groups (transitive: `getMemberGroups` includes groups of groups), named as
    /// configured, checked against and possibly narrowed to `groups`.
    async fn groups(&self, token: &str, user_id: &str) -> Result<Vec<String>, LookupError> {
        let ids: Vec<String> = self
            .post_paged(
                token,
                "/v1.0/me/getMemberGroups",
                &json!({"securityEnabledOnly": self.config.only_security_groups}),
            )
            .await?;
        let names = match self.group_name_format {
            GroupNameFormat::Id => ids,
            GroupNameFormat::Name => {
                let mut names = Vec::new();
                for chunk in ids.chunks(IDS_PER_REQUEST) {
                    let objects: Vec<DirectoryObject> = self
                        .post_paged(
                            token,
                            "/v1.0/directoryObjects/getByIds",
                            &json!({"ids": chunk, "types": ["group"]}),
                        )
                        .await?;
                    names.extend(objects.into_iter().map(|o| o.display_name.unwrap_or(o.id)));
                }
                names
            }
        };
        if self.config.groups.is_empty() {
            return Ok(names);
        }
        let allowed: Vec<String> = names
            .iter()
            .filter(|g| self.config.groups.contains(g))
            .cloned()
            .collect();
        if allowed.is_empty() {
            return Err(LookupError::Denied(format!(
                "the Microsoft account `{user_id}` is in none of the groups allowed to sign in ({})",
                self.config.groups.join(", ")
            )));
        }
        Ok(if self.config.use_groups_as_whitelist {
            allowed
        } else {
            names
        })
    }

    /// POSTs `body` to `path`, then to each `@odata.nextLink` (with the same body, as Dex
    /// does), collecting every page's `value`.
    async fn post_paged<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<T>, ApiError> {
        let graph = self.config.graph_url();
        let mut url = format!("{graph}{path}");
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self
                .api()
                .json(path, self.http.post(&url).bearer_auth(token).json(body))
                .await?;
            out.extend(page.value);
            match page.next_link {
                None => return Ok(out),
                // The token goes to Graph only.
                Some(next) if same_origin(&next, graph) => url = next,
                Some(_) => {
                    return Err(ApiError::Malformed {
                        api: GRAPH,
                        endpoint: path.to_string(),
                        reason: "@odata.nextLink points away from graphURL".into(),
                    })
                }
            }
        }
        Err(ApiError::Malformed {
            api: GRAPH,
            endpoint: path.to_string(),
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// The access token to use at refresh: the kept one while it lasts, else a new one from
    /// the refresh token. Returns the token and the session data to keep.
    async fn current_token(
        &self,
        scopes: &Scopes,
        data: ConnectorData,
    ) -> Result<(String, Vec<u8>), ConnectorError> {
        if data.expiry > (self.now)() + EXPIRY_MARGIN_SECS {
            let kept =
                serde_json::to_vec(&data).map_err(|e| ConnectorError::Internal(e.to_string()))?;
            return Ok((data.access_token, kept));
        }
        if data.refresh_token.is_empty() {
            return Err(ConnectorError::SessionEnded(
                "the Microsoft access token expired and no refresh token was kept".into(),
            ));
        }
        let token = self
            .oauth
            .exchange_refresh_token(&RefreshToken::new(data.refresh_token.clone()))
            .add_scopes(self.upstream_scopes(scopes).into_iter().map(Scope::new))
            .request_async(&self.http)
            .await
            .map_err(|e| match token_error(e) {
                ConnectorError::BadCallback(reason) => ConnectorError::SessionEnded(reason),
                other => other,
            })?;
        let kept = self.session_data(&token, Some(&data.refresh_token))?;
        Ok((token.access_token().secret().clone(), kept))
    }
}

/// Whether `url` has the scheme, host and port of `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// The token endpoint's refusal or failure. A bad or replayed code is the browser's problem;
/// refused client credentials the operator's.
fn token_error<RE: std::error::Error + 'static>(
    err: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> ConnectorError {
    match err {
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().as_ref().to_string();
            let text = describe(&code, r.error_description().map(String::as_str));
            match r.error() {
                BasicErrorResponseType::InvalidGrant => ConnectorError::BadCallback(format!(
                    "Microsoft refused the authorization grant: {text}"
                )),
                BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient => ConnectorError::Config(format!(
                    "Microsoft refused the client credentials (check clientID and clientSecret): {text}"
                )),
                _ => ConnectorError::Unavailable(format!(
                    "Microsoft's token endpoint refused: {text}"
                )),
            }
        }
        other => ConnectorError::Unavailable(format!(
            "Microsoft's token endpoint: {}",
            error_chain(&other)
        )),
    }
}

#[async_trait]
impl CallbackConnector for MicrosoftConnector {
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        upstream::check_callback(&self.redirect_uri, callback_url)?;
        let state = state.to_string();
        let mut request = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.upstream_scopes(scopes).into_iter().map(Scope::new));
        if !self.config.prompt_type.is_empty() {
            request = request.add_extra_param("prompt", self.config.prompt_type.clone());
        }
        if !self.config.domain_hint.is_empty() {
            request = request.add_extra_param("domain_hint", self.config.domain_hint.clone());
        }
        let (url, _) = request.url();
        Ok(UpstreamRedirect {
            url: url.to_string(),
            pending: Vec::new(),
        })
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        _pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError> {
        upstream::check_callback(&self.redirect_uri, callback_url)?;
        let code = upstream::callback_code("Microsoft", query, &[])?;
        let token = self
            .oauth
            .exchange_code(AuthorizationCode::new(code))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let mut identity = self
            .lookup(scopes, token.access_token().secret())
            .await
            .map_err(|err| match err {
                LookupError::Denied(reason) => ConnectorError::AccessDenied(reason),
                LookupError::Api(err) => err.at_login(),
            })?;
        // As in Dex, tokens are kept only when there will be a refresh.
        if scopes.offline_access {
            identity.connector_data = Some(self.session_data(&token, None)?);
        }
        Ok(identity)
    }
}

#[async_trait]
impl RefreshConnector for MicrosoftConnector {
    /// Reads the user and groups again; the `user_id` stays what it was (as in Dex). A
    /// refresh token Microsoft no longer accepts, a token Graph refuses, or a user no longer
    /// in an allowed group ends the session.
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        let data: ConnectorData = identity
            .connector_data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .ok_or_else(|| {
                ConnectorError::SessionEnded(
                    "no Microsoft tokens are stored with this session".into(),
                )
            })?;
        let (token, kept) = self.current_token(scopes, data).await?;
        let fresh = self.lookup(scopes, &token).await.map_err(|err| match err {
            LookupError::Denied(reason) => ConnectorError::SessionEnded(reason),
            LookupError::Api(err @ ApiError::Unauthorized { .. }) => {
                ConnectorError::SessionEnded(err.to_string())
            }
            LookupError::Api(err) => ConnectorError::Unavailable(err.to_string()),
        })?;
        Ok(Identity {
            user_id: identity.user_id.clone(),
            connector_data: Some(kept),
            ..fresh
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn connector(extra: serde_json::Value) -> MicrosoftConnector {
        let mut config =
            json!({"clientID": "app", "clientSecret": "s", "tenant": "contoso.example"});
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let config: MicrosoftConfig = serde_json::from_value(config).unwrap();
        MicrosoftConnector::new(&config, "https://l.example/callback", Arc::new(|| 0)).unwrap()
    }

    #[test]
    fn scopes_follow_dex() {
        let c = connector(json!({}));
        let both = Scopes {
            offline_access: true,
            groups: true,
        };
        assert_eq!(
            c.upstream_scopes(&both),
            ["user.read", "directory.read.all", "offline_access"]
        );
        assert_eq!(c.upstream_scopes(&Scopes::default()), ["user.read"]);
        let c = connector(json!({"groups": ["ops"], "scopes": ["openid", "user.read"]}));
        assert_eq!(
            c.upstream_scopes(&Scopes::default()),
            ["openid", "user.read", "directory.read.all"]
        );
        let c = connector(json!({"tenant": "common"}));
        assert_eq!(c.upstream_scopes(&both), ["user.read", "offline_access"]);
    }

    #[test]
    fn next_links_must_stay_on_graph() {
        assert!(same_origin(
            "https://graph.microsoft.com/v1.0/me/getMemberGroups?$skiptoken=x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin(
            "https://graph.microsoft.com.evil.example/x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin(
            "http://graph.microsoft.com/x",
            "https://graph.microsoft.com"
        ));
    }

    #[test]
    fn a_redirect_uri_other_than_the_callback_is_refused() {
        let config: MicrosoftConfig = serde_json::from_value(
            json!({"clientID": "a", "clientSecret": "s", "redirectURI": "https://other.example/callback"}),
        )
        .unwrap();
        let err = MicrosoftConnector::new(&config, "https://l.example/callback", Arc::new(|| 0))
            .unwrap_err();
        assert!(
            err.to_string().contains("not this server's callback URL"),
            "{err}"
        );
    }
}
