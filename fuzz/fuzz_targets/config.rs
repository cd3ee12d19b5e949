//! Config parsing: YAML, `$VAR` expansion, Dex schema resolution and validation, and the
//! error report (which names paths and suggests keys).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(yaml) = lanyard_fuzz::text(data) else {
        return;
    };
    // DEX_EXPAND_ENV must stay unset or a boolean, or every input stops at it.
    let env = |name: &str| {
        (name != "DEX_EXPAND_ENV" && name.len() % 2 == 0).then(|| format!("value-of-{name}"))
    };
    if let Err(errors) = lanyard::config::Config::from_yaml_str(yaml, &env) {
        let _ = errors.to_string();
    }
});
