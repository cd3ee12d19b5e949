//! Client authentication at the token, device, revocation and introspection endpoints.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::error::OAuthError;
use super::{ClientInfo, Provider};

/// How the client presented itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedClient {
    pub id: String,
    pub secret: Option<String>,
}

/// Reads client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: both parts
/// form-urlencoded) or from the body. Using both at once is refused.
pub fn presented_client(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<PresentedClient, OAuthError> {
    let body_id = form.get("client_id").filter(|s| !s.is_empty());
    let body_secret = form.get("client_secret").filter(|s| !s.is_empty());
    if let Some(header) = authorization {
        let Some(encoded) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            return Err(OAuthError::invalid_client(
                "unsupported Authorization scheme; use Basic",
            ));
        };
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        let id = form_decode(id);
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "client credentials given both in the Authorization header and in the body",
            ));
        }
        if body_id.is_some_and(|b| *b != id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the Authorization header",
            ));
        }
        return Ok(PresentedClient {
            id,
            secret: Some(form_decode(secret)),
        });
    }
    let id =
        body_id.ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
    Ok(PresentedClient {
        id: id.clone(),
        secret: body_secret.cloned(),
    })
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Provider {
    /// Authenticates the client: confidential clients by secret, public clients by id alone
    /// (they prove possession with PKCE or a device code instead).
    pub async fn authenticate_client(
        &self,
        presented: &PresentedClient,
    ) -> Result<ClientInfo, OAuthError> {
        let client = self.clients.find(&presented.id).await?;
        // Unknown client and wrong secret give the same answer.
        let denied = || OAuthError::invalid_client("client authentication failed");
        let Some(client) = client else {
            return Err(denied());
        };
        match (&presented.secret, client.public) {
            (Some(secret), _) if client.secret_sha256.is_some() => {
                if client.secret_matches(secret) {
                    Ok(client)
                } else {
                    Err(denied())
                }
            }
            (None, true) => Ok(client),
            _ => Err(denied()),
        }
    }
}
