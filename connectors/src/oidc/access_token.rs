//! Whether an upstream access token was meant for lanyard. An upstream answering userinfo for
//! a token proves only that the token is live: any application registered at the same upstream
//! holds such tokens for its users. So a token counts only when the upstream itself says whom
//! it was issued to: in an RFC 9068 JWT access token it signed, or in its RFC 7662
//! introspection answer to the connector's client.

use serde_json::{Map, Value};

use super::id_token::{self, IdTokenError};

/// Why an upstream access token is refused. The texts end up in token-exchange errors: they
/// name the problem, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccessTokenError {
    #[error(transparent)]
    Jwt(#[from] IdTokenError),
    #[error("the upstream's introspection reports the access token inactive (expired, revoked, or not issued to this connector's client)")]
    Inactive,
    #[error("the upstream's introspection describes a `{0}`, not an access token")]
    NotAnAccessToken(String),
    #[error("issued to {found}, not to the connector's client `{client_id}` or an audience in accessTokenAudiences")]
    NotForUs { found: String, client_id: String },
}

/// Whom access tokens must be issued to, and when.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    /// The connector's `clientID`.
    pub client_id: &'a str,
    /// `accessTokenAudiences`: further audiences whose tokens the operator accepts.
    pub audiences: &'a [String],
    /// Seconds since the Unix epoch, from the server's clock.
    pub now: i64,
}

/// What an accepted access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The user the upstream issued it for, when it says (introspection need not).
    pub sub: Option<String>,
    pub expires_at: i64,
}

/// Some text of the upstream's, shortened for an error message.
fn shown(value: &str) -> String {
    value.chars().take(100).collect()
}

/// The token was issued to the connector's client (`client_id`, RFC 9068 §2.2 and RFC 7662
/// §2.2), or for an audience (`aud`) that is the connector's client or one the config lists.
fn check_binding(claims: &Map<String, Value>, expected: &Expected) -> Result<(), AccessTokenError> {
    let client_id = match claims.get("client_id") {
        None => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err(IdTokenError::Claim("client_id").into()),
    };
    let audiences = id_token::audiences(claims)?.unwrap_or_default();
    let ours = client_id == Some(expected.client_id)
        || audiences
            .iter()
            .any(|a| *a == expected.client_id || expected.audiences.iter().any(|x| x == a));
    if ours {
        return Ok(());
    }
    let found = match (client_id, audiences.is_empty()) {
        (Some(c), true) => format!("client `{}`", shown(c)),
        (Some(c), false) => format!(
            "client `{}` for audience `{}`",
            shown(c),
            shown(&audiences.join(" "))
        ),
        (None, false) => format!("audience `{}`", shown(&audiences.join(" "))),
        (None, true) => "nobody it names (no `client_id` or `aud`)".to_string(),
    };
    Err(AccessTokenError::NotForUs {
        found,
        client_id: expected.client_id.to_string(),
    })
}

fn subject(claims: &Map<String, Value>) -> Result<Option<String>, AccessTokenError> {
    match claims.get("sub") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(IdTokenError::Claim("sub").into()),
    }
}

/// Checks the claims of an RFC 9068 JWT access token whose signature was verified: issuer,
/// `sub`, whom it was issued to, and lifetime (`exp`, `iat` required; `nbf` when present).
pub(crate) fn check_jwt_claims(
    claims: &Map<String, Value>,
    expected: &Expected,
) -> Result<Accepted, AccessTokenError> {
    id_token::check_issuer(claims, expected.issuer)?;
    let sub = subject(claims)?.ok_or(IdTokenError::Claim("sub"))?;
    check_binding(claims, expected)?;
    let expires_at = id_token::check_lifetime(claims, expected.now, true)?;
    Ok(Accepted {
        sub: Some(sub),
        expires_at,
    })
}

