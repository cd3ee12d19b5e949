//! From the upstream's claims to an [`Identity`], with Dex's rules for which claim is which.

use serde_json::{Map, Value};

use super::config::OidcConfig;
use crate::Identity;

/// Why the claims do not make an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// A claim the settings need is missing or has the wrong shape: the upstream (or the
    /// connector's claim settings) is at fault.
    Unusable(String),
    /// The claims are fine but say this user may not sign in.
    Denied(String),
}

fn string_claim<'a>(claims: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    claims.get(key).and_then(Value::as_str)
}

/// The standard claim, or the mapped one when the standard one is missing (or always with
/// `overrideClaimMapping`), as Dex picks them. Returns the value and the key it came from.
fn mapped<'a>(
    config: &OidcConfig,
    claims: &'a Map<String, Value>,
    standard: &'a str,
    mapping: &'a str,
) -> (Option<&'a Value>, &'a str) {
    let found = claims.get(standard);
    if (found.is_none() || config.override_claim_mapping) && !mapping.is_empty() {
        (claims.get(mapping), mapping)
    } else {
        (found, standard)
    }
}

/// Maps verified claims to an identity; `connector_data` is left for the caller.
pub(crate) fn identity_from_claims(
    config: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<Identity, ClaimError> {
    let missing = |key: &str| ClaimError::Unusable(format!("the upstream sent no `{key}` claim"));
    let sub = string_claim(claims, "sub").ok_or_else(|| missing("sub"))?;
    let user_id = if config.user_id_key.is_empty() {
        sub.to_string()
    } else {
        string_claim(claims, &config.user_id_key)
            .ok_or_else(|| missing(&config.user_id_key))?
            .to_string()
    };
    let name_key = if config.user_name_key.is_empty() {
        "name"
    } else {
        config.user_name_key.as_str()
    };
    let username = string_claim(claims, name_key)
        .ok_or_else(|| missing(name_key))?
        .to_string();

    let (preferred, _) = mapped(
        config,
        claims,
        "preferred_username",
        &config.claim_mapping.preferred_username,
    );
    let preferred_username = preferred
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    let (email, email_key) = mapped(config, claims, "email", &config.claim_mapping.email);
    let email = match email.and_then(Value::as_str) {
        Some(e) => e.to_string(),
        None if config.wants_email() => return Err(missing(email_key)),
        None => String::new(),
    };
    let email_verified = match claims.get("email_verified").and_then(Value::as_bool) {
        _ if config.insecure_skip_email_verified => true,
        Some(true) => true,
        Some(false) if !email.is_empty() => {
            return Err(ClaimError::Denied(
                "your email address is not verified at the identity provider".into(),
            ))
        }
        Some(false) => false,
        None if config.wants_email() => {
            return Err(ClaimError::Denied(
                "the identity provider does not say whether your email address is verified".into(),
            ))
        }
        None => false,
    };

    let groups = if config.insecure_enable_groups || !config.allowed_groups.is_empty() {
        let mut groups = read_groups(config, claims)?;
        if !config.allowed_groups.is_empty() {
            groups.retain(|g| config.allowed_groups.contains(g));
            if groups.is_empty() {
                return Err(ClaimError::Denied(format!(
                    "you are in none of the groups allowed to sign in ({})",
                    config.allowed_groups.join(", ")
                )));
            }
        }
        if config.insecure_enable_groups {
            groups
        } else {
            Vec::new()
        }
    } else {
        Vec::new()
    };

    Ok(Identity {
        user_id,
        username,
        preferred_username,
        email,
        email_verified,
        groups,
        connector_data: None,
    })
}

/// The groups claim: a list of names (or of objects with a `name`, as some upstreams send),
/// or one name.
fn read_groups(
    config: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<Vec<String>, ClaimError> {
    let (value, key) = mapped(config, claims, "groups", &config.claim_mapping.groups);
    let malformed = || ClaimError::Unusable(format!("the upstream's `{key}` claim is malformed"));
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => o
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(malformed),
                _ => Err(malformed()),
            })
            .collect(),
        Some(_) => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn alice() -> Map<String, Value> {
        claims(json!({
            "sub": "u1", "name": "Alice", "preferred_username": "alice",
            "email": "alice@example.com", "email_verified": true, "groups": ["devs", "ops"]
        }))
    }

    #[test]
    fn maps_standard_claims_and_keeps_groups_only_when_enabled() {
        let mut config = OidcConfig::default();
        let id = identity_from_claims(&config, &alice()).unwrap();
        assert_eq!(
            (id.user_id.as_str(), id.username.as_str(), id.email.as_str()),
            ("u1", "Alice", "alice@example.com")
        );
        assert!(id.email_verified);
        assert!(id.groups.is_empty(), "groups need insecureEnableGroups");
        config.insecure_enable_groups = true;
        let id = identity_from_claims(&config, &alice()).unwrap();
        assert_eq!(id.groups, ["devs", "ops"]);
    }

    #[test]
    fn user_id_and_name_keys_pick_other_claims() {
        let config = OidcConfig {
            user_id_key: "email".into(),
            user_name_key: "preferred_username".into(),
            ..Default::default()
        };
        let id = identity_from_claims(&config, &alice()).unwrap();
        assert_eq!(id.user_id, "alice@example.com");
        assert_eq!(id.username, "alice");
        let mut c = alice();
        c.remove("preferred_username");
        assert_eq!(
            identity_from_claims(&config, &c).unwrap_err(),
            ClaimError::Unusable("the upstream sent no `preferred_username` claim".into())
        );
    }

    #[test]
    fn claim_mapping_fills_in_missing_claims_or_overrides() {
        let mut config = OidcConfig {
            insecure_enable_groups: true,
            claim_mapping: super::super::config::ClaimMapping {
                preferred_username: "upn".into(),
                email: "mail".into(),
                groups: "roles".into(),
            },
            ..Default::default()
        };
        let c = claims(json!({
            "sub": "u1", "name": "A", "upn": "a@corp", "mail": "a@corp.example",
            "email_verified": true, "roles": [{"name": "admins"}, "readers"], "groups": ["x"]
        }));
        let id = identity_from_claims(&config, &c).unwrap();
        assert_eq!(id.preferred_username, "a@corp");
        assert_eq!(id.email, "a@corp.example");
        assert_eq!(
            id.groups,
            ["x"],
            "the standard groups claim wins without override"
        );
        config.override_claim_mapping = true;
        let id = identity_from_claims(&config, &c).unwrap();
        assert_eq!(id.groups, ["admins", "readers"]);
    }

    #[test]
    fn unverified_or_unknown_email_verification_is_refused_unless_skipped() {
        let mut config = OidcConfig::default();
        let mut c = alice();
        c.insert("email_verified".into(), json!(false));
        assert!(matches!(
            identity_from_claims(&config, &c),
            Err(ClaimError::Denied(m)) if m.contains("not verified")
        ));
        c.remove("email_verified");
        assert!(matches!(
            identity_from_claims(&config, &c),
            Err(ClaimError::Denied(m)) if m.contains("does not say")
        ));
        config.insecure_skip_email_verified = true;
        assert!(identity_from_claims(&config, &c).unwrap().email_verified);
        c.remove("email");
        config.insecure_skip_email_verified = false;
        assert_eq!(
            identity_from_claims(&config, &c).unwrap_err(),
            ClaimError::Unusable("the upstream sent no `email` claim".into())
        );
        config.scopes = vec!["profile".into()];
        let id = identity_from_claims(&config, &c).unwrap();
        assert!(id.email.is_empty() && !id.email_verified);
    }

    #[test]
    fn allowed_groups_filter_and_refuse_naming_the_groups() {
        let mut config = OidcConfig {
            insecure_enable_groups: true,
            allowed_groups: vec!["ops".into(), "admins".into()],
            ..Default::default()
        };
        assert_eq!(
            identity_from_claims(&config, &alice()).unwrap().groups,
            ["ops"]
        );
        config.allowed_groups = vec!["admins".into(), "sre".into()];
        assert_eq!(
            identity_from_claims(&config, &alice()).unwrap_err(),
            ClaimError::Denied(
                "you are in none of the groups allowed to sign in (admins, sre)".into()
            )
        );
        // Unlike Dex, allowedGroups is enforced even when groups are not released.
        config.insecure_enable_groups = false;
        assert!(matches!(
            identity_from_claims(&config, &alice()),
            Err(ClaimError::Denied(_))
        ));
    }

    #[test]
    fn malformed_groups_are_an_error_and_a_single_group_is_a_list() {
        let config = OidcConfig {
            insecure_enable_groups: true,
            ..Default::default()
        };
        let mut c = alice();
        c.insert("groups".into(), json!("solo"));
        assert_eq!(identity_from_claims(&config, &c).unwrap().groups, ["solo"]);
        c.insert("groups".into(), json!([1, 2]));
        assert!(matches!(
            identity_from_claims(&config, &c),
            Err(ClaimError::Unusable(_))
        ));
    }
}
