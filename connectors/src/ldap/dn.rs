//! Distinguished names parsed (RFC 4514) so that two spellings of the same entry compare
//! equal: `UID=Jane, OU=People,dc=example,dc=org` and `uid=jane,ou=people,dc=example,dc=org`
//! name one entry, and `cn=Smith\, John` and `cn=Smith\2C John` one value.

use std::fmt;

use super::escape::escape_dn_value;

/// A parsed, normalised DN. Equality is what a directory's `distinguishedNameMatch` decides
/// for the usual naming attributes (all of which match case-insensitively): attribute types
/// compare case-insensitively, values after unescaping, with surrounding whitespace removed,
/// inner runs of whitespace collapsed, and case folded; the parts of a multi-valued RDN
/// compare in any order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dn {
    rdns: Vec<Vec<Ava>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Ava {
    attr: String,
    value: AvaValue,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum AvaValue {
    /// A string value, normalised.
    Text(String),
    /// A `#`-prefixed BER encoding, kept as bytes.
    Ber(Vec<u8>),
}

/// Why a DN could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid DN ({0})")]
pub struct DnError(String);

impl Dn {
    /// Parses a DN in RFC 4514 string form. Also accepts the older RFC 1779 habits that
    /// servers and people still produce: spaces around separators, `;` between RDNs, and
    /// quoted values.
    pub fn parse(text: &str) -> Result<Dn, DnError> {
        Parser {
            bytes: text.as_bytes(),
            pos: 0,
        }
        .dn()
    }

    /// Whether two DNs name the same entry; a DN that does not parse matches nothing.
    pub fn same_entry(a: &str, b: &str) -> bool {
        match (Dn::parse(a), Dn::parse(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// The root DN (no RDNs).
    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }
}

/// The normalised form, in RFC 4514 syntax.
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, ava) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", ava.attr)?;
                match &ava.value {
                    AvaValue::Text(t) => f.write_str(&escape_dn_value(t))?,
                    AvaValue::Ber(bytes) => {
                        f.write_str("#")?;
                        for b in bytes {
                            write!(f, "{b:02x}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> DnError {
        DnError(format!("{what} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn dn(mut self) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        self.skip_spaces();
        if self.peek().is_none() {
            return Ok(Dn { rdns });
        }
        loop {
            let mut rdn = vec![self.ava()?];
            while self.peek() == Some(b'+') {
                self.pos += 1;
                rdn.push(self.ava()?);
            }
            rdn.sort();
            rdns.push(rdn);
            match self.peek() {
                None => return Ok(Dn { rdns }),
                Some(b',' | b';') => self.pos += 1,
                Some(_) => return Err(self.err("expected `,` or `+`")),
            }
        }
    }

    fn ava(&mut self) -> Result<Ava, DnError> {
        self.skip_spaces();
        let attr = self.attribute_type()?;
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(self.err("expected `=` after the attribute type"));
        }
        self.pos += 1;
        self.skip_spaces();
        let value = match self.peek() {
            Some(b'#') => {
                self.pos += 1;
                AvaValue::Ber(self.hex_string()?)
            }
            Some(b'"') => {
                self.pos += 1;
                AvaValue::Text(normalise(&self.quoted()?))
            }
            _ => AvaValue::Text(normalise(&self.string()?)),
        };
        self.skip_spaces();
        Ok(Ava { attr, value })
    }

    /// `descr` (a letter, then letters, digits, hyphens) or a numeric OID.
    fn attribute_type(&mut self) -> Result<String, DnError> {
        // `OID.2.5.4.3` is RFC 1779's spelling of `2.5.4.3`.
        let rest = &self.bytes[self.pos..];
        if rest.len() > 4 && rest[..4].eq_ignore_ascii_case(b"oid.") && rest[4].is_ascii_digit() {
            self.pos += 4;
        }
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => {
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-') {
                    self.pos += 1;
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == b'.') {
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("expected an attribute type")),
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.pos]).to_ascii_lowercase())
    }

    fn hex_string(&mut self) -> Result<Vec<u8>, DnError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b'+' | b';' | b' ') {
                break;
            }
            out.push(self.hex_pair()?);
        }
        if out.is_empty() {
            return Err(self.err("empty `#` value"));
        }
        Ok(out)
    }

    fn hex_pair(&mut self) -> Result<u8, DnError> {
        let pair = self
            .bytes
            .get(self.pos..self.pos + 2)
            .ok_or_else(|| self.err("incomplete hex pair"))?;
        let text = std::str::from_utf8(pair).map_err(|_| self.err("bad hex pair"))?;
        let byte = u8::from_str_radix(text, 16).map_err(|_| self.err("bad hex pair"))?;
        self.pos += 2;
        Ok(byte)
    }

    /// After a backslash: one special character, or a hex pair.
    fn escaped(&mut self) -> Result<u8, DnError> {
        match self.peek() {
            Some(c @ (b' ' | b'"' | b'#' | b'+' | b',' | b';' | b'<' | b'=' | b'>' | b'\\')) => {
                self.pos += 1;
                Ok(c)
            }
            Some(c) if c.is_ascii_hexdigit() => self.hex_pair(),
            _ => Err(self.err("bad escape")),
        }
    }

    fn string(&mut self) -> Result<String, DnError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b',' | b'+' | b';' => break,
                b'\\' => {
                    self.pos += 1;
                    out.push(self.escaped()?);
                }
                b'"' | b'<' | b'>' | 0 => {
                    return Err(self.err("character that must be escaped"));
                }
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("value is not UTF-8"))
    }

    fn quoted(&mut self) -> Result<String, DnError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated quoted value")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escaped()?);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("value is not UTF-8"))
    }
}

