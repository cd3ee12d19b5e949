//! The device authorization grant (RFC 8628): a headless kubectl gets a short user code, the
//! person types it at /device in any browser and signs in there.

use std::collections::HashMap;

use axum::http::StatusCode;
use rand::Rng;
use serde::Serialize;

use crate::storage::{AuthRequest, AuthRequestParams, DeviceRequest, DeviceStatus, StorageError};

use super::authorize::{AuthorizeError, Outcome};
use super::error::{ErrorCode, OAuthError};
use super::secrets::{random_token, sha256_hex};
use super::token::{presented_client, GRANT_DEVICE_CODE};
use super::Provider;

/// Letters without vowels or look-alikes (RFC 8628 §6.1), so codes spell no words.
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const USER_CODE_LEN: usize = 8;
/// Seconds a device waits between polls at first.
pub const POLL_INTERVAL_SECS: i64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A new random user code, normalised (no dash).
pub fn new_user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..USER_CODE_LEN)
        .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect()
}

/// "BCDF-GHJK" for display.
pub fn display_user_code(code: &str) -> String {
    if code.len() == USER_CODE_LEN {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

/// What a person typed, normalised: case and dashes (and spaces) do not matter. `None` when
/// it cannot be a user code at all.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

impl Provider {
    /// POST /device/code.
    pub async fn device_authorization(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<DeviceAuthorization, OAuthError> {
        if !self
            .settings
            .grant_types
            .iter()
            .any(|g| g == GRANT_DEVICE_CODE)
        {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "the device grant is not enabled",
            ));
        }
        let client = self
            .authenticate_client(&presented_client(authorization, form)?)
            .await?;
        if !client.grant_types.is_empty()
            && !client.grant_types.iter().any(|g| g == GRANT_DEVICE_CODE)
        {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the device grant",
            ));
        }
        let scopes: Vec<String> = form
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_else(|| vec!["openid".to_string()]);
        self.check_scopes_for(&client, &scopes)
            .await
            .map_err(|m| OAuthError::new(ErrorCode::InvalidScope, m))?;

        let now = self.now();
        let ttl = self.settings.device_request_ttl.as_secs() as i64;
        let device_code = random_token(32);
        // A collision of user codes is rare but possible: draw again.
        for _ in 0..5 {
            let request = DeviceRequest {
                user_code: new_user_code(),
                device_code_hash: sha256_hex(&device_code),
                client_id: client.id.clone(),
                scopes: scopes.clone(),
                created_at: now,
                expires_at: now + ttl,
                poll_interval: POLL_INTERVAL_SECS,
                last_poll_at: None,
                status: DeviceStatus::Pending,
                grant: None,
            };
            match self.storage.create_device_request(&request).await {
                Ok(()) => {
                    let shown = display_user_code(&request.user_code);
                    let verification_uri = self.settings.endpoint("/device");
                    return Ok(DeviceAuthorization {
                        device_code,
                        verification_uri_complete: super::authorize::append_query(
                            &verification_uri,
                            &[("user_code", &shown)],
                        ),
                        verification_uri,
                        user_code: shown,
                        expires_in: ttl,
                        interval: POLL_INTERVAL_SECS,
                    });
                }
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OAuthError::new(
            ErrorCode::ServerError,
            "could not allocate a user code",
        ))
    }

    /// The person submitted a user code at /device: start a login for the device's client.
    /// `csrf` is the form's token, bound to the browser cookie the /device page set.
    pub async fn submit_user_code(
        &self,
        input: &str,
        csrf: &str,
        client_addr: &str,
        browser_cookie: Option<&str>,
        session_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        let bound = browser_cookie
            .is_some_and(|c| super::secrets::constant_time_eq(csrf, &device_form_csrf(c)));
        if !bound {
            return Err(AuthorizeError::page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form's security token does not match. Reload the page and try again.",
            ));
        }
        let key = format!("device-addr:{client_addr}");
        let at = std::time::Instant::now();
        self.user_code_limiter
            .check(&[key.as_str()], at)
            .map_err(AuthorizeError::rate_limited)?;
        let now = self.now();
        let request = match normalize_user_code(input) {
            Some(code) => self
                .storage
                .get_device_request(&code)
                .await?
                .filter(|r| r.status == DeviceStatus::Pending && r.expires_at > now),
            None => None,
        };
        let Some(device) = request else {
            self.user_code_limiter.record_failure(&[key.as_str()], at);
            return Err(AuthorizeError::page(
                StatusCode::BAD_REQUEST,
                "Unknown code",
                "That code is not valid or has expired. Check the code on your device and try again.",
            ));
        };
        let client = self
            .clients
            .find(&device.client_id)
            .await?
            .ok_or_else(AuthorizeError::login_gone)?;
        let allowed = self.connectors_for(&client);
        if allowed.is_empty() {
            return Err(AuthorizeError::login_gone());
        }
        let browser_cookie = self.browser_cookie_or_new(browser_cookie);
        // A signed-in browser skips the password; approving the device is always asked.
        let session = self
            .live_session(session_cookie)
            .await?
            .filter(|s| allowed.iter().any(|c| c.id == s.connector_id));
        let auth = AuthRequest {
            id: random_token(16),
            client_id: client.id.clone(),
            params: AuthRequestParams {
                redirect_uri: String::new(),
                response_type: "code".into(),
                scopes: device.scopes.clone(),
                device_user_code: Some(device.user_code.clone()),
                ..AuthRequestParams::default()
            },
            csrf_token: random_token(32),
            browser_binding: sha256_hex(&browser_cookie),
            login: session.map(|s| crate::storage::LoginResult {
                connector_id: s.connector_id,
                claims: s.claims,
                connector_data: s.connector_data,
                auth_time: s.auth_time,
            }),
            upstream: None,
            created_at: now,
            expires_at: now + self.settings.auth_request_ttl.as_secs() as i64,
        };
        self.storage.create_auth_request(&auth).await?;
        let next = if auth.login.is_some() {
            super::authorize::Step::Page(format!("/approval?req={}", auth.id))
        } else if allowed.len() == 1 && !self.settings.always_show_login_screen {
            super::authorize::Step::Page(format!("/auth/{}?req={}", allowed[0].id, auth.id))
        } else {
            super::authorize::Step::Page(format!("/login?req={}", auth.id))
        };
        Ok(Outcome {
            next,
            browser_cookie: Some(browser_cookie),
            session_cookie: None,
        })
    }
}

