//! Chat credentials (to be filled in by the resource's owner).

use async_trait::async_trait;

use crate::SqlStore;

#[async_trait]
pub trait ChatCredentialStore {}

#[async_trait]
impl ChatCredentialStore for SqlStore {}