fn normalise(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::escape::escape_dn_value;

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn spelling_differences_do_not_matter() {
        let canonical = dn("uid=jane,ou=people,dc=example,dc=org");
        for same in [
            "UID=Jane,OU=People,DC=Example,DC=Org",
            "uid=jane, ou=people, dc=example, dc=org",
            " uid = jane ,ou=people;dc=example,dc=org ",
            "uid=\\6aane,ou=people,dc=example,dc=org",
            "uid=\"jane\",ou=people,dc=example,dc=org",
            "uid=jane,ou=people,dc=example,dc=org",
        ] {
            assert_eq!(dn(same), canonical, "{same}");
        }
        assert_eq!(
            dn("cn=Smith\\, John,dc=x"),
            dn("CN=smith\\2c   john,DC=X"),
            "escaped comma, hex escape, whitespace runs"
        );
        assert_eq!(dn("cn=a+sn=b,dc=x"), dn("sn=B+cn=A,dc=x"));
        assert_eq!(dn("2.5.4.3=a,dc=x"), dn("OID.2.5.4.3=a,dc=x"));
    }

    #[test]
    fn different_entries_differ() {
        let jane = dn("uid=jane,ou=people,dc=example,dc=org");
        for other in [
            "uid=jane2,ou=people,dc=example,dc=org",
            "uid=jane,ou=people,dc=example",
            "cn=jane,ou=people,dc=example,dc=org",
            "uid=jane+cn=x,ou=people,dc=example,dc=org",
            "uid=jane\\,ou=people,dc=example,dc=org",
            "ou=people,dc=example,dc=org",
        ] {
            assert_ne!(dn(other), jane, "{other}");
        }
        assert!(!Dn::same_entry("uid=a,dc=x", "not a dn"));
        assert!(Dn::same_entry("uid=a,dc=x", "UID=A, DC=X"));
    }

    #[test]
    fn malformed_dns_are_rejected() {
        for bad in [
            "uid",
            "uid=a,",
            "=a",
            "uid=a,,dc=x",
            "uid=a\\zz",
            "uid=a\\",
            "uid=\"open",
            "uid=a<b",
            "uid=#zz",
            "uid=\\ff",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(dn("").is_root());
        assert!(dn("  ").is_root());
    }

    #[test]
    fn escaped_values_round_trip_through_the_parser() {
        for value in [
            "Smith, John",
            "#hash",
            " padded ",
            "a+b;c<d>e\"f\\g=h",
            "jürgen",
            "o'brien",
            "a*b(c)",
            "x\0y",
        ] {
            let text = format!("cn={},dc=x", escape_dn_value(value));
            let parsed = dn(&text);
            let expected = Dn {
                rdns: vec![
                    vec![Ava {
                        attr: "cn".into(),
                        value: AvaValue::Text(normalise(value)),
                    }],
                    vec![Ava {
                        attr: "dc".into(),
                        value: AvaValue::Text("x".into()),
                    }],
                ],
            };
            assert_eq!(parsed, expected, "{text}");
            // The normalised form parses back to itself.
            assert_eq!(dn(&parsed.to_string()), parsed);
        }
    }

    #[test]
    fn ber_values_compare_by_bytes() {
        assert_eq!(dn("cn=#0403616263,dc=x"), dn("CN=#0403616263,DC=x"));
        assert_ne!(dn("cn=#0403616263,dc=x"), dn("cn=#0403616264,dc=x"));
        assert_eq!(dn("cn=#0403616263,dc=x").to_string(), "cn=#0403616263,dc=x");
    }
}
