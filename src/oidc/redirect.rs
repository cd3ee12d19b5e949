//! Redirect URI matching: exact string comparison, with two exceptions for public (native)
//! clients. A loopback redirect may use any port (RFC 8252 §7.3). A public client that
//! registered no redirect URI at all may, as in Dex, use any `http` loopback URL (kubelogin's
//! `http://localhost:8000`) and the out-of-band URI, where lanyard shows the code on a page.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The out-of-band redirect URI: the code is shown to the person, who copies it over.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Whether `requested` may be used for a client that registered `registered`. A URI that
/// could not be registered today (a client stored before the rule, say) is never used.
pub fn redirect_uri_allowed(registered: &[String], requested: &str, public_client: bool) -> bool {
    // Issuer-relative URIs are Dex's device callback, which /auth handles before this.
    if requested.starts_with('/') || crate::config::check_redirect_uri(requested).is_err() {
        return false;
    }
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    if !public_client {
        return false;
    }
    if registered.is_empty() {
        return requested == OOB_REDIRECT_URI || is_loopback_http(requested);
    }
    registered.iter().any(|r| loopback_matches(r, requested))
}

/// `http://localhost[:port]/…`, `http://127.x.y.z[:port]/…` or `http://[::1][:port]/…`, read
/// from the raw text like [`loopback_matches`]: no user info, a port only when it is one.
fn is_loopback_http(requested: &str) -> bool {
    let Some((host, port, _)) = split_http_authority(requested) else {
        return false;
    };
    let loopback_host = host == "localhost"
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    let authority_len = "http://".len() + host.len();
    let has_port = requested[authority_len..].starts_with(':');
    loopback_host && (!has_port || valid_port(port))
}

fn valid_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

/// `http://127.0.0.1:<any port>/path` and `http://localhost:<any port>/path` match a registered
/// loopback URI that is identical apart from the port. The comparison is on the raw text, not on
/// parsed URLs: parsing normalises, and would let `..;/`, `%63` or `user@` variants through.
fn loopback_matches(registered: &str, requested: &str) -> bool {
    let (Some((reg_host, _, reg_rest)), Some((req_host, req_port, req_rest))) = (
        split_http_authority(registered),
        split_http_authority(requested),
    ) else {
        return false;
    };
    matches!(reg_host, "127.0.0.1" | "localhost" | "[::1]")
        && reg_host == req_host
        && reg_rest == req_rest
        && valid_port(req_port)
}

/// "http://127.0.0.1:8000/cb?x" -> ("127.0.0.1", "8000", "/cb?x").
fn split_http_authority(raw: &str) -> Option<(&str, &str, &str)> {
    let rest = raw.strip_prefix("http://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, after) = authority.split_at(close + 1);
        (host, after.strip_prefix(':').unwrap_or(after))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    };
    Some((host, port, tail))
}

/// Builds `base?k=v&...` (or `&` when `base` has a query), preserving `base` byte for byte.
pub fn append_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uris: &[&str]) -> Vec<String> {
        uris.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_match_is_allowed() {
        assert!(redirect_uri_allowed(
            &reg(&["https://app.example.com/cb"]),
            "https://app.example.com/cb",
            false
        ));
    }

    #[test]
    fn lookalikes_are_refused() {
        let r = reg(&["https://app.example.com/cb"]);
        for bad in [
            "https://APP.example.com/cb",
            "https://app.example.com/CB",
            "https://app.example.com/cb/",
            "https://app.example.com/cb/extra",
            "https://app.example.com/cb/..;/",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/cb#frag",
            "https://app.example.com@evil.com/cb",
            "https://evil.com@app.example.com/cb",
            "http://app.example.com/cb",
            "https://app.example.com:8443/cb",
            "javascript:alert(1)//https://app.example.com/cb",
            "data:text/html,https://app.example.com/cb",
            "",
        ] {
            assert!(
                !redirect_uri_allowed(&r, bad, false),
                "{bad} must be refused"
            );
            assert!(
                !redirect_uri_allowed(&r, bad, true),
                "{bad} must be refused for public clients"
            );
        }
    }

    #[test]
    fn script_schemes_are_refused_even_when_registered() {
        for uri in [
            "javascript:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "file:///x",
        ] {
            assert!(!redirect_uri_allowed(&reg(&[uri]), uri, false), "{uri}");
        }
        let native = "com.example.app:/callback";
        assert!(redirect_uri_allowed(&reg(&[native]), native, true));
    }

    #[test]
    fn public_clients_may_use_any_loopback_port() {
        let r = reg(&["http://127.0.0.1:5555/callback", "http://localhost/cb"]);
        assert!(redirect_uri_allowed(
            &r,
            "http://127.0.0.1:49152/callback",
            true
        ));
        assert!(redirect_uri_allowed(&r, "http://localhost:8000/cb", true));
        assert!(!redirect_uri_allowed(
            &r,
            "http://127.0.0.1:49152/callback",
            false
        ));
    }

    #[test]
    fn loopback_port_freedom_does_not_extend_to_other_changes() {
        let r = reg(&["http://127.0.0.1:5555/callback"]);
        for bad in [
            "http://127.0.0.1:49152/callback/",
            "http://127.0.0.1:49152/Callback",
            "http://127.0.0.1:49152/callback?x=1",
            "http://127.0.0.1:49152/callback#f",
            "http://localhost:49152/callback",
            "http://127.0.0.2:49152/callback",
            "https://127.0.0.1:49152/callback",
            "http://user@127.0.0.1:49152/callback",
            "http://127.0.0.1:49152/x/../callback",
            "http://127.0.0.1:49152/%63allback",
            "http://127.0.0.1.evil.com:49152/callback",
        ] {
            assert!(
                !redirect_uri_allowed(&r, bad, true),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn public_clients_without_redirect_uris_may_use_loopback_http_and_oob() {
        for ok in [
            "http://localhost:8000",
            "http://localhost:18000/",
            "http://localhost/any/path?x=1",
            "http://127.0.0.1:5555/callback",
            "http://127.3.2.1/cb",
            "http://[::1]:8000/cb",
            OOB_REDIRECT_URI,
        ] {
            assert!(redirect_uri_allowed(&[], ok, true), "{ok} must be allowed");
            assert!(
                !redirect_uri_allowed(&[], ok, false),
                "{ok} needs a public client"
            );
            assert!(
                !redirect_uri_allowed(&reg(&["https://app.example.com/cb"]), ok, true),
                "{ok} is not for clients that registered URIs"
            );
        }
        for bad in [
            "https://localhost:8000/cb",
            "http://localhost.evil.com:8000/cb",
            "http://user@localhost:8000/cb",
            "http://localhost:0/cb",
            "http://localhost:65536/cb",
            "http://localhost:/cb",
            "http://localhost:80x/cb",
            "http://10.0.0.1:8000/cb",
            "http://127.1:8000/cb",
            "http://[::2]:8000/cb",
            "http://localhost:8000/cb#f",
            "/device/callback",
            "urn:ietf:wg:oauth:2.0:oob:auto",
        ] {
            assert!(
                !redirect_uri_allowed(&[], bad, true),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn non_loopback_hosts_never_get_port_freedom() {
        let r = reg(&["http://app.internal:5555/callback"]);
        assert!(!redirect_uri_allowed(
            &r,
            "http://app.internal:5556/callback",
            true
        ));
    }
}
