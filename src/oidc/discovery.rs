//! The discovery document (`/.well-known/openid-configuration`), built once at start.

use serde_json::json;

use super::{ProviderSettings, SUPPORTED_SCOPES};

pub struct DiscoveryDocument {
    pub body: Vec<u8>,
}

impl DiscoveryDocument {
    pub fn build(settings: &ProviderSettings, signing_alg: &str) -> Self {
        let mut grant_types: Vec<&str> = settings.grant_types.iter().map(String::as_str).collect();
        grant_types.sort_unstable();
        let doc = json!({
            "issuer": settings.issuer_str(),
            "authorization_endpoint": settings.endpoint("/auth"),
            "token_endpoint": settings.endpoint("/token"),
            "jwks_uri": settings.endpoint("/keys"),
            "userinfo_endpoint": settings.endpoint("/userinfo"),
            "response_types_supported": settings.response_types,
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [signing_alg],
            "scopes_supported": SUPPORTED_SCOPES,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "grant_types_supported": grant_types,
            "claims_supported": [
                "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash",
                "email", "email_verified", "name", "preferred_username", "groups"
            ],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        });
        Self {
            body: serde_json::to_vec(&doc).unwrap_or_default(),
        }
    }
}
