//! What the plain OAuth 2.0 connectors (`gitlab`, `oauth`) share: the authorization-code
//! flow through the `oauth2` crate, refresh, and bearer-authenticated JSON reads, over one
//! [`http_client`].

use std::error::Error as StdError;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde_json::Value;

use super::{callback_code, check_callback, describe, error_chain, http_client};
use crate::ConnectorError;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type OAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Where a plain OAuth 2.0 upstream lives and who lanyard is there.
pub(crate) struct UpstreamSettings<'a> {
    /// For messages: "GitLab", "the OAuth provider".
    pub name: &'static str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub authorization_url: &'a str,
    pub token_url: &'a str,
    pub redirect_uri: &'a str,
    /// `rootCAs` entries (a file, base64 of PEM, or PEM), added to the public roots.
    pub root_cas: &'a [String],
}

/// The tokens a code or refresh exchange gave.
pub(crate) struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// Why a bearer-authenticated read gave no JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// 401: the token is not (or no longer) accepted.
    #[error("{name} rejected the access token on {endpoint} (401 Unauthorized)")]
    Unauthorized {
        name: &'static str,
        endpoint: String,
    },
    /// 403: the token is valid but may not read this (missing scope, blocked user).
    #[error("{name} refused {endpoint} (403 Forbidden): {detail}")]
    Forbidden {
        name: &'static str,
        endpoint: String,
        detail: String,
    },
    #[error("{name} rate-limited {endpoint} (429 Too Many Requests, retry after {retry_after})")]
    RateLimited {
        name: &'static str,
        endpoint: String,
        retry_after: String,
    },
    #[error("{name} answered {endpoint} with {status}")]
    Status {
        name: &'static str,
        endpoint: String,
        status: reqwest::StatusCode,
    },
    #[error("{name} did not answer {endpoint} in time")]
    Timeout {
        name: &'static str,
        endpoint: String,
    },
    #[error("cannot reach {name} for {endpoint}: {reason}")]
    Transport {
        name: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error("unexpected answer from {name} on {endpoint}: {reason}")]
    Malformed {
        name: &'static str,
        endpoint: String,
        reason: String,
    },
}

impl FetchError {
    /// At login: a refusal of the fresh token is the upstream saying no (403) or failing.
    pub fn at_login(self) -> ConnectorError {
        match self {
            FetchError::Forbidden { .. } => ConnectorError::AccessDenied(self.to_string()),
            other => ConnectorError::Unavailable(other.to_string()),
        }
    }

    /// At refresh: a token the upstream no longer accepts ends the session.
    pub fn at_refresh(self) -> ConnectorError {
        match self {
            FetchError::Unauthorized { .. } | FetchError::Forbidden { .. } => {
                ConnectorError::SessionEnded(self.to_string())
            }
            other => ConnectorError::Unavailable(other.to_string()),
        }
    }
}

/// One upstream's OAuth client and HTTP client.
pub(crate) struct OAuthUpstream {
    name: &'static str,
    oauth: OAuthClient,
    http: reqwest::Client,
    redirect_uri: String,
}

impl OAuthUpstream {
    pub fn new(settings: &UpstreamSettings<'_>, timeout: Duration) -> Result<Self, ConnectorError> {
        let name = settings.name;
        let bad_url = |what: &str, e: &dyn std::fmt::Display| {
            ConnectorError::Config(format!("the {name} {what} is not a valid URL: {e}"))
        };
        let oauth = BasicClient::new(ClientId::new(settings.client_id.to_string()))
            .set_client_secret(ClientSecret::new(settings.client_secret.to_string()))
            .set_auth_uri(
                AuthUrl::new(settings.authorization_url.to_string())
                    .map_err(|e| bad_url("authorization URL", &e))?,
            )
            .set_token_uri(
                TokenUrl::new(settings.token_url.to_string())
                    .map_err(|e| bad_url("token URL", &e))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(settings.redirect_uri.to_string())
                    .map_err(|e| bad_url("redirect URI", &e))?,
            );
        let http = http_client(settings.root_cas, CONNECT_TIMEOUT, timeout)?;
        Ok(Self {
            name,
            oauth,
            http,
            redirect_uri: settings.redirect_uri.to_string(),
        })
    }

    /// The callback URL must be the one the upstream was told (`redirectURI`).
    pub fn check_callback(&self, callback_url: &str) -> Result<(), ConnectorError> {
        check_callback(&self.redirect_uri, callback_url)
    }

    /// The browser came back to `callback_url` with `query`: the tokens its code is worth.
    pub async fn tokens_from_callback(
        &self,
        callback_url: &str,
        query: &str,
    ) -> Result<Tokens, ConnectorError> {
        self.check_callback(callback_url)?;
        let code = self.callback_code(query)?;
        self.exchange(&code).await
    }

    /// The tokens to re-read the user with at refresh: fresh ones for the kept refresh token
    /// (the old one stays when none comes back), else, as Dex does, the kept access token.
    pub async fn tokens_for_refresh(
        &self,
        kept_access_token: String,
        kept_refresh_token: String,
    ) -> Result<Tokens, ConnectorError> {
        if !kept_refresh_token.is_empty() {
            let tokens = self.refresh(&kept_refresh_token).await?;
            Ok(Tokens {
                access_token: tokens.access_token,
                refresh_token: Some(tokens.refresh_token.unwrap_or(kept_refresh_token)),
            })
        } else if !kept_access_token.is_empty() {
            Ok(Tokens {
                access_token: kept_access_token,
                refresh_token: None,
            })
        } else {
            Err(ConnectorError::SessionEnded(format!(
                "no token of {} is stored with this session",
                self.name
            )))
        }
    }

