//! Private keys: parsing with ring, normalization to PKCS#8 v1, and the public half used to match
//! a key with a certificate.
//!
//! Supported: RSA (2048–4096 bits, ring's limits), EC P-256 and P-384, Ed25519. Forms: PKCS#8
//! (`PRIVATE KEY`, v1 or v2), PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`). Every
//! accepted key is re-encoded as an unencrypted PKCS#8 v1 `PRIVATE KEY` that ring's `from_pkcs8`
//! loads (for EC keys that means with the public key embedded), so provider clients need one
//! code path only.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use super::der::{self, Reader};
use super::pem::{Decoded, Encoding, PemBlock, decode_field, to_pem};

// OID contents (without tag and length).
const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
const OID_DSA: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x01];

/// The elliptic curves ring signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    fn from_oid(oid: &[u8]) -> Option<Self> {
        match oid {
            OID_P256 => Some(Self::P256),
            OID_P384 => Some(Self::P384),
            _ => None,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Self::P256 => OID_P256,
            Self::P384 => OID_P384,
        }
    }

    fn signing_alg(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn scalar_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }
}

/// A public key, as much as matching needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    /// Something Herald cannot use; the text names it for messages.
    Unsupported(&'static str),
}

impl PublicKey {
    /// "an RSA-2048 key", "an EC P-256 key", ...
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Rsa { n, .. } => format!("an RSA-{} key", bit_len(n)),
            Self::Ec { curve, .. } => format!("an EC {} key", curve.name()),
            Self::Ed25519(_) => "an Ed25519 key".to_owned(),
            Self::Unsupported(what) => (*what).to_owned(),
        }
    }

    /// Reads a DER SubjectPublicKeyInfo (as found in certificates).
    pub(super) fn from_spki(spki: &[u8]) -> Self {
        Self::parse_spki(spki).unwrap_or(Self::Unsupported("an unreadable public key"))
    }

    fn parse_spki(spki: &[u8]) -> Option<Self> {
        let mut seq = der::sequence(spki)?;
        let mut alg = Reader::new(seq.read(der::SEQUENCE)?);
        let oid = alg.read(der::OID)?;
        let bits = seq.read(der::BIT_STRING)?;
        let (&unused, key) = bits.split_first()?;
        if unused != 0 {
            return None;
        }
        Some(match oid {
            OID_RSA => {
                let mut rsa = der::sequence(key)?;
                let n = der::strip_leading_zeros(rsa.read(der::INTEGER)?).to_vec();
                let e = der::strip_leading_zeros(rsa.read(der::INTEGER)?).to_vec();
                Self::Rsa { n, e }
            }
            OID_EC_PUBLIC_KEY => match alg.read_optional(der::OID).and_then(Curve::from_oid) {
                Some(curve) if key.first() == Some(&4) => Self::Ec {
                    curve,
                    point: key.to_vec(),
                },
                Some(_) => Self::Unsupported("a compressed-point EC key"),
                None => Self::Unsupported("an EC key on a curve other than P-256 and P-384"),
            },
            OID_ED25519 => Self::Ed25519(key.to_vec()),
            OID_RSA_PSS => Self::Unsupported("an RSA-PSS key"),
            OID_DSA => Self::Unsupported("a DSA key"),
            _ => Self::Unsupported("a key of an unsupported algorithm"),
        })
    }
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        Some(&first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// A parsed private key, normalized to PKCS#8 v1. Debug never shows the key.
pub(super) struct PrivateKey {
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public.describe())
            .field("pkcs8", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    pub(super) fn public(&self) -> &PublicKey {
        &self.public
    }

    pub(super) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// `-----BEGIN PRIVATE KEY-----` text.
    pub(super) fn to_pem(&self) -> String {
        to_pem("PRIVATE KEY", &self.pkcs8)
    }
}

/// Why a key was refused. Messages complete "content.privateKey ..." / "the private key ...".
#[derive(Debug)]
pub(super) enum KeyProblem {
    /// The key itself is unusable.
    Invalid(String),
    /// The key is fine but belongs to another public key than the one it was checked against.
    Mismatch,
}

impl KeyProblem {
    fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Parses a field holding one private key (see [`decode_field`] for the encodings). Messages
/// complete "private key ...".
pub(super) fn parse_key_field(
    value: &str,
    encoding: Encoding,
    expected_public: Option<&PublicKey>,
) -> Result<PrivateKey, KeyProblem> {
    match decode_field(value, encoding).map_err(KeyProblem::Invalid)? {
        Decoded::Pem(blocks) => {
            let mut keys = blocks.iter().filter(|b| b.is_private_key());
            match (keys.next(), keys.next()) {
                (Some(key), None) => parse_private_key(&key.label, &key.der, expected_public),
                (Some(_), Some(_)) => Err(KeyProblem::invalid("holds more than one private key")),
                (None, _) if blocks.iter().any(|b| b.label.ends_with("PUBLIC KEY")) => Err(
                    KeyProblem::invalid("holds a public key; Herald needs the private key"),
                ),
                (None, _) if blocks.iter().any(PemBlock::is_certificate) => Err(
                    KeyProblem::invalid("holds a certificate, not a private key"),
                ),
                (None, _) => Err(KeyProblem::invalid(
                    "holds no private key (expected a -----BEGIN PRIVATE KEY----- block)",
                )),
            }
        }
        Decoded::Der(der) => parse_private_key_der(&der, expected_public),
    }
}

/// Parses one PEM block (by its label) holding a private key.
pub(super) fn parse_private_key(
    label: &str,
    der: &[u8],
    expected_public: Option<&PublicKey>,
) -> Result<PrivateKey, KeyProblem> {
    match label {
        "PRIVATE KEY" => from_pkcs8(der, expected_public),
        "RSA PRIVATE KEY" => from_pkcs1(der),
        "EC PRIVATE KEY" => from_sec1(der, None, expected_public),
        "ENCRYPTED PRIVATE KEY" => Err(KeyProblem::invalid(
            "is an encrypted private key; Herald needs it without a passphrase \
             (openssl pkcs8 -in key.pem -nocrypt -out plain.pem)",
        )),
        "OPENSSH PRIVATE KEY" => Err(KeyProblem::invalid(
            "is an OpenSSH private key; Herald needs PEM (PKCS#8, PKCS#1 or SEC1)",
        )),
        "DSA PRIVATE KEY" => Err(KeyProblem::invalid(
            "is a DSA key, which Herald does not support",
        )),
        _ => Err(KeyProblem::invalid(format!(
            "is a \"{label}\", which Herald does not read (use PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ))),
    }
}

/// Whether `der` looks like a PKCS#12 (`.p12` / `.pfx`) bundle: `SEQUENCE { INTEGER 3,
/// SEQUENCE ... }`.
pub(super) fn is_pkcs12(der: &[u8]) -> bool {
    der::sequence(der).is_some_and(|mut seq| {
        seq.read(der::INTEGER).and_then(der::small_uint) == Some(3)
            && seq.peek_tag() == Some(der::SEQUENCE)
    })
}

/// What to say about a PKCS#12 bundle; completes "certificate ..." / "private key ...".
pub(super) const PKCS12_MESSAGE: &str = "is a PKCS#12 (.p12) bundle; Herald needs the certificate \
     and the private key as PEM (openssl pkcs12 -in cert.p12 -nodes -out cert.pem)";

/// A private key given as bare DER: the form is told apart by its second element
/// (PKCS#8: AlgorithmIdentifier, PKCS#1: INTEGER modulus, SEC1: OCTET STRING scalar).
pub(super) fn parse_private_key_der(
    der: &[u8],
    expected_public: Option<&PublicKey>,
) -> Result<PrivateKey, KeyProblem> {
    if is_pkcs12(der) {
        return Err(KeyProblem::invalid(PKCS12_MESSAGE));
    }
    let label = der::sequence(der)
        .and_then(|mut seq| {
            seq.read(der::INTEGER)?;
            seq.peek_tag()
        })
        .map(|tag| match tag {
            der::SEQUENCE => "PRIVATE KEY",
            der::INTEGER => "RSA PRIVATE KEY",
            der::OCTET_STRING => "EC PRIVATE KEY",
            _ => "",
        });
    match label {
        Some(label) if !label.is_empty() => parse_private_key(label, der, expected_public),
        _ => Err(KeyProblem::invalid(
            "is not a private key (neither PEM nor a DER key)",
        )),
    }
}

fn from_pkcs8(der: &[u8], expected_public: Option<&PublicKey>) -> Result<PrivateKey, KeyProblem> {
    let malformed = || KeyProblem::invalid("is not a valid PKCS#8 private key");
    let mut seq = der::sequence(der).ok_or_else(malformed)?;
    let version = seq.read(der::INTEGER).and_then(der::small_uint);
    if !matches!(version, Some(0 | 1)) {
        return Err(malformed());
    }
    let (tag, alg_contents, _) = seq.read_any().ok_or_else(malformed)?;
    if tag != der::SEQUENCE {
        return Err(malformed());
    }
    let mut alg = Reader::new(alg_contents);
    let oid = alg.read(der::OID).ok_or_else(malformed)?;
    let inner = seq.read(der::OCTET_STRING).ok_or_else(malformed)?;
    // A PKCS#8 that ring loads as it is stays byte for byte as given; others are rebuilt.
    match oid {
        OID_RSA => match RsaKeyPair::from_pkcs8(der) {
            Ok(pair) => Ok(PrivateKey {
                pkcs8: der.to_vec(),
                public: rsa_public(&pair),
            }),
            Err(_) => from_pkcs1(inner),
        },
        OID_EC_PUBLIC_KEY => {
            let curve = match alg.read_optional(der::OID) {
                Some(curve_oid) => Some(Curve::from_oid(curve_oid).ok_or_else(|| {
                    KeyProblem::invalid(
                        "is an EC key on a curve Herald does not support (only P-256 and P-384)",
                    )
                })?),
                None => None,
            };
            if let Some(curve) = curve
                && let Ok(pair) =
                    EcdsaKeyPair::from_pkcs8(curve.signing_alg(), der, &SystemRandom::new())
            {
                return Ok(PrivateKey {
                    pkcs8: der.to_vec(),
                    public: PublicKey::Ec {
                        curve,
                        point: pair.public_key().as_ref().to_vec(),
                    },
                });
            }
            from_sec1(inner, curve, expected_public)
        }
        OID_ED25519 => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| KeyProblem::invalid("is not a valid Ed25519 private key"))?;
            Ok(PrivateKey {
                pkcs8: der.to_vec(),
                public: PublicKey::Ed25519(pair.public_key().as_ref().to_vec()),
            })
        }
        OID_RSA_PSS => Err(KeyProblem::invalid(
            "is an RSA-PSS key, which Herald does not support (use a plain RSA key)",
        )),
        OID_DSA => Err(KeyProblem::invalid(
            "is a DSA key, which Herald does not support",
        )),
        _ => Err(KeyProblem::invalid(
            "uses a key algorithm Herald does not support (RSA, EC P-256/P-384 and Ed25519 are)",
        )),
    }
}

fn rsa_message(rejected: &ring::error::KeyRejected) -> String {
    match rejected.to_string().as_str() {
        "TooSmall" => "is an RSA key smaller than 2048 bits, which Herald does not accept".into(),
        "TooLarge" => "is an RSA key larger than 4096 bits, which Herald does not accept".into(),
        "InvalidEncoding" => "is not a valid RSA private key".into(),
        "InconsistentComponents" => {
            "is a corrupt RSA private key (its components do not fit together)".into()
        }
        "VersionNotSupported" => "is a multi-prime RSA key, which Herald does not support".into(),
        "PrivateModulusLenNotMultipleOf512Bits" => {
            "is an RSA key whose size is not a multiple of 512 bits, which Herald does not support"
                .into()
        }
        "InvalidComponent" => {
            "is an RSA key with an unusable component (e.g. a public exponent below 65537)".into()
        }
        other => format!("is an RSA private key that was rejected ({other})"),
    }
}

fn from_pkcs1(rsa_der: &[u8]) -> Result<PrivateKey, KeyProblem> {
    let pair = RsaKeyPair::from_der(rsa_der).map_err(|e| KeyProblem::Invalid(rsa_message(&e)))?;
    let algorithm = der::constructed(
        der::SEQUENCE,
        &[&der::tlv(der::OID, OID_RSA), &der::tlv(der::NULL, &[])],
    );
    let pkcs8 = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::INTEGER, &[0]),
            &algorithm,
            &der::tlv(der::OCTET_STRING, rsa_der),
        ],
    );
    // The provider clients load keys with `from_pkcs8`; make sure that works on what we store.
    RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| KeyProblem::Invalid(rsa_message(&e)))?;
    Ok(PrivateKey {
        pkcs8,
        public: rsa_public(&pair),
    })
}

