//! Any OpenID Connect provider as an upstream (`type: oidc`): Okta, Google, Keycloak,
//! Entra ID, or another lanyard. Dex's settings and claim rules; stricter checks of the
//! upstream's ID tokens (nonce, audience, keys refetched on rotation), verified with josekit,
//! the JOSE library the server signs with; OAuth 2.0 requests go through the `oauth2` crate.
//!
//! Discovery happens on first use and is retried on each login until it works, so one
//! unreachable upstream makes its own logins fail with an error page instead of stopping
//! the server (Dex refuses to start instead).

mod access_token;
mod claims;
mod config;
mod discovery;
mod id_token;

use std::error::Error as StdError;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use josekit::jwk::Jwk;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::upstream::{self, error_chain};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    SubjectIdentity, TokenIdentityConnector, UpstreamRedirect,
};
use claims::{identity_from_claims, ClaimError};
use config::PkceSetting;
pub use config::{ClaimMapping, OidcConfig};
use discovery::Metadata;
use id_token::{IdTokenError, SigningAlg, TokenKind};

/// RFC 8693 token type of an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// RFC 8693 token type of an OAuth 2.0 access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Seconds since the Unix epoch, from the server's clock.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A slow upstream makes its login fail, not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Tokens naming an unknown key make the connector refetch the upstream's keys (that is
/// how a rotation shows), but at most this often, so forged kids cannot flood the upstream.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// The token endpoint's answer: OAuth 2.0's, plus the ID token.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdTokenField {}

pub(crate) type UpstreamTokens = StandardTokenResponse<IdTokenField, BasicTokenType>;

/// An OAuth 2.0 client with an authorization endpoint and, if discovery names one, a token
/// endpoint.
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    UpstreamTokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
>;

/// What discovery found; the keys change when the upstream rotates.
struct Upstream {
    metadata: Metadata,
    auth_url: AuthUrl,
    token_url: Option<TokenUrl>,
    jwks: RwLock<Arc<Vec<Jwk>>>,
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    algs: Vec<SigningAlg>,
    pkce: Option<PkceSetting>,
}

/// What the server keeps between the redirect upstream and the callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    #[serde(default)]
    pkce_verifier: Option<String>,
}

/// What a session keeps for refresh: the upstream's refresh token and whom it was for.
#[derive(Default, Serialize, Deserialize)]
struct SessionData {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    sub: String,
}

pub struct OidcConnector {
    id: String,
    config: OidcConfig,
    http: reqwest::Client,
    now: Now,
    upstream: tokio::sync::Mutex<Option<Arc<Upstream>>>,
    /// The audience subject tokens must name when there is no `clientID` to name (see
    /// [`OidcConnector::for_token_exchange_only`]).
    token_exchange_audience: String,
    /// Parameters a provider-specific connector adds to the authorization request (Google's
    /// `hd`).
    extra_auth_params: Vec<(String, String)>,
}

impl std::fmt::Debug for OidcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnector")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a verification failure leaves the caller.
enum VerifyError {
    /// The token is not acceptable (signature, issuer, audience, expiry, nonce, shape).
    Invalid(String),
    /// The upstream could not be asked (keys refetch failed).
    Unavailable(String),
}

