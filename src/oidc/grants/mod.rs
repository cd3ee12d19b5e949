//! The token endpoint: which grant a request is, whether the client may use it, and one file
//! per grant. A form becomes a typed [`TokenRequest`] in one place; the grants never read
//! the form.

mod authorization_code;
mod client_credentials;
mod device_code;
mod password;
mod refresh_token;
mod token_exchange;

use std::collections::HashMap;
use std::fmt;

use lanyard_connectors::oidc::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE};

use crate::config::GrantType;

use super::client_auth::presented_client;
use super::error::{ErrorCode, OAuthError};
use super::form::{optional, required};
use super::issue::TokenResponse;
use super::scopes::Scopes;
use super::Provider;

/// The grants this build implements. The password grant is on only with
/// `oauth2.passwordConnector` (see [`Provider::new`]).
pub const SUPPORTED: [GrantType; 6] = [
    GrantType::AuthorizationCode,
    GrantType::RefreshToken,
    GrantType::DeviceCode,
    GrantType::ClientCredentials,
    GrantType::TokenExchange,
    GrantType::Password,
];

/// Whether this build implements `grant`.
pub fn supported(grant: GrantType) -> bool {
    SUPPORTED.contains(&grant)
}

/// A token request, one variant per grant, with the parameters that grant reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest<'a> {
    AuthorizationCode {
        code: &'a str,
        /// Compared with the one the code was issued for; absent reads as "".
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    },
    RefreshToken {
        refresh_token: &'a str,
        /// Fewer scopes than were granted (RFC 6749 §6).
        scope: Option<Scopes>,
    },
    ClientCredentials {
        scope: Scopes,
    },
    DeviceCode {
        device_code: &'a str,
    },
    TokenExchange {
        subject_token: &'a str,
        /// `ID_TOKEN_TYPE` or `ACCESS_TOKEN_TYPE`.
        subject_token_type: &'a str,
        connector_id: &'a str,
        /// `ID_TOKEN_TYPE` or `ACCESS_TOKEN_TYPE` (the default).
        requested_token_type: &'static str,
        /// `openid` when none are asked for.
        scope: Scopes,
    },
    Password {
        username: &'a str,
        password: Secret<'a>,
        scope: Scopes,
        nonce: Option<&'a str>,
    },
}

/// A credential from the form, which `Debug` never shows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a>(pub &'a str);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'a> TokenRequest<'a> {
    /// The `grant_type` of a form, when it names a grant this build implements.
    pub fn grant_type(form: &HashMap<String, String>) -> Result<GrantType, OAuthError> {
        let name = required(form, "grant_type")?;
        GrantType::parse(name)
            .filter(|g| supported(*g))
            .ok_or_else(|| unsupported(name))
    }

    /// The typed request of a form; `grant` is its [`grant_type`](Self::grant_type). Refuses
    /// what no grant could answer before anything is looked up.
    pub fn from_form(
        grant: GrantType,
        form: &'a HashMap<String, String>,
    ) -> Result<Self, OAuthError> {
        let get = |k: &str| optional(form, k);
        Ok(match grant {
            GrantType::AuthorizationCode => Self::AuthorizationCode {
                code: required(form, "code")?,
                redirect_uri: form.get("redirect_uri").map(String::as_str).unwrap_or(""),
                code_verifier: get("code_verifier"),
            },
            GrantType::RefreshToken => Self::RefreshToken {
                refresh_token: required(form, "refresh_token")?,
                scope: get("scope").map(Scopes::parse),
            },
            GrantType::ClientCredentials => Self::ClientCredentials {
                scope: Scopes::parse(get("scope").unwrap_or("")),
            },
            GrantType::DeviceCode => Self::DeviceCode {
                device_code: required(form, "device_code")?,
            },
            GrantType::TokenExchange => {
                let subject_token = required(form, "subject_token")?;
                let subject_token_type = required(form, "subject_token_type")?;
                let connector_id = required(form, "connector_id")?;
                if ![ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE].contains(&subject_token_type) {
                    return Err(OAuthError::invalid_request(format!(
                        "subject_token_type must be {ID_TOKEN_TYPE} or {ACCESS_TOKEN_TYPE}"
                    )));
                }
                let requested_token_type = match get("requested_token_type") {
                    None => ACCESS_TOKEN_TYPE,
                    Some(t) if t == ACCESS_TOKEN_TYPE => ACCESS_TOKEN_TYPE,
                    Some(t) if t == ID_TOKEN_TYPE => ID_TOKEN_TYPE,
                    Some(_) => {
                        return Err(OAuthError::invalid_request(format!(
                            "requested_token_type must be {ACCESS_TOKEN_TYPE} or {ID_TOKEN_TYPE}"
                        )))
                    }
                };
                if get("actor_token").is_some() || get("actor_token_type").is_some() {
                    return Err(OAuthError::invalid_request(
                        "delegation (actor_token) is not supported",
                    ));
                }
                if get("resource").is_some() || get("audience").is_some() {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidTarget,
                        "tokens are issued for the requesting client only; use the scope audience:server:client_id:X for a trusting peer",
                    ));
                }
                Self::TokenExchange {
                    subject_token,
                    subject_token_type,
                    connector_id,
                    requested_token_type,
                    scope: Scopes::parse(get("scope").unwrap_or("openid")),
                }
            }
            GrantType::Password => Self::Password {
                username: required(form, "username")?,
                password: Secret(required(form, "password")?),
                scope: Scopes::parse(get("scope").unwrap_or("")),
                nonce: get("nonce"),
            },
        })
    }
}