    /// Where to send the browser.
    pub fn authorize_url(&self, state: &str, scopes: &[String]) -> String {
        let state = state.to_string();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scopes.iter().cloned().map(Scope::new))
            .url();
        url.to_string()
    }

    /// The code from the browser's return (`query` without `?`), or why there is none.
    pub fn callback_code(&self, query: &str) -> Result<String, ConnectorError> {
        callback_code(self.name, query, &[])
    }

    /// Trades the authorization code for tokens.
    pub async fn exchange(&self, code: &str) -> Result<Tokens, ConnectorError> {
        let answer = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .request_async(&self.http)
            .await;
        self.tokens(answer).map_err(|(kind, text)| match kind {
            Some(BasicErrorResponseType::InvalidGrant) => ConnectorError::BadCallback(text),
            Some(BasicErrorResponseType::InvalidClient)
            | Some(BasicErrorResponseType::UnauthorizedClient) => ConnectorError::Config(format!(
                "{text} (check clientID, clientSecret and redirectURI)"
            )),
            _ => ConnectorError::Unavailable(text),
        })
    }

    /// Trades a refresh token for new tokens; a refused refresh token ends the session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ConnectorError> {
        let answer = self
            .oauth
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .request_async(&self.http)
            .await;
        self.tokens(answer).map_err(|(kind, text)| match kind {
            Some(BasicErrorResponseType::InvalidGrant) => ConnectorError::SessionEnded(text),
            _ => ConnectorError::Unavailable(text),
        })
    }

    fn tokens<RE: StdError + 'static>(
        &self,
        answer: Result<
            BasicTokenResponse,
            RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
        >,
    ) -> Result<Tokens, (Option<BasicErrorResponseType>, String)> {
        let name = self.name;
        match answer {
            Ok(token) => Ok(Tokens {
                access_token: token.access_token().secret().clone(),
                refresh_token: token.refresh_token().map(|r| r.secret().clone()),
            }),
            Err(RequestTokenError::ServerResponse(err)) => {
                let code = err.error().as_ref().to_string();
                Err((
                    Some(err.error().clone()),
                    format!(
                        "{name}'s token endpoint refused: {}",
                        describe(&code, err.error_description().map(String::as_str))
                    ),
                ))
            }
            Err(RequestTokenError::Parse(_, _)) => Err((
                None,
                format!("{name}'s token endpoint answered with neither a token nor an error"),
            )),
            Err(RequestTokenError::Request(err)) => Err((
                None,
                format!(
                    "cannot reach {name}'s token endpoint: {}",
                    error_chain(&err)
                ),
            )),
            Err(RequestTokenError::Other(reason)) => {
                Err((None, format!("{name}'s token endpoint: {reason}")))
            }
        }
    }

    /// GETs `url` with the bearer token; the JSON answer.
    pub async fn get_json(&self, url: &str, access_token: &str) -> Result<Value, FetchError> {
        let name = self.name;
        let endpoint = url::Url::parse(url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| url.to_string());
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    FetchError::Timeout {
                        name,
                        endpoint: endpoint.clone(),
                    }
                } else {
                    FetchError::Transport {
                        name,
                        endpoint: endpoint.clone(),
                        reason: error_chain(&e),
                    }
                }
            })?;
        let status = response.status();
        match status {
            reqwest::StatusCode::UNAUTHORIZED => {
                return Err(FetchError::Unauthorized { name, endpoint })
            }
            reqwest::StatusCode::FORBIDDEN => {
                let body = response.text().await.unwrap_or_default();
                return Err(FetchError::Forbidden {
                    name,
                    endpoint,
                    detail: describe("forbidden", Some(&body)),
                });
            }
            reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| describe(v, None))
                    .unwrap_or_else(|| "an unspecified time".into());
                return Err(FetchError::RateLimited {
                    name,
                    endpoint,
                    retry_after,
                });
            }
            s if !s.is_success() => {
                return Err(FetchError::Status {
                    name,
                    endpoint,
                    status,
                })
            }
            _ => {}
        }
        response.json::<Value>().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout {
                    name,
                    endpoint: endpoint.clone(),
                }
            } else {
                FetchError::Malformed {
                    name,
                    endpoint: endpoint.clone(),
                    reason: error_chain(&e),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_end_sessions_only_at_refresh() {
        let forbidden = || FetchError::Forbidden {
            name: "GitLab",
            endpoint: "/api/v4/user".into(),
            detail: "forbidden".into(),
        };
        assert!(matches!(
            forbidden().at_login(),
            ConnectorError::AccessDenied(_)
        ));
        assert!(matches!(
            forbidden().at_refresh(),
            ConnectorError::SessionEnded(_)
        ));
        let limited = FetchError::RateLimited {
            name: "GitLab",
            endpoint: "/oauth/userinfo".into(),
            retry_after: "30".into(),
        };
        assert!(limited.to_string().contains("retry after 30"));
        assert!(matches!(
            limited.at_refresh(),
            ConnectorError::Unavailable(_)
        ));
    }
}
