//! GitHub and GitHub Enterprise as an upstream (`type: github`): the OAuth web flow, then the
//! REST API for who the user is, their verified email, and their organizations and teams.
//!
//! Behaviour follows Dex's GitHub connector: the same settings, the same `user_id` (numeric
//! id, or login with `useLoginAsID`), the same group names (`org:team`, and `org` with
//! `loadAllGroups`), so RBAC bindings written for Dex keep matching.

mod api;
mod config;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Uri;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, RedirectUrl, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::upstream::{self, describe, error_chain};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    UpstreamRedirect,
};

pub use api::ApiError;
pub use config::{GithubConfig, GithubOrg, TeamNameField};

const SCOPE_EMAIL: &str = "user:email";
const SCOPE_ORGS: &str = "read:org";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a GitHub lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubEndpoints {
    /// The web root with `/login/oauth/authorize` and `/login/oauth/access_token`.
    pub web: String,
    /// The REST API root.
    pub api: String,
    /// GitHub Enterprise Server does not verify email addresses, so there (as in Dex) every
    /// address counts as verified.
    pub enterprise: bool,
}

impl GithubEndpoints {
    pub fn github_com() -> Self {
        Self {
            web: "https://github.com".into(),
            api: "https://api.github.com".into(),
            enterprise: false,
        }
    }

    /// GitHub Enterprise Server at `host` (`github.example.com` or `host:port`).
    pub fn enterprise(host: &str) -> Self {
        Self {
            web: format!("https://{host}"),
            api: format!("https://{host}/api/v3"),
            enterprise: true,
        }
    }
}

/// An organization a user must belong to; with teams, to one of those teams.
#[derive(Debug, Clone)]
struct RequiredOrg {
    name: String,
    teams: Vec<String>,
}

type OAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// What the connector keeps with a session: the upstream token, for refresh. Dex's field name,
/// so the shape is familiar.
#[derive(Serialize, Deserialize)]
struct ConnectorData {
    #[serde(rename = "accessToken")]
    access_token: String,
}

/// Why the connector could not produce an identity from a token.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// GitHub knows the user, but lanyard's rules keep them out.
    #[error("{0}")]
    Denied(String),
}

pub struct GithubConnector {
    oauth: OAuthClient,
    redirect_uri: String,
    orgs: Vec<RequiredOrg>,
    legacy_org: Option<String>,
    load_all_groups: bool,
    team_name_field: TeamNameField,
    use_login_as_id: bool,
    preferred_email_domain: Option<String>,
    enterprise: bool,
    api_base: Uri,
    api_http: api::HttpClient,
    oauth_http: reqwest::Client,
}

impl GithubConnector {
    /// A connector for github.com, or for the GitHub Enterprise host in `hostName`.
    /// `callback_url` is lanyard's `/callback`; a configured `redirectURI` must equal it.
    pub fn new(config: &GithubConfig, callback_url: &str) -> Result<Self, ConnectorError> {
        let endpoints = match config.host_name() {
            Some(host) => GithubEndpoints::enterprise(host),
            None => GithubEndpoints::github_com(),
        };
        Self::with_endpoints(config, callback_url, endpoints)
    }

