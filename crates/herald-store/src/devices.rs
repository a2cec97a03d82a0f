//! Devices (to be filled in by the resource's owner).

use async_trait::async_trait;

use crate::SqlStore;

#[async_trait]
pub trait DeviceStore {}

#[async_trait]
impl DeviceStore for SqlStore {}
