//! Random tokens and their digests. Only digests of codes and tokens are stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `bytes` random bytes, base64url without padding, from the thread's CSPRNG: rand's
/// `ThreadRng`, ChaCha12 seeded from the operating system's generator and reseeded from it
/// every 64 KiB of output and after a fork. Tokens, codes and ids are made on every request;
/// asking the kernel for each (a `getrandom` system call) cost more than the rest of making
/// one, and the unpredictability is the same. Keys, which are made rarely and live long, come
/// from the operating system directly (`keys::crypto`).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new grant's id: the milliseconds since the epoch in 12 hex digits, then 12 random bytes.
/// Grant ids are keys of the grants table and of every token table's grant index; random keys
/// would put each new grant on an index page of its own, and SQLite writes every page a commit
/// changes to its WAL and again to the file, so ids that grow with time keep a batch's new rows
/// on the same few pages (a third fewer WAL pages per client_credentials grant in batches of 8,
/// nearly half in batches of 32). The id is never shown outside lanyard, and 96 random bits
/// keep it unguessable. The time is the system's, not the provider's clock: it orders rows
/// and means nothing else.
pub fn new_grant_id() -> String {
    format!("{:012x}{}", epoch_millis(), random_token(12))
}

/// A new login's (auth request's) id: the milliseconds since the epoch in 12 hex digits, then
/// 16 random bytes base64url. It is the auth requests table's key, so for the reason grant ids
/// grow with time (see [`new_grant_id`]), so does it. It travels in the login page's URLs and
/// the upstream `state`, bound to the browser that started the login.
pub fn new_auth_request_id() -> String {
    format!("{:012x}{}", epoch_millis(), random_token(16))
}

fn epoch_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & 0xffff_ffff_ffff
}

/// The length of a token made by [`new_secret_token`]: base64url of 6 + 32 bytes.
const SECRET_TOKEN_LEN: usize = 51;

/// A new secret that lanyard stores only as [`secret_token_key`]: an access or refresh token,
/// an authorization code, a session cookie. The milliseconds since the epoch in 6 bytes, then
/// 32 random bytes, base64url. The time lets [`secret_token_key`] give these keys that grow
/// with time (see there); the 256 random bits are what make the secret unguessable. Its holder
/// learns when it was issued, which the ID token or the login beside it says anyway.
pub fn new_secret_token() -> String {
    let mut buf = [0u8; 38];
    buf[..6].copy_from_slice(&epoch_millis().to_be_bytes()[2..]);
    rand::thread_rng().fill_bytes(&mut buf[6..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The key under which a secret is stored and looked up: for one made by
/// [`new_secret_token`], its issue time in 12 hex digits, then its hex SHA-256; for one issued
/// before lanyard made them that way (43 characters, all random), the SHA-256 alone, so those
/// keep working until they expire. A digest alone is a random key: each new row would land on
/// an index page of its own, a page SQLite writes to its WAL and again to the file and
/// PostgreSQL to its WAL, and with a year of tokens and a hundred thousand sessions in the
/// tables, a page that is rarely in memory. Keys that grow with time put new rows on the same
/// last pages, and keep the rows people are using (recent sessions, fresh codes) together. A
/// presented secret chooses its own prefix, so a forged one only misses.
pub fn secret_token_key(token: &str) -> String {
    let digest = sha256_hex(token);
    if token.len() != SECRET_TOKEN_LEN {
        return digest;
    }
    match URL_SAFE_NO_PAD.decode(&token.as_bytes()[..8]) {
        Ok(time) => {
            let mut key = hex::encode(time);
            key.push_str(&digest);
            key
        }
        Err(_) => digest,
    }
}

/// Hex SHA-256, the form in which codes, tokens and client secrets are stored and compared.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Constant-time equality for secrets of any length (the length itself is not secret here:
/// both sides are digests or fixed-size tokens).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length: the error cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `at_hash` claim: base64url of the left half of SHA-256 of the access token (RS256 and ES256
/// both use SHA-256).
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Seals a refresh token's successor under a key derived from the token it replaces, so the
/// stored ciphertext is useless to anyone without the old token: only a client retrying
/// inside the reuse interval can open it.
pub fn seal_successor(old_token: &str, successor: &str) -> Result<Vec<u8>, aes_gcm::Error> {
    use aes_gcm::aead::{Aead, KeyInit};
    let cipher = aes_gcm::Aes256Gcm::new(&successor_key(old_token).into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    out.extend(cipher.encrypt(&nonce.into(), successor.as_bytes())?);
    Ok(out)
}

pub fn open_successor(old_token: &str, sealed: &[u8]) -> Option<String> {
    use aes_gcm::aead::{Aead, KeyInit};
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    let cipher = aes_gcm::Aes256Gcm::new(&successor_key(old_token).into());
    let plain = cipher
        .decrypt(aes_gcm::Nonce::from_slice(nonce), ciphertext)
        .ok()?;
    String::from_utf8(plain).ok()
}

fn successor_key(old_token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lanyard refresh successor\0");
    h.update(old_token.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_differ_and_have_expected_length() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn grant_ids_differ_and_sort_by_creation_time() {
        let a = new_grant_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_grant_id();
        assert_ne!(a, new_grant_id());
        assert!(a < b, "{a} then {b}");
        assert_eq!(a.len(), 12 + 16);
    }

    #[test]
    fn secret_token_keys_sort_by_issue_time_and_older_tokens_keep_their_digest() {
        let a = new_secret_token();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_secret_token();
        assert_eq!(a.len(), SECRET_TOKEN_LEN);
        assert_ne!(a, new_secret_token());
        let (ka, kb) = (secret_token_key(&a), secret_token_key(&b));
        assert!(ka < kb, "{ka} then {kb}");
        assert_eq!(ka.len(), 12 + 64);
        assert!(ka.ends_with(&sha256_hex(&a)));
        let issued = u64::from_str_radix(&kb[..12], 16).unwrap();
        assert!(
            epoch_millis() - issued < 1000,
            "the prefix is the issue time"
        );
        // A token of the earlier form is found under its digest, as it was stored.
        let older = random_token(32);
        assert_eq!(secret_token_key(&older), sha256_hex(&older));
        // Bytes that are not base64url do not panic and find nothing new.
        let odd = format!("{}{}", "é!", "a".repeat(SECRET_TOKEN_LEN - 3));
        assert_eq!(odd.len(), SECRET_TOKEN_LEN);
        assert_eq!(secret_token_key(&odd), sha256_hex(&odd));
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_old_token() {
        let sealed = seal_successor("old-token", "next-token").unwrap();
        assert_eq!(
            open_successor("old-token", &sealed).as_deref(),
            Some("next-token")
        );
        assert_eq!(open_successor("other-token", &sealed), None);
        assert!(!sealed.windows(10).any(|w| w == b"next-token"));
    }

    #[test]
    fn at_hash_matches_openid_spec_construction() {
        // Left-most 128 bits of SHA-256, base64url: 16 bytes -> 22 characters.
        assert_eq!(at_hash("token").len(), 22);
        assert_ne!(at_hash("token"), at_hash("token2"));
    }
}
