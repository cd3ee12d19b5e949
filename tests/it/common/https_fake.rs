//! The HTTPS host under every fake upstream (GitHub, Microsoft, Google): a private CA, a
//! server certificate it signed for 127.0.0.1, the CA as a PEM file for the connector's
//! `rootCA`/`rootCAs`, and an axum router served on a free port until the host is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;

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
