//! The discovery document (`/.well-known/openid-configuration`), built once at start.

use axum::body::Bytes;
use serde_json::json;

use super::scopes::SUPPORTED_SCOPES;
use super::ProviderSettings;

pub struct DiscoveryDocument {
    /// Serialised once; every response shares it.
    pub body: Bytes,
}

impl DiscoveryDocument {
    pub fn build(settings: &ProviderSettings, signing_alg: &str) -> Self {
        let mut grant_types: Vec<&str> = settings.grant_types.iter().map(|g| g.as_str()).collect();
        grant_types.sort_unstable();
        let mut doc = json!({
            "issuer": settings.issuer_str(),
            "authorization_endpoint": settings.endpoint("/auth"),
            "token_endpoint": settings.endpoint("/token"),
            "jwks_uri": settings.endpoint("/keys"),
            "userinfo_endpoint": settings.endpoint("/userinfo"),
            // Config refuses the implicit and hybrid types (RFC 9700). The fragment mode
            // works for codes too, but only the modes clients need are advertised.
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"],
            "revocation_endpoint": settings.endpoint("/token/revoke"),
            "introspection_endpoint": settings.endpoint("/token/introspect"),
            "end_session_endpoint": settings.endpoint("/logout"),
            "prompt_values_supported": ["none", "login", "consent"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [signing_alg],
            "scopes_supported": SUPPORTED_SCOPES,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": grant_types,
            "claims_supported": [
                "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash",
                "email", "email_verified", "name", "preferred_username", "groups"
            ],
            "code_challenge_methods_supported": [super::pkce::S256],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        });
        if settings.grant_enabled(crate::config::GrantType::DeviceCode) {
            doc["device_authorization_endpoint"] = json!(settings.endpoint("/device/code"));
        }
        Self {
            body: Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        }
    }
}