/// The /device form's CSRF token: derived from the browser-binding cookie, so a form posted
/// from another site (which cannot read the cookie) cannot carry it.
pub fn device_form_csrf(browser_cookie: &str) -> String {
    sha256_hex(&format!("device-form:{browser_cookie}"))
}

impl Provider {
    /// A browser-binding cookie value: the browser's own when lanyard issued it, else a new
    /// one. A value lanyard did not issue (planted by a sibling site or a script) is never
    /// adopted, so whoever planted it cannot know the binding of the logins this browser
    /// starts.
    pub fn browser_cookie_or_new(&self, existing: Option<&str>) -> String {
        let key = self.keys.derived_key(BROWSER_COOKIE_KEY);
        match existing {
            Some(value) if issued_browser_cookie(&key, value) => value.to_string(),
            _ => {
                let random = random_token(32);
                let mac = browser_cookie_mac(&key, &random);
                format!("{random}.{mac}")
            }
        }
    }
}

/// What the browser cookie's MAC key is derived for.
const BROWSER_COOKIE_KEY: &str = "lanyard browser-binding cookie";

fn browser_cookie_mac(key: &[u8; 32], random: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(super::secrets::hmac_sha256(key, random.as_bytes()))
}

/// `random.mac` with the MAC lanyard computes for `random`.
fn issued_browser_cookie(key: &[u8; 32], value: &str) -> bool {
    value.split_once('.').is_some_and(|(random, mac)| {
        random.len() == 43
            && super::secrets::constant_time_eq(mac, &browser_cookie_mac(key, random))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_alphabet_and_normalise_case_and_dashes() {
        for _ in 0..100 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(
                normalize_user_code(&shown.to_lowercase()).as_deref(),
                Some(code.as_str())
            );
        }
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("BCDF GHJK").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("ABCD-EFGH"),
            None,
            "vowels are not in the alphabet"
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
    }
}
