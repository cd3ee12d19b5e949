//! Checking an upstream's ID token with josekit, the JOSE library lanyard signs its own tokens
//! with: first the signature, by the one published key whose type, curve, use and algorithm
//! fit the token's header, then the claims.
//!
//! The header's `alg` and `kid` come from whoever made the token, so neither is trusted on its
//! own: the algorithm must be one the upstream advertises and one lanyard accepts (asymmetric
//! only), and it must fit the key it picks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::Jwk;
use josekit::jws::JwsVerifier;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far in the future `iat` and `nbf` may lie: upstream clocks drift a little, but a token
/// dated later than that was minted to be used later, or by an issuer with a broken clock.
pub(crate) const CLOCK_SKEW_SECS: i64 = 60;

/// What a JWT claims to be, by its header's `typ`; checked so that one kind of token cannot
/// stand in for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An OpenID Connect ID token: `typ` absent, `JWT` or `JOSE`.
    IdToken,
    /// An RFC 9068 JWT access token: `typ` must be `at+jwt` (§4), which keeps ID tokens out.
    AccessToken,
}

/// The signature algorithms lanyard accepts from an upstream. MAC algorithms would make the
/// client secret a signing key, and `none` is no signature, so neither has a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigningAlg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl SigningAlg {
    const ALL: [SigningAlg; 9] = [
        SigningAlg::Rs256,
        SigningAlg::Rs384,
        SigningAlg::Rs512,
        SigningAlg::Ps256,
        SigningAlg::Ps384,
        SigningAlg::Ps512,
        SigningAlg::Es256,
        SigningAlg::Es384,
        SigningAlg::EdDsa,
    ];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Rs384 => "RS384",
            SigningAlg::Rs512 => "RS512",
            SigningAlg::Ps256 => "PS256",
            SigningAlg::Ps384 => "PS384",
            SigningAlg::Ps512 => "PS512",
            SigningAlg::Es256 => "ES256",
            SigningAlg::Es384 => "ES384",
            SigningAlg::EdDsa => "EdDSA",
        }
    }

    /// Whether `jwk` may verify this algorithm's signatures: its key type (and curve) fit the
    /// algorithm, it is not an encryption key, and it names no other algorithm.
    fn fits(self, jwk: &Jwk) -> bool {
        let curve = jwk.curve();
        let shape = match self {
            SigningAlg::Rs256
            | SigningAlg::Rs384
            | SigningAlg::Rs512
            | SigningAlg::Ps256
            | SigningAlg::Ps384
            | SigningAlg::Ps512 => jwk.key_type() == "RSA",
            SigningAlg::Es256 => jwk.key_type() == "EC" && curve == Some("P-256"),
            SigningAlg::Es384 => jwk.key_type() == "EC" && curve == Some("P-384"),
            SigningAlg::EdDsa => {
                jwk.key_type() == "OKP" && matches!(curve, Some("Ed25519" | "Ed448"))
            }
        };
        shape
            && jwk.key_use().is_none_or(|u| u == "sig")
            && jwk.is_for_key_operation("verify")
            && jwk.algorithm().is_none_or(|a| a == self.name())
    }

    fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        use josekit::jws::{EdDSA, ES256, ES384, PS256, PS384, PS512, RS256, RS384, RS512};
        Ok(match self {
            SigningAlg::Rs256 => Box::new(RS256.verifier_from_jwk(jwk)?),
            SigningAlg::Rs384 => Box::new(RS384.verifier_from_jwk(jwk)?),
            SigningAlg::Rs512 => Box::new(RS512.verifier_from_jwk(jwk)?),
            SigningAlg::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            SigningAlg::Ps384 => Box::new(PS384.verifier_from_jwk(jwk)?),
            SigningAlg::Ps512 => Box::new(PS512.verifier_from_jwk(jwk)?),
            SigningAlg::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
            SigningAlg::Es384 => Box::new(ES384.verifier_from_jwk(jwk)?),
            SigningAlg::EdDsa => Box::new(EdDSA.verifier_from_jwk(jwk)?),
        })
    }
}

