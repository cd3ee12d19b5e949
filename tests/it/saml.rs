//! The SAML connector against a real SAML IdP that lanyard did not write: pysaml2, signing
//! with the xmlsec1 binary (tests/it/common/saml_idp.rs). A full login through a lanyard
//! server; then each check the connector makes, on responses the IdP signed, some mutated by
//! the test afterwards (unsigned, wrapped), some signed by the IdP with a wrong value.

use crate::common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::saml_idp::{python, PostedResponse, SamlIdp, SigningKey, IDP_ENTITY_ID, SP_ENTITY_ID};
use common::server::{free_port, location, query_param, AuthRequest, Backend, TestServer};
use lanyard_connectors::saml::{SamlConfig, SamlConnector};
use lanyard_connectors::{CallbackConnector, ConnectorError, Identity, Scopes};
use serde_json::{json, Value};

/// The ACS URL the connector-level tests use (no server runs there).
const ACS: &str = "https://lanyard.test/callback";
const USERNAME_ATTR: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const EMAIL_ATTR: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";

fn jane() -> Value {
    json!({
        "name_id": "jane-7f3a",
        "attributes": {
            USERNAME_ATTR: ["jane"],
            EMAIL_ATTR: ["jane@example.com"],
            "groups": ["admins", "devs"],
            "groupList": ["ops;sre"],
        }
    })
}

/// Keys and a Python with pysaml2; `None` skips (outside CI).
struct Setup {
    python: std::path::PathBuf,
    dir: tempfile::TempDir,
    idp_key: SigningKey,
    other_key: SigningKey,
}

impl Setup {
    fn new() -> Option<Setup> {
        let python = python()?;
        let dir = tempfile::tempdir().unwrap();
        let idp_key = SigningKey::generate(dir.path(), "idp");
        let other_key = SigningKey::generate(dir.path(), "other");
        Some(Setup {
            python,
            dir,
            idp_key,
            other_key,
        })
    }

    fn config(&self, sso_url: &str, acs: &str, edit: impl FnOnce(&mut SamlConfig)) -> SamlConfig {
        let mut c = SamlConfig {
            sso_url: Some(sso_url.into()),
            ca: Some(self.idp_key.cert.display().to_string()),
            entity_issuer: Some(SP_ENTITY_ID.into()),
            sso_issuer: Some(IDP_ENTITY_ID.into()),
            redirect_uri: Some(acs.into()),
            username_attr: Some(USERNAME_ATTR.into()),
            email_attr: Some(EMAIL_ATTR.into()),
            groups_attr: Some("groups".into()),
            ..SamlConfig::default()
        };
        edit(&mut c);
        c
    }
}

/// A connector with a clock the test sets (seconds from the real time).
struct Direct {
    connector: SamlConnector,
    idp: SamlIdp,
    skew: Arc<AtomicI64>,
}

impl Direct {
    /// A connector and a pysaml2 IdP signing with `key` and `overrides`.
    fn start(
        setup: &Setup,
        key: &SigningKey,
        overrides: Value,
        edit: impl FnOnce(&mut SamlConfig),
    ) -> Direct {
        let port = free_port();
        let sso = format!("http://127.0.0.1:{port}/sso");
        let skew = Arc::new(AtomicI64::new(0));
        let clock = skew.clone();
        let connector = SamlConnector::new(
            &setup.config(&sso, ACS, edit),
            Arc::new(move || {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                now + clock.load(Ordering::SeqCst)
            }),
        )
        .expect("connector opens");
        let idp = SamlIdp::start(
            &setup.python,
            port,
            key,
            &connector.metadata_xml(),
            jane(),
            overrides,
        );
        Direct {
            connector,
            idp,
            skew,
        }
    }

    /// A login: the request ID lanyard keeps and the IdP's signed answer.
    async fn login(&self) -> (String, PostedResponse) {
        assert!(self.idp.port > 0);
        let redirect = self
            .connector
            .login_url(&Scopes::default(), ACS, "req.secret")
            .await
            .expect("login url");
        assert!(redirect.url.starts_with(&self.idp.sso_url()));
        let posted = PostedResponse::fetch(&reqwest::Client::new(), &redirect.url).await;
        assert_eq!(posted.action, ACS, "the IdP posts to the ACS URL");
        assert_eq!(posted.relay_state, "req.secret", "RelayState comes back");
        (String::from_utf8(redirect.pending).unwrap(), posted)
    }

