//! What goes into ID tokens and userinfo, decided by the granted scopes.

use serde_json::{Map, Value};

use lanyard_connectors::Identity;

use crate::storage::{Grant, UserClaims};

use super::subject::encode_subject;

/// The connector id of grants that no user holds (client_credentials): their subject is the
/// client itself.
pub const CLIENT_CONNECTOR: &str = "";

/// The scope prefix of Dex's cross-client trust: `audience:server:client_id:X`.
pub const AUDIENCE_SCOPE_PREFIX: &str = "audience:server:client_id:";

/// The `sub` of a grant: Dex's encoding for users, the client id for client grants.
pub fn subject(grant: &Grant) -> String {
    subject_of(&grant.claims.user_id, &grant.connector_id)
}

/// The `sub` of a user (or a client, for client grants) signed in through a connector.
pub fn subject_of(user_id: &str, connector_id: &str) -> String {
    if connector_id == CLIENT_CONNECTOR {
        user_id.to_string()
    } else {
        encode_subject(user_id, connector_id)
    }
}

/// The ID token audience: the client, then every peer it was granted a token for.
pub fn audiences(grant: &Grant) -> Vec<String> {
    let mut aud = vec![grant.client_id.clone()];
    for peer in grant
        .scopes
        .iter()
        .filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX))
    {
        if !aud.iter().any(|a| a == peer) {
            aud.push(peer.to_string());
        }
    }
    aud
}

/// The user claims a grant's scopes release: `sub`, plus email, profile and groups claims.
pub fn user_claims(grant: &Grant) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("sub".into(), Value::String(subject(grant)));
    let has = |s: &str| grant.scopes.iter().any(|g| g == s);
    if has("email") && !grant.claims.email.is_empty() {
        m.insert("email".into(), Value::String(grant.claims.email.clone()));
        m.insert(
            "email_verified".into(),
            Value::Bool(grant.claims.email_verified),
        );
    }
    if has("profile") {
        m.insert("name".into(), Value::String(grant.claims.username.clone()));
        if !grant.claims.preferred_username.is_empty() {
            m.insert(
                "preferred_username".into(),
                Value::String(grant.claims.preferred_username.clone()),
            );
        }
    }
    if has("groups") {
        m.insert(
            "groups".into(),
            Value::Array(
                grant
                    .claims
                    .groups
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
    if has("federated:id") {
        m.insert(
            "federated_claims".into(),
            serde_json::json!({
                "connector_id": grant.connector_id,
                "user_id": grant.claims.user_id,
            }),
        );
    }
    m
}

pub fn identity_claims(identity: &Identity) -> UserClaims {
    UserClaims {
        user_id: identity.user_id.clone(),
        username: identity.username.clone(),
        preferred_username: identity.preferred_username.clone(),
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        groups: identity.groups.clone(),
    }
}
