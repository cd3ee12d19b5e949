//! `staticPasswords:`: the users of the password database written in the config.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::path::{index_path, key_path};
use super::raw::LenientBool;
use super::resolve::{list_at, literal_or_env, Ctx};

/// A user from `staticPasswords`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticPassword {
    /// As written; compare case-insensitively.
    pub email: String,
    /// A bcrypt hash (`$2a$`/`$2b$`/`$2y$`) or an argon2id PHC string, already decoded when
    /// the config gave it base64-encoded.
    pub hash: String,
    /// The email when the config gives no username.
    pub username: String,
    /// Dex's `name`: the `name` claim (the username when `None`).
    pub name: Option<String>,
    /// Dex's `preferredUsername`: the `preferred_username` claim (the username when `None`).
    pub preferred_username: Option<String>,
    /// Dex's `emailVerified`: the `email_verified` claim (true when `None`, as in Dex).
    pub email_verified: Option<bool>,
    pub user_id: String,
    pub groups: Vec<String>,
}

impl StaticPassword {
    pub fn hash_kind(&self) -> PasswordHashKind {
        if self.hash.starts_with("$argon2id$") {
            PasswordHashKind::Argon2id
        } else {
            PasswordHashKind::Bcrypt
        }
    }
}

impl fmt::Debug for StaticPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticPassword")
            .field("email", &self.email)
            .field("hash", &"<redacted>")
            .field("username", &self.username)
            .field("name", &self.name)
            .field("preferred_username", &self.preferred_username)
            .field("email_verified", &self.email_verified)
            .field("user_id", &self.user_id)
            .field("groups", &self.groups)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordHashKind {
    Bcrypt,
    Argon2id,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStaticPassword {
    pub email: Option<String>,
    pub hash: Option<String>,
    pub hash_from_env: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub email_verified: Option<LenientBool>,
    #[serde(rename = "userID")]
    pub user_id: Option<String>,
    pub groups: Option<Vec<String>>,
}

const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `$2a$10$` + 53 characters of bcrypt's base64: 22 of salt, 31 of hash.
fn is_bcrypt(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && (4..=31).contains(&((b[4] - b'0') * 10 + (b[5] - b'0')))
        && b[6] == b'$'
        && b[7..].iter().all(|c| BCRYPT_ALPHABET.contains(c))
}

/// `$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>` (PHC string format; `v=` optional).
fn is_argon2id(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    if parts.len() < 5 || !parts[0].is_empty() || parts[1] != "argon2id" {
        return false;
    }
    let mut i = 2;
    if let Some(v) = parts[i].strip_prefix("v=") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        i += 1;
    }
    if parts.len() != i + 3 {
        return false;
    }
    let mut have = BTreeMap::new();
    for param in parts[i].split(',') {
        let Some((k, v)) = param.split_once('=') else {
            return false;
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        have.insert(k, v);
    }
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    ["m", "t", "p"].iter().all(|k| have.contains_key(k)) && b64(parts[i + 1]) && b64(parts[i + 2])
}

/// The hash in the form the password checker takes. Dex also accepts a bcrypt hash that was
/// base64-encoded (older Dex docs told people to encode it), so that is decoded here.
pub(crate) fn normalize_hash(h: &str) -> Result<String, String> {
    let h = h.trim();
    if is_bcrypt(h) || is_argon2id(h) {
        return Ok(h.to_string());
    }
    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(h) {
        if let Ok(text) = String::from_utf8(decoded) {
            if is_bcrypt(&text) || is_argon2id(&text) {
                return Ok(text);
            }
        }
    }
    Err("not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters), an argon2id PHC string ($argon2id$...), or base64 of one".to_string())
}

pub(super) fn resolve_passwords(
    value: Value,
    enable_password_db: bool,
    ctx: &mut Ctx,
) -> Vec<StaticPassword> {
    let given =
        !matches!(&value, Value::Null) && !matches!(&value, Value::Sequence(s) if s.is_empty());
    if given && !enable_password_db {
        ctx.err(
            "staticPasswords",
            "static passwords need `enablePasswordDB: true`",
        );
    }
    let mut out = Vec::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    let mut user_ids: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawStaticPassword>(value, "staticPasswords", ctx) {
        let path = index_path("staticPasswords", i);
        let before = ctx.errors.len();
        let email = raw.email.filter(|e| !e.is_empty());
        match &email {
            None => ctx.err(key_path(&path, "email"), "missing required key `email`"),
            Some(email) => {
                if let Some(first) = emails.get(&email.to_lowercase()) {
                    ctx.err(
                        key_path(&path, "email"),
                        format!("duplicate email `{email}` (also staticPasswords[{first}]; emails are compared ignoring case)"),
                    );
                } else {
                    emails.insert(email.to_lowercase(), i);
                }
            }
        }
        let user_id = raw.user_id.filter(|u| !u.is_empty());
        match &user_id {
            None => ctx.err(
                key_path(&path, "userID"),
                "missing required key `userID` (it becomes the user's subject in tokens)",
            ),
            Some(uid) => {
                if let Some(first) = user_ids.get(uid) {
                    ctx.err(
                        key_path(&path, "userID"),
                        format!("duplicate userID `{uid}` (also staticPasswords[{first}])"),
                    );
                } else {
                    user_ids.insert(uid.clone(), i);
                }
            }
        }
        let hash_given = raw.hash.as_deref().is_some_and(|v| !v.is_empty())
            || raw.hash_from_env.as_deref().is_some_and(|v| !v.is_empty());
        let from_env = raw.hash.as_deref().is_none_or(str::is_empty);
        let hash = literal_or_env(
            raw.hash,
            raw.hash_from_env,
            &path,
            "hash",
            "hashFromEnv",
            ctx,
        );
        if !hash_given {
            ctx.err(
                key_path(&path, "hash"),
                "missing required key `hash` (or `hashFromEnv`)",
            );
        }
        let hash = hash.and_then(|h| match normalize_hash(&h) {
            Ok(h) => Some(h),
            Err(e) => {
                let at = key_path(&path, if from_env { "hashFromEnv" } else { "hash" });
                ctx.err(at, e);
                None
            }
        });
        if ctx.errors.len() != before {
            continue;
        }
        let (Some(email), Some(user_id), Some(hash)) = (email, user_id, hash) else {
            continue;
        };
        out.push(StaticPassword {
            username: raw
                .username
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| email.clone()),
            name: raw.name.filter(|n| !n.is_empty()),
            preferred_username: raw.preferred_username.filter(|n| !n.is_empty()),
            email_verified: raw.email_verified.map(|b| b.0),
            email,
            hash,
            user_id,
            groups: raw.groups.unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    #[test]
    fn bcrypt_shape() {
        assert!(is_bcrypt(BCRYPT));
        assert!(is_bcrypt(&BCRYPT.replace("$2a$", "$2y$")));
        assert!(!is_bcrypt(&BCRYPT.replace("$2a$", "$2x$")));
        assert!(!is_bcrypt(&BCRYPT[..59]));
        assert!(!is_bcrypt(&BCRYPT.replace("$10$", "$99$")));
        assert!(!is_bcrypt(&BCRYPT.replace('W', "!")));
    }

    #[test]
    fn argon2id_shape() {
        let h = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(is_argon2id(h));
        assert!(is_argon2id(&h.replace("v=19$", "")));
        assert!(!is_argon2id(&h.replace("argon2id", "argon2i")));
        assert!(!is_argon2id(&h.replace("m=19456,", "")));
        assert!(!is_argon2id("$argon2id$v=19$m=1,t=1,p=1$salt"));
    }

    #[test]
    fn base64_encoded_bcrypt_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(BCRYPT);
        assert_eq!(normalize_hash(&encoded).unwrap(), BCRYPT);
        assert!(normalize_hash("aGVsbG8=").is_err());
        assert!(normalize_hash("password").is_err());
    }
}
