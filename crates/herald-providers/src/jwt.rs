//! Compact JWS signing with ring: ES256 (APNs provider tokens) and RS256 (Google OAuth assertions).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::error::ProviderError;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Private key DER from PEM text, base64 of PEM text, or base64 of DER.
fn private_key_der(material: &str, what: &str) -> Result<PrivateKeyDer<'static>, ProviderError> {
    let text = material.trim();
    if text.contains("-----BEGIN") {
        return PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| ProviderError::InvalidCredential(format!("{what}: PEM: {e}")));
    }
    let compact: String = text.split_whitespace().collect();
    let decoded = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| ProviderError::InvalidCredential(format!("{what}: neither PEM nor base64")))?;
    if decoded.windows(10).any(|w| w == b"-----BEGIN") {
        return PrivateKeyDer::from_pem_slice(&decoded)
            .map_err(|e| ProviderError::InvalidCredential(format!("{what}: PEM: {e}")));
    }
    PrivateKeyDer::try_from(decoded)
        .map_err(|e| ProviderError::InvalidCredential(format!("{what}: {e}")))
}

/// An APNs signing key (`.p8`, P-256 PKCS#8).
pub(crate) struct Es256Key {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256Key {
    pub(crate) fn from_pem(pem: &str) -> Result<Self, ProviderError> {
        let der = private_key_der(pem, "APNs private key")?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(ProviderError::InvalidCredential(
                "APNs private key: expected a PKCS#8 (.p8) key".into(),
            ));
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| {
            ProviderError::InvalidCredential(format!("APNs private key: not a P-256 key ({e})"))
        })?;
        Ok(Es256Key { key, rng })
    }

    #[cfg(test)]
    pub(crate) fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }

    /// `header.claims.signature` with the given JSON header and claims.
    pub(crate) fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing with a valid key does not fail");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

/// A service-account RSA key.
pub(crate) struct Rs256Key {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Rs256Key {
    pub(crate) fn from_pem(pem: &str) -> Result<Self, ProviderError> {
        let der = private_key_der(pem, "service account private_key")?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()),
            _ => {
                return Err(ProviderError::InvalidCredential(
                    "service account private_key: expected an RSA key".into(),
                ));
            }
        }
        .map_err(|e| {
            ProviderError::InvalidCredential(format!(
                "service account private_key: not a usable RSA key ({e})"
            ))
        })?;
        Ok(Rs256Key {
            key,
            rng: SystemRandom::new(),
        })
    }

    #[cfg(test)]
    pub(crate) fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }

    pub(crate) fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("RSA signing with a valid key does not fail");
        format!("{signing_input}.{}", b64url(&signature))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::{Value, json};

    pub(crate) const APNS_KEY_PEM: &str = include_str!("testdata/apns-key.p8");
    pub(crate) const RSA_KEY_PEM: &str = include_str!("testdata/rsa-key.pem");

    /// Splits a compact JWS into (header, claims, signing input, signature).
    pub(crate) fn decode(jwt: &str) -> (Value, Value, String, Vec<u8>) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        (
            header,
            claims,
            format!("{}.{}", parts[0], parts[1]),
            signature,
        )
    }

    #[test]
    fn es256_signature_verifies() {
        let key = Es256Key::from_pem(APNS_KEY_PEM).unwrap();
        let jwt = key.sign(
            &json!({"alg": "ES256", "kid": "ABC123DEFG"}),
            &json!({"iss": "TEAM123456", "iat": 1}),
        );
        let (header, claims, input, signature) = decode(&jwt);
        assert_eq!(header, json!({"alg": "ES256", "kid": "ABC123DEFG"}));
        assert_eq!(claims, json!({"iss": "TEAM123456", "iat": 1}));
        assert_eq!(signature.len(), 64);
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key());
        public.verify(input.as_bytes(), &signature).unwrap();
        assert!(public.verify(b"tampered", &signature).is_err());
    }

    #[test]
    fn rs256_signature_verifies() {
        let key = Rs256Key::from_pem(RSA_KEY_PEM).unwrap();
        let jwt = key.sign(&json!({"alg": "RS256"}), &json!({"iss": "x"}));
        let (_, _, input, signature) = decode(&jwt);
        assert_eq!(signature.len(), 256);
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key());
        public.verify(input.as_bytes(), &signature).unwrap();
        assert!(public.verify(b"tampered", &signature).is_err());
    }

    #[test]
    fn key_material_forms() {
        // base64 of the PEM text, as the API's credential content carries it.
        let b64_pem = STANDARD.encode(APNS_KEY_PEM);
        assert!(Es256Key::from_pem(&b64_pem).is_ok());
        // base64 of the DER (the body of the .p8 file).
        let body: String = APNS_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(Es256Key::from_pem(&body).is_ok());
        // Wrong kinds of key.
        let err = Es256Key::from_pem(RSA_KEY_PEM).err().unwrap();
        assert!(err.to_string().contains("P-256"), "{err}");
        let err = Rs256Key::from_pem(APNS_KEY_PEM).err().unwrap();
        assert!(err.to_string().contains("RSA"), "{err}");
        let err = Es256Key::from_pem("not a key!").err().unwrap();
        assert!(err.to_string().contains("neither PEM nor base64"), "{err}");
    }
}
