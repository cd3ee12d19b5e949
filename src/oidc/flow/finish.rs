//! The last step: a logged-in, approved request becomes a code, or the approval of a waiting
//! device.

use axum::http::StatusCode;

use crate::storage::{AuthCode, AuthRequest, Grant, LoginResult};

use super::{request_mode, AuthorizeError, ClientResponse, Step};
use crate::oidc::device::device_grant_id;
use crate::oidc::secrets::{new_grant_id, new_secret_token, secret_token_key};
use crate::oidc::{Provider, AUTH_CODE_TTL_SECS};

impl Provider {
    /// The grant a finished login creates.
    fn grant_for(&self, request: &AuthRequest, login: &LoginResult, id: String, now: i64) -> Grant {
        Grant {
            id,
            client_id: request.client_id.clone(),
            connector_id: login.connector_id.clone(),
            claims: login.claims.clone(),
            scopes: request.params.scopes.clone(),
            nonce: request.params.nonce.clone(),
            auth_time: login.auth_time,
            connector_data: login.connector_data.clone(),
            created_at: now,
            revoked_at: None,
        }
    }

    /// A logged-in, approved request: a code (one transaction), or the approval of a waiting
    /// device.
    pub(crate) async fn finish(&self, request: &AuthRequest) -> Result<Step, AuthorizeError> {
        let Some(login) = &request.login else {
            return Err(AuthorizeError::login_gone());
        };
        let now = self.now();
        if let Some(user_code) = &request.params.device_user_code {
            return self.approve_device(request, login, user_code, now).await;
        }
        let code = new_secret_token();
        let auth_code = AuthCode {
            code_hash: secret_token_key(&code),
            redirect_uri: request.params.redirect_uri.clone(),
            code_challenge: request.params.code_challenge.clone(),
            code_challenge_method: request.params.code_challenge_method.clone(),
            grant: self.grant_for(request, login, new_grant_id(), now),
            created_at: now,
            expires_at: now + AUTH_CODE_TTL_SECS,
            redeemed_at: None,
        };
        if !self
            .storage
            .exchange_auth_request_for_code(&request.id, &auth_code, now)
            .await?
        {
            return Err(AuthorizeError::login_gone());
        }
        let mut params = vec![("code".to_string(), code)];
        if let Some(state) = &request.params.state {
            params.push(("state".into(), state.clone()));
        }
        params.push(("iss".into(), self.settings.issuer_str().to_string()));
        Ok(Step::Client(ClientResponse {
            redirect_uri: request.params.redirect_uri.clone(),
            mode: request_mode(request),
            params,
        }))
    }

    async fn approve_device(
        &self,
        request: &AuthRequest,
        login: &LoginResult,
        user_code: &str,
        now: i64,
    ) -> Result<Step, AuthorizeError> {
        let device = self
            .storage
            .get_device_request(user_code)
            .await?
            .ok_or_else(AuthorizeError::login_gone)?;
        let grant = self.grant_for(
            request,
            login,
            device_grant_id(&device.device_code_hash),
            now,
        );
        let approved = self
            .storage
            .complete_device_request(user_code, Some(&grant), now)
            .await?;
        self.storage.delete_auth_request(&request.id).await?;
        if !approved {
            return Err(AuthorizeError::page(
                StatusCode::BAD_REQUEST,
                "Code expired",
                "This device code has expired or was already used. Start again on your device.",
            ));
        }
        Ok(Step::DeviceDone { approved: true })
    }
}
