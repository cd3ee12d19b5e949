//! `lanyard admin keys`: the signing keys in storage, an emergency rotation, and retiring a
//! compromised key. Running servers see every change at their next key poll
//! (`keys.pollInterval`): no restart.

use std::path::Path;
use std::sync::Arc;

use clap::Subcommand;

use super::{Admin, AdminError, Result};
use crate::clock::{Clock, SystemClock, UnixTime};
use crate::keys::{key_statuses_of, retire_key, secs, KeyError, KeyManager, KeyState, KeyStore};
use crate::login::rfc3339;
use crate::server::app::{key_settings, MissingKek, DEFAULT_DATA_DIR};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// One line per key: kid, algorithm, state (published-ahead, signing, retired-published,
    /// expired), created, signs from, published until (RFC 3339 UTC; `-` while the key has no
    /// successor).
    List,
    /// Emergency rotation: a new key signs from now on, without the publish-ahead wait. The
    /// key that signed until now stays published until its tokens expire.
    Rotate {
        /// Also stop publishing the key that signed until now (it is compromised): its
        /// tokens stop verifying at once.
        #[arg(long)]
        retire_previous: bool,
    },
    /// Stops publishing a key now (it is compromised): tokens it signed stop verifying. The
    /// key that signs now can only go together with a rotation (--rotate).
    Retire {
        /// Key ids are base64url, so one in 64 starts with `-`; it is still the id.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Make a new key sign now first (an emergency rotation), so that retiring the key
        /// that signs now leaves one to sign with.
        #[arg(long)]
        rotate: bool,
    },
}

impl Admin<'_> {
    pub(super) async fn keys(&self, command: &KeysCommand) -> Result<String> {
        let store: Arc<dyn KeyStore> = Arc::new(self.storage.clone());
        let lifetime = self.config.expiry.id_tokens;
        match command {
            KeysCommand::List => {
                let rows = store.list_signing_keys().await?;
                let mut out = String::new();
                for k in key_statuses_of(&rows, lifetime, self.clock.now())? {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\n",
                        k.kid,
                        k.alg,
                        k.state,
                        rfc3339(k.created_at),
                        rfc3339(k.sign_from),
                        k.publish_until.map(rfc3339).unwrap_or_else(|| "-".into()),
                    ));
                }
                Ok(out)
            }
            KeysCommand::Rotate { retire_previous } => {
                Ok(self.rotate(store, *retire_previous).await?.0)
            }
            KeysCommand::Retire { kid, rotate } => {
                let now = self.clock.now();
                let rows = store.list_signing_keys().await?;
                let signing = key_statuses_of(&rows, lifetime, now)?
                    .into_iter()
                    .any(|k| k.kid == *kid && k.state == KeyState::Signing);
                let mut out = String::new();
                if *rotate {
                    // The signing key goes in the rotation itself, so that no moment is
                    // left without a key to sign with.
                    let (text, retired) = self.rotate(store.clone(), signing).await?;
                    if retired.as_deref() == Some(kid.as_str()) {
                        return Ok(text);
                    }
                    out = text;
                }
                let state = retire_key(store.as_ref(), lifetime, kid, now)
                    .await
                    .map_err(|e| match e {
                        KeyError::RetireSigning(kid) => AdminError::Invalid(format!(
                            "refusing to retire {kid}: it is the only key signing tokens now, \
                             and retiring it alone would leave none; make a new one in the same \
                             command with `lanyard admin keys retire {kid} --rotate` (or \
                             `lanyard admin keys rotate --retire-previous`)"
                        )),
                        other => other.into(),
                    })?;
                self.audit_key("key.retire", kid, now, &format!("was {state}"));
                out.push_str(&format!(
                    "retired {kid} (was {state}): no longer published\n"
                ));
                Ok(out)
            }
        }
    }

    /// The emergency rotation; returns what to print and the kid it retired, if any.
    async fn rotate(
        &self,
        store: Arc<dyn KeyStore>,
        retire_previous: bool,
    ) -> Result<(String, Option<String>)> {
        let settings = key_settings(self.config, Path::new(DEFAULT_DATA_DIR), MissingKek::Refuse)?;
        // Opening decrypts every stored key: a key-encryption key other than the servers'
        // fails here instead of sealing a key they cannot open.
        let manager = KeyManager::open(store, Arc::new(SystemClock), settings).await?;
        let done = manager.rotate_now(retire_previous).await?;
        let now = self.clock.now();
        let previous = done.previous.as_deref().unwrap_or("-");
        self.audit_key(
            "key.rotate",
            &done.created,
            now,
            &format!("previous {previous}; discarded {:?}", done.discarded),
        );
        let mut out = format!("signing now: {}\n", done.created);
        match (&done.previous, &done.retired) {
            (_, Some(retired)) => {
                self.audit_key("key.retire", retired, now, "was signing");
                out.push_str(&format!(
                    "retired {retired} (was signing): no longer published\n"
                ));
            }
            (Some(previous), None) => {
                let until = now.saturating_add(secs(self.config.expiry.id_tokens));
                out.push_str(&format!(
                    "{previous} no longer signs; published until {} for the tokens it signed\n",
                    rfc3339(until)
                ));
            }
            (None, None) => {}
        }
        for kid in &done.discarded {
            out.push_str(&format!("removed {kid} (published ahead, never signed)\n"));
        }
        Ok((out, done.retired))
    }

    fn audit_key(&self, action: &str, kid: &str, time: UnixTime, detail: &str) {
        tracing::info!(
            target: "lanyard::audit",
            actor = %self.actor,
            action,
            object = kid,
            time,
            detail,
            "admin change"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::KeysCommand;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        keys: KeysCommand,
    }

    #[test]
    fn a_key_id_that_starts_with_a_hyphen_is_a_key_id() {
        for args in [
            ["keys", "retire", "-zfS3nl6feA7N8xuobScZA", "--rotate"],
            ["keys", "retire", "--rotate", "-zfS3nl6feA7N8xuobScZA"],
        ] {
            let parsed = Cli::try_parse_from(args).map_err(|e| e.to_string());
            match parsed.map(|c| c.keys) {
                Ok(KeysCommand::Retire { kid, rotate }) => {
                    assert_eq!(kid, "-zfS3nl6feA7N8xuobScZA");
                    assert!(rotate);
                }
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
    }
}
