//! `issuer:`: the URL everything is served under and `iss` names.

use serde_yaml_ng::Value;
use url::Url;

use super::resolve::Ctx;

pub(super) fn resolve_issuer(value: Value, ctx: &mut Ctx) -> Option<Url> {
    if value.is_null() {
        ctx.err(
            "issuer",
            "missing required key `issuer` (the URL clients and Kubernetes reach lanyard at, e.g. https://login.example.com)",
        );
        return None;
    }
    let text: String = ctx.de(value, "issuer")?;
    match parse_issuer(&text) {
        Ok(url) => {
            if url.scheme() == "http" && !is_loopback_host(&url) {
                ctx.warn(
                    "issuer",
                    "plain http on a non-loopback host: logins and tokens travel unencrypted",
                );
            }
            Some(url)
        }
        Err(message) => {
            ctx.err("issuer", message);
            None
        }
    }
}

fn parse_issuer(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!("`{text}` must be an https (or http) URL"));
    }
    if url.query().is_some() {
        return Err(format!("`{text}` must not have a query (?...)"));
    }
    if url.fragment().is_some() {
        return Err(format!("`{text}` must not have a fragment (#...)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the issuer URL must not contain credentials".to_string());
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_parsing() {
        assert_eq!(
            parse_issuer("https://a.example/dex/").unwrap().path(),
            "/dex"
        );
        assert!(parse_issuer("ftp://a.example").is_err());
        assert!(parse_issuer("https://a.example/?x=1").is_err());
        assert!(parse_issuer("https://a.example/#x").is_err());
        assert!(parse_issuer("https://u:p@a.example/").is_err());
        assert!(parse_issuer("a.example").is_err());
    }
}
