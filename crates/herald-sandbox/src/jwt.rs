//! Minimal JWS compact parsing and signature verification (ES256 for APNs, RS256 for Google OAuth).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::Value;

pub(crate) struct Jwt<'a> {
    pub header: Value,
    pub claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    /// Parses `header.claims.signature`; both JSON parts must be objects.
    pub fn parse(token: &'a str) -> Option<Jwt<'a>> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&b64(h)?).ok()?;
        let claims: Value = serde_json::from_slice(&b64(c)?).ok()?;
        if !header.is_object() || !claims.is_object() {
            return None;
        }
        Some(Jwt {
            header,
            claims,
            signing_input: &token[..h.len() + 1 + c.len()],
            signature: b64(s)?,
        })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim (`iat`, `exp`); JSON numbers with a fraction are truncated like most
    /// servers do.
    pub fn claim_i64(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// ES256: a 64-byte r‖s signature by the P-256 key whose uncompressed point is `public_key`.
    pub fn verify_es256(&self, public_key: &[u8]) -> bool {
        self.header_str("alg") == Some("ES256")
            && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
    }

    /// RS256 with the DER RSAPublicKey `public_key`.
    pub fn verify_rs256(&self, public_key: &[u8]) -> bool {
        self.header_str("alg") == Some("RS256")
            && UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
    }
}

fn b64(part: &str) -> Option<Vec<u8>> {
    // JWTs use unpadded base64url; tolerate padding some encoders add.
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}