    async fn submit(
        &self,
        request_id: &str,
        posted: &PostedResponse,
        scopes: Scopes,
    ) -> Result<Identity, ConnectorError> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("state", "req.secret")
            .append_pair("SAMLResponse", &posted.saml_response)
            .finish();
        self.connector
            .handle_callback(&scopes, ACS, request_id.as_bytes(), &query)
            .await
    }
}

fn groups_scope() -> Scopes {
    Scopes {
        offline_access: false,
        groups: true,
    }
}

/// The refusal's reason: the connector refuses with a bad-callback error naming the check.
fn refusal(result: Result<Identity, ConnectorError>) -> String {
    match result {
        Err(ConnectorError::BadCallback(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Why the connector refuses the IdP's response, unchanged, when the IdP signs with `key` and
/// `overrides` and the connector is configured with `edit`.
async fn refusal_of_signed_response(
    setup: &Setup,
    key: &SigningKey,
    overrides: Value,
    edit: impl FnOnce(&mut SamlConfig),
) -> String {
    let d = Direct::start(setup, key, overrides, edit);
    let (id, posted) = d.login().await;
    refusal(d.submit(&id, &posted, groups_scope()).await)
}

/// Removes every `<ns2:Signature>` element (pysaml2's prefix for XML-DSig).
fn strip_signatures(xml: &str) -> String {
    let mut out = xml.to_string();
    while let Some(start) = out.find("<ns2:Signature ") {
        let end_tag = "</ns2:Signature>";
        let end = out[start..].find(end_tag).expect("signature end") + start + end_tag.len();
        out.replace_range(start..end, "");
    }
    out
}

/// The `<ns1:Assertion ...>...</ns1:Assertion>` element of a pysaml2 response.
fn assertion_of(xml: &str) -> (usize, usize) {
    let start = xml.find("<ns1:Assertion ").expect("assertion");
    let end_tag = "</ns1:Assertion>";
    let end = xml.find(end_tag).expect("assertion end") + end_tag.len();
    (start, end)
}

// ----- the connector on pysaml2's responses ----------------------------------------------------

#[tokio::test]
async fn a_signed_response_gives_the_idps_identity_and_groups() {
    let Some(setup) = Setup::new() else { return };
    for (sign_response, sign_assertion) in [(true, true), (true, false), (false, true)] {
        let d = Direct::start(
            &setup,
            &setup.idp_key,
            json!({"sign_response": sign_response, "sign_assertion": sign_assertion}),
            |_| {},
        );
        let (id, posted) = d.login().await;
        let identity = d
            .submit(&id, &posted, groups_scope())
            .await
            .unwrap_or_else(|e| panic!("response {sign_response}/assertion {sign_assertion}: {e}"));
        assert_eq!(identity.user_id, "jane-7f3a");
        assert_eq!(identity.username, "jane");
        assert_eq!(identity.email, "jane@example.com");
        assert!(identity.email_verified);
        assert_eq!(identity.groups, ["admins", "devs"]);
    }
}

#[tokio::test]
async fn groups_follow_dex_delim_allowed_and_filter() {
    let Some(setup) = Setup::new() else { return };
    // Without the groups scope and without allowedGroups, no groups are read.
    let d = Direct::start(&setup, &setup.idp_key, json!({}), |_| {});
    let (id, posted) = d.login().await;
    let identity = d.submit(&id, &posted, Scopes::default()).await.unwrap();
    assert!(identity.groups.is_empty());

    let d = Direct::start(&setup, &setup.idp_key, json!({}), |c| {
        c.groups_attr = Some("groupList".into());
        c.groups_delim = Some(";".into());
    });
    let (id, posted) = d.login().await;
    let identity = d.submit(&id, &posted, groups_scope()).await.unwrap();
    assert_eq!(identity.groups, ["ops", "sre"]);

    let d = Direct::start(&setup, &setup.idp_key, json!({}), |c| {
        c.allowed_groups = Some(vec!["devs".into(), "other".into()]);
        c.filter_groups = Some(true);
    });
    let (id, posted) = d.login().await;
    let identity = d.submit(&id, &posted, groups_scope()).await.unwrap();
    assert_eq!(
        identity.groups,
        ["devs"],
        "filterGroups keeps the allowed ones"
    );
}

#[tokio::test]
async fn a_user_outside_allowed_groups_is_denied() {
    let Some(setup) = Setup::new() else { return };
    let d = Direct::start(&setup, &setup.idp_key, json!({}), |c| {
        c.allowed_groups = Some(vec!["finance".into()]);
    });
    let (id, posted) = d.login().await;
    match d.submit(&id, &posted, Scopes::default()).await {
        Err(ConnectorError::AccessDenied(reason)) => {
            assert!(reason.contains("allowed groups"), "{reason}")
        }
        other => panic!("expected access denied, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unsigned_response_is_refused() {
    let Some(setup) = Setup::new() else { return };
    let d = Direct::start(&setup, &setup.idp_key, json!({}), |_| {});
    let (id, posted) = d.login().await;
    let unsigned = posted.with_xml(&strip_signatures(&posted.xml()));
    let reason = refusal(d.submit(&id, &unsigned, groups_scope()).await);
    assert!(reason.contains("signature check failed"), "{reason}");
}

#[tokio::test]
async fn a_response_signed_by_another_key_is_refused() {
    let Some(setup) = Setup::new() else { return };
    let reason = refusal_of_signed_response(&setup, &setup.other_key, json!({}), |_| {}).await;
    assert!(reason.contains("signature check failed"), "{reason}");
}

#[tokio::test]
async fn a_changed_signed_assertion_is_refused() {
    let Some(setup) = Setup::new() else { return };
    let d = Direct::start(&setup, &setup.idp_key, json!({}), |_| {});
    let (id, posted) = d.login().await;
    let forged = posted.with_xml(&posted.xml().replace("jane-7f3a", "admin"));
    let reason = refusal(d.submit(&id, &forged, groups_scope()).await);
    assert!(reason.contains("signature check failed"), "{reason}");
}

#[tokio::test]
async fn sha1_signatures_are_refused() {
    let Some(setup) = Setup::new() else { return };
    let overrides = json!({"sign_alg": "sha1"});
    let reason = refusal_of_signed_response(&setup, &setup.idp_key, overrides, |_| {}).await;
    assert!(reason.contains("SHA-256 or stronger"), "{reason}");
}

/// XML signature wrapping: the signed assertion is kept (so its signature still verifies)
/// and a forged one naming another user is put where a naive parser would read it.
#[tokio::test]
async fn wrapped_assertions_are_refused() {
    let Some(setup) = Setup::new() else { return };
    let d = Direct::start(
        &setup,
        &setup.idp_key,
        json!({"sign_response": false, "sign_assertion": true}),
        |_| {},
    );
    let (id, posted) = d.login().await;
    let xml = posted.xml();
    let (start, end) = assertion_of(&xml);
    let signed = &xml[start..end];
    let forged = strip_signatures(signed)
        .replace("jane-7f3a", "admin")
        .replace("ID=\"id-", "ID=\"forged-");
    // XSW: the forged assertion first, the signed one after it.
    let before = format!("{}{}{}", &xml[..start], forged, &xml[start..]);
    // XSW: the signed assertion inside the forged one.
    let inside = {
        let close = forged.rfind("</ns1:Assertion>").unwrap();
        let nested = format!("{}{}{}", &forged[..close], signed, &forged[close..]);
        format!("{}{}{}", &xml[..start], nested, &xml[end..])
    };
    // XSW: the signed assertion hidden in the unsigned Response's Extensions.
    let extensions = format!(
        "{}<ns0:Extensions>{}</ns0:Extensions>{}{}",
        &xml[..start],
        signed,
        forged,
        &xml[end..]
    );
    for (what, wrapped) in [
        ("before", before),
        ("inside", inside),
        ("extensions", extensions),
    ] {
        let reason = refusal(
            d.submit(&id, &posted.with_xml(&wrapped), groups_scope())
                .await,
        );
        assert!(
            reason.contains("exactly one is accepted"),
            "{what}: {reason}"
        );
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_responses_are_refused() {
    let Some(setup) = Setup::new() else { return };
    let d = Direct::start(&setup, &setup.idp_key, json!({}), |_| {});
    let (id, posted) = d.login().await;
    // pysaml2 makes responses valid for 5 minutes; 30 seconds of skew are allowed.
    d.skew.store(5 * 60 + 31, Ordering::SeqCst);
    let reason = refusal(d.submit(&id, &posted, groups_scope()).await);
    assert!(reason.contains("expired"), "{reason}");
    d.skew.store(-120, Ordering::SeqCst);
    let reason = refusal(d.submit(&id, &posted, groups_scope()).await);
    assert!(reason.contains("not valid before"), "{reason}");
    d.skew.store(5 * 60 - 5, Ordering::SeqCst);
    d.submit(&id, &posted, groups_scope())
        .await
        .expect("valid until NotOnOrAfter");
}

#[tokio::test]
async fn a_response_for_another_audience_is_refused() {
    let Some(setup) = Setup::new() else { return };
    let overrides = json!({"audience": "https://other-sp.test/saml"});
    let reason = refusal_of_signed_response(&setup, &setup.idp_key, overrides, |_| {}).await;
    assert!(reason.contains("Audience"), "{reason}");
}

#[tokio::test]
async fn a_response_for_another_destination_is_refused() {
    let Some(setup) = Setup::new() else { return };
    for (sign_response, check) in [(true, "Destination"), (false, "Recipient")] {
        let overrides =
            json!({"destination": "https://other-sp.test/acs", "sign_response": sign_response});
        let reason = refusal_of_signed_response(&setup, &setup.idp_key, overrides, |_| {}).await;
        assert!(reason.contains(check), "{reason}");
    }
}

#[tokio::test]
async fn a_response_to_another_request_is_refused() {
    let Some(setup) = Setup::new() else { return };
    for sign_response in [true, false] {
        let d = Direct::start(
            &setup,
            &setup.idp_key,
            json!({"sign_response": sign_response}),
            |_| {},
        );
        let (_, first) = d.login().await;
        let (second_id, _) = d.login().await;
        let reason = refusal(d.submit(&second_id, &first, groups_scope()).await);
        assert!(reason.contains("InResponseTo"), "{reason}");
    }
}

#[tokio::test]
async fn a_response_from_another_issuer_is_refused() {
    let Some(setup) = Setup::new() else { return };
    let reason = refusal_of_signed_response(&setup, &setup.idp_key, json!({}), |c| {
        c.sso_issuer = Some("https://another-idp.test/saml".into());
    })
    .await;
    assert!(reason.contains("Issuer"), "{reason}");
}

// ----- through a lanyard server -----------------------------------------------------------------

/// A lanyard server with a `saml` connector, and a pysaml2 IdP that imported the SP metadata
/// lanyard serves.
async fn server_and_idp(setup: &Setup, overrides: Value) -> (TestServer, SamlIdp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let idp_port = free_port();
    let ca = setup.idp_key.cert.display();
    let yaml = format!(
        r#"connectors:
- type: saml
  id: corp
  name: Corp SSO
  config:
    ssoURL: http://127.0.0.1:{idp_port}/sso
    ca: {ca}
    entityIssuer: {SP_ENTITY_ID}
    ssoIssuer: {IDP_ENTITY_ID}
    redirectURI: {issuer}/callback
    usernameAttr: {USERNAME_ATTR}
    emailAttr: {EMAIL_ATTR}
    groupsAttr: groups
"#
    );
    let s = TestServer::builder(Backend::Sqlite)
        .listener(listener)
        .config(&yaml)
        .start()
        .await
        .expect("server");
    let metadata = reqwest::get(s.url("/saml/corp/metadata")).await.unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(
        metadata.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    let metadata = metadata.text().await.unwrap();
    assert!(
        metadata.contains(&format!("Location=\"{issuer}/callback\"")),
        "{metadata}"
    );
    let idp = SamlIdp::start(
        &setup.python,
        idp_port,
        &setup.idp_key,
        &metadata,
        jane(),
        overrides,
    );
    let _ = &setup.dir;
    (s, idp)
}

/// /auth → /auth/corp → the IdP; returns its form.
async fn to_idp(s: &TestServer, browser: &reqwest::Client, req: &AuthRequest) -> PostedResponse {
    let mut query = req.query();
    query.push(("connector_id".into(), "corp".into()));
    let resp = browser
        .get(s.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = browser
        .get(s.absolute(&location(&resp)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        303,
        "/auth/corp sends the browser to the IdP"
    );
    let posted = PostedResponse::fetch(browser, &location(&resp)).await;
    assert_eq!(posted.action, s.url("/callback"));
    posted
}

async fn post_back(browser: &reqwest::Client, posted: &PostedResponse) -> reqwest::Response {
    browser
        .post(&posted.action)
        .form(&[
            ("SAMLResponse", posted.saml_response.as_str()),
            ("RelayState", posted.relay_state.as_str()),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn full_login_through_lanyard_ends_in_an_id_token_with_the_idps_identity() {
    let Some(setup) = Setup::new() else { return };
    let (s, _idp) = server_and_idp(&setup, json!({})).await;
    let browser = TestServer::new_browser();
    let req = AuthRequest::public();
    let posted = to_idp(&s, &browser, &req).await;
    let resp = post_back(&browser, &posted).await;
    let redirect = s.approve_if_asked(&browser, &req, &resp).await;
    let code = query_param(&redirect, "code").expect("code");
    let tokens: Value = s.redeem(&req, &code).await.json().await.unwrap();
    let claims = common::server::claims_of(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "jane");
    assert_eq!(claims["groups"], json!(["admins", "devs"]));
    assert_eq!(
        claims["sub"],
        lanyard::oidc::subject::encode_subject("jane-7f3a", "corp")
    );
    // As in Dex, SAML has no refresh: offline_access gets no refresh token.
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");

    // The same response again: the login it answered is used up.
    let replay = post_back(&browser, &posted).await;
    assert_eq!(replay.status(), 400);
    let page = replay.text().await.unwrap();
    assert!(page.contains("Login expired"), "{page}");
}

#[tokio::test]
async fn a_refused_response_shows_an_error_page_and_no_code() {
    let Some(setup) = Setup::new() else { return };
    let (s, _idp) = server_and_idp(&setup, json!({})).await;
    let browser = TestServer::new_browser();
    let posted = to_idp(&s, &browser, &AuthRequest::public()).await;
    let unsigned = posted.with_xml(&strip_signatures(&posted.xml()));
    let resp = post_back(&browser, &unsigned).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("Sign-in failed"), "{page}");
    // The login is not used up by a refused response: the genuine one still completes it.
    let resp = post_back(&browser, &posted).await;
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_cross_site_post_without_the_login_cookie_is_posted_again_from_lanyard() {
    let Some(setup) = Setup::new() else { return };
    let (s, _idp) = server_and_idp(&setup, json!({})).await;
    let browser = TestServer::new_browser();
    let posted = to_idp(&s, &browser, &AuthRequest::public()).await;
    // A browser leaves the SameSite=Lax cookie out of the IdP's cross-site post.
    let cookieless = reqwest::Client::new();
    let resp = post_back(&cookieless, &posted).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    // minijinja escapes the action's slashes.
    let action = s.url("/callback").replace('/', "&#x2f;");
    assert!(page.contains(&format!("action=\"{action}\"")), "{page}");
    assert!(page.contains("name=\"lanyard_reposted\""), "{page}");
    // Posted again without the cookie, it is refused rather than posted a third time.
    let resp = cookieless
        .post(s.url("/callback"))
        .form(&[
            ("SAMLResponse", posted.saml_response.as_str()),
            ("RelayState", posted.relay_state.as_str()),
            ("lanyard_reposted", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

// ----- config ---------------------------------------------------------------------------------

/// `lanyard check-config` on `path` with the example's variables set: success and output.
fn check_config(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(common::process::BIN)
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .env("POSTGRES_PASSWORD", "pw")
        .env("LANYARD_ENCRYPTION_KEY", common::server::ENCRYPTION_KEY)
        .env("KUBERNETES_CLIENT_SECRET", "kubernetes-secret")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// config/examples/saml.yaml (ADFS-shaped) is a valid config once its variables are set.
#[test]
fn the_saml_example_passes_check_config() {
    let (ok, text) = check_config(std::path::Path::new("config/examples/saml.yaml"));
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "OK");
}

/// Dex's insecureSkipSignatureValidation is refused by check-config, under its key.
#[test]
fn skipping_signature_validation_is_refused_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string("config/examples/saml.yaml")
        .unwrap()
        .replace(
            "      nameIDPolicyFormat: persistent\n",
            "      nameIDPolicyFormat: persistent\n      insecureSkipSignatureValidation: true\n",
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let (ok, text) = check_config(&path);
    assert!(!ok, "{text}");
    assert!(
        text.contains("connectors[0].config.insecureSkipSignatureValidation")
            && text.contains("sign in as them"),
        "{text}"
    );
}
