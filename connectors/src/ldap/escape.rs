//! Escaping of untrusted values before they become part of an LDAP search filter (RFC 4515)
//! or a distinguished name (RFC 4514).
//!
//! Both are pure functions so that fuzz targets and property tests can call them directly.

use std::fmt::Write;

/// Escapes `value` for use as an assertion value inside a search filter, e.g. the `x` in
/// `(uid=x)`.
///
/// RFC 4515 requires `*`, `(`, `)`, `\` and NUL to be written as `\XX`. Everything else,
/// including multi-byte UTF-8, may appear as it is; the result can therefore never end the
/// assertion early, start a new one, or turn an equality match into a substring match.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => push_hex(&mut out, c as u8),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes `value` for use as an attribute value inside a DN, e.g. the `x` in
/// `uid=x,ou=people,dc=example,dc=org`.
///
/// Follows RFC 4514 section 2.4: `"`, `+`, `,`, `;`, `<`, `>`, `\` are escaped everywhere;
/// a leading `#` or space and a trailing space are escaped; NUL becomes `\00`. `=` is also
/// escaped (allowed by the RFC) because some servers misparse it unescaped.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\{byte:02x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_specials_are_hex_escaped() {
        assert_eq!(escape_filter_value("*"), r"\2a");
        assert_eq!(
            escape_filter_value("*)(uid=*"),
            r"\2a\29\28uid=\2a",
            "an injection attempt stays one assertion value"
        );
        assert_eq!(
            escape_filter_value("admin)(|(password=*"),
            r"admin\29\28|\28password=\2a"
        );
        assert_eq!(escape_filter_value(r"a\b"), r"a\5cb");
        assert_eq!(escape_filter_value("a\0b"), r"a\00b");
    }

    #[test]
    fn filter_escaping_keeps_ordinary_and_unicode_text() {
        assert_eq!(escape_filter_value("jürgen"), "jürgen");
        assert_eq!(escape_filter_value("o'brien"), "o'brien");
        assert_eq!(escape_filter_value("a=b, c"), "a=b, c");
        assert_eq!(escape_filter_value(""), "");
    }

    #[test]
    fn escaped_filter_values_parse_as_a_single_equality_filter() {
        for nasty in [
            "*)(uid=*",
            "admin)(|(password=*",
            "a*b(c)",
            "\\",
            "(",
            "x\0y",
        ] {
            let filter = format!("(uid={})", escape_filter_value(nasty));
            assert!(
                ldap3::parse_filter(&filter).is_ok(),
                "{filter} should parse"
            );
            // The only unescaped parentheses are the two that delimit the assertion.
            let inner = &filter[1..filter.len() - 1];
            assert!(!inner.contains(['(', ')', '*']), "{filter}");
        }
    }

    #[test]
    fn dn_specials_are_escaped() {
        assert_eq!(escape_dn_value("Smith, John"), r"Smith\, John");
        assert_eq!(
            escape_dn_value("a+b;c<d>e\"f\\g=h"),
            r#"a\+b\;c\<d\>e\"f\\g\=h"#
        );
        assert_eq!(escape_dn_value("#hash"), r"\#hash");
        assert_eq!(escape_dn_value("in#side"), "in#side");
        assert_eq!(escape_dn_value(" padded "), r"\ padded\ ");
        assert_eq!(escape_dn_value("in side"), "in side");
        assert_eq!(escape_dn_value(" "), r"\ ");
        assert_eq!(escape_dn_value("a\0b"), r"a\00b");
        assert_eq!(escape_dn_value("jürgen"), "jürgen");
        assert_eq!(escape_dn_value(""), "");
    }
}