impl OidcConnector {
    /// Checks the settings and prepares the HTTP client; contacts nobody (see
    /// [`OidcConnector::discover`]).
    pub fn new(id: &str, config: OidcConfig, now: Now) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        let http = upstream::http_client(&config.root_cas, CONNECT_TIMEOUT, REQUEST_TIMEOUT)?;
        Ok(Self {
            id: id.to_string(),
            config,
            http,
            now,
            upstream: tokio::sync::Mutex::new(None),
            token_exchange_audience: String::new(),
            extra_auth_params: Vec::new(),
        })
    }

    /// Adds `params` to every authorization request (for connectors built on this one).
    pub(crate) fn with_auth_params(mut self, params: Vec<(String, String)>) -> Self {
        self.extra_auth_params = params;
        self
    }

    /// The audience subject tokens must name if the config has no `clientID` (ignored when
    /// it has one). A connector without `clientID` only verifies token-exchange subject
    /// tokens, and Dex then checks no audience at all: any token the upstream issued to
    /// anyone would do. lanyard requires `audience` instead (the server passes its issuer URL).
    pub fn for_token_exchange_only(mut self, audience: &str) -> Self {
        self.token_exchange_audience = audience.to_string();
        self
    }

    /// Whether people can sign in through it (it has a client at the upstream).
    pub fn signs_in(&self) -> bool {
        !self.config.client_id.is_empty()
    }

    /// The audience upstream tokens must be issued for: the connector's client, or without
    /// one the audience given to [`OidcConnector::for_token_exchange_only`].
    fn audience(&self) -> &str {
        if self.config.client_id.is_empty() {
            &self.token_exchange_audience
        } else {
            &self.config.client_id
        }
    }

    fn needs_client(&self) -> Result<(), ConnectorError> {
        if self.signs_in() {
            Ok(())
        } else {
            Err(ConnectorError::Config(
                "this connector has no clientID: it only verifies token-exchange subject tokens"
                    .into(),
            ))
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Fetches the upstream's discovery document and keys, unless that already worked.
    pub async fn discover(&self) -> Result<(), ConnectorError> {
        self.upstream().await.map(|_| ())
    }

    async fn upstream(&self) -> Result<Arc<Upstream>, ConnectorError> {
        // Held across the fetch so that a burst of logins discovers once.
        let mut slot = self.upstream.lock().await;
        if let Some(up) = slot.as_ref() {
            return Ok(up.clone());
        }
        let failed = |e: discovery::FetchError| {
            ConnectorError::Unavailable(format!(
                "discovery of {} failed: {}",
                self.config.issuer,
                error_chain(&e)
            ))
        };
        let metadata = discovery::discover(&self.http, &self.config.issuer)
            .await
            .map_err(failed)?;
        let keys = discovery::fetch_keys(&self.http, &metadata.jwks_uri)
            .await
            .map_err(failed)?;
        // discover() checked that these are URLs.
        let auth_url = AuthUrl::new(metadata.authorization_endpoint.clone())
            .map_err(|e| ConnectorError::Unavailable(format!("authorization_endpoint: {e}")))?;
        let token_url = match &metadata.token_endpoint {
            Some(url) => Some(
                TokenUrl::new(url.clone())
                    .map_err(|e| ConnectorError::Unavailable(format!("token_endpoint: {e}")))?,
            ),
            None => None,
        };
        let algs = id_token::accepted_algs(&metadata.id_token_signing_alg_values_supported);
        let advertised = metadata.code_challenge_methods_supported.clone();
        let pkce = match self.config.pkce_setting() {
            Some(PkceSetting::Auto) | None => match advertised {
                // Not advertised: S256 anyway; providers that do not know PKCE ignore it.
                None => Some(PkceSetting::S256),
                Some(m) if m.iter().any(|m| m == "S256") => Some(PkceSetting::S256),
                Some(m) if m.iter().any(|m| m == "plain") => Some(PkceSetting::Plain),
                Some(_) => None,
            },
            explicit => explicit,
        };
        let up = Arc::new(Upstream {
            metadata,
            auth_url,
            token_url,
            jwks: RwLock::new(Arc::new(keys)),
            last_refetch: tokio::sync::Mutex::new(None),
            algs,
            pkce,
        });
        tracing::info!(connector = %self.id, issuer = %self.config.issuer, "discovered the upstream identity provider");
        *slot = Some(up.clone());
        Ok(up)
    }

    fn redirect_uri(&self, callback_url: &str) -> Result<RedirectUrl, ConnectorError> {
        if !self.config.redirect_uri.is_empty() && self.config.redirect_uri != callback_url {
            return Err(ConnectorError::Config(format!(
                "redirectURI {} is not lanyard's callback URL {callback_url}",
                self.config.redirect_uri
            )));
        }
        RedirectUrl::new(callback_url.to_string())
            .map_err(|e| ConnectorError::Config(format!("callback URL: {e}")))
    }

    fn client(
        &self,
        up: &Upstream,
        callback_url: Option<&str>,
    ) -> Result<OAuthClient, ConnectorError> {
        let mut client = oauth2::Client::new(ClientId::new(self.config.client_id.clone()))
            .set_auth_uri(up.auth_url.clone())
            .set_token_uri_option(up.token_url.clone());
        if !self.config.client_secret.is_empty() {
            client = client.set_client_secret(ClientSecret::new(self.config.client_secret.clone()));
        }
        if self.config.secret_in_body() {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        if let Some(url) = callback_url {
            client = client.set_redirect_uri(self.redirect_uri(url)?);
        }
        Ok(client)
    }

    /// Checks an upstream ID token: signature (see [`OidcConnector::verify_jwt`]), issuer,
    /// audience = our client id (and no other audience), lifetime by the server's clock, and
    /// the nonce when one was sent. Returns its claims.
    async fn verify_id_token(
        &self,
        up: &Upstream,
        raw: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, VerifyError> {
        let claims = self.verify_jwt(up, TokenKind::IdToken, raw).await?;
        let expected = id_token::Expected {
            issuer: &self.config.issuer,
            client_id: self.audience(),
            now: (self.now)(),
            nonce,
        };
        id_token::check_claims(&claims, &expected)
            .map_err(|e| VerifyError::Invalid(e.to_string()))?;
        Ok(claims)
    }

    /// Verifies the signature of a JWT of `kind` by a key the upstream publishes (refetched
    /// once when the token names an unknown key); returns its claims, not yet checked.
    async fn verify_jwt(
        &self,
        up: &Upstream,
        kind: TokenKind,
        raw: &str,
    ) -> Result<Map<String, Value>, VerifyError> {
        let mut refetched = false;
        loop {
            let keys = up.jwks.read().map(|k| k.clone()).unwrap_or_default();
            match id_token::verify_signature_of(kind, raw, &keys, &up.algs) {
                Ok(claims) => return Ok(claims),
                // A key the upstream does not (yet, to our knowledge) publish: it may have
                // rotated since the keys were read.
                Err(IdTokenError::UnknownKey) if !refetched => {
                    if !self.refetch_keys(up).await? {
                        return Err(VerifyError::Invalid(IdTokenError::UnknownKey.to_string()));
                    }
                    refetched = true;
                }
                Err(e) => return Err(VerifyError::Invalid(e.to_string())),
            }
        }
    }

    /// Whom access tokens must be issued to, as of now.
    fn access_token_expected(&self) -> access_token::Expected<'_> {
        access_token::Expected {
            issuer: &self.config.issuer,
            client_id: self.audience(),
            audiences: &self.config.access_token_audiences,
            now: (self.now)(),
        }
    }

    /// Accepts an upstream access token only when the upstream says it was issued to this
    /// connector's client (or a listed audience): an RFC 9068 JWT access token it signed, or
    /// else its RFC 7662 introspection answer.
    async fn verify_access_token(
        &self,
        up: &Upstream,
        raw: &str,
    ) -> Result<access_token::Accepted, ConnectorError> {
        if id_token::is_jwt_access_token(raw) {
            let claims = self
                .verify_jwt(up, TokenKind::AccessToken, raw)
                .await
                .map_err(|e| match e {
                    VerifyError::Invalid(m) => ConnectorError::InvalidToken(m),
                    VerifyError::Unavailable(m) => ConnectorError::Unavailable(m),
                })?;
            return access_token::check_jwt_claims(&claims, &self.access_token_expected())
                .map_err(|e| ConnectorError::InvalidToken(e.to_string()));
        }
        let answer = self.introspect(up, raw).await?;
        access_token::check_introspection(&answer, &self.access_token_expected())
            .map_err(|e| ConnectorError::InvalidToken(e.to_string()))
    }

    /// Asks the upstream's introspection endpoint (RFC 7662) about `token`, authenticated as
    /// the connector's client, as the token endpoint is.
    async fn introspect(
        &self,
        up: &Upstream,
        token: &str,
    ) -> Result<Map<String, Value>, ConnectorError> {
        if !self.signs_in() {
            return Err(ConnectorError::InvalidToken(
                "the access token is not an RFC 9068 JWT access token (typ at+jwt), and without clientID lanyard has no credentials to introspect it".into(),
            ));
        }
        let endpoint = if self.config.introspection_endpoint.is_empty() {
            let discovered = up.metadata.introspection_endpoint.as_deref().ok_or_else(|| {
                ConnectorError::InvalidToken(format!(
                    "the access token is not an RFC 9068 JWT access token (typ at+jwt), and {} advertises no introspection_endpoint to ask about it (set introspectionEndpoint)",
                    self.config.issuer
                ))
            })?;
            if !discovery::is_http_url(discovered) {
                return Err(ConnectorError::Config(format!(
                    "the introspection_endpoint {} advertises is not an http(s) URL",
                    self.config.issuer
                )));
            }
            discovered
        } else {
            self.config.introspection_endpoint.as_str()
        };
        let has_secret = !self.config.client_secret.is_empty();
        let secret_in_body = self.config.secret_in_body() || !has_secret;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token)
                .append_pair("token_type_hint", "access_token");
            if secret_in_body {
                form.append_pair("client_id", &self.config.client_id);
                if has_secret {
                    form.append_pair("client_secret", &self.config.client_secret);
                }
            }
            form.finish()
        };
        let mut request = self
            .http
            .post(endpoint)
            .header(reqwest::header::ACCEPT, "application/json");
        if !secret_in_body {
            // RFC 6749 §2.3.1: both halves form-encoded before Basic encoding.
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            request = request.basic_auth(
                encode(&self.config.client_id),
                Some(encode(&self.config.client_secret)),
            );
        }
        let response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                ConnectorError::Unavailable(format!("introspection: {}", error_chain(&e)))
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ConnectorError::Config(format!(
                "the upstream's introspection endpoint refused clientID {} ({status})",
                self.config.client_id
            )));
        }
        if !status.is_success() {
            return Err(ConnectorError::Unavailable(format!(
                "introspection answered {status}"
            )));
        }
        response
            .json::<Map<String, Value>>()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("introspection: {}", error_chain(&e))))
    }

    /// Refetches the upstream's keys; `false` when a refetch happened too recently.
    async fn refetch_keys(&self, up: &Upstream) -> Result<bool, VerifyError> {
        let mut last = up.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let keys = discovery::fetch_keys(&self.http, &up.metadata.jwks_uri)
            .await
            .map_err(|e| {
                VerifyError::Unavailable(format!(
                    "fetching the keys of {} failed: {}",
                    self.config.issuer,
                    error_chain(&e)
                ))
            })?;
        tracing::info!(connector = %self.id, keys = keys.len(), "refetched the upstream's signing keys");
        if let Ok(mut slot) = up.jwks.write() {
            *slot = Arc::new(keys);
        }
        Ok(true)
    }

    /// Claims from the userinfo endpoint, for `getUserInfo` and for access-token exchange.
    /// `Ok(None)` when the upstream refused the access token.
    async fn userinfo(
        &self,
        up: &Upstream,
        access_token: &str,
    ) -> Result<Option<Map<String, Value>>, ConnectorError> {
        let endpoint = up.metadata.userinfo_endpoint.as_deref().ok_or_else(|| {
            ConnectorError::Config(format!(
                "getUserInfo is set but {} has no userinfo endpoint",
                self.config.issuer
            ))
        })?;
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("userinfo: {}", error_chain(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ConnectorError::Unavailable(format!(
                "userinfo answered {status}"
            )));
        }
        let json_reply = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_reply {
            return Err(ConnectorError::Config(
                "userinfo did not answer JSON (signed userinfo is not supported)".into(),
            ));
        }
        response
            .json::<Map<String, Value>>()
            .await
            .map(Some)
            .map_err(|e| ConnectorError::Unavailable(format!("userinfo: {}", error_chain(&e))))
    }

    /// Adds userinfo claims (when configured) to the ID token's; userinfo must speak of the
    /// same `sub`.
    async fn with_userinfo(
        &self,
        up: &Upstream,
        mut claims: Map<String, Value>,
        access_token: &str,
    ) -> Result<Map<String, Value>, ConnectorError> {
        if !self.config.get_user_info {
            return Ok(claims);
        }
        let info = self.userinfo(up, access_token).await?.ok_or_else(|| {
            ConnectorError::Unavailable("userinfo refused the upstream's own access token".into())
        })?;
        if info.get("sub") != claims.get("sub") {
            return Err(ConnectorError::BadCallback(
                "userinfo describes another subject than the ID token".into(),
            ));
        }
        claims.extend(info);
        Ok(claims)
    }

    fn session_data(claims: &Map<String, Value>, token: &UpstreamTokens) -> Option<Vec<u8>> {
        let data = SessionData {
            refresh_token: token.refresh_token().map(|r| r.secret().clone()),
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        serde_json::to_vec(&data).ok()
    }
}

