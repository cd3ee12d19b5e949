//! The approval step: the person sees what the client asks for and approves or denies.

use super::{request_mode, ApprovalView, AuthorizeError, Step};
use crate::oidc::error::ErrorCode;
use crate::oidc::Provider;

impl Provider {
    /// The approval page for a logged-in request.
    pub async fn approval(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<ApprovalView, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let Some(login) = &request.login else {
            return Err(AuthorizeError::login_gone());
        };
        let client = self.request_client(&request).await?;
        Ok(ApprovalView {
            auth_request_id: request.id.clone(),
            csrf_token: request.csrf_token.clone(),
            client_name: client.display_name().to_string(),
            username: if login.claims.email.is_empty() {
                login.claims.username.clone()
            } else {
                login.claims.email.clone()
            },
            scopes: request.params.scopes.clone(),
        })
    }

    /// The user approved or denied.
    pub async fn decide(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        approved: bool,
    ) -> Result<Step, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        Self::check_csrf(&request, csrf)?;
        if request.login.is_none() {
            return Err(AuthorizeError::login_gone());
        }
        if approved {
            return self.finish(&request).await;
        }
        self.storage.delete_auth_request(&request.id).await?;
        if let Some(user_code) = &request.params.device_user_code {
            self.storage
                .complete_device_request(user_code, None, self.now())
                .await?;
            return Ok(Step::DeviceDone { approved: false });
        }
        Ok(Step::Client(self.client_error(
            &request.params.redirect_uri,
            request_mode(&request),
            request.params.state.as_deref(),
            ErrorCode::AccessDenied,
            "the user denied the request",
        )))
    }
}
