//! JWT parsing and verification against lanyard's own keys (what id_token_hint and any
//! presented ID token go through): header, kid, alg, base64url, JSON, signature.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Built before libFuzzer times any input (see `harness`).
    init: {
        lanyard_fuzz::harness();
    },
    |data: &[u8]| {
        let h = lanyard_fuzz::harness();
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        if mode < 64 {
            // The whole input is the token.
            if let Some(jwt) = lanyard_fuzz::text(rest) {
                let _ = h.provider.keys.verify(jwt);
            }
            return;
        }
        // Otherwise one segment of a token lanyard really signed is replaced: encoded from raw
        // bytes, or taken as the input's text. Nothing but the original bytes may verify.
        let segment = usize::from(mode % 3);
        let replacement = if mode & 0x80 != 0 {
            URL_SAFE_NO_PAD.encode(rest)
        } else {
            match lanyard_fuzz::text(rest) {
                Some(t) => t.to_string(),
                None => return,
            }
        };
        let mut parts: Vec<String> = h.signed_jwt.split('.').map(str::to_string).collect();
        let original = parts[segment].clone();
        parts[segment] = replacement;
        let forged = parts.join(".");
        if h.provider.keys.verify(&forged).is_ok() {
            let decoded = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
            assert_eq!(
                decoded(&parts[segment]),
                decoded(&original),
                "a changed segment {segment} verified: {forged:?}"
            );
        }
    }
);
