//! Validation of provider credential content (owned by the credential-content work).
