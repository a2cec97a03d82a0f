//! herald-delivery
