//! Group membership from Google's Admin SDK Directory API, read by a service account acting
//! as a Workspace administrator (domain-wide delegation): the account's key signs a JWT
//! (RS256, with josekit) that the account's `token_uri` trades for an access token (the
//! OAuth 2.0 JWT bearer grant, RFC 7523), which then lists groups page by page.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use josekit::jws::{JwsHeader, RS256};
use josekit::jwt::JwtPayload;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::config::ANY_DOMAIN;
use crate::oidc::Now;
use crate::upstream::{error_chain, printable, Api, ApiError};
use crate::ConnectorError;

/// Read-only access to groups, the scope Dex asks for.
const GROUP_READONLY_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DIRECTORY: &str = "the Google Directory API";
/// An assertion's lifetime; Google takes at most an hour.
const ASSERTION_SECS: i64 = 3600;
/// A cached access token this close to its expiry is replaced.
const EXPIRY_MARGIN_SECS: i64 = 60;
/// A bound on groups visited (transitive lookups) and pages per listing.
const MAX_GROUPS: usize = 2000;
const MAX_PAGES: usize = 100;

/// The fields of a service account key file the grant needs.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    token_uri: String,
}

/// One page of `groups.list`.
#[derive(Deserialize)]
struct GroupsPage {
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(rename = "nextPageToken", default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Group {
    email: String,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct AccessToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// The token endpoint's refusal (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenRefusal {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

pub(crate) struct Directory {
    signer: josekit::jws::alg::rsassa::RsassaJwsSigner,
    client_email: String,
    key_id: String,
    token_uri: String,
    directory_url: String,
    admin_emails: BTreeMap<String, String>,
    transitive: bool,
    http: reqwest::Client,
    timeout: Duration,
    now: Now,
    /// Access tokens by administrator, with their expiry.
    tokens: Mutex<HashMap<String, (String, i64)>>,
}

impl Directory {
    /// Reads the key file at `path`; errors start with the key at fault.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        path: &str,
        directory_url: &str,
        admin_emails: BTreeMap<String, String>,
        transitive: bool,
        http: reqwest::Client,
        timeout: Duration,
        now: Now,
    ) -> Result<Self, ConnectorError> {
        let bad = |why: String| ConnectorError::Config(format!("serviceAccountFilePath: {why}"));
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot read {path}: {e}")))?;
        let key: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("{path} is not a service account key file: {e}")))?;
        if key.kind != "service_account" {
            return Err(bad(format!(
                "{path} holds credentials of type `{}`, not a service account key",
                key.kind
            )));
        }
        if !(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://")) {
            return Err(bad(format!("{path}: token_uri is not an http(s) URL")));
        }
        let signer = RS256
            .signer_from_pem(key.private_key.as_bytes())
            .map_err(|_| {
                bad(format!(
                    "{path}: private_key is not an RSA private key in PEM"
                ))
            })?;
        Ok(Self {
            signer,
            client_email: key.client_email,
            key_id: key.private_key_id,
            token_uri: key.token_uri,
            directory_url: directory_url.to_string(),
            admin_emails,
            transitive,
            http,
            timeout,
            now,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn api(&self) -> Api {
        Api {
            name: DIRECTORY,
            timeout: self.timeout,
        }
    }

    /// The administrator to act as for `email`'s domain, else the `*` one (Dex's rule).
    fn admin_for(&self, email: &str) -> Result<&str, ConnectorError> {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or(ANY_DOMAIN);
        self.admin_emails
            .get(domain)
            .or_else(|| self.admin_emails.get(ANY_DOMAIN))
            .map(String::as_str)
            .ok_or_else(|| {
                ConnectorError::Config(format!(
                    "domainToAdminEmail has no entry for `{domain}` and no `*` entry, so groups of `{email}` cannot be read"
                ))
            })
    }

    /// An access token for acting as `admin`, from the cache or a new JWT bearer grant.
    async fn token_for(&self, admin: &str) -> Result<String, ConnectorError> {
        let now = (self.now)();
        let mut tokens = self.tokens.lock().await;
        if let Some((token, expiry)) = tokens.get(admin) {
            if *expiry > now + EXPIRY_MARGIN_SECS {
                return Ok(token.clone());
            }
        }
        let assertion = self.assertion(admin, now)?;
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                ConnectorError::Unavailable(if e.is_timeout() {
                    format!(
                        "the service account's token endpoint did not answer within {} seconds",
                        self.timeout.as_secs()
                    )
                } else {
                    format!(
                        "cannot reach the service account's token endpoint: {}",
                        error_chain(&e.without_url())
                    )
                })
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(match serde_json::from_slice::<TokenRefusal>(&body) {
                // invalid_grant / unauthorized_client: the key, or the delegation of the scope
                // to the account in the Workspace admin console, is wrong.
                Ok(r) if status.is_client_error() => ConnectorError::Config(format!(
                    "the service account {} may not act as {admin} ({}{}); check the key file and the domain-wide delegation of {GROUP_READONLY_SCOPE}",
                    self.client_email,
                    printable(&r.error),
                    r.error_description.map(|d| format!(": {}", printable(&d))).unwrap_or_default()
                )),
                _ => ConnectorError::Unavailable(format!(
                    "the service account's token endpoint answered {status}"
                )),
            });
        }
        let token: AccessToken = serde_json::from_slice(&body).map_err(|e| {
            ConnectorError::Unavailable(format!(
                "the service account's token endpoint answered no access token: {e}"
            ))
        })?;
        let expiry = now + token.expires_in.unwrap_or(ASSERTION_SECS);
        tokens.insert(admin.to_string(), (token.access_token.clone(), expiry));
        Ok(token.access_token)
    }

    /// The signed JWT of the bearer grant (Google's service account flow).
    fn assertion(&self, admin: &str, now: i64) -> Result<String, ConnectorError> {
        let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        if !self.key_id.is_empty() {
            header.set_key_id(&self.key_id);
        }
        let mut payload = JwtPayload::new();
        payload.set_issuer(&self.client_email);
        payload.set_subject(admin);
        payload.set_audience(vec![self.token_uri.clone()]);
        let issued: SystemTime = at(now);
        payload.set_issued_at(&issued);
        payload.set_expires_at(&at(now + ASSERTION_SECS));
        payload
            .set_claim("scope", Some(GROUP_READONLY_SCOPE.into()))
            .map_err(|e| ConnectorError::Internal(format!("service account JWT: {e}")))?;
        josekit::jwt::encode_with_signer(&payload, &header, &self.signer)
            .map_err(|e| ConnectorError::Internal(format!("signing the service account JWT: {e}")))
    }

    /// The groups (their email addresses) `email` is in; with `fetchTransitiveGroupMembership`
    /// also the groups those groups are in, depth first, each once (as Dex lists them).
    pub(crate) async fn groups_of(&self, email: &str) -> Result<Vec<String>, DirectoryError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        self.collect(email, &mut seen, &mut out).await?;
        Ok(out)
    }

    async fn collect(
        &self,
        member: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), DirectoryError> {
        for group in self.list(member).await? {
            if !seen.insert(group.clone()) {
                continue;
            }
            if seen.len() > MAX_GROUPS {
                return Err(DirectoryError::Api(ApiError::Malformed {
                    api: DIRECTORY,
                    endpoint: "/admin/directory/v1/groups".into(),
                    reason: format!("more than {MAX_GROUPS} groups"),
                }));
            }
            out.push(group.clone());
            if self.transitive {
                Box::pin(self.collect(&group, seen, out)).await?;
            }
        }
        Ok(())
    }

    /// Every page of `groups.list` for `userKey=member`.
    async fn list(&self, member: &str) -> Result<Vec<String>, DirectoryError> {
        let admin = self.admin_for(member).map_err(DirectoryError::Token)?;
        let token = self.token_for(admin).await.map_err(DirectoryError::Token)?;
        let url = format!("{}/admin/directory/v1/groups", self.directory_url);
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("userKey", member.to_string())];
            if let Some(t) = &page_token {
                query.push(("pageToken", t.clone()));
            }
            let page: GroupsPage = self
                .api()
                .json(
                    "/admin/directory/v1/groups",
                    self.http.get(&url).query(&query).bearer_auth(&token),
                )
                .await
                .map_err(DirectoryError::Api)?;
            out.extend(page.groups.into_iter().map(|g| g.email));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => page_token = Some(next),
                None => return Ok(out),
            }
        }
        Err(DirectoryError::Api(ApiError::Malformed {
            api: DIRECTORY,
            endpoint: "/admin/directory/v1/groups".into(),
            reason: format!("more than {MAX_PAGES} pages"),
        }))
    }
}

/// Why groups could not be read.
pub(crate) enum DirectoryError {
    /// Getting the service account's token failed (already classified).
    Token(ConnectorError),
    Api(ApiError),
}

impl DirectoryError {
    pub(crate) fn into_connector_error(self) -> ConnectorError {
        match self {
            DirectoryError::Token(e) => e,
            DirectoryError::Api(e) => e.at_login(),
        }
    }
}
