//! The OAuth 2.0 / OpenID Connect client side: discovery, the token endpoint (code, refresh
//! and device grants), the device authorization endpoint, and reading the ID token.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;

use crate::clock::UnixTime;
use crate::config::GrantType;

use super::LoginError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA named on the command line for the issuer's TLS: where it came from (for messages)
/// and its PEM.
#[derive(Debug, Clone)]
pub struct ExtraCa {
    /// `--certificate-authority /path` or `--certificate-authority-data`.
    pub origin: String,
    pub pem: Vec<u8>,
}

/// An HTTP client that trusts what kubectl, curl and browsers trust: the operating system's
/// CAs (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`) and the public web roots, plus the CAs
/// given on the command line.
pub struct Http {
    client: reqwest::Client,
    extra_cas: Vec<String>,
}

impl Http {
    pub fn new(extra_cas: &[ExtraCa]) -> Result<Self, LoginError> {
        let tls = tls_config(extra_cas)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // The issuer and its endpoints are exact URLs; a redirect would also turn a POST
            // of credentials into something else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lanyard-login/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LoginError::Http {
                url: String::new(),
                detail: format!("cannot build the HTTP client: {}", chain(&e)),
            })?;
        Ok(Self {
            client,
            extra_cas: extra_cas.iter().map(|c| c.origin.clone()).collect(),
        })
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> LoginError {
        // reqwest's own message repeats the URL the error already names.
        let detail = match std::error::Error::source(e) {
            Some(cause) => chain(cause),
            None => chain(e),
        };
        if is_tls_error(e) {
            return LoginError::Tls {
                url: url.to_string(),
                detail,
                extra_cas: self.extra_cas.clone(),
            };
        }
        LoginError::Unreachable {
            url: url.to_string(),
            detail,
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, LoginError> {
        let resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(url, &e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(url, &e))?;
        if !status.is_success() {
            return Err(LoginError::Http {
                url: url.to_string(),
                detail: format!("HTTP {status}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| LoginError::Http {
            url: url.to_string(),
            detail: format!("the answer is not JSON: {e}"),
        })
    }

    /// POSTs a form; an OAuth error answer (RFC 6749 §5.2) becomes `Err(Ok(OAuthFailure))`
    /// so that callers can act on its code.
    async fn post_form(
        &self,
        url: &str,
        client: &ClientCredentials,
        form: &[(&str, &str)],
    ) -> Result<Result<Value, OAuthFailure>, LoginError> {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.client.post(url).header("accept", "application/json");
        match &client.secret {
            // client_secret_basic, with both parts form-encoded first (RFC 6749 §2.3.1).
            Some(secret) => {
                req = req.basic_auth(form_encode(&client.id), Some(form_encode(secret)));
            }
            None => fields.push(("client_id", &client.id)),
        }
        let resp = req
            .form(&fields)
            .send()
            .await
            .map_err(|e| self.transport_error(url, &e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(url, &e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.map(Ok).ok_or_else(|| LoginError::Http {
                url: url.to_string(),
                detail: format!("HTTP {status} with a body that is not JSON"),
            });
        }
        match json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
        {
            Some(error) => Ok(Err(OAuthFailure {
                error: error.to_string(),
                description: json
                    .as_ref()
                    .and_then(|j| j.get("error_description"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })),
            None => Err(LoginError::Http {
                url: url.to_string(),
                detail: format!("HTTP {status}"),
            }),
        }
    }
}

/// The roots: public web roots, the system's CAs, and `extra_cas`. A system store that
/// cannot be read in part (a broken file under SSL_CERT_DIR) costs only that part, with a
/// warning, as with openssl.
fn tls_config(extra_cas: &[ExtraCa]) -> Result<rustls::ClientConfig, LoginError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        eprintln!("lanyard: warning: some of the system's CA certificates cannot be read: {e}");
    }
    // Trust stores carry certificates rustls cannot use (old v1 or odd encodings); openssl
    // skips those too.
    roots.add_parsable_certificates(native.certs);
    for ca in extra_cas {
        let bad = |detail: String| LoginError::CertificateAuthority {
            origin: ca.origin.clone(),
            detail,
        };
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca.pem) {
            let cert = cert.map_err(|e| bad(format!("not valid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("a certificate cannot be used: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoginError::Http {
            url: String::new(),
            detail: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The error and its causes on one line, each said once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        // io::Error hides a custom inner error from `source()`; the TLS error lives there.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) if inner.to_string() != err.to_string() => Some(inner),
            _ => err.source(),
        };
    }
    parts.join(": ")
}

fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    false
}

/// An OAuth error answer: `error` and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthFailure {
    pub error: String,
    pub description: Option<String>,
}

impl OAuthFailure {
    pub fn into_error(self, during: &'static str) -> LoginError {
        LoginError::OAuth {
            during,
            error: self.error,
            description: self.description.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Option<String>,
}

/// The parts of the discovery document the plugin uses.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub device_authorization_endpoint: Option<String>,
}

/// Strips the trailing slash so that `https://h/` and `https://h` name one issuer.
pub fn normalize_issuer(issuer: &str) -> String {
    issuer.trim_end_matches('/').to_string()
}

pub async fn discover(http: &Http, issuer: &str) -> Result<Provider, LoginError> {
    let issuer = normalize_issuer(issuer);
    let url = format!("{issuer}/.well-known/openid-configuration");
    let doc = http.get_json(&url).await?;
    let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
    let bad = |detail: String| LoginError::Discovery {
        url: url.clone(),
        detail,
    };
    let advertised = field("issuer").ok_or_else(|| bad("it has no issuer".into()))?;
    // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
    if normalize_issuer(&advertised) != issuer {
        return Err(bad(format!(
            "it names the issuer {advertised}, not {issuer}; check --issuer"
        )));
    }
    Ok(Provider {
        issuer: advertised,
        authorization_endpoint: field("authorization_endpoint")
            .ok_or_else(|| bad("it has no authorization_endpoint".into()))?,
        token_endpoint: field("token_endpoint")
            .ok_or_else(|| bad("it has no token_endpoint".into()))?,
        device_authorization_endpoint: field("device_authorization_endpoint"),
    })
}

/// The parts of a token response the plugin keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

fn token_response(url: &str, v: Value) -> Result<TokenResponse, LoginError> {
    serde_json::from_value(v).map_err(|e| LoginError::Http {
        url: url.to_string(),
        detail: format!("unexpected token response: {e}"),
    })
}

pub async fn exchange_code(
    http: &Http,
    provider: &Provider,
    client: &ClientCredentials,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<TokenResponse, LoginError> {
    let params = [
        ("grant_type", GrantType::AuthorizationCode.as_str()),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    token_grant(http, provider, client, &params)
        .await?
        .map_err(|f| f.into_error("the authorization code"))
}

/// Posts one token request; an OAuth refusal is `Ok(Err(_))`, for the caller to judge.
async fn token_grant(
    http: &Http,
    provider: &Provider,
    client: &ClientCredentials,
    params: &[(&str, &str)],
) -> Result<Result<TokenResponse, OAuthFailure>, LoginError> {
    let url = &provider.token_endpoint;
    match http.post_form(url, client, params).await? {
        Ok(v) => token_response(url, v).map(Ok),
        Err(f) => Ok(Err(f)),
    }
}

/// Uses the refresh token; an OAuth refusal (a revoked or expired session) is `Ok(Err(_))`.
pub async fn refresh(
    http: &Http,
    provider: &Provider,
    client: &ClientCredentials,
    refresh_token: &str,
) -> Result<Result<TokenResponse, OAuthFailure>, LoginError> {
    let params = [
        ("grant_type", GrantType::RefreshToken.as_str()),
        ("refresh_token", refresh_token),
    ];
    token_grant(http, provider, client, &params).await
}

/// RFC 8628 §3.2.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default)]
    pub interval: Option<u64>,
}

pub async fn device_authorization(
    http: &Http,
    provider: &Provider,
    client: &ClientCredentials,
    scopes: &[String],
) -> Result<DeviceAuthorization, LoginError> {
    let url = provider
        .device_authorization_endpoint
        .as_deref()
        .ok_or(LoginError::NoDeviceEndpoint)?;
    let scope = scopes.join(" ");
    let v = http
        .post_form(url, client, &[("scope", &scope)])
        .await?
        .map_err(|f| f.into_error("the device authorization request"))?;
    serde_json::from_value(v).map_err(|e| LoginError::Http {
        url: url.to_string(),
        detail: format!("unexpected device authorization response: {e}"),
    })
}

pub async fn poll_device(
    http: &Http,
    provider: &Provider,
    client: &ClientCredentials,
    device_code: &str,
) -> Result<Result<TokenResponse, OAuthFailure>, LoginError> {
    let params = [
        ("grant_type", GrantType::DeviceCode.as_str()),
        ("device_code", device_code),
    ];
    token_grant(http, provider, client, &params).await
}

/// A random URL-safe string of `bytes` bytes of entropy.
pub fn random_string(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// The claims of an ID token the plugin checks. The token came straight from the token
/// endpoint over the channel the issuer authenticated, which OpenID Connect Core §3.1.3.7
/// accepts in place of checking the signature; kube-apiserver checks it anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub exp: UnixTime,
}

pub fn check_id_token(
    token: &str,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
) -> Result<IdTokenClaims, LoginError> {
    let bad = |detail: &str| LoginError::IdToken(detail.to_string());
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("it is not a compact JWS"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("its payload is not base64url"))?;
    let claims: Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("its payload is not JSON"))?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if normalize_issuer(iss) != normalize_issuer(issuer) {
        return Err(LoginError::IdToken(format!(
            "it was issued by {iss:?}, not {issuer}"
        )));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(LoginError::IdToken(format!(
            "its audience does not include the client {client_id}"
        )));
    }
    if let Some(expected) = nonce {
        let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            got.as_bytes(),
            expected.as_bytes(),
        )) {
            return Err(bad("its nonce does not match this login"));
        }
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("it has no exp"))?;
    Ok(IdTokenClaims { exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn id_tokens_are_checked_for_issuer_audience_nonce_and_exp() {
        let good = json!({"iss": "https://i", "aud": "kubectl", "exp": 100, "nonce": "n"});
        assert_eq!(
            check_id_token(&token(good.clone()), "https://i/", "kubectl", Some("n")).unwrap(),
            IdTokenClaims { exp: 100 }
        );
        let multi = json!({"iss": "https://i", "aud": ["x", "kubectl"], "exp": 5});
        assert!(check_id_token(&token(multi), "https://i", "kubectl", None).is_ok());
        for (claims, nonce) in [
            (
                json!({"iss": "https://evil", "aud": "kubectl", "exp": 1}),
                None,
            ),
            (json!({"iss": "https://i", "aud": "other", "exp": 1}), None),
            (json!({"iss": "https://i", "aud": "kubectl"}), None),
            (
                json!({"iss": "https://i", "aud": "kubectl", "exp": 1, "nonce": "x"}),
                Some("n"),
            ),
        ] {
            assert!(
                check_id_token(&token(claims.clone()), "https://i", "kubectl", nonce).is_err(),
                "{claims}"
            );
        }
        assert!(check_id_token("not-a-jwt", "https://i", "kubectl", None).is_err());
    }

    #[test]
    fn random_strings_are_long_and_differ() {
        assert_eq!(random_string(32).len(), 43);
        assert_ne!(random_string(16), random_string(16));
    }
}