/// A token endpoint's refusal or failure, for the log and the error.
fn token_error<RE: StdError + 'static>(
    err: &RequestTokenError<RE, BasicErrorResponse>,
) -> (Option<BasicErrorResponseType>, String) {
    match err {
        RequestTokenError::ServerResponse(r) => (
            Some(r.error().clone()),
            format!("the upstream answered {}", r.error().as_ref()),
        ),
        other => (None, error_chain(other)),
    }
}

fn claim_error_at_login(err: ClaimError) -> ConnectorError {
    match err {
        ClaimError::Denied(reason) => ConnectorError::AccessDenied(reason),
        ClaimError::Unusable(reason) => ConnectorError::Config(reason),
    }
}

#[async_trait]
impl CallbackConnector for OidcConnector {
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        self.needs_client()?;
        let up = self.upstream().await?;
        let client = self.client(&up, Some(callback_url))?;
        let state = state.to_string();
        // 128 random bits, base64url: the same shape as the state oauth2 makes.
        let nonce = CsrfToken::new_random().secret().clone();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("openid".into()))
            .add_scopes(self.config.upstream_scopes().into_iter().map(Scope::new))
            .add_extra_param("nonce", nonce.clone());
        for (name, value) in &self.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        if !self.config.acr_values.is_empty() {
            request = request.add_extra_param("acr_values", self.config.acr_values.join(" "));
        }
        if scopes.offline_access {
            // What Dex sends: Google wants access_type, most others a consent prompt, before
            // they hand out a refresh token.
            request = request.add_extra_param("access_type", "offline");
            let prompt = self.config.prompt_type.as_deref().unwrap_or("consent");
            if !prompt.is_empty() {
                request = request.add_extra_param("prompt", prompt.to_string());
            }
        }
        let pkce_verifier = match up.pkce {
            Some(PkceSetting::Plain) => {
                let verifier = PkceCodeVerifier::new(
                    PkceCodeChallenge::new_random_sha256().1.secret().clone(),
                );
                request = request
                    .add_extra_param("code_challenge", verifier.secret().clone())
                    .add_extra_param("code_challenge_method", "plain");
                Some(verifier)
            }
            Some(_) => {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                request = request.set_pkce_challenge(challenge);
                Some(verifier)
            }
            None => None,
        };
        let (url, _) = request.url();
        let pending = serde_json::to_vec(&Pending {
            nonce,
            pkce_verifier: pkce_verifier.map(|v| v.secret().clone()),
        })
        .map_err(|e| ConnectorError::Internal(e.to_string()))?;
        Ok(UpstreamRedirect {
            url: url.to_string(),
            pending,
        })
    }

    async fn handle_callback(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError> {
        let (up, claims, token) = self.verified_callback(callback_url, pending, query).await?;
        let claims = self
            .with_userinfo(&up, claims, token.access_token().secret())
            .await?;
        let mut identity =
            identity_from_claims(&self.config, &claims).map_err(claim_error_at_login)?;
        identity.connector_data = Self::session_data(&claims, &token);
        Ok(identity)
    }
}

