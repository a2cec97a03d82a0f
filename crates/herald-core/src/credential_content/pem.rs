//! A tolerant PEM reader and the decoding of credential fields (raw PEM text, or base64 of PEM
//! text or of DER).
//!
//! Tolerant because users paste keys in many shapes: Twilio's own docs show a certificate on one
//! line (`-----BEGIN CERTIFICATE-----MIIF...-----END CERTIFICATE-----`), YAML indents it, JSON
//! strings carry it with literal `\n` escapes, and `openssl pkcs12` puts `Bag Attributes` text
//! around it. So: text outside blocks is ignored, whitespace and literal `\n` / `\r` / `\t`
//! escapes inside a block are dropped, and blocks may follow each other on one line.
//!
//! No message made here quotes the input: only the block label (from a restricted alphabet) and
//! fixed text.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const ENCODE: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`, ...) and its decoded DER bytes.
pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) der: Vec<u8>,
}

impl fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("der", &format_args!("<{} bytes>", self.der.len()))
            .finish()
    }
}

impl PemBlock {
    pub(super) fn is_private_key(&self) -> bool {
        self.label.ends_with("PRIVATE KEY")
    }

    pub(super) fn is_certificate(&self) -> bool {
        matches!(self.label.as_str(), "CERTIFICATE" | "X509 CERTIFICATE")
    }
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored; no block at all gives an
/// empty list.
pub(super) fn parse_pem(text: &str) -> Result<Vec<PemBlock>, String> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let Some(label_len) = after_begin.find(DASHES) else {
            return Err("has a -----BEGIN line that is not closed by -----".to_owned());
        };
        let label = after_begin[..label_len].trim();
        let label_ok = !label.is_empty()
            && label.len() <= 64
            && label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'-');
        if !label_ok {
            return Err("has a malformed -----BEGIN line".to_owned());
        }
        let body_and_rest = &after_begin[label_len + DASHES.len()..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_len) = body_and_rest.find(&end_marker) else {
            return Err(format!("has no {end_marker} line"));
        };
        let body = &body_and_rest[..body_len];
        rest = &body_and_rest[body_len + end_marker.len()..];

        if body.contains(':') {
            return Err(if body.contains("ENCRYPTED") {
                format!(
                    "holds an encrypted {label} (Proc-Type: 4,ENCRYPTED); Herald needs the key \
                     without a passphrase"
                )
            } else {
                format!("has a {label} block with PEM headers, which Herald does not read")
            });
        }
        let Some(der) = decode_base64(&clean_base64(body)) else {
            return Err(format!(
                "has a {label} block whose content is not valid base64"
            ));
        };
        if der.is_empty() {
            return Err(format!("has an empty {label} block"));
        }
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    Ok(blocks)
}

/// Drops ASCII whitespace and literal `\n`, `\r`, `\t` escapes (a backslash is never base64, so
/// this cannot change valid content).
fn clean_base64(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && matches!(bytes.get(i + 1), Some(b'n' | b'r' | b't')) {
            i += 2;
            continue;
        }
        if !b.is_ascii_whitespace() {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// Base64 in the standard or URL-safe alphabet, padded or not; ASCII whitespace is ignored.
pub(super) fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return None;
    }
    STANDARD_LENIENT
        .decode(&compact)
        .or_else(|_| URL_SAFE_LENIENT.decode(&compact))
        .ok()
}

/// PEM text of one block: 64-column lines, trailing newline.
pub(super) fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = ENCODE.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// What a credential field held once decoded.
pub(super) enum Decoded {
    /// PEM text (given raw or base64-encoded): its blocks, at least one.
    Pem(Vec<PemBlock>),
    /// Base64 of binary data that starts like DER (a SEQUENCE).
    Der(Vec<u8>),
}

/// Whether a field may carry base64 or only raw PEM text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Raw PEM text, or base64 of PEM text, or base64 of DER (Push API fields).
    PemOrBase64,
    /// Raw PEM text only (Chat API form fields, service-account `private_key`).
    PemOnly,
}

