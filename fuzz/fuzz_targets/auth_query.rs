//! `/auth` with an arbitrary query string (and cookies): parameter parsing, redirect URI
//! matching, PKCE checks, prompt/max_age parsing, id_token_hint verification.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Built before libFuzzer times any input (see `harness`).
    init: {
        lanyard_fuzz::harness();
    },
    |data: &[u8]| {
        let Some(text) = lanyard_fuzz::text(data) else {
            return;
        };
        // An optional cookie after a NUL, so the corpus can reach the session paths.
        let (query, cookie) = text.split_once('\0').unwrap_or((text, ""));
        let _ = lanyard::oidc::form::parse_unique_params(query);
        let h = lanyard_fuzz::harness();
        let cookie = (!cookie.is_empty()).then_some(cookie);
        let _ = h
            .runtime
            .block_on(h.provider.start_authorization(query, cookie, cookie, "192.0.2.1"));
    }
);