impl OidcConnector {
    /// The callback's code redeemed and the ID token verified (signature, issuer, audience,
    /// lifetime, nonce): its claims and the upstream's tokens, for connectors built on this
    /// one to read as they need.
    async fn verified_callback(
        &self,
        callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<(Arc<Upstream>, Map<String, Value>, UpstreamTokens), ConnectorError> {
        self.needs_client()?;
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        if let Some(error) = params.get("error") {
            // Only the code is repeated: the description is the upstream's free text.
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(if error == "access_denied" {
                ConnectorError::AccessDenied("the identity provider refused the sign-in".into())
            } else {
                ConnectorError::BadCallback(format!("the identity provider answered {error}"))
            });
        }
        let code = params
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConnectorError::BadCallback("no code in the callback".into()))?;
        let pending: Pending = serde_json::from_slice(pending)
            .map_err(|_| ConnectorError::Internal("unreadable pending login state".into()))?;
        let up = self.upstream().await?;
        let client = self.client(&up, Some(callback_url))?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(|e| ConnectorError::Config(format!("token endpoint: {e}")))?;
        if let Some(v) = &pending.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(v.clone()));
        }
        let token: UpstreamTokens =
            exchange
                .request_async(&self.http)
                .await
                .map_err(|e| match token_error(&e) {
                    (Some(_), msg) => ConnectorError::BadCallback(msg),
                    (None, msg) => ConnectorError::Unavailable(format!("token endpoint: {msg}")),
                })?;
        let raw =
            token.extra_fields().id_token.as_deref().ok_or_else(|| {
                ConnectorError::BadCallback("the upstream sent no ID token".into())
            })?;
        let claims = self
            .verify_id_token(&up, raw, Some(&pending.nonce))
            .await
            .map_err(|e| match e {
                VerifyError::Invalid(m) => {
                    ConnectorError::BadCallback(format!("the upstream's ID token is invalid: {m}"))
                }
                VerifyError::Unavailable(m) => ConnectorError::Unavailable(m),
            })?;
        Ok((up, claims, token))
    }

    /// Like [`CallbackConnector::handle_callback`] but returns the verified ID token's claims
    /// and the upstream's refresh token instead of an identity.
    pub(crate) async fn callback_claims(
        &self,
        callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<(Map<String, Value>, Option<String>), ConnectorError> {
        let (_, claims, token) = self.verified_callback(callback_url, pending, query).await?;
        Ok((claims, token.refresh_token().map(|r| r.secret().clone())))
    }

    /// Redeems `refresh_token`; returns the upstream's new tokens and, when it sent an ID
    /// token, its verified claims. A refresh token the upstream refuses ends the session.
    async fn redeem_refresh_token(
        &self,
        refresh_token: &RefreshToken,
    ) -> Result<(Arc<Upstream>, Option<Map<String, Value>>, UpstreamTokens), ConnectorError> {
        let up = self.upstream().await?;
        let client = self.client(&up, None)?;
        let token: UpstreamTokens = client
            .exchange_refresh_token(refresh_token)
            .map_err(|e| ConnectorError::Config(format!("token endpoint: {e}")))?
            .request_async(&self.http)
            .await
            .map_err(|e| match token_error(&e) {
                (Some(BasicErrorResponseType::InvalidGrant), msg) => {
                    ConnectorError::SessionEnded(format!("{msg} to the refresh token"))
                }
                (Some(_), msg) => ConnectorError::Unavailable(format!("refresh: {msg}")),
                (None, msg) => ConnectorError::Unavailable(format!("token endpoint: {msg}")),
            })?;
        let claims = match token.extra_fields().id_token.as_deref() {
            Some(id_token) => Some(self.verify_id_token(&up, id_token, None).await.map_err(
                |e| match e {
                    VerifyError::Invalid(m) => ConnectorError::SessionEnded(format!(
                        "the refreshed ID token is invalid: {m}"
                    )),
                    VerifyError::Unavailable(m) => ConnectorError::Unavailable(m),
                },
            )?),
            None => None,
        };
        Ok((up, claims, token))
    }

    /// The claims of a fresh ID token for `refresh_token` (one is required), and the refresh
    /// token to keep (the upstream's new one, or the same when it does not rotate them).
    pub(crate) async fn refresh_claims(
        &self,
        refresh_token: &str,
    ) -> Result<(Map<String, Value>, String), ConnectorError> {
        self.needs_client()?;
        let refresh_token = RefreshToken::new(refresh_token.to_string());
        let (_, claims, token) = self.redeem_refresh_token(&refresh_token).await?;
        let claims = claims.ok_or_else(|| {
            ConnectorError::Unavailable("the upstream's refresh answer has no ID token".into())
        })?;
        let kept = token
            .refresh_token()
            .unwrap_or(&refresh_token)
            .secret()
            .clone();
        Ok((claims, kept))
    }
}

