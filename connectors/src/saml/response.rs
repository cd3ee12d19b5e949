//! A SAML `<Response>` from the ACS POST, verified and checked.
//!
//! The XML signature is verified by libxmlsec1 through samael, which also reduces the document
//! to what the verified signatures cover: everything read afterwards comes from that reduced
//! document, so content an attacker wrapped around a signed assertion (XSW) is never seen.
//! The checks after it are the SAML 2.0 Web Browser SSO profile's (saml-profiles-2.0-os
//! 4.1.4.3) for a service provider: who the response is for, in answer to which request, and
//! when.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use samael::schema::{Assertion, Response};

/// Clock skew allowed on NotBefore and NotOnOrAfter, as Dex allows.
pub const ALLOWED_CLOCK_SKEW_SECS: i64 = 30;

/// The largest base64 `SAMLResponse` read; real responses are a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// SHA-1 signatures are refused: collisions are practical, and every IdP lanyard targets signs
/// with SHA-256 by default.
const ALLOWED_ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// What a response must say to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The ACS URL (`redirectURI`): Destination and Recipient.
    pub acs_url: &'a str,
    /// lanyard's entity ID: the Audience.
    pub audience: &'a str,
    /// The IdP's entity ID (`ssoIssuer`), when configured.
    pub issuer: Option<&'a str>,
    /// The ID of the AuthnRequest this browser's login sent.
    pub request_id: &'a str,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// The verified assertion's subject and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub name_id: String,
    /// Attribute name → values, in document order; a name may repeat.
    pub attributes: Vec<(String, Vec<String>)>,
}

impl VerifiedAssertion {
    /// The first value of the first attribute named `name` (Dex's `get`).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }

    /// Every value of every attribute named `name`, or `None` when there is none (Dex's `all`).
    pub fn all(&self, name: &str) -> Option<Vec<String>> {
        let mut found = false;
        let mut out = Vec::new();
        for (n, values) in &self.attributes {
            if n == name {
                found = true;
                out.extend(values.iter().cloned());
            }
        }
        found.then_some(out)
    }