/// Decodes a field value. Error messages complete the sentence "content.X ...".
pub(super) fn decode_field(value: &str, encoding: Encoding) -> Result<Decoded, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.contains("-----BEGIN") {
        return parse_pem(value).map(Decoded::Pem);
    }
    if encoding == Encoding::PemOnly {
        return Err("is not PEM text (there is no -----BEGIN line)".to_owned());
    }
    let Some(bytes) = decode_base64(value.as_bytes()) else {
        return Err("is neither PEM text nor valid base64".to_owned());
    };
    if contains(&bytes, b"-----BEGIN") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err("decodes from base64 to PEM that is not valid UTF-8 text".to_owned());
        };
        return parse_pem(text).map(Decoded::Pem);
    }
    if bytes.first() == Some(&super::der::SEQUENCE) {
        return Ok(Decoded::Der(bytes));
    }
    Err("decodes from base64 to neither PEM text nor DER".to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "-----BEGIN CERTIFICATE-----\nAAEC\nAwQ=\n-----END CERTIFICATE-----\n";

    #[test]
    fn reads_blocks_in_any_layout() {
        let layouts = [
            ONE.to_owned(),
            "Bag Attributes\n  localKeyID: 01\n".to_owned() + ONE,
            "-----BEGIN CERTIFICATE-----AAECAwQ=-----END CERTIFICATE-----".to_owned(),
            "-----BEGIN CERTIFICATE----- AAEC AwQ= -----END CERTIFICATE-----".to_owned(),
            "-----BEGIN CERTIFICATE-----\\nAAEC\\nAwQ=\\n-----END CERTIFICATE-----\\n".to_owned(),
            ONE.replace('\n', "\r\n"),
            ONE.lines().map(|l| format!("    {l}\n")).collect(),
        ];
        for text in layouts {
            let blocks = parse_pem(&text).unwrap();
            assert_eq!(blocks.len(), 1, "{text:?}");
            assert_eq!(blocks[0].label, "CERTIFICATE");
            assert_eq!(blocks[0].der, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn reads_several_blocks() {
        let text = format!("{ONE}junk\n{}", ONE.replace("AAEC\nAwQ=", "BQY="));
        let blocks = parse_pem(&text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].der, [5, 6]);
    }

    #[test]
    fn rejects_broken_blocks() {
        assert!(parse_pem("-----BEGIN CERTIFICATE-----\nAAEC\n").is_err());
        assert!(parse_pem("-----BEGIN CERTIFICATE\nAAEC").is_err());
        assert!(parse_pem("-----BEGIN certificate-----\nAAEC\n-----END certificate-----").is_err());
        assert!(parse_pem("-----BEGIN X-----\n!!!!\n-----END X-----").is_err());
        assert!(parse_pem("-----BEGIN X-----\n\n-----END X-----").is_err());
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                         DEK-Info: AES-128-CBC,00\n\nAAEC\n-----END RSA PRIVATE KEY-----";
        assert!(parse_pem(encrypted).unwrap_err().contains("encrypted"));
        assert!(parse_pem("no pem here").unwrap().is_empty());
    }

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255).collect();
        let text = to_pem("PRIVATE KEY", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let blocks = parse_pem(&text).unwrap();
        assert_eq!(blocks[0].der, der);
    }

    #[test]
    fn decodes_fields() {
        let b64 = ENCODE.encode(ONE);
        assert!(
            matches!(decode_field(&b64, Encoding::PemOrBase64), Ok(Decoded::Pem(b)) if b.len() == 1)
        );
        assert!(matches!(
            decode_field(ONE, Encoding::PemOnly),
            Ok(Decoded::Pem(_))
        ));
        assert!(decode_field(&b64, Encoding::PemOnly).is_err());
        assert!(
            matches!(decode_field("MAA=", Encoding::PemOrBase64), Ok(Decoded::Der(d)) if d == [0x30, 0])
        );
        assert!(decode_field("%%%", Encoding::PemOrBase64).is_err());
        assert!(decode_field(" ", Encoding::PemOrBase64).is_err());
        assert!(decode_field("aGVsbG8=", Encoding::PemOrBase64).is_err());
        // wrapped base64 (as `base64` prints it) and URL-safe base64 are accepted
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap().to_owned() + "\n")
            .collect();
        assert!(matches!(
            decode_field(&wrapped, Encoding::PemOrBase64),
            Ok(Decoded::Pem(_))
        ));
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x30, 0xfb, 0xff]);
        assert!(matches!(
            decode_field(&url_safe, Encoding::PemOrBase64),
            Ok(Decoded::Der(_))
        ));
    }
}
