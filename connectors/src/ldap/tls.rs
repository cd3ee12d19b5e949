//! The rustls client configuration for `ldaps://` and StartTLS.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{LdapConfig, Settings};
use crate::ConnectorError;

/// The certificates in a PEM bundle (other sections are ignored).
pub(crate) fn certificates_in(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// `None` for plain LDAP (`insecureNoSSL`). `Config` errors start with the key at fault.
pub(crate) fn client_config(
    config: &LdapConfig,
    settings: &Settings,
) -> Result<Option<Arc<ClientConfig>>, ConnectorError> {
    if config.insecure_no_ssl {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Internal(format!("TLS setup: {e}")))?;

    let builder = if config.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(config, settings)?)
    };

    let tls = if config.client_cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&config.client_cert)
                .map_err(|e| file_error("clientCert", &config.client_cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error("clientCert", &config.client_cert, e))?;
        if chain.is_empty() {
            return Err(ConnectorError::Config(format!(
                "clientCert: {} holds no PEM certificate",
                config.client_cert
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&config.client_key)
            .map_err(|e| file_error("clientKey", &config.client_key, e))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| {
            ConnectorError::Config(format!("clientKey: does not fit clientCert: {e}"))
        })?
    };
    Ok(Some(Arc::new(tls)))
}

fn roots(config: &LdapConfig, settings: &Settings) -> Result<RootCertStore, ConnectorError> {
    let mut store = RootCertStore::empty();
    let pem = match (&settings.root_ca_pem, config.root_ca.is_empty()) {
        (Some(pem), _) => Some(("rootCAData", pem.clone())),
        (None, false) => Some((
            "rootCA",
            std::fs::read(&config.root_ca).map_err(|e| file_error("rootCA", &config.root_ca, e))?,
        )),
        (None, true) => None,
    };
    match pem {
        Some((key, pem)) => {
            let certs = certificates_in(&pem);
            if certs.is_empty() {
                return Err(ConnectorError::Config(format!(
                    "{key}: no PEM certificate found"
                )));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| ConnectorError::Config(format!("{key}: {e}")))?;
            }
        }
        None => {
            // Like Dex: without rootCA, the system's trusted CAs.
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(ConnectorError::Config(
                    "rootCA: not set, and no system CA certificates were found; set rootCA or rootCAData"
                        .into(),
                ));
            }
        }
    }
    Ok(store)
}

fn file_error(key: &str, path: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(format!("{key}: cannot read {path}: {e}"))
}

/// `insecureSkipVerify`: any certificate for any name is accepted. The handshake
/// signatures are still checked, so the connection is at least encrypted to whoever
/// holds the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
