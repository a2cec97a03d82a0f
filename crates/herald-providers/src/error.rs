//! Errors raised before anything is sent: bad configuration or unusable credential content.

use crate::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The credential content cannot be used (key does not parse, JSON lacks a field, ...).
    #[error("invalid credential: {0}")]
    InvalidCredential(String),
    /// The provider configuration is unusable (bad URL, bad CA PEM).
    #[error("invalid provider configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// The outcome to record for a notification that could not be sent because of this error.
    pub fn to_outcome(&self) -> Outcome {
        match self {
            ProviderError::InvalidCredential(message) => Outcome::CredentialError {
                status: None,
                reason: format!("InvalidCredential: {message}"),
            },
            ProviderError::Config(message) => Outcome::Retry {
                after: None,
                status: None,
                reason: format!("ProviderConfig: {message}"),
            },
        }
    }
}