#[async_trait]
impl RefreshConnector for OidcConnector {
    async fn refresh(
        &self,
        _scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        self.needs_client()?;
        let data: SessionData = identity
            .connector_data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let Some(refresh_token) = data.refresh_token.filter(|t| !t.is_empty()) else {
            return Err(ConnectorError::SessionEnded(
                "the upstream gave no refresh token at login (add offline_access to the connector's scopes?)".into(),
            ));
        };
        let refresh_token = RefreshToken::new(refresh_token);
        let (up, claims, token) = self.redeem_refresh_token(&refresh_token).await?;
        let mut claims = claims.unwrap_or_default();
        if self.config.get_user_info {
            if claims.is_empty() {
                claims.insert("sub".into(), Value::String(data.sub.clone()));
            }
            claims = self
                .with_userinfo(&up, claims, token.access_token().secret())
                .await?;
        }
        if claims.is_empty() {
            // Nothing new to read (ID tokens are optional on refresh): the upstream still
            // accepted the session, so keep who it said the user was.
            let mut same = identity.clone();
            same.connector_data = Some(
                serde_json::to_vec(&SessionData {
                    refresh_token: Some(
                        token
                            .refresh_token()
                            .unwrap_or(&refresh_token)
                            .secret()
                            .clone(),
                    ),
                    sub: data.sub,
                })
                .map_err(|e| ConnectorError::Internal(e.to_string()))?,
            );
            return Ok(same);
        }
        if claims.get("sub").and_then(Value::as_str) != Some(data.sub.as_str()) {
            return Err(ConnectorError::SessionEnded(
                "the upstream refreshed the session of another subject".into(),
            ));
        }
        let mut fresh = identity_from_claims(&self.config, &claims).map_err(|e| match e {
            ClaimError::Denied(reason) => ConnectorError::SessionEnded(reason),
            ClaimError::Unusable(reason) => ConnectorError::Config(reason),
        })?;
        let mut kept = SessionData {
            refresh_token: token.refresh_token().map(|r| r.secret().clone()),
            sub: data.sub,
        };
        // Upstreams that do not rotate refresh tokens send none back: keep using the old one.
        if kept.refresh_token.is_none() {
            kept.refresh_token = Some(refresh_token.secret().clone());
        }
        fresh.connector_data =
            Some(serde_json::to_vec(&kept).map_err(|e| ConnectorError::Internal(e.to_string()))?);
        Ok(fresh)
    }
}

