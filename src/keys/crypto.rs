//! Key generation, encryption at rest, and parsing into josekit signers/verifiers.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::{JwsSigner, JwsVerifier, ES256, RS256};
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{Map, Value};

use super::{KeyError, SigningAlg};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const RSA_BITS: u32 = 2048;

/// A fresh key id: 128 random bits, base64url.
pub(crate) fn new_kid() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// AES-256-GCM under the KEK with a random 96-bit nonce: nonce || ciphertext || tag. The
/// associated data ties the blob to the row it was written for.
fn seal(kek: &[u8; 32], aad: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher.encrypt(&nonce, Payload { msg, aad }).ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Some(out)
}

/// The inverse of [`seal`]; `None` when the blob is not one, or not under this KEK and AAD.
fn open(kek: &[u8; 32], aad: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, msg) = blob.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .ok()
}

/// Encrypts a PKCS#8 DER private key: AES-256-GCM, random 96-bit nonce, the kid as associated
/// data (so a blob cannot be moved to another row). Returns nonce || ciphertext.
pub fn seal_private_key(kek: &[u8; 32], kid: &str, der: &[u8]) -> Result<Vec<u8>, KeyError> {
    seal(kek, kid.as_bytes(), der).ok_or_else(|| KeyError::Encrypt {
        kid: kid.to_string(),
    })
}

/// The inverse of [`seal_private_key`].
pub fn open_private_key(kek: &[u8; 32], kid: &str, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(KeyError::Corrupt {
            kid: kid.to_string(),
            reason: format!(
                "the encrypted private key is {} bytes, shorter than nonce and tag",
                blob.len()
            ),
        });
    }
    open(kek, kid.as_bytes(), blob).ok_or_else(|| KeyError::Decrypt {
        kid: kid.to_string(),
    })
}

/// Marks connector data sealed under a KEK: `kek1.<KEK id>.<base64url(nonce || ciphertext)>`.
/// Data stored before it is plain standard base64, which never contains a '.'.
const SEALED_CONNECTOR_DATA: &str = "kek1.";

/// Names a key-encryption key without revealing it: the first 64 bits of a SHA-256 over it,
/// base64url. Recorded with what it seals, so that a KEK rotation finds what to re-encrypt.
pub fn kek_id(kek: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"lanyard key-encryption key id\0")
        .chain_update(kek)
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..8])
}

/// What a sealed connector blob is for: the label goes into the associated data with the
/// connector id, so a blob can be moved neither to another connector nor to another column.
#[derive(Clone, Copy)]
enum ConnectorBlob {
    /// What a connector keeps between logins and refreshes (upstream tokens).
    Data,
    /// A stored connector's `config` JSON (client secrets, bind passwords).
    Config,
}

impl ConnectorBlob {
    fn aad(self, connector_id: &str) -> Vec<u8> {
        let label: &[u8] = match self {
            ConnectorBlob::Data => b"connector-data\0",
            ConnectorBlob::Config => b"connector-config\0",
        };
        [label, connector_id.as_bytes()].concat()
    }
}

fn seal_connector_blob(
    kek: &[u8; 32],
    blob: ConnectorBlob,
    connector_id: &str,
    data: &[u8],
) -> Result<String, KeyError> {
    let sealed =
        seal(kek, &blob.aad(connector_id), data).ok_or_else(|| KeyError::ConnectorData {
            connector: connector_id.to_string(),
            reason: "encryption failed".into(),
        })?;
    Ok(format!(
        "{SEALED_CONNECTOR_DATA}{}.{}",
        kek_id(kek),
        URL_SAFE_NO_PAD.encode(sealed)
    ))
}

