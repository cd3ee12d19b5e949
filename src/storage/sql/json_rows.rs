//! A batch's rows as JSON text: each table's rows of a batch go to the database as one JSON
//! array, which one statement reads row by row, instead of one statement (or one set of
//! bound parameters) per row.

use std::fmt::Write as _;

use serde_json::Value;

use crate::storage::{
    AccessToken, Grant, IssuedTokens, RefreshToken, Result, StorageError, UnixTime,
};

/// A row as JSON text, serialised straight from the model (a `serde_json::Value` built first
/// would cost an allocation per field).
pub(in crate::storage) fn row_text<T: serde::Serialize>(row: &T) -> Result<String> {
    serde_json::to_string(row)
        .map_err(|e| StorageError::Corrupt(format!("cannot encode a row for a batch: {e}")))
}

#[derive(serde::Serialize)]
struct AccessRow<'a> {
    token_hash: &'a str,
    grant_id: &'a str,
    client_id: &'a str,
    created_at: UnixTime,
    expires_at: UnixTime,
    scopes: Option<String>,
}

pub(in crate::storage) fn access_json(access: &AccessToken) -> Result<String> {
    row_text(&AccessRow {
        token_hash: &access.token_hash,
        grant_id: &access.grant_id,
        client_id: &access.client_id,
        created_at: access.created_at,
        expires_at: access.expires_at,
        scopes: super::access_token_scopes(access)?,
    })
}

#[derive(serde::Serialize)]
struct RefreshRow<'a> {
    token_hash: &'a str,
    grant_id: &'a str,
    client_id: &'a str,
    created_at: UnixTime,
    last_used_at: UnixTime,
    expires_at: Option<UnixTime>,
    rotated_at: Option<UnixTime>,
    successor_hash: Option<&'a str>,
}

pub(in crate::storage) fn refresh_json(refresh: &RefreshToken) -> Result<String> {
    row_text(&RefreshRow {
        token_hash: &refresh.token_hash,
        grant_id: &refresh.grant_id,
        client_id: &refresh.client_id,
        created_at: refresh.created_at,
        last_used_at: refresh.last_used_at,
        expires_at: refresh.expires_at,
        rotated_at: refresh.rotated_at,
        successor_hash: refresh.successor_hash.as_deref(),
    })
}

#[derive(serde::Serialize)]
struct GrantRow<'a> {
    id: &'a str,
    client_id: &'a str,
    connector_id: &'a str,
    user_id: &'a str,
    claims: &'a str,
    scopes: &'a str,
    nonce: Option<&'a str>,
    auth_time: UnixTime,
    connector_data: Option<&'a str>,
    created_at: UnixTime,
    revoked_at: Option<UnixTime>,
}

/// The rows of one grant, ready to insert.
pub(in crate::storage) struct Rows {
    pub grant: String,
    pub access: String,
    pub refresh: Option<String>,
}

impl Rows {
    pub(in crate::storage) fn new(grant: &Grant, tokens: &IssuedTokens) -> Result<Self> {
        let json = super::GrantJson::new(grant)?;
        Ok(Self {
            grant: row_text(&GrantRow {
                id: &grant.id,
                client_id: &grant.client_id,
                connector_id: &grant.connector_id,
                user_id: &grant.claims.user_id,
                claims: &json.claims,
                scopes: &json.scopes,
                nonce: grant.nonce.as_deref(),
                auth_time: grant.auth_time,
                connector_data: grant.connector_data.as_deref(),
                created_at: grant.created_at,
                revoked_at: grant.revoked_at,
            })?,
            access: access_json(&tokens.access)?,
            refresh: tokens.refresh.as_ref().map(refresh_json).transpose()?,
        })
    }
}

/// Rows as one JSON array (for SQLite's `json_each` or PostgreSQL's `json_to_recordset`),
/// written as they are added.
#[derive(Default)]
pub(in crate::storage) struct JsonArray {
    text: String,
    len: usize,
}

impl JsonArray {
    /// An array of rows already written as JSON text.
    pub(in crate::storage) fn of<'a>(rows: impl IntoIterator<Item = &'a String>) -> Self {
        let mut array = Self::default();
        for row in rows {
            array.push_text(row);
        }
        array
    }

    pub(in crate::storage) fn push(&mut self, row: &Value) {
        self.text.push(if self.len == 0 { '[' } else { ',' });
        // Writing to a String cannot fail.
        let _ = write!(self.text, "{row}");
        self.len += 1;
    }

    /// Adds a row that is already JSON text.
    pub(in crate::storage) fn push_text(&mut self, row: &str) {
        self.text.push(if self.len == 0 { '[' } else { ',' });
        self.text.push_str(row);
        self.len += 1;
    }

    /// How many rows the array holds.
    pub(in crate::storage) fn len(&self) -> usize {
        self.len
    }

    pub(in crate::storage) fn text(&self) -> String {
        if self.len == 0 {
            "[]".to_string()
        } else {
            format!("{}]", self.text)
        }
    }
}