    /// Like [`new`](Self::new) with explicit roots, for GitHub-compatible servers elsewhere.
    pub fn with_endpoints(
        config: &GithubConfig,
        callback_url: &str,
        endpoints: GithubEndpoints,
    ) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        let redirect_uri = match config.redirect_uri() {
            Some(uri) if uri != callback_url => {
                return Err(ConnectorError::Config(format!(
                    "redirectURI `{uri}` is not this server's callback URL `{callback_url}`; GitHub sends the browser back to redirectURI, so set it to the callback URL (or leave it out)"
                )))
            }
            _ => callback_url.to_string(),
        };
        let bad_url = |what: &str, e: &dyn std::fmt::Display| {
            ConnectorError::Config(format!("the GitHub {what} is not a valid URL: {e}"))
        };
        let oauth = BasicClient::new(ClientId::new(config.client_id().to_string()))
            .set_client_secret(ClientSecret::new(config.client_secret().to_string()))
            .set_auth_uri(
                AuthUrl::new(format!("{}/login/oauth/authorize", endpoints.web))
                    .map_err(|e| bad_url("authorization URL", &e))?,
            )
            .set_token_uri(
                TokenUrl::new(format!("{}/login/oauth/access_token", endpoints.web))
                    .map_err(|e| bad_url("token URL", &e))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.clone()).map_err(|e| bad_url("redirect URI", &e))?,
            )
            // GitHub documents the credentials as form parameters.
            .set_auth_type(AuthType::RequestBody);
        let api_base: Uri = endpoints.api.parse().map_err(|e| bad_url("API URL", &e))?;

        let tls = tls_config(config.root_ca())?;
        let api_http = api::http_client(tls.clone(), CONNECT_TIMEOUT);
        let oauth_http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // A redirect from the token endpoint would carry the code somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent("lanyard")
            .build()
            .map_err(|e| ConnectorError::Internal(format!("HTTP client for GitHub: {e}")))?;

        Ok(Self {
            oauth,
            redirect_uri,
            orgs: config
                .orgs()
                .iter()
                .map(|o| RequiredOrg {
                    name: o.name.clone().unwrap_or_default(),
                    teams: o.teams.clone().unwrap_or_default(),
                })
                .collect(),
            legacy_org: config.legacy_org().map(str::to_string),
            load_all_groups: config.load_all_groups(),
            team_name_field: config.team_name_field().unwrap_or_default(),
            use_login_as_id: config.use_login_as_id(),
            preferred_email_domain: config.preferred_email_domain().map(str::to_string),
            enterprise: endpoints.enterprise,
            api_base,
            api_http,
            oauth_http,
        })
    }

    /// Whether organizations and teams will be read (and so `read:org` is needed).
    fn wants_groups(&self, scopes: &Scopes) -> bool {
        !self.orgs.is_empty()
            || self.legacy_org.is_some()
            || (scopes.groups && self.load_all_groups)
    }

    /// The OAuth scopes asked of GitHub: email always, organizations only when they are read.
    pub fn upstream_scopes(&self, scopes: &Scopes) -> Vec<&'static str> {
        let mut out = vec![SCOPE_EMAIL];
        if self.wants_groups(scopes) {
            out.push(SCOPE_ORGS);
        }
        out
    }

    /// Trades the authorization code for an access token.
    async fn exchange(&self, code: &str) -> Result<String, ConnectorError> {
        let answer = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .request_async(&self.oauth_http)
            .await;
        match answer {
            Ok(token) => Ok(token.access_token().secret().clone()),
            Err(RequestTokenError::ServerResponse(err)) => {
                let code = match err.error() {
                    BasicErrorResponseType::Extension(other) => other.clone(),
                    known => known.as_ref().to_string(),
                };
                Err(token_error(
                    &code,
                    err.error_description().map(String::as_str),
                ))
            }
            // GitHub answers a bad code with 200 and an error object instead of a token.
            Err(RequestTokenError::Parse(_, body)) => {
                match serde_json::from_slice::<GithubTokenError>(&body) {
                    Ok(err) => Err(token_error(&err.error, err.error_description.as_deref())),
                    Err(_) => Err(ConnectorError::Unavailable(
                        "GitHub's token endpoint answered with neither a token nor an error".into(),
                    )),
                }
            }
            Err(RequestTokenError::Request(err)) => Err(ConnectorError::Unavailable(format!(
                "cannot reach GitHub's token endpoint: {}",
                error_chain(&err)
            ))),
            Err(RequestTokenError::Other(reason)) => Err(ConnectorError::Unavailable(format!(
                "GitHub's token endpoint: {reason}"
            ))),
        }
    }

    fn api(&self, token: &str) -> Result<api::Api, ApiError> {
        api::Api::new(&self.api_http, &self.api_base, token, REQUEST_TIMEOUT)
    }

    /// Who the token's user is, with email and groups, under the connector's rules.
    async fn lookup(&self, scopes: &Scopes, token: &str) -> Result<Identity, LookupError> {
        let api = self.api(token)?;
        let user = api.user().await?;
        let emails = api.emails().await?;
        let email = pick_email(
            &emails,
            self.preferred_email_domain.as_deref(),
            self.enterprise,
        )
        .ok_or_else(|| {
            LookupError::Denied(match &self.preferred_email_domain {
                Some(domain) => format!(
                    "the GitHub account `{}` has no verified primary email address and no verified address in {domain}; verify one on GitHub, then sign in again",
                    user.login
                ),
                None => format!(
                    "the GitHub account `{}` has no verified primary email address; verify it on GitHub, then sign in again",
                    user.login
                ),
            })
        })?
        .email
        .clone();

        let groups = if !self.orgs.is_empty() {
            self.groups_for_orgs(&api, &user.login).await?
        } else if let Some(org) = &self.legacy_org {
            self.groups_for_legacy_org(&api, org, &user.login).await?
        } else if scopes.groups && self.load_all_groups {
            self.all_groups(&api).await?
        } else {
            Vec::new()
        };

        let username = match user.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => user.login.clone(),
        };
        let data = serde_json::to_vec(&ConnectorData {
            access_token: token.to_string(),
        })
        .map_err(|e| {
            LookupError::Api(ApiError::Malformed {
                endpoint: "connector data".into(),
                reason: e.to_string(),
            })
        })?;
        Ok(Identity {
            user_id: if self.use_login_as_id {
                user.login.clone()
            } else {
                user.id.to_string()
            },
            username,
            preferred_username: user.login,
            email,
            email_verified: true,
            groups,
            connector_data: Some(data),
        })
    }

    /// `orgs`: the user must be in one of the organizations (and, where teams are listed, in
    /// one of those teams); groups are `org:team` for the matching teams.
    async fn groups_for_orgs(
        &self,
        api: &api::Api,
        login: &str,
    ) -> Result<Vec<String>, LookupError> {
        let mut groups = Vec::new();
        let mut admitted = false;
        let mut teams: Option<Vec<api::Team>> = None;
        for org in &self.orgs {
            if !api.is_member(&org.name, login).await? {
                tracing::debug!(org = %org.name, user = %login, "not a member of the organization, or the organization has not granted this app access");
                continue;
            }
            if teams.is_none() {
                teams = Some(api.teams().await?);
            }
            let claims = team_claims_in(
                teams.as_deref().unwrap_or_default(),
                &org.name,
                self.team_name_field,
            );
            let kept: Vec<String> = if org.teams.is_empty() {
                admitted = true;
                claims
            } else {
                claims
                    .into_iter()
                    .filter(|c| org.teams.contains(c))
                    .collect()
            };
            groups.extend(kept.into_iter().map(|team| format!("{}:{team}", org.name)));
        }
        if admitted || !groups.is_empty() {
            Ok(dedup(groups))
        } else {
            Err(LookupError::Denied(not_admitted(login, &self.orgs)))
        }
    }

    /// Dex's legacy `org`: groups are the bare names of the user's teams in it. Unlike Dex,
    /// which documents but does not enforce it, membership of the organization is required.
    async fn groups_for_legacy_org(
        &self,
        api: &api::Api,
        org: &str,
        login: &str,
    ) -> Result<Vec<String>, LookupError> {
        if !api.is_member(org, login).await? {
            return Err(LookupError::Denied(not_admitted(
                login,
                &[RequiredOrg {
                    name: org.to_string(),
                    teams: Vec::new(),
                }],
            )));
        }
        let teams = api.teams().await?;
        Ok(dedup(team_claims_in(&teams, org, self.team_name_field)))
    }

    /// `loadAllGroups`: every organization the user is in, and `org:team` for their teams.
    async fn all_groups(&self, api: &api::Api) -> Result<Vec<String>, LookupError> {
        let orgs = api.orgs().await?;
        let teams = api.teams().await?;
        let mut groups = Vec::new();
        for org in orgs {
            let claims = team_claims_in(&teams, &org, self.team_name_field);
            groups.push(org.clone());
            groups.extend(claims.into_iter().map(|team| format!("{org}:{team}")));
        }
        Ok(dedup(groups))
    }
}

