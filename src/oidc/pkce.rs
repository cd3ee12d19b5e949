//! PKCE (RFC 7636) with the only method lanyard takes, S256: the one place its challenge is
//! computed, for /auth's checks, the token endpoint, the kubeconfig page and `lanyard login`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::secrets::constant_time_eq;

/// The only `code_challenge_method` lanyard accepts and sends.
pub const S256: &str = "S256";

/// The S256 code challenge of a verifier: base64url(SHA-256(verifier)) (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` hashes to `challenge`, compared in constant time.
pub fn s256_matches(verifier: &str, challenge: &str) -> bool {
    constant_time_eq(&s256_challenge(verifier), challenge)
}

/// RFC 7636 §4.1: 43 to 128 characters from the unreserved set.
pub fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A code challenge is the base64url encoding of a SHA-256 digest: exactly 43 characters.
pub fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// What /auth takes: no PKCE only when `required` is false, else S256 with a well-formed
/// challenge. The error says what is wrong.
pub fn check_request(
    challenge: Option<&str>,
    method: Option<&str>,
    required: bool,
) -> Result<(), &'static str> {
    match (challenge, method) {
        (None, None) if required => {
            Err("public clients must use PKCE (code_challenge with code_challenge_method=S256)")
        }
        (None, None) => Ok(()),
        (None, Some(_)) => Err("code_challenge_method given without code_challenge"),
        (Some(_), m) if m != Some(S256) => Err("only code_challenge_method=S256 is supported"),
        (Some(c), _) if !is_valid_s256_challenge(c) => {
            Err("code_challenge must be 43 base64url characters")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example_verifies() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256_challenge(verifier), challenge);
        assert!(s256_matches(verifier, challenge));
        assert!(!s256_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(is_valid_verifier(verifier));
        assert!(is_valid_s256_challenge(challenge));
    }

    #[test]
    fn pkce_verifier_length_and_charset_are_enforced() {
        assert!(!is_valid_verifier(&"a".repeat(42)));
        assert!(is_valid_verifier(&"a".repeat(128)));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
