//! `type: saml`: SAML 2.0 Web Browser SSO as a service provider, with Dex's config keys.
//!
//! The browser goes to the IdP with an AuthnRequest (HTTP-Redirect binding, `RelayState`
//! carrying lanyard's login state) and comes back with a signed Response posted to the ACS URL
//! (`redirectURI`, lanyard's `/callback`). The server turns that POST into the query
//! [`CallbackConnector::handle_callback`] reads (`SAMLResponse`), after checking the
//! `RelayState` the way it checks an OAuth `state`. Signatures are verified by libxmlsec1
//! (see [`response`]). There is no refresh: SAML has no way to re-ask the IdP without the
//! browser, so, as in Dex, logins through this connector get no refresh token.

pub mod config;
pub mod metadata;
pub mod response;

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::write::DeflateEncoder;
use flate2::Compression;
pub use samael::crypto::CertificateDer;

pub use config::SamlConfig;
use response::{Expected, VerifiedAssertion};

use crate::{CallbackConnector, ConnectorError, Identity, Scopes, UpstreamRedirect};

/// Seconds since the Unix epoch, from the server's clock.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The query key the server puts the posted `SAMLResponse` under.
pub const SAML_RESPONSE_PARAM: &str = "SAMLResponse";

pub struct SamlConnector {
    sso_url: String,
    acs_url: String,
    entity_id: String,
    send_issuer: bool,
    sso_issuer: Option<String>,
    certs: Arc<Vec<CertificateDer>>,
    username_attr: String,
    email_attr: String,
    groups_attr: Option<String>,
    groups_delim: Option<String>,
    allowed_groups: Vec<String>,
    filter_groups: bool,
    name_id_format: &'static str,
    now: Now,
}

impl std::fmt::Debug for SamlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlConnector")
            .field("sso_url", &self.sso_url)
            .field("entity_id", &self.entity_id)
            .finish_non_exhaustive()
    }
}

/// The DER certificates of a PEM bundle.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer>, String> {
    let certs = openssl::x509::X509::stack_from_pem(pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    certs
        .iter()
        .map(|c| {
            c.to_der()
                .map(CertificateDer::from)
                .map_err(|e| e.to_string())
        })
        .collect()
}

impl SamlConnector {
    /// Opens the connector: reads `ca` (or decodes `caData`). `config` must have passed
    /// [`SamlConfig::validate`]; problems found now name their key.
    pub fn new(config: &SamlConfig, now: Now) -> Result<Self, ConnectorError> {
        crate::ConfigIssue::refuse(config.validate())?;
        let pem = match (&config.ca, &config.ca_data) {
            (Some(path), _) if !path.is_empty() => std::fs::read(path)
                .map_err(|e| ConnectorError::Config(format!("ca: cannot read {path}: {e}")))?,
            (_, Some(data)) => STANDARD
                .decode(data.trim())
                .map_err(|e| ConnectorError::Config(format!("caData: not base64: {e}")))?,
            _ => return Err(ConnectorError::Config("ca: missing".into())),
        };
        let key = if config.ca.as_deref().is_some_and(|c| !c.is_empty()) {
            "ca"
        } else {
            "caData"
        };
        let certs =
            parse_certificates(&pem).map_err(|e| ConnectorError::Config(format!("{key}: {e}")))?;
        let missing = |k: &str| ConnectorError::Config(format!("{k}: missing"));
        let acs_url = config
            .redirect_uri()
            .ok_or_else(|| missing("redirectURI"))?
            .to_string();
        Ok(Self {
            sso_url: config
                .sso_url()
                .ok_or_else(|| missing("ssoURL"))?
                .to_string(),
            // Dex: without entityIssuer the Audience expected is the redirect URI.
            entity_id: config.entity_issuer().unwrap_or(&acs_url).to_string(),
            send_issuer: config.entity_issuer().is_some(),
            acs_url,
            sso_issuer: config.sso_issuer().map(str::to_string),
            certs: Arc::new(certs),
            username_attr: config.username_attr.clone().unwrap_or_default(),
            email_attr: config.email_attr.clone().unwrap_or_default(),
            groups_attr: config.groups_attr().map(str::to_string),
            groups_delim: config.groups_delim().map(str::to_string),
            allowed_groups: config.allowed_groups().to_vec(),
            filter_groups: config.filter_groups.unwrap_or(false),
            name_id_format: config
                .name_id_format()
                .ok_or_else(|| ConnectorError::Config("nameIDPolicyFormat: unknown".into()))?,
            now,
        })
    }

    /// The ACS URL responses must be posted to and addressed to.
    pub fn acs_url(&self) -> &str {
        &self.acs_url
    }

    /// lanyard's entity ID for this connector.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The SP metadata an IdP administrator imports.
    pub fn metadata_xml(&self) -> String {
        metadata::sp_metadata(&self.entity_id, &self.acs_url, self.name_id_format)
    }

    /// The AuthnRequest XML with ID `request_id`.
    pub fn authn_request(&self, request_id: &str) -> String {
        let instant = chrono::DateTime::from_timestamp((self.now)(), 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let issuer = if self.send_issuer {
            format!("<saml:Issuer>{}</saml:Issuer>", escape(&self.entity_id))
        } else {
            String::new()
        };
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{instant}" Destination="{dest}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" AssertionConsumerServiceURL="{acs}">{issuer}<samlp:NameIDPolicy Format="{format}" AllowCreate="true"/></samlp:AuthnRequest>"#,
            id = escape(request_id),
            dest = escape(&self.sso_url),
            acs = escape(&self.acs_url),
            format = self.name_id_format,
        )
    }