#[async_trait]
impl CallbackConnector for GithubConnector {
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        upstream::check_callback(&self.redirect_uri, callback_url)?;
        let state = state.to_string();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(
                self.upstream_scopes(scopes)
                    .into_iter()
                    .map(|s| Scope::new(s.to_string())),
            )
            .url();
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
        let code = upstream::callback_code(
            "GitHub",
            query,
            // GitHub's own errors for an app set up wrong.
            &["redirect_uri_mismatch", "application_suspended"],
        )?;
        let token = self.exchange(&code).await?;
        self.lookup(scopes, &token).await.map_err(|err| match err {
            LookupError::Denied(reason) => ConnectorError::AccessDenied(reason),
            LookupError::Api(err) => ConnectorError::Unavailable(err.to_string()),
        })
    }
}

#[async_trait]
impl RefreshConnector for GithubConnector {
    /// Reads the user, email and groups again with the token kept at login. The `user_id`
    /// stays what it was (as in Dex); a token GitHub no longer accepts, or a user who no longer
    /// meets the organization rules, ends the session.
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
                    "no GitHub access token is stored with this session".into(),
                )
            })?;
        let fresh = self
            .lookup(scopes, &data.access_token)
            .await
            .map_err(|err| match err {
                LookupError::Denied(reason) => ConnectorError::SessionEnded(reason),
                LookupError::Api(err @ ApiError::Unauthorized { .. }) => {
                    ConnectorError::SessionEnded(err.to_string())
                }
                LookupError::Api(err) => ConnectorError::Unavailable(err.to_string()),
            })?;
        Ok(Identity {
            user_id: identity.user_id.clone(),
            ..fresh
        })
    }
}