    pub fn names(&self) -> Vec<&str> {
        self.attributes.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Why a response was refused; the text names the check (it is logged, never shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(msg.into()))
}

/// Decodes the base64 `SAMLResponse` of an HTTP-POST binding.
pub fn decode(saml_response: &str) -> Result<String, Refused> {
    if saml_response.len() > MAX_RESPONSE_BYTES {
        return refuse(format!(
            "SAMLResponse is larger than {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    let compact: String = saml_response
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| Refused(format!("SAMLResponse is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Refused("SAMLResponse is not UTF-8 XML".into()))
}

/// Verifies `xml`'s signatures against `certs`, then checks it against `expected`.
pub fn verify(
    xml: &str,
    certs: &[CertificateDer],
    expected: &Expected<'_>,
) -> Result<VerifiedAssertion, Refused> {
    let signed = verify_signatures(xml, certs)?;
    check_signed(&signed, expected)
}

/// The part of `xml` its verified signatures cover.
pub fn verify_signatures(xml: &str, certs: &[CertificateDer]) -> Result<String, Refused> {
    // A DTD can declare entities (billion laughs, external entities); SAML never needs one.
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return refuse("response contains a DTD, which SAML never uses");
    }
    // Said before the signature check, whose failure would hide the reason.
    if xml.contains("EncryptedAssertion") {
        return refuse("response holds an EncryptedAssertion: lanyard does not decrypt assertions; turn assertion encryption off for this service provider at the IdP (TLS protects the response in transit)");
    }
    // Web SSO answers one request with one assertion (as Dex reads it); a second one is
    // what signature-wrapping attacks add, so it is refused before anything is read.
    let assertions = assertion_start_tags(xml);
    if assertions != 1 {
        return refuse(format!(
            "response holds {assertions} Assertion elements; exactly one is accepted"
        ));
    }
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        certs,
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(&ALLOWED_ALGORITHMS),
    )
    .map_err(|e| {
        Refused(format!(
            "signature check failed ({e}): the response or its assertion must be signed, with SHA-256 or stronger, by the key of a certificate in `ca`/`caData`"
        ))
    })
}

/// How many elements named `Assertion` (with any namespace prefix) `xml` opens.
fn assertion_start_tags(xml: &str) -> usize {
    xml.match_indices('<')
        .filter(|(i, _)| {
            let tag = &xml[i + 1..];
            let name_end = tag
                .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
                .unwrap_or(tag.len());
            let qname = &tag[..name_end];
            qname.rsplit(':').next() == Some("Assertion")
        })
        .count()
}

/// Checks the signed document (what [`verify_signatures`] returned): either the whole
/// Response was signed, or only its Assertion (then nothing outside the Assertion is read).
pub fn check_signed(signed: &str, expected: &Expected<'_>) -> Result<VerifiedAssertion, Refused> {
    let trimmed = signed.trim_start();
    let body = trimmed
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>").map(|(_, b)| b.trim_start()))
        .unwrap_or(trimmed);
    let root_local_name = body
        .strip_prefix('<')
        .and_then(|rest| rest.split([' ', '>', '/', '\n', '\t', '\r']).next())
        .map(|qname| qname.rsplit(':').next().unwrap_or(qname))
        .unwrap_or_default();
    let assertion = match root_local_name {
        "Response" => {
            let response: Response = signed
                .parse()
                .map_err(|e| Refused(format!("signed Response does not parse: {e}")))?;
            check_response(&response, expected)?;
            response
                .assertion
                .ok_or_else(|| Refused("signed Response holds no Assertion".into()))?
        }
        "Assertion" => signed
            .parse::<Assertion>()
            .map_err(|e| Refused(format!("signed Assertion does not parse: {e}")))?,
        other => {
            return refuse(format!(
                "the signature covers a <{other}>, not a Response or an Assertion"
            ))
        }
    };
    check_assertion(&assertion, expected)
}

fn check_response(response: &Response, expected: &Expected<'_>) -> Result<(), Refused> {
    if let Some(destination) = &response.destination {
        if destination != expected.acs_url {
            return refuse(format!(
                "Response Destination `{destination}` is not this connector's ACS URL `{}`",
                expected.acs_url
            ));
        }
    }
    match &response.in_response_to {
        Some(id) if id == expected.request_id => {}
        Some(id) => {
            return refuse(format!(
                "Response InResponseTo `{id}` is not the request this browser's login sent"
            ))
        }
        None => {
            return refuse("Response has no InResponseTo: IdP-initiated logins are not accepted")
        }
    }
    if let (Some(want), Some(issuer)) = (expected.issuer, &response.issuer) {
        let got = issuer.value.as_deref().unwrap_or_default();
        if got != want {
            return refuse(format!("Response Issuer `{got}` is not ssoIssuer `{want}`"));
        }
    }
    let status = response
        .status
        .as_ref()
        .and_then(|s| s.status_code.value.as_deref())
        .unwrap_or_default();
    if status != STATUS_SUCCESS {
        let message = response
            .status
            .as_ref()
            .and_then(|s| s.status_message.as_ref())
            .and_then(|m| m.value.as_deref())
            .unwrap_or_default();
        return refuse(format!(
            "Response status is `{status}`, not Success {message}"
        ));
    }
    Ok(())
}

fn check_assertion(
    assertion: &Assertion,
    expected: &Expected<'_>,
) -> Result<VerifiedAssertion, Refused> {
    if let Some(want) = expected.issuer {
        let got = assertion.issuer.value.as_deref().unwrap_or_default();
        if got != want {
            return refuse(format!(
                "Assertion Issuer `{got}` is not ssoIssuer `{want}`"
            ));
        }
    }
    let subject = assertion
        .subject
        .as_ref()
        .ok_or_else(|| Refused("Assertion has no Subject".into()))?;
    check_subject_confirmation(subject, expected)?;
    check_conditions(assertion, expected)?;
    let name_id = subject
        .name_id
        .as_ref()
        .map(|n| n.value.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refused("Assertion Subject has no NameID value".into()))?;
    let attributes = assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .filter_map(|a| {
            let name = a.name.clone()?;
            let values = a.values.iter().filter_map(|v| v.value.clone()).collect();
            Some((name, values))
        })
        .collect();
    Ok(VerifiedAssertion {
        name_id,
        attributes,
    })
}

/// One bearer SubjectConfirmation must answer this request, for this ACS URL, now.
fn check_subject_confirmation(
    subject: &samael::schema::Subject,
    expected: &Expected<'_>,
) -> Result<(), Refused> {
    let confirmations = subject.subject_confirmations.as_deref().unwrap_or_default();
    if confirmations.is_empty() {
        return refuse("Assertion Subject has no SubjectConfirmation");
    }
    let mut reasons = Vec::new();
    for confirmation in confirmations {
        let reason = (|| {
            if confirmation.method.as_deref() != Some(BEARER) {
                return Err(format!(
                    "method `{}` is not bearer",
                    confirmation.method.as_deref().unwrap_or_default()
                ));
            }
            let data = confirmation
                .subject_confirmation_data
                .as_ref()
                .ok_or("no SubjectConfirmationData")?;
            match data.in_response_to.as_deref() {
                Some(id) if id == expected.request_id => {}
                Some(id) => {
                    return Err(format!(
                        "InResponseTo `{id}` is not the request this browser's login sent"
                    ))
                }
                None => {
                    return Err("no InResponseTo (IdP-initiated logins are not accepted)".into())
                }
            }
            match data.recipient.as_deref() {
                Some(r) if r == expected.acs_url => {}
                other => {
                    return Err(format!(
                        "Recipient `{}` is not this connector's ACS URL `{}`",
                        other.unwrap_or_default(),
                        expected.acs_url
                    ))
                }
            }
            let not_on_or_after = data.not_on_or_after.ok_or("no NotOnOrAfter")?.timestamp();
            check_window(
                data.not_before.map(|t| t.timestamp()),
                Some(not_on_or_after),
                expected.now,
            )
        })();
        match reason {
            Ok(()) => return Ok(()),
            Err(r) => reasons.push(r),
        }
    }
    refuse(format!(
        "no SubjectConfirmation accepted: {}",
        reasons.join("; ")
    ))
}

fn check_conditions(assertion: &Assertion, expected: &Expected<'_>) -> Result<(), Refused> {
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or_else(|| Refused("Assertion has no Conditions (its Audience is required)".into()))?;
    check_window(
        conditions.not_before.map(|t| t.timestamp()),
        conditions.not_on_or_after.map(|t| t.timestamp()),
        expected.now,
    )
    .map_err(|e| Refused(format!("Assertion Conditions: {e}")))?;
    let restrictions = conditions
        .audience_restrictions
        .as_deref()
        .unwrap_or_default();
    if restrictions.is_empty() {
        return refuse("Assertion has no AudienceRestriction");
    }
    // Every restriction must include lanyard (saml-core-2.0-os 2.5.1.4).
    for restriction in restrictions {
        if !restriction.audience.iter().any(|a| a == expected.audience) {
            return refuse(format!(
                "Assertion Audience {:?} does not include this connector's entity ID `{}`",
                restriction.audience, expected.audience
            ));
        }
    }
    Ok(())
}

fn check_window(
    not_before: Option<i64>,
    not_on_or_after: Option<i64>,
    now: i64,
) -> Result<(), String> {
    if let Some(nb) = not_before {
        if now + ALLOWED_CLOCK_SKEW_SECS < nb {
            return Err(format!("not valid before {nb} (now {now})"));
        }
    }
    if let Some(noa) = not_on_or_after {
        if now - ALLOWED_CLOCK_SKEW_SECS >= noa {
            return Err(format!("expired at {noa} (now {now})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_allows_small_skew_only() {
        assert!(check_window(Some(100), Some(200), 150).is_ok());
        assert!(check_window(Some(100), Some(200), 75).is_ok());
        assert!(check_window(Some(100), Some(200), 60).is_err());
        assert!(check_window(Some(100), Some(200), 229).is_ok());
        assert!(check_window(Some(100), Some(200), 230).is_err());
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(decode("%%%").is_err());
        assert!(decode(&"A".repeat(MAX_RESPONSE_BYTES + 1)).is_err());
        let e = verify_signatures("<Response><Assertion/></Response>", &[]).unwrap_err();
        assert!(e.0.contains("signature"), "{e}");
        let e = verify_signatures(
            "<p:Response><s:Assertion ID='a'/><s:Assertion\nID='b'/></p:Response>",
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("2 Assertion elements"), "{e}");
        let e = verify_signatures("<Response><EncryptedAssertion/></Response>", &[]).unwrap_err();
        assert!(e.0.contains("does not decrypt"), "{e}");
        let e = verify_signatures("<!DOCTYPE x><Response/>", &[]).unwrap_err();
        assert!(e.0.contains("DTD"), "{e}");
    }
}
