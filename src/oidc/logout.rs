//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `end_session_endpoint`.

use std::collections::HashMap;

use axum::http::StatusCode;

use super::flow::AuthorizeError;
use super::redirect::append_query;
use super::secrets::{constant_time_eq, secret_token_key, sha256_hex};
use super::subject::encode_subject;
use super::Provider;

/// What the logout endpoint decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logout {
    /// Signed out; go to the client's registered post-logout URI (with `state`), or show the
    /// signed-out page when there is none.
    Done { redirect: Option<String> },
    /// Unless an ID token of the signed-in user itself asks, the user confirms with a form:
    /// a third-party page must not sign people out silently, whether with no hint or with
    /// a valid ID token of its own (or anyone else's).
    Confirm {
        csrf: String,
        params: Vec<(String, String)>,
    },
}

/// The CSRF token of the confirmation form: bound to the browser's session cookie.
fn logout_csrf(session_cookie: Option<&str>) -> String {
    sha256_hex(&format!("logout:{}", session_cookie.unwrap_or("")))
}

impl Provider {
    /// GET or POST of the logout endpoint. `confirmed_csrf` is the form's token on a POST.
    pub async fn end_session(
        &self,
        params: &HashMap<String, String>,
        session_cookie: Option<&str>,
        confirmed_csrf: Option<&str>,
    ) -> Result<Logout, AuthorizeError> {
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let bad = |m: &str| AuthorizeError::page(StatusCode::BAD_REQUEST, "Cannot sign out", m);

        // A hint that is not a live ID token of ours proves nothing: the user confirms.
        let hint = get("id_token_hint").and_then(|h| self.id_token_hint_claims(h));
        let hint_audience: Vec<String> = hint
            .as_ref()
            .and_then(|c| c.get("aud"))
            .map(|aud| match aud {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        let client_id = match (get("client_id"), hint_audience.first()) {
            (Some(id), _)
                if !hint_audience.is_empty() && !hint_audience.iter().any(|a| a == id) =>
            {
                return Err(bad("client_id is not an audience of the id_token_hint."));
            }
            (Some(id), _) => Some(id.to_string()),
            (None, Some(aud)) => Some(aud.clone()),
            (None, None) => None,
        };
        let redirect = match get("post_logout_redirect_uri") {
            Some(uri) => {
                let client = match &client_id {
                    Some(id) => self.clients.find(id).await?,
                    None => None,
                };
                let client = client.ok_or_else(|| {
                    bad("post_logout_redirect_uri needs a known client_id or id_token_hint.")
                })?;
                // Exact match only, like redirect URIs.
                if !client.post_logout_redirect_uris.iter().any(|r| r == uri) {
                    return Err(bad(
                        "post_logout_redirect_uri is not registered for this client.",
                    ));
                }
                Some(match get("state") {
                    Some(state) => append_query(uri, &[("state", state)]),
                    None => uri.to_string(),
                })
            }
            None => None,
        };

        if let Some(csrf) = confirmed_csrf {
            if !constant_time_eq(csrf, &logout_csrf(session_cookie)) {
                return Err(AuthorizeError::page(
                    StatusCode::FORBIDDEN,
                    "Form expired",
                    "The form's security token does not match. Reload the page and try again.",
                ));
            }
        } else if !self
            .hint_is_session_user(hint.as_ref(), session_cookie)
            .await?
        {
            // The form carries the client the hint named, so the post-logout URI still
            // checks out once the user confirms.
            let params = [
                ("client_id", client_id.as_deref()),
                ("post_logout_redirect_uri", get("post_logout_redirect_uri")),
                ("state", get("state")),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect();
            return Ok(Logout::Confirm {
                csrf: logout_csrf(session_cookie),
                params,
            });
        }
        if let Some(cookie) = session_cookie.filter(|c| !c.is_empty() && c.len() <= 128) {
            self.storage
                .revoke_session(&secret_token_key(cookie), self.now())
                .await?;
        }
        tracing::info!(client = client_id.as_deref().unwrap_or(""), "signed out");
        Ok(Logout::Done { redirect })
    }

    /// Whether the hint's `sub` is the user the browser's session signed in (trivially so
    /// when there is no live session: nothing would be ended).
    async fn hint_is_session_user(
        &self,
        hint: Option<&serde_json::Map<String, serde_json::Value>>,
        session_cookie: Option<&str>,
    ) -> Result<bool, AuthorizeError> {
        let Some(hint) = hint else {
            return Ok(false);
        };
        let Some(session) = self.live_session(session_cookie).await? else {
            return Ok(true);
        };
        let session_sub = encode_subject(&session.claims.user_id, &session.connector_id);
        Ok(hint.get("sub").and_then(|s| s.as_str()) == Some(session_sub.as_str()))
    }
}