/// GitHub's token endpoint error object (sent with status 200).
#[derive(Deserialize)]
struct GithubTokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The token endpoint refused: a bad or replayed code is the browser's problem (400 page);
/// wrong credentials or redirect URI are the operator's.
fn token_error(code: &str, description: Option<&str>) -> ConnectorError {
    let text = describe(code, description);
    match code {
        "bad_verification_code" | "invalid_grant" => {
            ConnectorError::BadCallback(format!("GitHub refused the authorization code: {text}"))
        }
        "incorrect_client_credentials" | "invalid_client" | "unauthorized_client" => {
            ConnectorError::Config(format!(
                "GitHub refused the client credentials (check clientID and clientSecret): {text}"
            ))
        }
        "redirect_uri_mismatch" => ConnectorError::Config(format!(
            "GitHub refused the redirect URI (it must match the OAuth app's callback URL): {text}"
        )),
        _ => ConnectorError::Unavailable(format!("GitHub's token endpoint refused: {text}")),
    }
}

/// GitHub sent the browser back with `error=`.
/// The public web roots plus the `rootCA` file's certificates (a GitHub Enterprise behind a
/// private CA). Dex trusts the system pool plus the file; lanyard's image carries no system
/// pool, so the public roots are compiled in.
fn tls_config(root_ca: Option<&str>) -> Result<rustls::ClientConfig, ConnectorError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ConnectorError::Config(format!("rootCA: cannot read {path}: {e}")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                ConnectorError::Config(format!("rootCA: {path} is not valid PEM: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                ConnectorError::Config(format!(
                    "rootCA: a certificate in {path} cannot be used: {e}"
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ConnectorError::Config(format!(
                "rootCA: {path} holds no PEM certificate"
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The address to use: a verified one in the preferred domain, else the verified primary.
fn pick_email<'a>(
    emails: &'a [api::Email],
    preferred_domain: Option<&str>,
    enterprise: bool,
) -> Option<&'a api::Email> {
    let usable = |e: &&api::Email| e.verified || enterprise;
    if let Some(pattern) = preferred_domain {
        let preferred = emails.iter().filter(usable).find(|e| {
            e.email
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain_matches(pattern, domain))
        });
        if preferred.is_some() {
            return preferred;
        }
    }
    emails.iter().filter(usable).find(|e| e.primary)
}

/// Dex's rule: equal, or the same number of labels with `*` standing for any one label.
fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let domain: Vec<&str> = domain.split('.').collect();
    pattern.len() == domain.len()
        && pattern
            .iter()
            .zip(&domain)
            .all(|(p, d)| *p == "*" || p.eq_ignore_ascii_case(d))
}

/// The group names of the user's teams in `org` (organization logins compare without case,
/// as GitHub treats them).
fn team_claims_in(teams: &[api::Team], org: &str, field: TeamNameField) -> Vec<String> {
    teams
        .iter()
        .filter(|t| t.organization.login.eq_ignore_ascii_case(org))
        .flat_map(|t| match field {
            TeamNameField::Name => vec![t.name.clone()],
            TeamNameField::Slug => vec![t.slug.clone()],
            TeamNameField::Both => vec![t.name.clone(), t.slug.clone()],
        })
        .collect()
}

/// Keeps the first of each name, in order.
fn dedup(groups: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    groups
        .into_iter()
        .filter(|g| seen.insert(g.clone()))
        .collect()
}

/// The refusal for a user who meets none of the organization rules, naming them.
fn not_admitted(login: &str, orgs: &[RequiredOrg]) -> String {
    let required: Vec<String> = orgs
        .iter()
        .map(|o| {
            if o.teams.is_empty() {
                format!("organization `{}`", o.name)
            } else {
                let teams: Vec<String> = o.teams.iter().map(|t| format!("`{t}`")).collect();
                format!("team {} of organization `{}`", teams.join(" or "), o.name)
            }
        })
        .collect();
    format!(
        "the GitHub account `{login}` is not a member of {}. If it is, an owner of the organization may need to grant this application access to it.",
        required.join(", or of ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(address: &str, verified: bool, primary: bool) -> api::Email {
        api::Email {
            email: address.into(),
            verified,
            primary,
        }
    }

    fn team(org: &str, name: &str, slug: &str) -> api::Team {
        api::Team {
            name: name.into(),
            slug: slug.into(),
            organization: api::OrgRef { login: org.into() },
        }
    }

    #[test]
    fn the_verified_primary_address_is_used() {
        let emails = [
            email("old@example.com", true, false),
            email("jane@example.com", true, true),
        ];
        assert_eq!(
            pick_email(&emails, None, false).map(|e| e.email.as_str()),
            Some("jane@example.com")
        );
        let unverified = [email("jane@example.com", false, true)];
        assert!(pick_email(&unverified, None, false).is_none());
        // GitHub Enterprise Server cannot verify addresses.
        assert!(pick_email(&unverified, None, true).is_some());
    }

    #[test]
    fn a_verified_address_in_the_preferred_domain_comes_first() {
        let emails = [
            email("jane@home.example", true, true),
            email("jane@corp.example.com", false, false),
            email("jane@eu.corp.example.com", true, false),
        ];
        let picked = |domain| pick_email(&emails, Some(domain), false).map(|e| e.email.clone());
        assert_eq!(
            picked("*.corp.example.com").as_deref(),
            Some("jane@eu.corp.example.com")
        );
        // The unverified match is skipped, so the primary is used.
        assert_eq!(
            picked("corp.example.com").as_deref(),
            Some("jane@home.example")
        );
    }

    #[test]
    fn domain_wildcards_stand_for_exactly_one_label() {
        assert!(domain_matches("example.com", "EXAMPLE.com"));
        assert!(domain_matches("*.example.com", "eu.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(!domain_matches("*.example.com", "a.eu.example.com"));
    }

    #[test]
    fn team_claims_follow_the_name_field_and_stay_in_their_org() {
        let teams = [
            team("acme", "Site Reliability", "site-reliability"),
            team("ACME", "devs", "devs"),
            team("other", "Site Reliability", "site-reliability"),
        ];
        assert_eq!(
            team_claims_in(&teams, "acme", TeamNameField::Name),
            vec!["Site Reliability", "devs"]
        );
        assert_eq!(
            team_claims_in(&teams, "acme", TeamNameField::Slug),
            vec!["site-reliability", "devs"]
        );
        assert_eq!(
            dedup(team_claims_in(&teams, "acme", TeamNameField::Both)),
            vec!["Site Reliability", "site-reliability", "devs"]
        );
    }

    #[test]
    fn the_refusal_names_every_requirement() {
        let reason = not_admitted(
            "jane",
            &[
                RequiredOrg {
                    name: "acme".into(),
                    teams: vec!["sre".into(), "platform".into()],
                },
                RequiredOrg {
                    name: "widgets".into(),
                    teams: vec![],
                },
            ],
        );
        assert!(
            reason.contains("`jane` is not a member of team `sre` or `platform` of organization `acme`, or of organization `widgets`"),
            "{reason}"
        );
    }

    #[test]
    fn token_errors_are_the_browsers_or_the_operators() {
        assert!(matches!(
            token_error("bad_verification_code", None),
            ConnectorError::BadCallback(_)
        ));
        assert!(matches!(
            token_error("incorrect_client_credentials", None),
            ConnectorError::Config(_)
        ));
    }
}
