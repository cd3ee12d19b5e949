//! The device authorization grant (RFC 8628): a headless kubectl gets a short user code, the
//! person types it at /device in any browser and signs in there.

use std::collections::HashMap;

use rand::Rng;
use serde::Serialize;

use crate::config::GrantType;
use crate::storage::{DeviceRequest, DeviceStatus, StorageError};

use super::client_auth::presented_client;
use super::error::{ErrorCode, OAuthError};
use super::redirect::append_query;
use super::scopes::{Scopes, OPENID};
use super::secrets::{random_token, sha256_hex};
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
        if !self.settings.grant_enabled(GrantType::DeviceCode) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "the device grant is not enabled",
            ));
        }
        let client = self
            .authenticate_client(&presented_client(authorization, form)?)
            .await?;
        if !client.allows_grant(GrantType::DeviceCode) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the device grant",
            ));
        }
        // An empty scope parameter is not absent here: it lacks openid and is refused.
        let scopes = Scopes::parse(form.get("scope").map(String::as_str).unwrap_or(OPENID));
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
                scopes: scopes.to_vec(),
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
                        verification_uri_complete: append_query(
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
}

/// The /device form's CSRF token: derived from the browser-binding cookie, so a form posted
/// from another site (which cannot read the cookie) cannot carry it.
pub fn device_form_csrf(browser_cookie: &str) -> String {
    sha256_hex(&format!("device-form:{browser_cookie}"))
}

/// The id of the grant a device authorization creates, derived from its device code so that
/// tokens can be bound to it before approval is known.
pub fn device_grant_id(device_code_hash: &str) -> String {
    sha256_hex(&format!("device-grant:{device_code_hash}"))[..32].to_string()
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
