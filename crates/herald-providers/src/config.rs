//! Where the providers are and how to reach them.

use std::time::Duration;

use anyhow::Context as _;

/// Apple's production APNs endpoint.
pub const APNS_PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development APNs endpoint.
pub const APNS_DEVELOPMENT_URL: &str = "https://api.sandbox.push.apple.com";
/// Google's FCM endpoint (HTTP v1).
pub const FCM_URL: &str = "https://fcm.googleapis.com";
/// Google's legacy FCM endpoint (`/fcm/send`, shut down by Google in 2024).
pub const FCM_LEGACY_URL: &str = "https://fcm.googleapis.com";

/// Provider endpoints, TLS trust and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// APNs production base URL (`HERALD_APNS_URL`).
    pub apns_url: String,
    /// APNs development base URL (`HERALD_APNS_SANDBOX_URL`), used by credentials with `sandbox`.
    pub apns_sandbox_url: String,
    /// FCM HTTP v1 base URL (`HERALD_FCM_URL`).
    pub fcm_url: String,
    /// Legacy FCM base URL (`HERALD_FCM_LEGACY_URL`).
    pub fcm_legacy_url: String,
    /// Extra trusted CA certificates (PEM, one or more), on top of the public web roots; read from
    /// the file named by `HERALD_EXTRA_CA_FILE`. Used for the sandbox providers.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// At most this many HTTP/2 connections per credential (opened on demand).
    pub max_connections_per_credential: usize,
    /// Deadline for one send (connecting included); past it the outcome is `Retry`.
    pub request_timeout: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            apns_url: APNS_PRODUCTION_URL.to_string(),
            apns_sandbox_url: APNS_DEVELOPMENT_URL.to_string(),
            fcm_url: FCM_URL.to_string(),
            fcm_legacy_url: FCM_LEGACY_URL.to_string(),
            extra_ca_pem: None,
            max_connections_per_credential: 4,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ProviderConfig {
    /// Reads `HERALD_APNS_URL`, `HERALD_APNS_SANDBOX_URL`, `HERALD_FCM_URL`,
    /// `HERALD_FCM_LEGACY_URL` and `HERALD_EXTRA_CA_FILE`; anything unset (or empty) keeps its
    /// default.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ProviderConfig::from_env`], with the variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = ProviderConfig::default();
        if let Some(url) = get("HERALD_APNS_URL") {
            config.apns_url = url.trim().to_string();
        }
        if let Some(url) = get("HERALD_APNS_SANDBOX_URL") {
            config.apns_sandbox_url = url.trim().to_string();
        }
        if let Some(url) = get("HERALD_FCM_URL") {
            config.fcm_url = url.trim().to_string();
        }
        if let Some(url) = get("HERALD_FCM_LEGACY_URL") {
            config.fcm_legacy_url = url.trim().to_string();
        }
        if let Some(path) = get("HERALD_EXTRA_CA_FILE") {
            let pem = std::fs::read(path.trim())
                .with_context(|| format!("HERALD_EXTRA_CA_FILE: cannot read {}", path.trim()))?;
            crate::tls::parse_ca_pem(&pem).context("HERALD_EXTRA_CA_FILE")?;
            config.extra_ca_pem = Some(pem);
        }
        for (name, url) in [
            ("HERALD_APNS_URL", &config.apns_url),
            ("HERALD_APNS_SANDBOX_URL", &config.apns_sandbox_url),
            ("HERALD_FCM_URL", &config.fcm_url),
            ("HERALD_FCM_LEGACY_URL", &config.fcm_legacy_url),
        ] {
            crate::h2pool::Origin::parse(url).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_public_endpoints() {
        let c = ProviderConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c, ProviderConfig::default());
        assert_eq!(c.apns_url, "https://api.push.apple.com");
        assert_eq!(c.apns_sandbox_url, "https://api.sandbox.push.apple.com");
        assert_eq!(c.fcm_url, "https://fcm.googleapis.com");
        assert_eq!(c.max_connections_per_credential, 4);
    }

    #[test]
    fn reads_variables() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, crate::tls::tests::TEST_CA_PEM).unwrap();
        let vars: HashMap<&str, String> = [
            ("HERALD_APNS_URL", "https://127.0.0.1:9000".to_string()),
            (
                "HERALD_APNS_SANDBOX_URL",
                "https://127.0.0.1:9001/".to_string(),
            ),
            ("HERALD_FCM_URL", "https://localhost:9002".to_string()),
            ("HERALD_FCM_LEGACY_URL", "".to_string()),
            ("HERALD_EXTRA_CA_FILE", ca.display().to_string()),
        ]
        .into_iter()
        .collect();
        let c = ProviderConfig::from_lookup(|n| vars.get(n).cloned()).unwrap();
        assert_eq!(c.apns_url, "https://127.0.0.1:9000");
        assert_eq!(c.apns_sandbox_url, "https://127.0.0.1:9001/");
        assert_eq!(c.fcm_url, "https://localhost:9002");
        assert_eq!(c.fcm_legacy_url, FCM_LEGACY_URL);
        assert_eq!(
            c.extra_ca_pem.as_deref(),
            Some(crate::tls::tests::TEST_CA_PEM.as_bytes())
        );
    }

    #[test]
    fn rejects_bad_values() {
        let err = ProviderConfig::from_lookup(|n| {
            (n == "HERALD_EXTRA_CA_FILE").then(|| "/nonexistent/ca.pem".to_string())
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("HERALD_EXTRA_CA_FILE"),
            "{err:#}"
        );
        let err = ProviderConfig::from_lookup(|n| {
            (n == "HERALD_FCM_URL").then(|| "ftp://example.com".to_string())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("HERALD_FCM_URL"), "{err:#}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a pem").unwrap();
        let err = ProviderConfig::from_lookup(|n| {
            (n == "HERALD_EXTRA_CA_FILE").then(|| ca.display().to_string())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("no CA certificate"), "{err:#}");
    }
}
