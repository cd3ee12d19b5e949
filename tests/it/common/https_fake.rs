//! The HTTPS host under every fake upstream (GitHub, Microsoft, Google): a private CA, a
//! server certificate it signed for 127.0.0.1, the CA as a PEM file for the connector's
//! `rootCA`/`rootCAs`, and an axum router served on a free port until the host is dropped;
//! and what every fake's OAuth 2.0 token endpoint does alike (RFC 6749).

use std::net::SocketAddr;
use std::path::PathBuf;

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

pub struct HttpsHost {
    /// `127.0.0.1:port`.
    pub host: String,
    /// `https://127.0.0.1:port`.
    pub base: String,
    /// The PEM file of the CA that signed the host's certificate.
    pub ca_file: PathBuf,
    pub ca_pem: String,
    handle: axum_server::Handle,
    dir: tempfile::TempDir,
}

impl HttpsHost {
    /// Serves the router `app(base)` builds (it gets its own `https://host:port` for absolute
    /// links) over HTTPS with a certificate from a CA named `ca_name`.
    pub fn start(ca_name: &str, app: impl FnOnce(&str) -> Router) -> HttpsHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = super::tls::PrivateCa::new(ca_name);
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).expect("write CA");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let host = format!("127.0.0.1:{}", addr.port());
        let base = format!("https://{host}");
        let handle = ca.serve(listener, app(&base));
        HttpsHost {
            host,
            base,
            ca_file,
            ca_pem: ca.ca_pem,
            handle,
            dir,
        }
    }

    /// A directory that lives as long as the host, for files the test hands the connector.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A browser that trusts the host's CA, keeps cookies and follows no redirect itself.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA"),
            )
            .build()
            .expect("browser")
    }
}

impl Drop for HttpsHost {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// An OAuth 2.0 error answer (RFC 6749 section 5.2): 400 with `error` and `error_description`.
pub fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Whether the request authenticates as the client `id` with `secret`, by Basic auth (the
/// form-urlencoded id and secret) or in the body (RFC 6749 section 2.3.1).
pub fn client_authenticated(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    id: &str,
    secret: &str,
) -> bool {
    use base64::Engine;
    let urlencode =
        |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).to_string());
    match basic {
        Some(pair) => pair == format!("{}:{}", urlencode(id), urlencode(secret)),
        None => {
            form.get("client_id").map(String::as_str) == Some(id)
                && form.get("client_secret").map(String::as_str) == Some(secret)
        }
    }
}
