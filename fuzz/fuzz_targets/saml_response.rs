//! A SAML connector's `SAMLResponse`: base64 decoding, the DTD and assertion-count checks,
//! libxml2 parsing and libxmlsec1 verification against a fixed certificate; and, since a signed
//! document's parsing and checks cannot be reached through a signature the fuzzer cannot make,
//! the same input also straight to the checks that read the signed part.
#![no_main]

use lanyard_connectors::saml::response::{self, Expected};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A self-signed certificate the fuzzer has no key for.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIDBzCCAe+gAwIBAgIUV74PEbxLOIMKR6NxppP3LuwR/rUwDQYJKoZIhvcNAQEL\nBQAwEzERMA8GA1UEAwwIZnV6ei1pZHAwHhcNMjYxMjA2MjExODM2WhcNMzYxMjAz\nMjExODM2WjATMREwDwYDVQQDDAhmdXp6LWlkcDCCASIwDQYJKoZIhvcNAQEBBQAD\nggEPADCCAQoCggEBANTDbxcIENT5uxmS1K8JN2FXjs8JfmZEI1S/azkpyrtnCUeO\nAr/Nw9Mk/FJMupn/kSR0dgnmjHSbymDYbpHAmvEnu/2Hsn39GNKjAM5bjo8o7wiF\nGsPAPUpA3PdECRUN5UX3fW6iuFeQst2YYWl47/RAmxi8vTlQbC8F6q3T7kLPVhS8\nTusE6MFSWnfOqnbIbTc2QZMrKNdPryZYhKLGu4fk/hTm/cenAstZW5MF28twe+Ad\nCUwGEkLYYtNzqwbMPC3RlkQKQeoQOF8p09rp0+Rk0zA6NnnwV5m6yGsAffKikb3j\ntMY7yHesfDy8AZMOd83ix+cwr6xbXXraLUzkKAECAwEAAaNTMFEwHQYDVR0OBBYE\nFIM0iVCyyyytN8qkwVF6+HzPxCWYMB8GA1UdIwQYMBaAFIM0iVCyyyytN8qkwVF6\n+HzPxCWYMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBABRyKyJB\nDSd6IzZQ+P2S1G6EbZP79S4nH8R8OhFA0rx725clI2ze+SNmiotYYS2KRiIC1bFt\n7jBaumuCJr7knBkpSHi7vZbbjqrS0qcCQbgRv4jfzVG97EQQcqUCRZWITi9ICmC5\n4CAgOck7H1bbTHGfXC+IiqBU5Vno2DYhE+dpxnbm0HkVP77Q8YzFxdxyQ5Lasm3i\nWJgDwwAqSaOidqF9O4pjbo3x8NvknYQUdzGdFwv+OGt+ScC6KCD6eWhuDxWBvogD\nVSReA9M/sCNewLwnjrwIm6dRVqY2n+zyX0K1Ta56ywh3oUFst01++s2lLjA7Nszg\nAsEOD279PRQy4Hs=\n-----END CERTIFICATE-----\n";

fuzz_target!(|data: &[u8]| {
    let Some(text) = lanyard_fuzz::text(data) else {
        return;
    };
    static CERTS: OnceLock<Vec<lanyard_connectors::saml::CertificateDer>> = OnceLock::new();
    let certs = CERTS.get_or_init(|| {
        lanyard_connectors::saml::parse_certificates(CERT_PEM.as_bytes()).expect("fixed cert")
    });
    let expected = Expected {
        acs_url: "https://lanyard.test/callback",
        audience: "https://lanyard.test/saml",
        issuer: Some("https://idp.test/saml"),
        request_id: "_abc123",
        now: 1_800_000_000,
    };
    if let Ok(xml) = response::decode(text) {
        let _ = response::verify(&xml, certs, &expected);
    }
    let _ = response::verify(text, certs, &expected);
    let _ = response::check_signed(text, &expected);
});