#[async_trait]
impl TokenIdentityConnector for OidcConnector {
    async fn token_identity(
        &self,
        _scopes: &Scopes,
        subject_token_type: &str,
        subject_token: &str,
    ) -> Result<SubjectIdentity, ConnectorError> {
        let up = self.upstream().await?;
        let (claims, expires_at) = match subject_token_type {
            ID_TOKEN_TYPE => {
                let claims = self
                    .verify_id_token(&up, subject_token, None)
                    .await
                    .map_err(|e| match e {
                        VerifyError::Invalid(m) => ConnectorError::InvalidToken(m),
                        VerifyError::Unavailable(m) => ConnectorError::Unavailable(m),
                    })?;
                let exp = id_token::expiry(&claims)
                    .map_err(|e| ConnectorError::InvalidToken(e.to_string()))?;
                (claims, exp)
            }
            // userinfo answering only shows that the token is live, not that it was issued
            // to lanyard: the upstream must say so first.
            ACCESS_TOKEN_TYPE if self.config.get_user_info => {
                let accepted = self.verify_access_token(&up, subject_token).await?;
                let claims = self.userinfo(&up, subject_token).await?.ok_or_else(|| {
                    ConnectorError::InvalidToken(
                        "the upstream does not accept the access token".into(),
                    )
                })?;
                if accepted
                    .sub
                    .is_some_and(|sub| claims.get("sub").and_then(Value::as_str) != Some(&sub))
                {
                    return Err(ConnectorError::InvalidToken(
                        "userinfo describes another subject than the access token".into(),
                    ));
                }
                (claims, accepted.expires_at)
            }
            ACCESS_TOKEN_TYPE => {
                return Err(ConnectorError::InvalidToken(
                    "this connector takes access tokens only with getUserInfo".into(),
                ))
            }
            other => {
                return Err(ConnectorError::InvalidToken(format!(
                    "subject_token_type {other} is not supported"
                )))
            }
        };
        let identity = identity_from_claims(&self.config, &claims).map_err(|e| match e {
            ClaimError::Denied(reason) => ConnectorError::AccessDenied(reason),
            ClaimError::Unusable(reason) => ConnectorError::InvalidToken(reason),
        })?;
        Ok(SubjectIdentity {
            identity,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream as discovery would describe it: no introspection_endpoint unless given.
    fn upstream(introspection_endpoint: Option<&str>) -> Upstream {
        let metadata: Metadata = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": "https://idp.example.com/token",
            "introspection_endpoint": introspection_endpoint,
            "jwks_uri": "https://idp.example.com/keys",
        }))
        .unwrap();
        Upstream {
            auth_url: AuthUrl::new(metadata.authorization_endpoint.clone()).unwrap(),
            token_url: None,
            jwks: RwLock::new(Arc::new(Vec::new())),
            last_refetch: tokio::sync::Mutex::new(None),
            algs: Vec::new(),
            pkce: None,
            metadata,
        }
    }

