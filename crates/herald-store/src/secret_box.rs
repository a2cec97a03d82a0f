//! Encryption of credential content at rest (AES-256-GCM) and keyed hashing of auth tokens
//! (HMAC-SHA256). Both keys derive from one 32-byte master key, so a database dump alone reveals
//! neither an APNs key nor a service account, and a token hash cannot be brute-forced offline.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

/// The 32-byte master key. Never printed.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the base64 (or 64 hex digits) form used in `HERALD_MASTER_KEY` and the key file.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            STANDARD.decode(text).ok()
        };
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(key) => Ok(Self(key)),
            None => Err(StoreError::Config(
                "master key must be 32 bytes, given as base64 or 64 hex digits".into(),
            )),
        }
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("system random source");
        Self(key)
    }

    /// Reads `path`, or creates it (mode 0600) with a fresh key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_private_file(path, STANDARD.encode(key.0).as_bytes()).map_err(|e| {
                    StoreError::Config(format!("cannot write {}: {e}", path.display()))
                })?;
                Ok(key)
            }
            Err(error) => Err(StoreError::Config(format!(
                "cannot read {}: {error}",
                path.display()
            ))),
        }
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A key for another purpose (page tokens, ...), derived so it never equals the master key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        self.derive(purpose)
    }
}

/// Creates `path` with mode 0600 (owner read/write only) and writes `contents`.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Seals and opens secrets; hashes tokens.
pub struct SecretBox {
    aead: LessSafeKey,
    token_key: hmac::Key,
    rng: SystemRandom,
}

impl SecretBox {
    pub fn new(master: &MasterKey) -> Self {
        let aead_key =
            UnboundKey::new(&AES_256_GCM, &master.derive("herald credential content v1"))
                .expect("32-byte AES key");
        Self {
            aead: LessSafeKey::new(aead_key),
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &master.derive("herald token hash v1")),
            rng: SystemRandom::new(),
        }
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system random source");
        let mut sealed = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("AES-GCM seal");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreError::Decrypt)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::empty(), &mut buffer)
            .map_err(|_| StoreError::Decrypt)?;
        Ok(plain.to_vec())
    }

    /// HMAC-SHA256 of a token or secret, as stored. Tokens carry ≥ 128 bits of entropy, so a
    /// keyed fast hash is enough (no slow password hash needed).
    pub fn hash_token(&self, token: &str) -> Vec<u8> {
        hmac::sign(&self.token_key, token.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Constant-time check of `token` against a stored hash.
    pub fn verify_token(&self, token: &str, stored_hash: &[u8]) -> bool {
        hmac::verify(&self.token_key, token.as_bytes(), stored_hash).is_ok()
    }

    /// A new random secret: 32 lowercase hex digits (128 bits).
    pub fn random_token(&self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).expect("system random source");
        hex::encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let secrets = SecretBox::new(&MasterKey::generate());
        let sealed = secrets.seal(b"-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"));
        assert_eq!(
            secrets.open(&sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(secrets.open(&tampered).is_err());
        let other = SecretBox::new(&MasterKey::generate());
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn token_hash_verifies_only_the_token() {
        let secrets = SecretBox::new(&MasterKey::generate());
        let token = secrets.random_token();
        assert_eq!(token.len(), 32);
        let hash = secrets.hash_token(&token);
        assert!(secrets.verify_token(&token, &hash));
        assert!(!secrets.verify_token("nope", &hash));
    }

    #[test]
    fn master_key_parses_base64_and_hex() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