/// The inverse of [`seal_connector_blob`]; `None` when `stored` is not in the sealed form.
fn open_connector_blob(
    kek: &[u8; 32],
    blob: ConnectorBlob,
    connector_id: &str,
    stored: &str,
) -> Option<Result<Vec<u8>, KeyError>> {
    let fail = |reason: String| KeyError::ConnectorData {
        connector: connector_id.to_string(),
        reason,
    };
    let sealed = stored.strip_prefix(SEALED_CONNECTOR_DATA)?;
    let Some((id, encoded)) = sealed.split_once('.') else {
        return Some(Err(fail("no key-encryption key id".into())));
    };
    let ours = kek_id(kek);
    if id != ours {
        return Some(Err(fail(format!(
            "sealed under the key-encryption key with id {id}, not the configured one ({ours})"
        ))));
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(encoded) else {
        return Some(Err(fail("the sealed data is not base64url".into())));
    };
    Some(
        open(kek, &blob.aad(connector_id), &bytes)
            .ok_or_else(|| fail("the sealed data does not decrypt".into())),
    )
}

/// Seals what a connector keeps between logins and refreshes (upstream refresh and access
/// tokens) for storage. The connector id is the associated data, so data cannot be moved to
/// another connector's rows.
pub fn seal_connector_data(
    kek: &[u8; 32],
    connector_id: &str,
    data: &[u8],
) -> Result<String, KeyError> {
    seal_connector_blob(kek, ConnectorBlob::Data, connector_id, data)
}

/// The inverse of [`seal_connector_data`], which also reads the plain base64 form rows had
/// before connector data was encrypted.
pub fn open_connector_data(
    kek: &[u8; 32],
    connector_id: &str,
    stored: &str,
) -> Result<Vec<u8>, KeyError> {
    open_connector_blob(kek, ConnectorBlob::Data, connector_id, stored).unwrap_or_else(|| {
        STANDARD
            .decode(stored)
            .map_err(|_| KeyError::ConnectorData {
                connector: connector_id.to_string(),
                reason: "neither sealed nor base64".into(),
            })
    })
}

/// Seals a stored connector's `config` JSON, bound to the connector's id.
pub fn seal_connector_config(
    kek: &[u8; 32],
    connector_id: &str,
    config: &[u8],
) -> Result<String, KeyError> {
    seal_connector_blob(kek, ConnectorBlob::Config, connector_id, config)
}

/// The inverse of [`seal_connector_config`]; a config is only ever stored sealed.
pub fn open_connector_config(
    kek: &[u8; 32],
    connector_id: &str,
    stored: &str,
) -> Result<Vec<u8>, KeyError> {
    open_connector_blob(kek, ConnectorBlob::Config, connector_id, stored).unwrap_or_else(|| {
        Err(KeyError::ConnectorData {
            connector: connector_id.to_string(),
            reason: "the stored config is not sealed".into(),
        })
    })
}

/// A way to generate a private key: [`generate`] or [`generate_on_every_core`].
pub(crate) type Generator = fn(SigningAlg) -> Result<Vec<u8>, KeyError>;

/// Generates a private key and returns it as PKCS#8 DER. CPU-heavy for RSA: run it off the
/// async executor.
pub(crate) fn generate(alg: SigningAlg) -> Result<Vec<u8>, KeyError> {
    let pem = match alg {
        SigningAlg::RS256 => RS256
            .generate_key_pair(RSA_BITS)
            .map_err(crypto_err)?
            .to_pem_private_key(),
        SigningAlg::ES256 => ES256
            .generate_key_pair()
            .map_err(crypto_err)?
            .to_pem_private_key(),
    };
    // josekit's DER export is SEC1 for EC keys; its PEM export is PKCS#8 for both.
    pkcs8_pem_to_der(&pem)
}

/// [`generate`] for a key that nothing can be served without (the first key of a database):
/// an RSA key's prime search takes anywhere from 50 to 700 ms on a small machine, so every core
/// searches and the first key found is used. The others finish in the background and are
/// dropped; key rotations, which happen while requests are being served, use [`generate`].
pub(crate) fn generate_on_every_core(alg: SigningAlg) -> Result<Vec<u8>, KeyError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if alg != SigningAlg::RS256 || cores < 2 {
        return generate(alg);
    }
    let (found, keys) = std::sync::mpsc::channel();
    for _ in 0..cores {
        let found = found.clone();
        // A thread that cannot be started is one searcher fewer.
        let _ = std::thread::Builder::new()
            .name("lanyard-keygen".into())
            .spawn(move || found.send(generate(alg)));
    }
    drop(found);
    let mut last = None;
    for key in keys {
        match key {
            Ok(der) => return Ok(der),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => generate(alg),
    }
}

fn pkcs8_pem_to_der(pem: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| KeyError::Crypto("generated PEM is not UTF-8".into()))?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END PRIVATE KEY-----"))
        .collect();
    if body.is_empty() {
        return Err(KeyError::Crypto(
            "generated key is not a PKCS#8 PEM private key".into(),
        ));
    }
    STANDARD
        .decode(body.trim())
        .map_err(|_| KeyError::Crypto("generated PEM is not valid base64".into()))
}

fn crypto_err(e: josekit::JoseError) -> KeyError {
    KeyError::Crypto(e.to_string())
}

