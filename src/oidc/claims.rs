//! What goes into ID tokens and userinfo, decided by the granted scopes.

use serde_json::{Map, Value};

use crate::storage::Grant;

use super::subject::encode_subject;

/// The user claims a grant's scopes release: `sub`, plus email, profile and groups claims.
pub fn user_claims(grant: &Grant) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "sub".into(),
        Value::String(encode_subject(&grant.claims.user_id, &grant.connector_id)),
    );
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