/// Checks the upstream's RFC 7662 introspection answer: `active`, an access token (not a
/// refresh token), the issuer when named, whom it was issued to, and lifetime (`exp` required,
/// since nothing lanyard issues for the token may outlive it; `iat` and `nbf` when present).
pub(crate) fn check_introspection(
    answer: &Map<String, Value>,
    expected: &Expected,
) -> Result<Accepted, AccessTokenError> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(AccessTokenError::Inactive);
    }
    if let Some(token_type) = answer.get("token_type") {
        let token_type = token_type
            .as_str()
            .ok_or(IdTokenError::Claim("token_type"))?;
        if token_type.eq_ignore_ascii_case("refresh_token") {
            return Err(AccessTokenError::NotAnAccessToken(shown(token_type)));
        }
    }
    if answer.contains_key("iss") {
        id_token::check_issuer(answer, expected.issuer)?;
    }
    let sub = subject(answer)?;
    check_binding(answer, expected)?;
    let expires_at = id_token::check_lifetime(answer, expected.now, false)?;
    Ok(Accepted { sub, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::id_token::{verify_signature_of, SigningAlg, TokenKind};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use josekit::jwk::KeyPair;
    use josekit::jws::JwsSigner;
    use serde_json::json;

    const NOW: i64 = 1_900_000_000;

    fn expected(audiences: &[String]) -> Expected<'_> {
        Expected {
            issuer: "https://idp",
            client_id: "lanyard",
            audiences,
            now: NOW,
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// RFC 9068 §2.2's claims, issued to `client_id` for `aud`.
    fn jwt_claims(client_id: &str, aud: Value) -> Map<String, Value> {
        map(
            json!({"iss": "https://idp", "sub": "u1", "client_id": client_id, "aud": aud,
                   "iat": NOW - 10, "exp": NOW + 300, "jti": "j1"}),
        )
    }

    fn sign(typ: &str, claims: &Map<String, Value>, signer: &dyn JwsSigner) -> String {
        let e = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let header = json!({"alg": "ES256", "kid": "k1", "typ": typ});
        let signed = format!(
            "{}.{}",
            e(&serde_json::to_vec(&header).unwrap()),
            e(&serde_json::to_vec(claims).unwrap())
        );
        format!("{signed}.{}", e(&signer.sign(signed.as_bytes()).unwrap()))
    }

    /// A generated upstream key: its signer, and the JWKS entry lanyard would read.
    fn upstream_key() -> (josekit::jws::alg::ecdsa::EcdsaJwsSigner, josekit::jwk::Jwk) {
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        let mut public = pair.to_jwk_public_key();
        public.set_key_id("k1");
        (
            josekit::jws::ES256
                .signer_from_jwk(&pair.to_jwk_private_key())
                .unwrap(),
            public,
        )
    }

    /// The JWT path end to end: signature by the upstream's published key, then the claims.
    fn verify_jwt(
        raw: &str,
        keys: &[josekit::jwk::Jwk],
        allowed: &[String],
    ) -> Result<Accepted, AccessTokenError> {
        let claims = verify_signature_of(TokenKind::AccessToken, raw, keys, &[SigningAlg::Es256])?;
        check_jwt_claims(&claims, &expected(allowed))
    }

    #[test]
    fn a_jwt_access_token_counts_only_when_signed_by_the_upstream_for_our_client_or_a_listed_audience(
    ) {
        let (signer, public) = upstream_key();
        let keys = [public];
        let ours = sign(
            "at+jwt",
            &jwt_claims("lanyard", json!("https://api")),
            &signer,
        );
        assert!(id_token::is_jwt_access_token(&ours));
        assert_eq!(
            verify_jwt(&ours, &keys, &[]),
            Ok(Accepted {
                sub: Some("u1".into()),
                expires_at: NOW + 300
            })
        );
        // `application/at+jwt` is the same media type.
        let long = sign(
            "application/at+jwt",
            &jwt_claims("lanyard", json!("x")),
            &signer,
        );
        assert!(verify_jwt(&long, &keys, &[]).is_ok());
        // Issued to another application of the same upstream, for the upstream's shared API
        // audience: refused, unless the operator lists that audience.
        let other = sign(
            "at+jwt",
            &jwt_claims("other-app", json!(["https://api"])),
            &signer,
        );
        let err = verify_jwt(&other, &keys, &[]).unwrap_err().to_string();
        assert!(
            err.contains("issued to client `other-app` for audience `https://api`, not to the connector's client `lanyard`"),
            "{err}"
        );
        assert!(verify_jwt(&other, &keys, &["https://api".to_string()]).is_ok());
        // An audience of lanyard's client id is for lanyard, whoever the client was.
        let for_us = sign(
            "at+jwt",
            &jwt_claims("other-app", json!(["lanyard"])),
            &signer,
        );
        assert!(verify_jwt(&for_us, &keys, &[]).is_ok());
        // Another signer under the same kid.
        let (stranger, _) = upstream_key();
        let forged = sign("at+jwt", &jwt_claims("lanyard", json!("x")), &stranger);
        assert_eq!(
            verify_jwt(&forged, &keys, &[]),
            Err(AccessTokenError::Jwt(IdTokenError::BadSignature))
        );
    }

    #[test]
    fn an_id_token_or_a_plain_jwt_is_not_a_jwt_access_token() {
        let (signer, public) = upstream_key();
        for typ in ["JWT", "JOSE"] {
            let token = sign(typ, &jwt_claims("lanyard", json!("lanyard")), &signer);
            assert!(!id_token::is_jwt_access_token(&token), "{typ}");
            assert!(matches!(
                verify_jwt(&token, std::slice::from_ref(&public), &[]),
                Err(AccessTokenError::Jwt(IdTokenError::Header(_)))
            ));
        }
        assert!(!id_token::is_jwt_access_token("opaque-token"));
    }

    #[test]
    fn jwt_access_token_claims_need_our_issuer_a_subject_and_a_current_lifetime() {
        let refused = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = jwt_claims("lanyard", json!("x"));
            edit(&mut c);
            check_jwt_claims(&c, &expected(&[]))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&|c| {
            c.insert("iss".into(), json!("https://other"));
        })
        .contains("issuer"));
        assert!(refused(&|c| {
            c.insert("exp".into(), json!(NOW));
        })
        .contains("expired"));
        assert!(refused(&|c| {
            c.insert("iat".into(), json!(NOW + 61));
        })
        .contains("`iat` is 1900000061"));
        assert!(refused(&|c| {
            c.insert("nbf".into(), json!(NOW + 3600));
        })
        .contains("not valid yet: `nbf`"));
        for key in ["iss", "sub", "exp", "iat"] {
            assert!(
                refused(&|c| {
                    c.remove(key);
                })
                .contains(&format!("`{key}`")),
                "{key}"
            );
        }
        assert!(refused(&|c| {
            c.remove("client_id");
            c.remove("aud");
        })
        .contains("no `client_id` or `aud`"));
        // Within the clock skew.
        let mut c = jwt_claims("lanyard", json!("x"));
        c.insert("iat".into(), json!(NOW + 60));
        c.insert("nbf".into(), json!(NOW + 60));
        assert!(check_jwt_claims(&c, &expected(&[])).is_ok());
    }

    #[test]
    fn an_introspection_answer_counts_when_active_for_our_client_and_within_its_lifetime() {
        let answer = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut a = map(json!({"active": true, "client_id": "lanyard", "sub": "u1",
                                   "token_type": "Bearer", "exp": NOW + 100}));
            edit(&mut a);
            check_introspection(&a, &expected(&["partner".to_string()]))
        };
        assert_eq!(
            answer(&|_| {}),
            Ok(Accepted {
                sub: Some("u1".into()),
                expires_at: NOW + 100
            })
        );
        assert_eq!(
            answer(&|a| {
                a.insert("active".into(), json!(false));
            }),
            Err(AccessTokenError::Inactive)
        );
        assert_eq!(
            answer(&|a| {
                a.remove("active");
            }),
            Err(AccessTokenError::Inactive)
        );
        assert!(matches!(
            answer(&|a| {
                a.insert("token_type".into(), json!("refresh_token"));
            }),
            Err(AccessTokenError::NotAnAccessToken(_))
        ));
        assert!(matches!(
            answer(&|a| {
                a.insert("client_id".into(), json!("web"));
                a.insert("aud".into(), json!(["web"]));
            }),
            Err(AccessTokenError::NotForUs { .. })
        ));
        assert!(answer(&|a| {
            a.insert("client_id".into(), json!("web"));
            a.insert("aud".into(), json!(["web", "partner"]));
        })
        .is_ok());
        assert!(answer(&|a| {
            a.insert("iss".into(), json!("https://other"));
        })
        .unwrap_err()
        .to_string()
        .contains("issuer"));
        assert!(answer(&|a| {
            a.remove("exp");
        })
        .unwrap_err()
        .to_string()
        .contains("`exp`"));
        assert!(answer(&|a| {
            a.insert("exp".into(), json!(NOW - 1));
        })
        .unwrap_err()
        .to_string()
        .contains("expired"));
        assert!(answer(&|a| {
            a.insert("iat".into(), json!(NOW + 3600));
        })
        .unwrap_err()
        .to_string()
        .contains("not valid yet"));
        // Introspection need not name the user.
        assert_eq!(
            answer(&|a| {
                a.remove("sub");
            })
            .map(|a| a.sub),
            Ok(None)
        );
    }
}