/// A private key parsed once: everything signing, verifying and publishing need.
#[derive(Debug)]
pub(crate) struct ParsedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub signer: Box<dyn JwsSigner>,
    pub verifier: Box<dyn JwsVerifier>,
    /// The public JWK exactly as published: no private members.
    pub jwk: Map<String, Value>,
    /// The stored ciphertext this was parsed from, so that a reload reuses it only for the
    /// very same row.
    pub sealed: Vec<u8>,
}

impl ParsedKey {
    pub(crate) fn from_der(
        kid: &str,
        alg: SigningAlg,
        der: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Self, KeyError> {
        let corrupt = |e: josekit::JoseError| KeyError::Corrupt {
            kid: kid.to_string(),
            reason: format!("not a valid {alg} private key: {e}"),
        };
        let (signer, verifier, public, members): (Box<dyn JwsSigner>, Box<dyn JwsVerifier>, _, _) =
            match alg {
                SigningAlg::RS256 => {
                    let pair = RS256.key_pair_from_der(der).map_err(corrupt)?;
                    let public = pair.to_jwk_public_key();
                    (
                        Box::new(RS256.signer_from_der(der).map_err(corrupt)?),
                        Box::new(RS256.verifier_from_jwk(&public).map_err(corrupt)?),
                        public,
                        &["n", "e"][..],
                    )
                }
                SigningAlg::ES256 => {
                    let pair = ES256.key_pair_from_der(der).map_err(corrupt)?;
                    let public = pair.to_jwk_public_key();
                    (
                        Box::new(ES256.signer_from_der(der).map_err(corrupt)?),
                        Box::new(ES256.verifier_from_jwk(&public).map_err(corrupt)?),
                        public,
                        &["crv", "x", "y"][..],
                    )
                }
            };
        Ok(ParsedKey {
            kid: kid.to_string(),
            alg,
            signer,
            verifier,
            jwk: public_jwk(kid, alg, &public, members)?,
            sealed,
        })
    }
}

/// Copies only the named public members, so nothing private can leak into JWKS whatever
/// josekit puts into a JWK.
fn public_jwk(
    kid: &str,
    alg: SigningAlg,
    jwk: &Jwk,
    members: &[&str],
) -> Result<Map<String, Value>, KeyError> {
    let mut out = Map::new();
    out.insert("kty".into(), Value::String(jwk.key_type().to_string()));
    out.insert("kid".into(), Value::String(kid.to_string()));
    out.insert("use".into(), Value::String("sig".into()));
    out.insert("alg".into(), Value::String(alg.as_str().into()));
    for name in members {
        let value = jwk.parameter(name).cloned().ok_or_else(|| {
            KeyError::Crypto(format!("the public {alg} key has no {name:?} member"))
        })?;
        out.insert((*name).to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: [u8; 32] = [7u8; 32];

    fn is_pkcs8(der: &[u8]) -> bool {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID ... } ... }: version 0 then an AlgorithmIdentifier.
        // SEC1 and PKCS#1 start with version 1 / 0 followed by an INTEGER or OCTET STRING instead.
        let mut i = 1;
        // skip the outer length
        if der.first() != Some(&0x30) {
            return false;
        }
        let len_byte = der[i];
        i += 1;
        if len_byte & 0x80 != 0 {
            i += (len_byte & 0x7f) as usize;
        }
        der.get(i..i + 3) == Some(&[0x02, 0x01, 0x00][..]) && der.get(i + 3) == Some(&0x30)
    }

    #[test]
    fn generated_keys_are_pkcs8_der_of_the_right_kind() {
        let generators: [(&str, Generator); 2] = [
            ("generate", generate),
            ("generate_on_every_core", generate_on_every_core),
        ];
        for (name, generate) in generators {
            for alg in [SigningAlg::RS256, SigningAlg::ES256] {
                let der = generate(alg).unwrap();
                assert!(is_pkcs8(&der), "{name}: {alg} key is not PKCS#8");
                let parsed = ParsedKey::from_der("k", alg, &der, vec![]).unwrap();
                assert_eq!(parsed.jwk["alg"], alg.as_str(), "{name}");
            }
            // The RSA modulus is 2048 bits: 256 bytes, 342 base64url characters.
            let der = generate(SigningAlg::RS256).unwrap();
            let parsed = ParsedKey::from_der("k", SigningAlg::RS256, &der, vec![]).unwrap();
            assert_eq!(parsed.jwk["n"].as_str().unwrap().len(), 342, "{name}");
            assert_ne!(der, generate(SigningAlg::RS256).unwrap(), "{name}");
            let der = generate(SigningAlg::ES256).unwrap();
            let parsed = ParsedKey::from_der("k", SigningAlg::ES256, &der, vec![]).unwrap();
            assert_eq!(parsed.jwk["crv"], "P-256", "{name}");
        }
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let der = generate(SigningAlg::ES256).unwrap();
        let blob = seal_private_key(&KEK, "kid-1", &der).unwrap();
        assert_eq!(blob.len(), NONCE_LEN + der.len() + TAG_LEN);
        assert!(!blob.windows(16).any(|w| der.windows(16).any(|d| d == w)));
        assert_eq!(open_private_key(&KEK, "kid-1", &blob).unwrap(), der);
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let a = seal_private_key(&KEK, "k", b"same plaintext").unwrap();
        let b = seal_private_key(&KEK, "k", b"same plaintext").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn opening_with_another_kek_is_a_decrypt_error_naming_the_kek() {
        let blob = seal_private_key(&KEK, "kid-1", b"secret").unwrap();
        let err = open_private_key(&[8u8; 32], "kid-1", &blob).unwrap_err();
        assert!(matches!(err, KeyError::Decrypt { ref kid } if kid == "kid-1"));
        assert!(err
            .to_string()
            .contains("key-encryption key does not match the one the keys were written with"));
    }

    #[test]
    fn a_blob_moved_to_another_kid_does_not_open() {
        let blob = seal_private_key(&KEK, "kid-1", b"secret").unwrap();
        assert!(matches!(
            open_private_key(&KEK, "kid-2", &blob),
            Err(KeyError::Decrypt { .. })
        ));
    }

    #[test]
    fn a_truncated_blob_is_corrupt() {
        assert!(matches!(
            open_private_key(&KEK, "k", &[0u8; 20]),
            Err(KeyError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_connector_config_is_sealed_bound_to_its_connector_and_column() {
        let config = br#"{"bindPW":"SECRET"}"#;
        let sealed = seal_connector_config(&KEK, "ldap", config).unwrap();
        assert!(!sealed.contains("SECRET"), "{sealed}");
        assert_eq!(
            open_connector_config(&KEK, "ldap", &sealed).unwrap(),
            config
        );
        // Neither another connector's config nor connector data, nor another key.
        assert!(open_connector_config(&KEK, "okta", &sealed).is_err());
        assert!(open_connector_data(&KEK, "ldap", &sealed).is_err());
        assert!(open_connector_config(&[8u8; 32], "ldap", &sealed).is_err());
        let data = seal_connector_data(&KEK, "ldap", config).unwrap();
        assert!(open_connector_config(&KEK, "ldap", &data).is_err());
        // A config is never read in clear.
        let plain = STANDARD.encode(config);
        assert!(open_connector_config(&KEK, "ldap", &plain).is_err());
    }

    #[test]
    fn connector_data_is_sealed_with_the_kek_id_and_opens_only_for_its_connector() {
        let token = b"upstream-refresh-token-SECRET";
        let sealed = seal_connector_data(&KEK, "okta", token).unwrap();
        assert!(
            sealed.starts_with(&format!("kek1.{}.", kek_id(&KEK))),
            "{sealed}"
        );
        assert!(!sealed.contains("SECRET") && !sealed.contains(&STANDARD.encode(token)));
        assert_ne!(sealed, seal_connector_data(&KEK, "okta", token).unwrap());
        assert_eq!(open_connector_data(&KEK, "okta", &sealed).unwrap(), token);
        assert!(open_connector_data(&KEK, "github", &sealed).is_err());
        let err = open_connector_data(&[8u8; 32], "okta", &sealed).unwrap_err();
        assert!(err.to_string().contains(&kek_id(&KEK)), "{err}");
        assert_ne!(kek_id(&KEK), kek_id(&[8u8; 32]));
        assert_eq!(kek_id(&KEK).len(), 11);
    }

    #[test]
    fn connector_data_stored_before_encryption_still_opens() {
        let plain = STANDARD.encode(b"legacy refresh token");
        assert_eq!(
            open_connector_data(&KEK, "okta", &plain).unwrap(),
            b"legacy refresh token"
        );
        assert!(open_connector_data(&KEK, "okta", "kek1.nodot").is_err());
        assert!(open_connector_data(&KEK, "okta", "not base64!").is_err());
    }

    #[test]
    fn kids_are_128_bit_base64url() {
        let a = new_kid();
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, new_kid());
    }
}
