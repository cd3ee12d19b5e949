//! A real SAML identity provider for the tests: pysaml2 (tests/it/fixtures/saml/idp.py), which
//! signs with the xmlsec1 binary, started on 127.0.0.1. Its Python comes from
//! `LANYARD_TEST_PYTHON`, else the virtualenv .ci/run makes (target/grpc-venv). Outside CI a
//! machine without pysaml2 skips the test; in CI (`CI` set) it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// lanyard's SAML entity ID in these tests (`entityIssuer`).
pub const SP_ENTITY_ID: &str = "https://lanyard.test/saml";
/// The IdP's entity ID (`ssoIssuer`).
pub const IDP_ENTITY_ID: &str = "https://idp.test/saml";

/// An RSA key and self-signed certificate, as files.
pub struct SigningKey {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub cert_pem: String,
}

impl SigningKey {
    pub fn generate(dir: &Path, name: &str) -> SigningKey {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl req failed");
        let cert_pem = std::fs::read_to_string(&cert).expect("read cert");
        SigningKey {
            key,
            cert,
            cert_pem,
        }
    }
}

/// The Python with pysaml2, or `None` (skip) outside CI.
pub fn python() -> Option<PathBuf> {
    let python = std::env::var_os("LANYARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpc-venv/bin/python")
        });
    let works = Command::new(&python)
        .args(["-c", "import saml2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if works {
        return Some(python);
    }
    let what = format!(
        "{} with pysaml2 (set LANYARD_TEST_PYTHON, or run .ci/run, which installs it)",
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing in CI");
    }
    eprintln!("skipping: {what} is not available");
    None
}

/// A running pysaml2 IdP; stopped when dropped.
pub struct SamlIdp {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SamlIdp {
    /// Starts the IdP on `port`, signing with `key`, trusting the SP described by
    /// `sp_metadata`, and signing in `user` ({"name_id", "attributes"}); `overrides` are more
    /// keys of idp.py's config (sign_response, sign_assertion, sign_alg, audience,
    /// destination).
    pub fn start(
        python: &Path,
        port: u16,
        key: &SigningKey,
        sp_metadata: &str,
        user: Value,
        overrides: Value,
    ) -> SamlIdp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conf = json!({
            "port": port,
            "entity_id": IDP_ENTITY_ID,
            "key": key.key,
            "cert": key.cert,
            "sp_metadata": sp_metadata,
            "user": user,
        });
        if let (Some(conf), Some(extra)) = (conf.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                conf.insert(k.clone(), v.clone());
            }
        }
        let conf_path = dir.path().join("idp.json");
        std::fs::write(&conf_path, conf.to_string()).expect("write idp config");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/saml/idp.py");
        let mut child = Command::new(python)
            .arg("-W")
            .arg("ignore")
            .arg(&script)
            .arg(&conf_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the pysaml2 IdP");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the IdP's port");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the IdP did not start: {line:?}"));
        SamlIdp {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn sso_url(&self) -> String {
        format!("http://127.0.0.1:{}/sso", self.port)
    }
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The IdP's answer to a redirect to it: the form's action and its `SAMLResponse` and
/// `RelayState` fields.
pub struct PostedResponse {
    pub action: String,
    pub saml_response: String,
    pub relay_state: String,
}

impl PostedResponse {
    /// Follows `sso_redirect` (the URL lanyard sent the browser to) and reads the IdP's form.
    pub async fn fetch(browser: &reqwest::Client, sso_redirect: &str) -> PostedResponse {
        let resp = browser.get(sso_redirect).send().await.expect("IdP answers");
        assert_eq!(resp.status(), 200, "the IdP accepts lanyard's AuthnRequest");
        let html = resp.text().await.expect("IdP page");
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = html.find(&marker).map(|i| i + marker.len());
            let value = start.and_then(|s| html[s..].find('"').map(|e| &html[s..s + e]));
            unescape(value.unwrap_or_else(|| panic!("no {name} in the IdP's form: {html}")))
        };
        let action = {
            let marker = "action=\"";
            let s = html.find(marker).expect("form action") + marker.len();
            let e = html[s..].find('"').expect("action end") + s;
            unescape(&html[s..e])
        };
        PostedResponse {
            action,
            saml_response: field("SAMLResponse"),
            relay_state: field("RelayState"),
        }
    }

    /// The response's XML.
    pub fn xml(&self) -> String {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.saml_response)
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    }

    /// The same response with its XML replaced.
    pub fn with_xml(&self, xml: &str) -> PostedResponse {
        use base64::Engine;
        PostedResponse {
            action: self.action.clone(),
            saml_response: base64::engine::general_purpose::STANDARD.encode(xml),
            relay_state: self.relay_state.clone(),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