    fn connector(introspection_endpoint: &str) -> OidcConnector {
        let config: OidcConfig = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example.com", "clientID": "lanyard", "clientSecret": "s",
            "redirectURI": "https://l.example.com/callback", "getUserInfo": true,
            "introspectionEndpoint": introspection_endpoint,
        }))
        .unwrap();
        OidcConnector::new("upstream", config, Arc::new(|| 0)).unwrap()
    }

    #[tokio::test]
    async fn an_opaque_access_token_without_an_introspection_endpoint_is_refused_naming_why() {
        // Nothing is contacted: the refusal comes before any request.
        let err = connector("")
            .verify_access_token(&upstream(None), "opaque-access-token")
            .await
            .unwrap_err();
        let ConnectorError::InvalidToken(why) = err else {
            panic!("{err:?}")
        };
        assert!(
            why.contains("not an RFC 9068 JWT access token")
                && why.contains("https://idp.example.com advertises no introspection_endpoint")
                && why.contains("set introspectionEndpoint"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_configured_introspection_endpoint_is_asked_even_when_none_is_advertised() {
        // Port 1 on loopback refuses connections: the request was made there.
        let err = connector("http://127.0.0.1:1/introspect")
            .verify_access_token(&upstream(None), "opaque-access-token")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unavailable(m) if m.starts_with("introspection:")),
            "{err:?}"
        );
    }
}
