//! Certificates: the leaf of a chain and what Herald needs from it.

use time::OffsetDateTime;
use x509_parser::oid_registry::OID_USERID;
use x509_parser::parse_x509_certificate;

use super::keys::{PKCS12_MESSAGE, PublicKey, is_pkcs12};
use super::pem::{Decoded, Encoding, decode_field, to_pem};

/// Apple's marker extensions on push certificates (value NULL): 1.2.840.113635.100.6.3.1 is on
/// certificates that may use the development (sandbox) APNs, .2 on those that may use production.
const OID_APPLE_APNS_DEVELOPMENT: &[u8] =
    &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x63, 0x64, 0x06, 0x03, 0x01];
const OID_APPLE_APNS_PRODUCTION: &[u8] =
    &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x63, 0x64, 0x06, 0x03, 0x02];

/// A certificate chain (leaf first), normalized to PEM, and the facts of its leaf.
#[derive(Debug)]
pub(super) struct CertChain {
    /// Every certificate of the chain as a `CERTIFICATE` block, leaf first.
    pub(super) pem: String,
    pub(super) leaf: Leaf,
}

#[derive(Debug)]
pub(super) struct Leaf {
    /// The subject's UID (0.9.2342.19200300.100.1.1), the bundle ID on Apple push certificates.
    pub(super) uid: Option<String>,
    pub(super) not_before: OffsetDateTime,
    pub(super) not_after: OffsetDateTime,
    pub(super) public: PublicKey,
    /// Apple's development marker extension is present.
    pub(super) apns_development: bool,
    /// Apple's production marker extension is present.
    pub(super) apns_production: bool,
}

/// Parses a certificate field. Error messages complete "content.certificate ...".
pub(super) fn parse_certificate_field(
    value: &str,
    encoding: Encoding,
) -> Result<CertChain, String> {
    let ders: Vec<Vec<u8>> = match decode_field(value, encoding)? {
        Decoded::Pem(blocks) => {
            let has_key = blocks.iter().any(|b| b.is_private_key());
            let certs: Vec<Vec<u8>> = blocks
                .into_iter()
                .filter(|b| b.is_certificate())
                .map(|b| b.der)
                .collect();
            if certs.is_empty() {
                return Err(if has_key {
                    "holds a private key, not a certificate".to_owned()
                } else {
                    "holds no certificate (expected a -----BEGIN CERTIFICATE----- block)".to_owned()
                });
            }
            certs
        }
        Decoded::Der(der) if is_pkcs12(&der) => return Err(PKCS12_MESSAGE.to_owned()),
        Decoded::Der(der) => vec![der],
    };
    let count = ders.len();
    let mut leaf = None;
    for (i, der) in ders.iter().enumerate() {
        let parsed = match parse_x509_certificate(der) {
            Ok(([], cert)) => cert,
            _ if count == 1 => return Err("is not a valid X.509 certificate".to_owned()),
            _ => {
                return Err(format!(
                    "holds a chain whose certificate {} of {count} is not a valid X.509 certificate",
                    i + 1
                ));
            }
        };
        if i == 0 {
            let uid = parsed
                .subject()
                .iter_by_oid(&OID_USERID)
                .find_map(|attr| attr.as_str().ok())
                .map(str::trim)
                .filter(|uid| !uid.is_empty())
                .map(str::to_owned);
            let has_extension =
                |oid: &[u8]| parsed.extensions().iter().any(|e| e.oid.as_bytes() == oid);
            leaf = Some(Leaf {
                uid,
                not_before: parsed.validity().not_before.to_datetime(),
                not_after: parsed.validity().not_after.to_datetime(),
                public: PublicKey::from_spki(parsed.public_key().raw),
                apns_development: has_extension(OID_APPLE_APNS_DEVELOPMENT),
                apns_production: has_extension(OID_APPLE_APNS_PRODUCTION),
            });
        }
    }
    let leaf = leaf.ok_or_else(|| "holds no certificate".to_owned())?;
    let pem = ders.iter().map(|der| to_pem("CERTIFICATE", der)).collect();
    Ok(CertChain { pem, leaf })
}