    /// Verifies a base64 `SAMLResponse` answering `request_id` and maps it to an identity.
    pub async fn identity_from_response(
        &self,
        scopes: &Scopes,
        saml_response: &str,
        request_id: &str,
    ) -> Result<Identity, ConnectorError> {
        let xml = response::decode(saml_response).map_err(refused)?;
        let certs = self.certs.clone();
        // libxml2 and libxmlsec1 work synchronously.
        let signed = tokio::task::spawn_blocking(move || response::verify_signatures(&xml, &certs))
            .await
            .map_err(|e| ConnectorError::Internal(format!("signature check panicked: {e}")))?
            .map_err(refused)?;
        let expected = Expected {
            acs_url: &self.acs_url,
            audience: &self.entity_id,
            issuer: self.sso_issuer.as_deref(),
            request_id,
            now: (self.now)(),
        };
        let assertion = response::check_signed(&signed, &expected).map_err(refused)?;
        self.identity(scopes, &assertion)
    }

    /// Dex's mapping of the assertion's attributes to the identity, groups included.
    fn identity(
        &self,
        scopes: &Scopes,
        assertion: &VerifiedAssertion,
    ) -> Result<Identity, ConnectorError> {
        let attr = |name: &str| {
            assertion
                .first(name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    ConnectorError::BadCallback(format!(
                        "the assertion has no attribute `{name}` (it has {:?})",
                        assertion.names()
                    ))
                })
        };
        let mut identity = Identity {
            user_id: assertion.name_id.clone(),
            username: attr(&self.username_attr)?,
            preferred_username: String::new(),
            email: attr(&self.email_attr)?,
            // Dex marks SAML emails verified: the IdP vouches for its attributes.
            email_verified: true,
            groups: Vec::new(),
            connector_data: None,
        };
        let groups_wanted = scopes.groups || !self.allowed_groups.is_empty();
        let Some(groups_attr) = self.groups_attr.as_deref().filter(|_| groups_wanted) else {
            return Ok(identity);
        };
        let no_attr = || {
            ConnectorError::BadCallback(format!(
                "the assertion has no attribute `{groups_attr}` (it has {:?})",
                assertion.names()
            ))
        };
        identity.groups = match &self.groups_delim {
            Some(delim) => assertion
                .first(groups_attr)
                .ok_or_else(no_attr)?
                .split(delim.as_str())
                .map(str::to_string)
                .collect(),
            None => assertion.all(groups_attr).ok_or_else(no_attr)?,
        };
        if self.allowed_groups.is_empty() {
            return Ok(identity);
        }
        let matching: Vec<String> = identity
            .groups
            .iter()
            .filter(|g| self.allowed_groups.contains(g))
            .cloned()
            .collect();
        if matching.is_empty() {
            return Err(ConnectorError::AccessDenied(
                "user is not a member of any of the allowed groups".into(),
            ));
        }
        if self.filter_groups {
            identity.groups = matching;
        }
        Ok(identity)
    }
}

fn refused(r: response::Refused) -> ConnectorError {
    ConnectorError::BadCallback(format!("SAML response refused: {}", r.0))
}

/// XML attribute and text escaping for the values lanyard writes into its own messages.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh AuthnRequest ID: an XML NCName (it must not start with a digit).
fn new_request_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

#[async_trait]
impl CallbackConnector for SamlConnector {
    /// The IdP's SSO URL with the AuthnRequest in the HTTP-Redirect binding (deflated, base64,
    /// saml-bindings-2.0-os 3.4.4.1) and `state` as `RelayState`; the request's ID is what the
    /// server keeps, so that only a response to it is accepted.
    async fn login_url(
        &self,
        _scopes: &Scopes,
        _callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        let request_id = new_request_id();
        let xml = self.authn_request(&request_id);
        let mut deflate = DeflateEncoder::new(Vec::new(), Compression::default());
        deflate
            .write_all(xml.as_bytes())
            .map_err(|e| ConnectorError::Internal(format!("deflate: {e}")))?;
        let deflated = deflate
            .finish()
            .map_err(|e| ConnectorError::Internal(format!("deflate: {e}")))?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("SAMLRequest", &STANDARD.encode(deflated))
            .append_pair("RelayState", state)
            .finish();
        let separator = if self.sso_url.contains('?') { '&' } else { '?' };
        Ok(UpstreamRedirect {
            url: format!("{}{separator}{query}", self.sso_url),
            pending: request_id.into_bytes(),
        })
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        _callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError> {
        let request_id = std::str::from_utf8(pending)
            .ok()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ConnectorError::BadCallback("login has no SAML request ID".into()))?;
        let saml_response = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == SAML_RESPONSE_PARAM)
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| {
                ConnectorError::BadCallback(
                    "the IdP sent the browser back without a SAMLResponse".into(),
                )
            })?;
        self.identity_from_response(scopes, &saml_response, request_id)
            .await
    }

    fn service_provider_metadata(&self) -> Option<String> {
        Some(self.metadata_xml())
    }
}
