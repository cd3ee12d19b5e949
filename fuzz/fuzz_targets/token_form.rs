//! `/token` with an arbitrary Authorization header and form body: every grant type's
//! parameter handling, client authentication, code/refresh/device lookups.
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
        // The first line is the Authorization header (empty: none), the rest the body.
        let (authorization, body) = text.split_once('\n').unwrap_or(("", text));
        let Ok(form) = lanyard::oidc::form::parse_unique_params(body) else {
            return;
        };
        let h = lanyard_fuzz::harness();
        let authorization = (!authorization.is_empty()).then_some(authorization);
        let _ = h.runtime.block_on(h.provider.token(authorization, &form, "192.0.2.1"));
    }
);
