//! Signing keys: generated here, stored encrypted, rotated through the database, published
//! as JWKS and used to sign and verify JWTs.
//!
//! The timeline of one key K (successor S: the next key by `sign_from`, which exists once K
//! is due for rotation): created (published from `created_at`) → signs from `sign_from` →
//! retired at `S.sign_from` → still published until `S.sign_from + token_lifetime`, so every
//! token it signed can be verified until it expires → deleted.
//!
//! Emergencies (`lanyard admin keys`) bend it: an emergency rotation makes S sign at once,
//! and retiring a compromised key deletes it before its window ends.

mod crypto;
mod jws;
mod manager;
mod signers;
mod store;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::storage::StorageError;

pub use crypto::{
    kek_id, open_connector_config, open_connector_data, open_private_key, seal_connector_config,
    seal_connector_data, seal_private_key,
};
pub use manager::{
    key_statuses_of, retire_key, run_rotation, EmergencyRotation, Jwks, KeyManager, KeyState,
    KeyStatus, RotationOutcome,
};
pub use store::{KeyStore, MemoryKeyStore};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key storage: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "cannot decrypt signing key {kid}: the key-encryption key does not match the one the keys were written with"
    )]
    Decrypt { kid: String },
    #[error("cannot encrypt signing key {kid}")]
    Encrypt { kid: String },
    #[error("stored connector data of connector {connector:?}: {reason}")]
    ConnectorData { connector: String, reason: String },
    #[error("stored signing key {kid} is corrupt: {reason}")]
    Corrupt { kid: String, reason: String },
    #[error("unsupported signing algorithm {0:?} (supported: RS256, ES256)")]
    UnsupportedAlgorithm(String),
    #[error("invalid signing key settings: {0}")]
    Settings(String),
    #[error("signing key cryptography failed: {0}")]
    Crypto(String),
    #[error("no signing key is valid at this time")]
    NoSigningKey,
    #[error("no signing key has the kid {0:?}")]
    UnknownKid(String),
    #[error("signing key {0} is the one that signs tokens now; retiring it alone would leave nothing to sign with")]
    RetireSigning(String),
    #[error("other replicas kept rotating keys at the same moment; try again")]
    Contended,
    #[error("cannot serialise the claims: {0}")]
    Claims(String),
    /// The reason is fixed text: a token's content is never echoed back.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
}

/// The JWS algorithms lanyard signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit RSA key: what every relying party accepts.
    RS256,
    /// ECDSA over P-256 with SHA-256.
    ES256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::ES256 => "ES256",
        }
    }

    /// JOSE algorithm names are case-sensitive, so "rs256" is not RS256.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(SigningAlg::RS256),
            "ES256" => Some(SigningAlg::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningAlg::parse(s).ok_or_else(|| KeyError::UnsupportedAlgorithm(s.to_string()))
    }
}

#[derive(Clone)]
pub struct KeySettings {
    /// The algorithm of keys created from now on; existing keys keep theirs.
    pub algorithm: SigningAlg,
    /// How long a key signs before its successor takes over.
    pub rotation_period: Duration,
    /// How long a new key is published before it signs. Must exceed the JWKS max-age and the
    /// interval at which replicas reload keys, so every verifier has it before it is used.
    pub publish_ahead: Duration,
    /// The longest lifetime of anything a key signs (the ID token lifetime): a retired key
    /// stays published this long.
    pub token_lifetime: Duration,
    /// The AES-256-GCM key-encryption key for the private halves.
    pub encryption_key: [u8; 32],
}

impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("algorithm", &self.algorithm)
            .field("rotation_period", &self.rotation_period)
            .field("publish_ahead", &self.publish_ahead)
            .field("token_lifetime", &self.token_lifetime)
            .field("encryption_key", &"<redacted>")
            .finish()
    }
}

impl KeySettings {
    pub(crate) fn validate(&self) -> Result<(), KeyError> {
        if self.rotation_period.as_secs() == 0 {
            return Err(KeyError::Settings(
                "the rotation period must be at least one second".into(),
            ));
        }
        // Otherwise every new key would already be due for rotation when it starts signing.
        if self.publish_ahead >= self.rotation_period {
            return Err(KeyError::Settings(format!(
                "publish-ahead ({}s) must be shorter than the rotation period ({}s)",
                self.publish_ahead.as_secs(),
                self.rotation_period.as_secs()
            )));
        }
        Ok(())
    }
}

/// Whole seconds as a `UnixTime` offset; durations beyond i64 saturate rather than wrap.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