fn rsa_public(pair: &RsaKeyPair) -> PublicKey {
    let components: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    PublicKey::Rsa {
        n: der::strip_leading_zeros(&components.n).to_vec(),
        e: der::strip_leading_zeros(&components.e).to_vec(),
    }
}

/// A SEC1 `ECPrivateKey`. `outer_curve` is the curve named by a PKCS#8 wrapper, if any. When the
/// key does not embed its public key, the one expected (from the certificate) is used, and ring
/// checks that it belongs to the private key.
fn from_sec1(
    sec1: &[u8],
    outer_curve: Option<Curve>,
    expected_public: Option<&PublicKey>,
) -> Result<PrivateKey, KeyProblem> {
    let malformed = || KeyProblem::invalid("is not a valid EC private key");
    let mut seq = der::sequence(sec1).ok_or_else(malformed)?;
    if seq.read(der::INTEGER).and_then(der::small_uint) != Some(1) {
        return Err(malformed());
    }
    let scalar = seq.read(der::OCTET_STRING).ok_or_else(malformed)?;
    let inner_curve = match seq.read_optional(der::CONTEXT_0) {
        Some(params) => {
            let oid = Reader::new(params).read(der::OID).ok_or_else(|| {
                KeyProblem::invalid(
                    "is an EC key with explicit curve parameters; Herald needs a named curve",
                )
            })?;
            Some(Curve::from_oid(oid).ok_or_else(|| {
                KeyProblem::invalid(
                    "is an EC key on a curve Herald does not support (only P-256 and P-384)",
                )
            })?)
        }
        None => None,
    };
    let embedded_public = match seq.read_optional(der::CONTEXT_1) {
        Some(bits) => {
            let bits = Reader::new(bits)
                .read(der::BIT_STRING)
                .ok_or_else(malformed)?;
            match bits.split_first() {
                Some((0, point)) => Some(point),
                _ => return Err(malformed()),
            }
        }
        None => None,
    };
    let curve = match (outer_curve, inner_curve) {
        (Some(a), Some(b)) if a != b => return Err(malformed()),
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(KeyProblem::invalid(
                "is an EC key that does not name its curve",
            ));
        }
    };
    if scalar.len() > curve.scalar_len() {
        return Err(malformed());
    }
    let mut padded = vec![0u8; curve.scalar_len() - scalar.len()];
    padded.extend_from_slice(scalar);

    let rng = SystemRandom::new();
    let alg = curve.signing_alg();
    let point = match embedded_public {
        Some(point) => point.to_vec(),
        None => match expected_public {
            Some(PublicKey::Ec { curve: c, point }) if *c == curve => {
                EcdsaKeyPair::from_private_key_and_public_key(alg, &padded, point, &rng).map_err(
                    |e| match e.to_string().as_str() {
                        "InconsistentComponents" => KeyProblem::Mismatch,
                        _ => malformed(),
                    },
                )?;
                point.clone()
            }
            Some(_) => return Err(KeyProblem::Mismatch),
            None => {
                return Err(KeyProblem::invalid(
                    "is an EC key without its public key, which Herald needs embedded; \
                     re-export it (openssl ec -in key.pem | openssl pkey -out fixed.pem)",
                ));
            }
        },
    };

    let mut bit_string = vec![0u8];
    bit_string.extend_from_slice(&point);
    let normalized_sec1 = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::INTEGER, &[1]),
            &der::tlv(der::OCTET_STRING, &padded),
            &der::tlv(der::CONTEXT_0, &der::tlv(der::OID, curve.oid())),
            &der::tlv(der::CONTEXT_1, &der::tlv(der::BIT_STRING, &bit_string)),
        ],
    );
    let algorithm = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, OID_EC_PUBLIC_KEY),
            &der::tlv(der::OID, curve.oid()),
        ],
    );
    let pkcs8 = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::INTEGER, &[0]),
            &algorithm,
            &der::tlv(der::OCTET_STRING, &normalized_sec1),
        ],
    );
    let pair =
        EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).map_err(|e| match e.to_string().as_str() {
            "InconsistentComponents" => KeyProblem::invalid(
                "is a corrupt EC private key (its embedded public key does not belong to it)",
            ),
            _ => malformed(),
        })?;
    Ok(PrivateKey {
        public: PublicKey::Ec {
            curve,
            point: pair.public_key().as_ref().to_vec(),
        },
        pkcs8,
    })
}

/// Whether `key` is the private half of `public`.
pub(super) fn matches(key: &PrivateKey, public: &PublicKey) -> bool {
    !matches!(public, PublicKey::Unsupported(_)) && key.public() == public
}

/// Checks that a PKCS#8 key loads as an APNs token-auth key (ES256).
pub(super) fn is_es256_pkcs8(pkcs8: &[u8]) -> bool {
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .is_ok()
}

/// Checks that a PKCS#8 key loads as an RSA key (FCM service accounts sign RS256).
pub(super) fn is_rsa_pkcs8(pkcs8: &[u8]) -> bool {
    RsaKeyPair::from_pkcs8(pkcs8).is_ok()
}
