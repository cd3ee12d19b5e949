//! Redirect URI matching: exact string comparison, with one exception from RFC 8252 §7.3 for
//! public (native) clients: a loopback redirect may use any port.

/// Whether `requested` may be used for a client that registered `registered`. A URI that
/// could not be registered today (a client stored before the rule, say) is never used.
pub fn redirect_uri_allowed(registered: &[String], requested: &str, public_client: bool) -> bool {
    if crate::config::check_redirect_uri(requested).is_err() {
        return false;
    }
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    public_client && registered.iter().any(|r| loopback_matches(r, requested))
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
        && !req_port.is_empty()
        && req_port.len() <= 5
        && req_port.bytes().all(|b| b.is_ascii_digit())
        && req_port
            .parse::<u32>()
            .is_ok_and(|p| (1..=65535).contains(&p))
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
    fn non_loopback_hosts_never_get_port_freedom() {
        let r = reg(&["http://app.internal:5555/callback"]);
        assert!(!redirect_uri_allowed(
            &r,
            "http://app.internal:5556/callback",
            true
        ));
    }
}