fn unsupported(grant_type: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::UnsupportedGrantType,
        format!("grant_type {grant_type} is not supported"),
    )
}

impl Provider {
    /// POST /token with a form body already checked for duplicates; counted by grant and
    /// client, or by error code. `client_addr` is the caller's address, which the password
    /// grant's guessing budget counts against.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
        client_addr: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let result = self.token_response(authorization, form, client_addr).await;
        match &result {
            Ok(issued) => self.metrics.record_token(issued.grant, &issued.client),
            Err(err) => self.metrics.record_token_error(err.code.as_str()),
        }
        result.map(|issued| issued.response)
    }

    /// The grant is checked before the client, the client before the grant's parameters.
    async fn token_response(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
        client_addr: &str,
    ) -> Result<Issued, OAuthError> {
        let grant = TokenRequest::grant_type(form)?;
        if !self.settings.grant_enabled(grant) {
            return Err(unsupported(grant.as_str()));
        }
        let client = self
            .authenticate_client(&presented_client(authorization, form)?)
            .await?;
        if !client.allows_grant(grant) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use grant_type {}", grant.as_str()),
            ));
        }
        let response = match TokenRequest::from_form(grant, form)? {
            TokenRequest::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                self.redeem_code(&client, code, redirect_uri, code_verifier)
                    .await
            }
            TokenRequest::RefreshToken {
                refresh_token,
                scope,
            } => self.refresh(&client, refresh_token, scope).await,
            TokenRequest::DeviceCode { device_code } => {
                self.redeem_device_code(&client, device_code).await
            }
            TokenRequest::ClientCredentials { scope } => {
                self.client_credentials(&client, scope).await
            }
            TokenRequest::TokenExchange {
                subject_token,
                subject_token_type,
                connector_id,
                requested_token_type,
                scope,
            } => {
                self.token_exchange(
                    &client,
                    subject_token,
                    subject_token_type,
                    connector_id,
                    requested_token_type,
                    scope,
                )
                .await
            }
            TokenRequest::Password {
                username,
                password,
                scope,
                nonce,
            } => {
                self.password_grant(&client, username, password.0, scope, nonce, client_addr)
                    .await
            }
        }?;
        Ok(Issued {
            response,
            grant,
            client: client.id,
        })
    }
}

/// A token response with what the metrics count it by.
struct Issued {
    response: TokenResponse,
    grant: GrantType,
    client: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_missing_or_empty_parameter_is_named() {
        let f = form(&[("grant_type", "authorization_code"), ("code", "")]);
        let grant = TokenRequest::grant_type(&f).unwrap();
        let err = TokenRequest::from_form(grant, &f).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.description, "code is required");
        let err = TokenRequest::grant_type(&form(&[])).unwrap_err();
        assert_eq!(err.description, "grant_type is required");
    }

    #[test]
    fn grants_this_build_lacks_are_unsupported() {
        for name in ["implicit", "client_secret"] {
            let err = TokenRequest::grant_type(&form(&[("grant_type", name)])).unwrap_err();
            assert_eq!(err.code, ErrorCode::UnsupportedGrantType, "{name}");
        }
    }

    #[test]
    fn a_password_grant_request_never_shows_the_password() {
        let f = form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "hunter2"),
            ("scope", "openid"),
        ]);
        let request = TokenRequest::from_form(GrantType::Password, &f).unwrap();
        assert!(matches!(
            request,
            TokenRequest::Password {
                password: Secret("hunter2"),
                ..
            }
        ));
        assert!(!format!("{request:?}").contains("hunter2"));
        let f = form(&[("grant_type", "password"), ("username", "alice")]);
        let err = TokenRequest::from_form(GrantType::Password, &f).unwrap_err();
        assert_eq!(err.description, "password is required");
    }

    #[test]
    fn token_exchange_defaults_to_an_openid_access_token() {
        let f = form(&[
            ("subject_token", "t"),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("connector_id", "ci"),
            ("scope", ""),
        ]);
        match TokenRequest::from_form(GrantType::TokenExchange, &f).unwrap() {
            TokenRequest::TokenExchange {
                requested_token_type,
                scope,
                ..
            } => {
                assert_eq!(requested_token_type, ACCESS_TOKEN_TYPE);
                assert_eq!(scope.to_string(), "openid");
            }
            other => panic!("{other:?}"),
        }
    }
}