/// The algorithms to accept from an upstream that advertises `advertised`: those of them
/// lanyard accepts; RS256 (the OpenID default) when it advertises nothing but `none` or MACs.
pub(crate) fn accepted_algs(advertised: &[String]) -> Vec<SigningAlg> {
    let is_asymmetric = |a: &&String| a.as_str() != "none" && !a.starts_with("HS");
    if !advertised.iter().any(|a| is_asymmetric(&a)) {
        return vec![SigningAlg::Rs256];
    }
    advertised
        .iter()
        .filter_map(|a| SigningAlg::from_name(a))
        .collect()
}

/// The keys of a JWKS document; keys josekit cannot read are left out, so one odd key does
/// not stop the others from verifying.
pub(crate) fn parse_jwks(document: &Value) -> Option<Vec<Jwk>> {
    let keys = document.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| k.as_object())
            .filter_map(|k| Jwk::from_map(k.clone()).ok())
            .collect(),
    )
}

/// Why an ID token is refused. The texts end up in error pages and token-exchange errors:
/// they name the problem, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdTokenError {
    #[error("not a signed JWT ID token")]
    Malformed,
    #[error("unsupported JWT header: {0}")]
    Header(&'static str),
    #[error("signature algorithm `{alg}` is not accepted (accepted: {accepted})")]
    DisallowedAlg { alg: String, accepted: String },
    /// No published key fits: the upstream may have rotated, so the caller refetches its keys.
    #[error("signed with a key the upstream does not publish")]
    UnknownKey,
    #[error("the token names no key and more than one published key fits it")]
    AmbiguousKey,
    #[error("the upstream's key is unusable for {alg}: {reason}")]
    UnusableKey { alg: &'static str, reason: String },
    #[error("invalid signature")]
    BadSignature,
    #[error("invalid issuer: expected `{expected}`, found `{found}`")]
    Issuer { expected: String, found: String },
    #[error("invalid audience: {0}")]
    Audience(String),
    #[error("expired at {exp} (current time is {now})")]
    Expired { exp: i64, now: i64 },
    #[error("not valid yet: `{claim}` is {value}, later than the current time {now}")]
    NotYetValid {
        claim: &'static str,
        value: i64,
        now: i64,
    },
    #[error("invalid nonce: {0}")]
    Nonce(&'static str),
    #[error("missing or malformed `{0}` claim")]
    Claim(&'static str),
}

/// The parts of a compact JWS, decoded.
struct Parts<'a> {
    header: Map<String, Value>,
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(raw: &str) -> Result<Parts<'_>, IdTokenError> {
    let mut dots = raw.match_indices('.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        // Five parts would be an encrypted token, which lanyard does not take either.
        return Err(IdTokenError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(&raw[..first])
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .ok_or(IdTokenError::Malformed)?;
    Ok(Parts {
        header,
        signed: &raw[..second],
        payload: &raw[first + 1..second],
        signature: &raw[second + 1..],
    })
}

/// The header's `typ`, lowercased and without `application/` (RFC 7515 §4.1.9).
fn media_type(header: &Map<String, Value>) -> Result<Option<String>, IdTokenError> {
    let Some(typ) = header.get("typ") else {
        return Ok(None);
    };
    let typ = typ
        .as_str()
        .ok_or(IdTokenError::Header("`typ` is not a string"))?
        .to_ascii_lowercase();
    Ok(Some(
        typ.strip_prefix("application/")
            .map(str::to_string)
            .unwrap_or(typ),
    ))
}

/// Whether `raw` is a JWS whose header says it is an RFC 9068 access token (`typ: at+jwt`);
/// says nothing of its signature.
pub(crate) fn is_jwt_access_token(raw: &str) -> bool {
    split(raw)
        .ok()
        .and_then(|parts| media_type(&parts.header).ok().flatten())
        .is_some_and(|typ| typ == "at+jwt")
}

/// Refuses header fields that would change what the payload means: another content type
/// (nested tokens), extensions marked critical, and a `typ` other than `kind`'s.
fn check_header(header: &Map<String, Value>, kind: TokenKind) -> Result<(), IdTokenError> {
    let typ = media_type(header)?;
    match kind {
        TokenKind::IdToken => {
            if typ.is_some_and(|t| t != "jwt" && t != "jose") {
                return Err(IdTokenError::Header("`typ` is not JWT"));
            }
        }
        TokenKind::AccessToken => {
            if typ.as_deref() != Some("at+jwt") {
                return Err(IdTokenError::Header(
                    "`typ` is not at+jwt (an RFC 9068 access token)",
                ));
            }
        }
    }
    if header.contains_key("cty") {
        return Err(IdTokenError::Header(
            "nested tokens (`cty`) are not supported",
        ));
    }
    if header.contains_key("crit") {
        return Err(IdTokenError::Header(
            "critical header extensions are not supported",
        ));
    }
    Ok(())
}

/// Verifies the signature of the ID token `raw` by one of `keys` with one of `accepted` and
/// returns its claims, not yet checked (see [`check_claims`]).
#[cfg(test)]
pub(crate) fn verify_signature(
    raw: &str,
    keys: &[Jwk],
    accepted: &[SigningAlg],
) -> Result<Map<String, Value>, IdTokenError> {
    verify_signature_of(TokenKind::IdToken, raw, keys, accepted)
}

/// Verifies the signature of `raw`, a JWT of `kind`, by one of `keys` with one of `accepted`
/// and returns its claims, not yet checked.
pub(crate) fn verify_signature_of(
    kind: TokenKind,
    raw: &str,
    keys: &[Jwk],
    accepted: &[SigningAlg],
) -> Result<Map<String, Value>, IdTokenError> {
    let parts = split(raw)?;
    check_header(&parts.header, kind)?;
    let alg_name = parts
        .header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    let alg = SigningAlg::from_name(alg_name)
        .filter(|a| accepted.contains(a))
        .ok_or_else(|| IdTokenError::DisallowedAlg {
            alg: alg_name.chars().take(16).collect(),
            accepted: accepted
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let kid = match parts.header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(IdTokenError::Malformed),
    };
    let mut fitting = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.key_id() == Some(kid)) && alg.fits(k));
    let key = match (fitting.next(), fitting.next()) {
        (None, _) => return Err(IdTokenError::UnknownKey),
        (Some(_), Some(_)) => return Err(IdTokenError::AmbiguousKey),
        (Some(key), None) => key,
    };
    let verifier = alg.verifier(key).map_err(|e| IdTokenError::UnusableKey {
        alg: alg.name(),
        reason: e.to_string(),
    })?;
    // Strict base64url: a signature with altered padding bits is a different signature.
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| IdTokenError::BadSignature)?;
    verifier
        .verify(parts.signed.as_bytes(), &signature)
        .map_err(|_| IdTokenError::BadSignature)?;
    URL_SAFE_NO_PAD
        .decode(parts.payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(IdTokenError::Malformed)
}

/// What the claims of an upstream ID token must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Seconds since the Unix epoch, from the server's clock.
    pub now: i64,
    /// The nonce sent with the login; `None` where there was no login (refresh, exchange).
    pub nonce: Option<&'a str>,
}

fn seconds(claims: &Map<String, Value>, key: &'static str) -> Result<i64, IdTokenError> {
    let value = claims.get(key).ok_or(IdTokenError::Claim(key))?;
    value
        .as_i64()
        // Some issuers write fractional seconds.
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .ok_or(IdTokenError::Claim(key))
}

/// The token's expiry, `exp`.
pub(crate) fn expiry(claims: &Map<String, Value>) -> Result<i64, IdTokenError> {
    seconds(claims, "exp")
}

/// Checks that `claims` are valid at `now`: `exp` (required) after it, and `iat` (required when
/// `iat_required`) and `nbf` (when present) not after it by more than [`CLOCK_SKEW_SECS`].
/// Returns `exp`.
pub(crate) fn check_lifetime(
    claims: &Map<String, Value>,
    now: i64,
    iat_required: bool,
) -> Result<i64, IdTokenError> {
    let exp = seconds(claims, "exp")?;
    if now >= exp {
        return Err(IdTokenError::Expired { exp, now });
    }
    for (claim, required) in [("iat", iat_required), ("nbf", false)] {
        if !required && !claims.contains_key(claim) {
            continue;
        }
        let value = seconds(claims, claim)?;
        if value > now + CLOCK_SKEW_SECS {
            return Err(IdTokenError::NotYetValid { claim, value, now });
        }
    }
    Ok(exp)
}

/// Checks that `iss` is `expected`.
pub(crate) fn check_issuer(
    claims: &Map<String, Value>,
    expected: &str,
) -> Result<(), IdTokenError> {
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Claim("iss"))?;
    if issuer != expected {
        return Err(IdTokenError::Issuer {
            expected: expected.to_string(),
            found: issuer.chars().take(200).collect(),
        });
    }
    Ok(())
}

/// The `aud` claim as a list (a single string is a list of one); `None` when absent.
pub(crate) fn audiences(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, IdTokenError> {
    match claims.get("aud") {
        None => Ok(None),
        Some(Value::String(a)) => Ok(Some(vec![a.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .map(Some)
            .ok_or(IdTokenError::Claim("aud")),
        _ => Err(IdTokenError::Claim("aud")),
    }
}

/// Checks the claims of a token whose signature was verified: issuer, audience (our client id
/// and no other: a token minted for several parties could be replayed by any of them),
/// lifetime (see [`check_lifetime`]), and the nonce when one was sent.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected,
) -> Result<(), IdTokenError> {
    check_issuer(claims, expected.issuer)?;
    let audiences = audiences(claims)?.ok_or(IdTokenError::Claim("aud"))?;
    if !audiences.contains(&expected.client_id) {
        return Err(IdTokenError::Audience(format!(
            "must contain `{}`",
            expected.client_id
        )));
    }
    if audiences.iter().any(|a| *a != expected.client_id) {
        return Err(IdTokenError::Audience(format!(
            "audiences other than `{}` are not trusted",
            expected.client_id
        )));
    }
    if !claims.get("sub").is_some_and(Value::is_string) {
        return Err(IdTokenError::Claim("sub"));
    }
    check_lifetime(claims, expected.now, true)?;
    if let Some(sent) = expected.nonce {
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or(IdTokenError::Nonce("missing nonce claim"))?;
        // Digests have one length, so the comparison takes the same time however they differ.
        if !bool::from(Sha256::digest(got).ct_eq(&Sha256::digest(sent))) {
            return Err(IdTokenError::Nonce("nonce mismatch"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jwk::KeyPair;
    use josekit::jws::JwsSigner;
    use serde_json::json;

    const NOW: i64 = 1_900_000_000;

    fn claims() -> Map<String, Value> {
        json!({"iss": "https://idp", "aud": "rp", "sub": "u", "iat": NOW, "exp": NOW + 60,
               "nonce": "n-1"})
        .as_object()
        .unwrap()
        .clone()
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://idp",
            client_id: "rp",
            now: NOW,
            nonce: Some("n-1"),
        }
    }

    /// A compact JWS over `claims` with the header `header` and the signature of `signer`.
    fn sign(header: Value, claims: &Map<String, Value>, signer: &dyn JwsSigner) -> String {
        let e = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let signed = format!(
            "{}.{}",
            e(&serde_json::to_vec(&header).unwrap()),
            e(&serde_json::to_vec(claims).unwrap())
        );
        let signature = signer.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", e(&signature))
    }

    /// `key` under `kid`, without the `alg` josekit writes into generated keys (so that each
    /// test decides on it), then edited.
    fn jwk(key: Jwk, kid: &str, edit: impl Fn(&mut Jwk)) -> Jwk {
        let mut map = key.as_ref().clone();
        map.remove("alg");
        let mut key = Jwk::from_map(map).unwrap();
        key.set_key_id(kid);
        edit(&mut key);
        key
    }

    struct Keys {
        rsa: josekit::jws::alg::rsassa::RsassaJwsSigner,
        rsa_private: Jwk,
        rsa_public: Jwk,
        ec: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
        ec_public: Jwk,
    }

    fn keys() -> Keys {
        let rsa = josekit::jws::RS256.generate_key_pair(2048).unwrap();
        let ec = josekit::jws::ES256.generate_key_pair().unwrap();
        Keys {
            rsa: josekit::jws::RS256
                .signer_from_jwk(&rsa.to_jwk_private_key())
                .unwrap(),
            rsa_private: rsa.to_jwk_private_key(),
            rsa_public: rsa.to_jwk_public_key(),
            ec: josekit::jws::ES256
                .signer_from_jwk(&ec.to_jwk_private_key())
                .unwrap(),
            ec_public: ec.to_jwk_public_key(),
        }
    }

    #[test]
    fn a_token_signed_by_a_published_key_verifies_with_rsa_pss_ec_and_eddsa() {
        let k = keys();
        let all = SigningAlg::ALL;
        let rs = sign(json!({"alg": "RS256", "kid": "r"}), &claims(), &k.rsa);
        let published = [jwk(k.rsa_public.clone(), "r", |_| {})];
        assert_eq!(verify_signature(&rs, &published, &all).unwrap(), claims());

        let es = sign(
            json!({"alg": "ES256", "kid": "e", "typ": "JWT"}),
            &claims(),
            &k.ec,
        );
        let published = [jwk(k.ec_public.clone(), "e", |_| {})];
        assert_eq!(verify_signature(&es, &published, &all).unwrap(), claims());

        let pss = josekit::jws::PS384.generate_key_pair(2048).unwrap();
        let signer = josekit::jws::PS384
            .signer_from_jwk(&pss.to_jwk_private_key())
            .unwrap();
        let ps = sign(json!({"alg": "PS384"}), &claims(), &signer);
        // josekit writes PSS keys as RSA keys, as JWKS documents do.
        let published = [jwk(pss.to_jwk_public_key(), "p", |_| {})];
        assert_eq!(verify_signature(&ps, &published, &all).unwrap(), claims());

        let ed = josekit::jws::EdDSA
            .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
            .unwrap();
        let signer = josekit::jws::EdDSA
            .signer_from_jwk(&ed.to_jwk_private_key())
            .unwrap();
        let token = sign(json!({"alg": "EdDSA", "kid": "d"}), &claims(), &signer);
        let published = [jwk(ed.to_jwk_public_key(), "d", |_| {})];
        assert_eq!(
            verify_signature(&token, &published, &all).unwrap(),
            claims()
        );
    }

    #[test]
    fn an_rs256_token_is_not_verified_with_an_ec_key_of_its_kid() {
        let k = keys();
        let token = sign(json!({"alg": "RS256", "kid": "e"}), &claims(), &k.rsa);
        let published = [jwk(k.ec_public.clone(), "e", |_| {})];
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::UnknownKey)
        );
        // Nor an ES256 header over the RSA key's kid.
        let token = sign(json!({"alg": "ES256", "kid": "r"}), &claims(), &k.ec);
        let published = [jwk(k.rsa_public.clone(), "r", |_| {})];
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::UnknownKey)
        );
    }

    #[test]
    fn a_header_alg_other_than_the_keys_alg_finds_no_key() {
        let k = keys();
        let published = [jwk(k.rsa_public.clone(), "r", |j| j.set_algorithm("RS256"))];
        // The same RSA key, used with another hash than its JWK names.
        let rs384 = josekit::jws::RS384
            .signer_from_jwk(&jwk(k.rsa_private.clone(), "r", |_| {}))
            .unwrap();
        let token = sign(json!({"alg": "RS384", "kid": "r"}), &claims(), &rs384);
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::UnknownKey)
        );
        // Without `alg` in the JWK the same token verifies: the header alg fits an RSA key.
        let published = [jwk(k.rsa_public.clone(), "r", |_| {})];
        assert!(verify_signature(&token, &published, &SigningAlg::ALL).is_ok());
    }

    #[test]
    fn an_encryption_key_does_not_verify_signatures() {
        let k = keys();
        let token = sign(json!({"alg": "RS256", "kid": "r"}), &claims(), &k.rsa);
        let published = [jwk(k.rsa_public.clone(), "r", |j| j.set_key_use("enc"))];
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::UnknownKey)
        );
        let published = [jwk(k.rsa_public.clone(), "r", |j| {
            j.set_key_operations(vec!["encrypt"])
        })];
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::UnknownKey)
        );
    }

    #[test]
    fn none_hmac_and_unadvertised_algorithms_are_refused_before_any_key_is_used() {
        let k = keys();
        let published = [jwk(k.rsa_public.clone(), "r", |_| {})];
        let hs = josekit::jws::HS256
            .signer_from_bytes(b"a client secret of 32 bytes or more")
            .unwrap();
        for header in [
            json!({"alg": "HS256", "kid": "r"}),
            json!({"alg": "none", "kid": "r"}),
        ] {
            let token = sign(header.clone(), &claims(), &hs);
            assert!(
                matches!(
                    verify_signature(&token, &published, &SigningAlg::ALL),
                    Err(IdTokenError::DisallowedAlg { .. })
                ),
                "{header}"
            );
        }
        let token = sign(json!({"alg": "RS256", "kid": "r"}), &claims(), &k.rsa);
        assert!(matches!(
            verify_signature(&token, &published, &[SigningAlg::Es256]),
            Err(IdTokenError::DisallowedAlg { .. })
        ));
    }

    #[test]
    fn advertised_algorithms_keep_only_asymmetric_ones_and_default_to_rs256() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            accepted_algs(&names(&["HS256", "ES256", "none", "RS512", "ES512"])),
            [SigningAlg::Es256, SigningAlg::Rs512]
        );
        assert_eq!(accepted_algs(&names(&[])), [SigningAlg::Rs256]);
        assert_eq!(
            accepted_algs(&names(&["none", "HS512"])),
            [SigningAlg::Rs256]
        );
    }

    #[test]
    fn a_wrong_signature_a_second_fitting_key_and_odd_headers_are_refused() {
        let k = keys();
        let other = josekit::jws::RS256.generate_key_pair(2048).unwrap();
        let token = sign(json!({"alg": "RS256", "kid": "r"}), &claims(), &k.rsa);
        let published = [jwk(other.to_jwk_public_key(), "r", |_| {})];
        assert_eq!(
            verify_signature(&token, &published, &SigningAlg::ALL),
            Err(IdTokenError::BadSignature)
        );
        // The last character of an RSA-2048 signature holds 2 bits: `A` and `B` decode alike
        // only for lenient decoders.
        let mine = [jwk(k.rsa_public.clone(), "r", |_| {})];
        let mut token = token;
        let last = token.pop().unwrap();
        for tampered in ['A', 'B'].into_iter().filter(|c| *c != last) {
            let token = format!("{token}{tampered}");
            assert_eq!(
                verify_signature(&token, &mine, &SigningAlg::ALL),
                Err(IdTokenError::BadSignature),
                "{last} -> {tampered}"
            );
        }
        let no_kid = sign(json!({"alg": "RS256"}), &claims(), &k.rsa);
        let two = [
            jwk(k.rsa_public.clone(), "r", |_| {}),
            jwk(other.to_jwk_public_key(), "o", |_| {}),
        ];
        assert_eq!(
            verify_signature(&no_kid, &two, &SigningAlg::ALL),
            Err(IdTokenError::AmbiguousKey)
        );
        for header in [
            json!({"alg": "RS256", "typ": "at+jwt"}),
            json!({"alg": "RS256", "cty": "JWT"}),
            json!({"alg": "RS256", "crit": ["exp"], "exp": 1}),
        ] {
            let token = sign(header.clone(), &claims(), &k.rsa);
            assert!(
                matches!(
                    verify_signature(&token, &mine, &SigningAlg::ALL),
                    Err(IdTokenError::Header(_))
                ),
                "{header}"
            );
        }
        for garbage in ["", "a.b", "a.b.c", "a.b.c.d.e"] {
            assert_eq!(
                verify_signature(garbage, &mine, &SigningAlg::ALL),
                Err(IdTokenError::Malformed)
            );
        }
    }

    #[test]
    fn id_tokens_issued_or_valid_only_in_the_future_are_refused_beyond_the_clock_skew() {
        let with = |claim: &str, value: i64| {
            let mut c = claims();
            c.insert(claim.into(), json!(value));
            check_claims(&c, &expected())
        };
        assert_eq!(
            with("iat", NOW + CLOCK_SKEW_SECS + 1),
            Err(IdTokenError::NotYetValid {
                claim: "iat",
                value: NOW + CLOCK_SKEW_SECS + 1,
                now: NOW
            })
        );
        assert!(matches!(
            with("nbf", NOW + 3600),
            Err(IdTokenError::NotYetValid { claim: "nbf", .. })
        ));
        assert_eq!(with("iat", NOW + CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(with("nbf", NOW + CLOCK_SKEW_SECS), Ok(()));
        let mut c = claims();
        c.insert("nbf".into(), json!("tomorrow"));
        assert_eq!(
            check_claims(&c, &expected()),
            Err(IdTokenError::Claim("nbf"))
        );
    }

    #[test]
    fn unreadable_keys_in_a_jwks_are_skipped() {
        let k = keys();
        let doc = json!({"keys": [
            {"kid": "no kty"},
            "not an object",
            Value::Object(k.rsa_public.as_ref().clone()),
        ]});
        assert_eq!(parse_jwks(&doc).unwrap().len(), 1);
        assert!(parse_jwks(&json!({"no": "keys"})).is_none());
    }

    #[test]
    fn claims_need_our_issuer_our_audience_only_a_future_expiry_and_the_nonce() {
        assert_eq!(check_claims(&claims(), &expected()), Ok(()));
        let refused = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = claims();
            edit(&mut c);
            check_claims(&c, &expected()).unwrap_err().to_string()
        };
        assert!(refused(&|c| {
            c.insert("iss".into(), json!("https://other"));
        })
        .contains("issuer"));
        assert!(refused(&|c| {
            c.insert("aud".into(), json!("other"));
        })
        .contains("audience"));
        assert!(refused(&|c| {
            c.insert("aud".into(), json!(["rp", "other"]));
        })
        .contains("audience"));
        assert!(refused(&|c| {
            c.insert("exp".into(), json!(NOW));
        })
        .contains("expired"));
        assert!(refused(&|c| {
            c.insert("nonce".into(), json!("n-2"));
        })
        .contains("nonce mismatch"));
        assert!(refused(&|c| {
            c.remove("nonce");
        })
        .contains("missing nonce"));
        for key in ["iss", "aud", "sub", "exp", "iat"] {
            assert!(
                refused(&|c| {
                    c.remove(key);
                })
                .contains(&format!("`{key}`")),
                "{key}"
            );
        }
        // Without a nonce to expect (refresh, token exchange) none is needed.
        let mut c = claims();
        c.remove("nonce");
        let no_nonce = Expected {
            nonce: None,
            ..expected()
        };
        assert_eq!(check_claims(&c, &no_nonce), Ok(()));
        // A list holding only our client id is fine; fractional seconds too.
        c.insert("aud".into(), json!(["rp"]));
        c.insert("exp".into(), json!(NOW as f64 + 0.5 + 1.0));
        assert_eq!(check_claims(&c, &no_nonce), Ok(()));
    }
}
