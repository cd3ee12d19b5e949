//! What the SQLite and PostgreSQL implementations share: the SQL text (`queries`), the row
//! shapes and their conversions (`rows`), and the mapping of database errors.

mod queries;
mod rows;

pub(in crate::storage) use queries::*;
pub(in crate::storage) use rows::*;

use sqlx::error::ErrorKind;

use super::{Result, StorageError};

/// Maps a database error. `subject` names the record for the messages
/// ("client \"x\"", "authorization code"); it never contains a secret.
pub(in crate::storage) fn storage_error(error: sqlx::Error, subject: &str) -> StorageError {
    match error {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StorageError::AlreadyExists(subject.to_string()),
            ErrorKind::ForeignKeyViolation => {
                StorageError::NotFound(format!("the record {subject} refers to"))
            }
            ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                StorageError::Corrupt(format!("{subject} violates a constraint: {db}"))
            }
            // Busy/locked SQLite files, dropped connections, serialization failures,
            // shutting-down servers: all transient from the caller's point of view.
            _ => StorageError::Unavailable(format!("database error on {subject}: {db}")),
        },
        sqlx::Error::RowNotFound => StorageError::NotFound(subject.to_string()),
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => {
            StorageError::Corrupt(format!("cannot read {subject}: {e}"))
        }
        e @ sqlx::Error::Configuration(_) => StorageError::Open(e.to_string()),
        sqlx::Error::Migrate(e) => StorageError::Migration(e.to_string()),
        e => StorageError::Unavailable(format!("{subject}: {e}")),
    }
}

/// Shorthand for `.map_err(|e| storage_error(e, subject))`.
pub(in crate::storage) trait ResultExt<T> {
    fn or_storage(self, subject: &str) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn or_storage(self, subject: &str) -> Result<T> {
        self.map_err(|e| storage_error(e, subject))
    }
}
