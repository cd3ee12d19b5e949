//! The service provider's metadata (saml-metadata-2.0-os 2.4.4): what an IdP administrator
//! imports to register lanyard, naming its entity ID, ACS URL and binding.

use super::escape;

/// SP metadata: lanyard sends unsigned AuthnRequests and wants signed assertions posted to
/// `acs_url` (HTTP-POST binding).
pub fn sp_metadata(entity_id: &str, acs_url: &str, name_id_format: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>{format}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
        entity = escape(entity_id),
        acs = escape(acs_url),
        format = escape(name_id_format),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_entity_and_acs_escaped() {
        let xml = sp_metadata(
            "https://lanyard.example.com/saml?a=1&b=2",
            "https://lanyard.example.com/callback",
            "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        );
        assert!(xml.contains(r#"entityID="https://lanyard.example.com/saml?a=1&amp;b=2""#));
        assert!(xml.contains(r#"Location="https://lanyard.example.com/callback""#));
    }
}
