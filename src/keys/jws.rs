//! Compact JWS with our own header handling: the header is never trusted to choose the
//! algorithm or key material, only to name a kid we already know.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::crypto::ParsedKey;
use super::KeyError;

/// Longer input is refused before any decoding; our ID tokens are a few kilobytes.
const MAX_TOKEN_LEN: usize = 64 * 1024;

pub(crate) fn sign(key: &ParsedKey, claims: &Map<String, Value>) -> Result<String, KeyError> {
    let header = serde_json::json!({
        "alg": key.alg.as_str(),
        "kid": key.kid,
        "typ": "JWT",
    });
    let header = serde_json::to_vec(&header).map_err(|e| KeyError::Claims(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Claims(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key
        .signer
        .sign(token.as_bytes())
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// The parts of a compact JWS needed to pick the key, before any signature check.
pub(crate) struct Unverified<'a> {
    pub kid: String,
    pub alg: String,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

pub(crate) fn parse(token: &str) -> Result<Unverified<'_>, KeyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(KeyError::InvalidToken("token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::InvalidToken("not a compact JWS"));
    };
    let header: Map<String, Value> = decode_json(
        header,
        "header is not base64url",
        "header is not a JSON object",
    )?;
    // Extensions we do not implement must make the token invalid (RFC 7515 section 4.1.11).
    if header.contains_key("crit") {
        return Err(KeyError::InvalidToken("unsupported critical header"));
    }
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(KeyError::InvalidToken("header has no alg"));
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(KeyError::InvalidToken("unsigned tokens are not accepted"));
    }
    let Some(Value::String(kid)) = header.get("kid") else {
        return Err(KeyError::InvalidToken("header has no kid"));
    };
    let signing_input_len = token.len() - signature.len() - 1;
    Ok(Unverified {
        kid: kid.clone(),
        alg: alg.clone(),
        signing_input: &token[..signing_input_len],
        payload,
        signature,
    })
}

impl Unverified<'_> {
    /// Checks the signature with `key` (already chosen by kid) and returns the claims.
    pub(crate) fn verify(self, key: &ParsedKey) -> Result<Map<String, Value>, KeyError> {
        if self.alg != key.alg.as_str() {
            return Err(KeyError::InvalidToken(
                "header alg does not match the key's algorithm",
            ));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| KeyError::InvalidToken("signature is not base64url"))?;
        key.verifier
            .verify(self.signing_input.as_bytes(), &signature)
            .map_err(|_| KeyError::InvalidToken("signature does not verify"))?;
        decode_json(
            self.payload,
            "payload is not base64url",
            "payload is not a JSON object",
        )
    }
}

fn decode_json(
    part: &str,
    not_base64: &'static str,
    not_object: &'static str,
) -> Result<Map<String, Value>, KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| KeyError::InvalidToken(not_base64))?;
    serde_json::from_slice(&bytes).map_err(|_| KeyError::InvalidToken(not_object))
}
