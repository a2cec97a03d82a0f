//! TLS trust and client configurations (rustls with the ring provider only).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::ProviderError;

/// The ring crypto provider; Herald never uses aws-lc-rs.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate of a CA PEM bundle; at least one is required.
pub(crate) fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ProviderError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProviderError::Config(format!("extra CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProviderError::Config(
            "extra CA PEM: no CA certificate found".into(),
        ));
    }
    Ok(certs)
}

/// Public web roots plus the configured extra CA certificates.
pub(crate) fn root_store(extra_ca_pem: Option<&[u8]>) -> Result<Arc<RootCertStore>, ProviderError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca_pem {
        for cert in parse_ca_pem(pem)? {
            roots
                .add(cert)
                .map_err(|e| ProviderError::Config(format!("extra CA PEM: {e}")))?;
        }
    }
    Ok(Arc::new(roots))
}

fn builder(
    roots: &Arc<RootCertStore>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, ProviderError> {
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProviderError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots.clone()))
}

/// A client configuration offering `alpn` (e.g. `h2`), without a client certificate.
pub(crate) fn client_config(
    roots: &Arc<RootCertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ProviderError> {
    let mut config = builder(roots)?.with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration offering HTTP/2 that presents a client certificate (APNs certificate
/// auth). The certificate PEM may hold a chain; the key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub(crate) fn client_cert_config(
    roots: &Arc<RootCertStore>,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>, ProviderError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProviderError::InvalidCredential(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProviderError::InvalidCredential(
            "certificate PEM holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ProviderError::InvalidCredential(format!("private key PEM: {e}")))?;
    let mut config = builder(roots)?
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            ProviderError::InvalidCredential(format!(
                "certificate and private key are not usable together: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls error inside an I/O error, if any.
pub(crate) fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Alerts with which a server refuses a client certificate.
const CLIENT_CERT_ALERTS: &[rustls::AlertDescription] = {
    use rustls::AlertDescription as A;
    &[
        A::BadCertificate,
        A::UnsupportedCertificate,
        A::CertificateRevoked,
        A::CertificateExpired,
        A::CertificateUnknown,
        A::UnknownCA,
        A::AccessDenied,
        A::CertificateRequired,
        A::HandshakeFailure,
    ]
};

/// Whether a TLS error means that the server refused our client certificate.
pub(crate) fn is_client_cert_rejection(err: &rustls::Error) -> bool {
    matches!(err, rustls::Error::AlertReceived(alert) if CLIENT_CERT_ALERTS.contains(alert))
}

/// The same, from an error message only (h2 keeps only the text of I/O errors; rustls words a
/// received alert as `received fatal alert: <name>`).
pub(crate) fn message_is_client_cert_rejection(message: &str) -> bool {
    message
        .split("received fatal alert: ")
        .nth(1)
        .is_some_and(|rest| {
            let name = rest.split(|c: char| !c.is_ascii_alphanumeric()).next();
            CLIENT_CERT_ALERTS
                .iter()
                .any(|alert| name == Some(format!("{alert:?}").as_str()))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TEST_CA_PEM: &str = include_str!("testdata/ca.pem");
    pub(crate) const SERVER_CERT_PEM: &str = include_str!("testdata/server.pem");
    pub(crate) const SERVER_KEY_PEM: &str = include_str!("testdata/server-key.pem");
    pub(crate) const CLIENT_CERT_PEM: &str = include_str!("testdata/client.pem");
    pub(crate) const CLIENT_KEY_PEM: &str = include_str!("testdata/client-key.pem");

    #[test]
    fn roots_include_public_and_extra() {
        let public = root_store(None).unwrap();
        let with_extra = root_store(Some(TEST_CA_PEM.as_bytes())).unwrap();
        assert!(public.len() > 100);
        assert_eq!(with_extra.len(), public.len() + 1);
        assert!(matches!(
            root_store(Some(b"garbage")),
            Err(ProviderError::Config(_))
        ));
    }

    #[test]
    fn client_cert_config_checks_the_pair() {
        let roots = root_store(None).unwrap();
        let config = client_cert_config(&roots, CLIENT_CERT_PEM, CLIENT_KEY_PEM).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        // A key that does not belong to the certificate.
        let err = client_cert_config(&roots, CLIENT_CERT_PEM, SERVER_KEY_PEM).unwrap_err();
        assert!(matches!(err, ProviderError::InvalidCredential(_)), "{err}");
        let err = client_cert_config(&roots, "nope", CLIENT_KEY_PEM).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = client_cert_config(&roots, CLIENT_CERT_PEM, "nope").unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }

    #[test]
    fn cert_rejection_alerts() {
        assert!(is_client_cert_rejection(&rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
        )));
        assert!(!is_client_cert_rejection(&rustls::Error::AlertReceived(
            rustls::AlertDescription::DecodeError
        )));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        );
        assert!(is_client_cert_rejection(rustls_error(&io).unwrap()));
        assert!(message_is_client_cert_rejection(&format!("h2: {io}")));
        assert!(!message_is_client_cert_rejection(
            "received fatal alert: DecodeError"
        ));
        assert!(!message_is_client_cert_rejection("connection reset"));
    }
}
