//! LDAP escaping of what people type: a value escaped for a filter (RFC 4515) can never end
//! its assertion or become a wildcard, and decodes to exactly the input; a value escaped for
//! a DN (RFC 4514) parses as one attribute value equal to the same value written fully in
//! hex pairs, so it can never add an RDN or an attribute.
#![no_main]

use lanyard_connectors::ldap::{escape_dn_value, escape_filter_value, Dn};
use libfuzzer_sys::fuzz_target;

fn decode_filter_value(escaped: &str) -> Vec<u8> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("two hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };

    let filter = escape_filter_value(value);
    assert!(
        !filter.contains(['*', '(', ')', '\0']),
        "unescaped filter metacharacter in {filter:?}"
    );
    let mut rest = filter.as_str();
    while let Some(at) = rest.find('\\') {
        let pair = rest.get(at + 1..at + 3).unwrap_or("");
        assert!(
            pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()),
            "a backslash not followed by two hex digits in {filter:?}"
        );
        rest = &rest[at + 3..];
    }
    assert_eq!(decode_filter_value(&filter), value.as_bytes());

    if value.is_empty() {
        return;
    }
    let escaped = format!("cn={},dc=example,dc=org", escape_dn_value(value));
    let hex: String = value.bytes().map(|b| format!("\\{b:02x}")).collect();
    let reference = format!("cn={hex},dc=example,dc=org");
    let parsed = Dn::parse(&escaped).unwrap_or_else(|e| panic!("{escaped:?}: {e}"));
    let expected = Dn::parse(&reference).unwrap_or_else(|e| panic!("{reference:?}: {e}"));
    assert_eq!(parsed, expected, "{escaped:?} vs {reference:?}");
});
