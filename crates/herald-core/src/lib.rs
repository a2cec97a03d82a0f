//! Herald's domain types: identifiers, names, tokens, tags, statuses, and validation of what users
//! send us ("parse, don't validate": a value of one of these types is valid).

pub mod credential_content;
pub mod ids;
pub mod names;
pub mod send;
pub mod time;

pub use names::{AppName, DeviceStatus, DeviceToken, Provider, Tags};
