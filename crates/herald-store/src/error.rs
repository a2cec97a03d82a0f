use thiserror::Error;

/// What can go wrong in the store. Rule violations that a user can fix come back as
/// [`StoreError::Conflict`] / [`StoreError::Invalid`] with a message fit to show them.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The request breaks a rule of the data (a limit, a uniqueness or default rule).
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// A repeat with the same idempotency key but a different request, and similar clashes.
    #[error("{0}")]
    Conflict(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("stored secret could not be decrypted (wrong master key?)")]
    Decrypt,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the group commit's own SQLite connection (see `group_commit.rs`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}
