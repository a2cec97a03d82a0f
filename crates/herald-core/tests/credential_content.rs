//! Credential content validation against the fixtures in `testdata/credentials/`.
//!
//! Every rejection goes through [`errors`], which also checks that no error (path or message)
//! contains any piece of the private keys used in these tests.

use std::collections::HashSet;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_core::credential_content::{
    ApnAuthMethod, ApnFacts, ContentError, CredentialFacts, CredentialSecret, FcmFacts,
    FcmSecretKind, PushCredentialType, ValidatedContent, classify_fcm_secret, validate_chat_apn,
    validate_chat_gcm_api_key, validate_push_content, validate_push_content_at,
};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use PushCredentialType::{Apn, ApnSandbox, Fcm};

// ---------------------------------------------------------------------------------------------
// helpers

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../testdata/credentials/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

/// The DER inside the first PEM block of `pem`.
fn der_of(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).unwrap()
}

/// A fixed "now" inside every fixture's validity except the expired / not-yet-valid ones.
fn now() -> OffsetDateTime {
    datetime!(2026-06-01 12:00 UTC)
}

fn accept(kind: PushCredentialType, content: Value) -> ValidatedContent {
    match validate_push_content_at(kind, &content, now()) {
        Ok(v) => {
            assert_no_secret(&format!("{v:?}"));
            v
        }
        Err(e) => panic!("expected {kind} content to be accepted, got {e:#?}"),
    }
}

fn errors(kind: PushCredentialType, content: Value) -> Vec<ContentError> {
    match validate_push_content_at(kind, &content, now()) {
        Ok(v) => panic!("expected {kind} content to be rejected, got {v:?}"),
        Err(errors) => {
            check_errors(&errors);
            errors
        }
    }
}

fn check_errors(errors: &[ContentError]) {
    assert!(!errors.is_empty());
    for e in errors {
        assert!(!e.message.is_empty(), "{e:?}");
        assert_no_secret(&e.path);
        assert_no_secret(&e.message);
        assert_no_secret(&e.to_string());
        assert_no_secret(&format!("{e:?}"));
    }
}

/// Asserts there is exactly one error, at `path`, whose message contains `needle`.
#[track_caller]
fn assert_one(errors: &[ContentError], path: &str, needle: &str) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_has(errors, path, needle);
}

/// Asserts some error is at `path` with a message containing `needle`.
#[track_caller]
fn assert_has(errors: &[ContentError], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path} containing {needle:?} in {errors:#?}"
    );
}

/// Every 16-character window of every private key used here (PEM body and base64 of the PEM
/// file, as posted), plus the service account key.
fn secret_windows() -> &'static HashSet<String> {
    static WINDOWS: OnceLock<HashSet<String>> = OnceLock::new();
    WINDOWS.get_or_init(|| {
        let mut secrets: Vec<String> = [
            "apns-key.pem",
            "apns-key-pkcs1.pem",
            "apns-expired-key.pem",
            "apns-chain-leaf-key.pem",
            "apns-ec-key-sec1.pem",
            "apns-ec-key-sec1-no-public.pem",
            "ed25519-key.pem",
            "other-rsa-key.pem",
            "rsa-1024-key.pem",
            "encrypted-key.pem",
            "apns-auth-key.p8",
            "apns-auth-key-no-public.p8",
            "p384-key.pem",
        ]
        .iter()
        .map(|name| fixture(name))
        .collect();
        let sa = fixture_json("fcm-service-account.json");
        secrets.push(sa["private_key"].as_str().unwrap().to_owned());
        let mut windows = HashSet::new();
        // the service account as posted (its other members are not secret by themselves)
        let posted: Vec<char> = b64(&fixture("fcm-service-account.json")).chars().collect();
        for w in posted.windows(16) {
            windows.insert(w.iter().collect::<String>());
        }
        for secret in secrets {
            let body: String = secret
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            for text in [body, b64(&secret)] {
                let chars: Vec<char> = text.chars().collect();
                for w in chars.windows(16) {
                    windows.insert(w.iter().collect::<String>());
                }
            }
        }
        windows
    })
}

#[track_caller]
fn assert_no_secret(text: &str) {
    let windows = secret_windows();
    let chars: Vec<char> = text.chars().collect();
    for w in chars.windows(16) {
        let w: String = w.iter().collect();
        assert!(
            !windows.contains(&w),
            "secret material leaked: {w:?} in {text:?}"
        );
    }
}

fn cert_content(cert: &str, key: &str) -> Value {
    json!({"certificate": b64(&fixture(cert)), "privateKey": b64(&fixture(key))})
}

fn token_content() -> Value {
    fixture_json("apn-token-content.json")
}

fn sa() -> serde_json::Map<String, Value> {
    match fixture_json("fcm-service-account.json") {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn fcm_content(sa: &serde_json::Map<String, Value>) -> Value {
    json!({"privateKey": b64(&serde_json::to_string(sa).unwrap())})
}

fn apn_facts(v: &ValidatedContent) -> &ApnFacts {
    match &v.facts {
        CredentialFacts::Apn(f) => f,
        other => panic!("not APN facts: {other:?}"),
    }
}

fn assert_rsa_pkcs8_pem(pem: &str) {
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{}",
        pem.len()
    );
    assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
    RsaKeyPair::from_pkcs8(&der_of(pem)).expect("normalized key loads with ring");
}

fn cert_and_key(v: &ValidatedContent) -> (&str, &str) {
    match &v.secret {
        CredentialSecret::ApnCertificate { cert_pem, key_pem } => (cert_pem, key_pem),
        other => panic!("not a certificate secret: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// APNs certificate auth: accepted

#[test]
fn apn_cert_fixture_content_is_accepted_for_both_apn_types() {
    for kind in [Apn, ApnSandbox] {
        let v = accept(kind, fixture_json("apn-cert-content.json"));
        assert_eq!(
            v.facts,
            CredentialFacts::Apn(ApnFacts {
                auth_method: ApnAuthMethod::Certificate,
                topic: "com.example.herald".into(),
                expires_at: Some(datetime!(2125-01-01 0:00 UTC)),
            })
        );
        let (cert_pem, key_pem) = cert_and_key(&v);
        assert_eq!(der_of(cert_pem), der_of(&fixture("apns-cert.pem")));
        assert_eq!(cert_pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert_rsa_pkcs8_pem(key_pem);
        assert_eq!(der_of(key_pem), der_of(&fixture("apns-key.pem")));
    }
}

#[test]
fn apn_cert_pkcs1_key_with_bundle_id_is_accepted_and_normalized_to_pkcs8() {
    let v = accept(Apn, fixture_json("apn-cert-content-bundle-id.json"));
    assert_eq!(apn_facts(&v).topic, "com.example.herald.voip");
    let (_, key_pem) = cert_and_key(&v);
    assert_rsa_pkcs8_pem(key_pem);
    // PKCS#1 wrapped into PKCS#8 gives exactly openssl's PKCS#8 encoding of the same key
    assert_eq!(der_of(key_pem), der_of(&fixture("apns-key.pem")));
}

#[test]
fn apn_cert_accepts_raw_pem_text_and_base64_der_certificate() {
    let raw =
        json!({"certificate": fixture("apns-cert.pem"), "privateKey": fixture("apns-key.pem")});
    assert_eq!(apn_facts(&accept(Apn, raw)).topic, "com.example.herald");

    let der = json!({
        "certificate": STANDARD.encode(der_of(&fixture("apns-cert.pem"))),
        "privateKey": b64(&fixture("apns-key.pem")),
    });
    assert_eq!(apn_facts(&accept(Apn, der)).topic, "com.example.herald");

    // base64 wrapped at 76 columns, as `base64` prints it, and a base64 DER PKCS#8 key
    let wrapped: String = b64(&fixture("apns-cert.pem"))
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let v = accept(
        Apn,
        json!({"certificate": wrapped, "privateKey": STANDARD.encode(der_of(&fixture("apns-key.pem")))}),
    );
    assert_eq!(apn_facts(&v).topic, "com.example.herald");
}

#[test]
fn apn_cert_accepts_a_chain_and_keeps_it_leaf_first() {
    let v = accept(
        Apn,
        cert_content("apns-chain.pem", "apns-chain-leaf-key.pem"),
    );
    let (cert_pem, _) = cert_and_key(&v);
    assert_eq!(cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    let chain = fixture("apns-chain.pem");
    assert_eq!(der_of(cert_pem), der_of(&chain));
    assert!(cert_pem.ends_with(&fixture("test-ca-cert.pem")));
    assert_eq!(apn_facts(&v).topic, "com.example.herald");
}

#[test]
fn apn_cert_accepts_a_combined_cert_and_key_file_in_both_fields() {
    let combined = format!(
        "Bag Attributes\n    friendlyName: Apple Push Services\n{}{}",
        fixture("apns-cert.pem"),
        fixture("apns-key.pem")
    );
    let v = accept(
        Apn,
        json!({"certificate": b64(&combined), "privateKey": b64(&combined)}),
    );
    let (cert_pem, key_pem) = cert_and_key(&v);
    assert!(!cert_pem.contains("PRIVATE KEY"));
    assert!(!key_pem.contains("CERTIFICATE"));
}

#[test]
fn apn_cert_accepts_ec_certificates_with_sec1_keys_with_or_without_public_key() {
    for key in ["apns-ec-key-sec1.pem", "apns-ec-key-sec1-no-public.pem"] {
        let v = accept(Apn, cert_content("apns-ec-cert.pem", key));
        let (_, key_pem) = cert_and_key(&v);
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &der_of(key_pem),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap_or_else(|e| panic!("{key}: normalized key does not load: {e}"));
    }
}

#[test]
fn apn_cert_accepts_ed25519() {
    let v = accept(Apn, cert_content("ed25519-cert.pem", "ed25519-key.pem"));
    let (_, key_pem) = cert_and_key(&v);
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der_of(key_pem)).unwrap();
}

#[test]
fn apn_cert_environment_markers_are_checked_against_the_type() {
    accept(Apn, cert_content("apns-cert-universal.pem", "apns-key.pem"));
    accept(
        ApnSandbox,
        cert_content("apns-cert-universal.pem", "apns-key.pem"),
    );
    accept(
        ApnSandbox,
        cert_content("apns-cert-development.pem", "apns-key.pem"),
    );
    accept(
        Apn,
        cert_content("apns-cert-production.pem", "apns-key.pem"),
    );

    let e = errors(
        Apn,
        cert_content("apns-cert-development.pem", "apns-key.pem"),
    );
    assert_one(&e, "content.certificate", "use credentialType APN_SANDBOX");
    let e = errors(
        ApnSandbox,
        cert_content("apns-cert-production.pem", "apns-key.pem"),
    );
    assert_one(&e, "content.certificate", "use credentialType APN for it");
}

#[test]
fn apn_cert_without_uid_needs_bundle_id() {
    let e = errors(Apn, cert_content("apns-cert-no-uid.pem", "apns-key.pem"));
    assert_one(&e, "content.bundleId", "certificate subject has no UID");

    let mut content = cert_content("apns-cert-no-uid.pem", "apns-key.pem");
    content["bundleId"] = json!("com.example.other");
    assert_eq!(apn_facts(&accept(Apn, content)).topic, "com.example.other");
}

#[test]
fn validate_push_content_uses_the_current_time() {
    let v = validate_push_content(Apn, &fixture_json("apn-cert-content.json")).unwrap();
    assert_eq!(apn_facts(&v).auth_method, ApnAuthMethod::Certificate);
    let e = validate_push_content(
        Apn,
        &cert_content("apns-expired-cert.pem", "apns-expired-key.pem"),
    )
    .unwrap_err();
    assert_one(&e, "content.certificate", "expired");
}

// ---------------------------------------------------------------------------------------------
// APNs certificate auth: rejected

#[test]
fn apn_cert_expired() {
    let e = errors(
        Apn,
        cert_content("apns-expired-cert.pem", "apns-expired-key.pem"),
    );
    assert_one(
        &e,
        "content.certificate",
        "certificate expired on 2024-01-01T00:00:00Z",
    );
}

#[test]
fn apn_cert_not_yet_valid() {
    let e = errors(
        Apn,
        cert_content("apns-not-yet-valid-cert.pem", "apns-key.pem"),
    );
    assert_one(
        &e,
        "content.certificate",
        "certificate is not valid before 2100-01-01T00:00:00Z",
    );
}

#[test]
fn apn_cert_key_mismatch() {
    let e = errors(Apn, cert_content("apns-cert.pem", "other-rsa-key.pem"));
    assert_one(
        &e,
        "content.privateKey",
        "private key does not match the certificate",
    );
    assert_eq!(e[0].message, "private key does not match the certificate");

    let e = errors(Apn, cert_content("apns-cert.pem", "apns-ec-key-sec1.pem"));
    assert_one(
        &e,
        "content.privateKey",
        "(the certificate holds an RSA-2048 key, the private key is an EC P-256 key)",
    );

    // a SEC1 key without its public key is checked against the certificate's
    let e = errors(
        Apn,
        cert_content("apns-cert.pem", "apns-ec-key-sec1-no-public.pem"),
    );
    assert_one(&e, "content.privateKey", "does not match the certificate");
    let other_ec = json!({
        "certificate": b64(&fixture("apns-ec-cert.pem")),
        "privateKey": b64(&fixture("apns-auth-key.p8")),
    });
    assert_one(
        &errors(Apn, other_ec),
        "content.privateKey",
        "does not match the certificate",
    );
}

#[test]
fn apn_cert_expired_and_mismatched_are_both_reported() {
    let e = errors(Apn, cert_content("apns-expired-cert.pem", "apns-key.pem"));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.certificate", "expired on 2024-01-01T00:00:00Z");
    assert_has(&e, "content.privateKey", "does not match");
}

#[test]
fn apn_cert_bad_base64() {
    let e = errors(
        Apn,
        json!({"certificate": "not base64 at all!", "privateKey": "%%%%"}),
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(
        &e,
        "content.certificate",
        "neither PEM text nor valid base64",
    );
    assert_has(
        &e,
        "content.privateKey",
        "neither PEM text nor valid base64",
    );
}

#[test]
fn apn_cert_bad_base64_message_does_not_quote_the_input() {
    let sneaky = "SuperSecretValue_With!Bad#Chars";
    let e = errors(Apn, json!({"certificate": sneaky, "privateKey": sneaky}));
    for err in &e {
        assert!(!err.message.contains("SuperSecret"), "{err:?}");
        assert!(!err.message.contains('!'), "{err:?}");
    }
}

#[test]
fn apn_cert_not_pem() {
    let e = errors(
        Apn,
        json!({"certificate": b64("hello, I am a certificate"), "privateKey": b64("and I am a key")}),
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.certificate", "neither PEM text nor DER");
    assert_has(&e, "content.privateKey", "neither PEM text nor DER");
}

#[test]
fn apn_cert_garbage_inside_pem_armor() {
    let garbage_cert = "-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END CERTIFICATE-----\n";
    let garbage_key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEA\n-----END PRIVATE KEY-----\n";
    let e = errors(
        Apn,
        json!({"certificate": b64(garbage_cert), "privateKey": b64(garbage_key)}),
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(
        &e,
        "content.certificate",
        "certificate is not a valid X.509 certificate",
    );
    assert_has(&e, "content.privateKey", "private key is not a valid");

    let bad_b64 = "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n";
    let e = errors(
        Apn,
        cert_content("apns-cert.pem", "apns-key.pem").tap(|c| {
            c["privateKey"] = json!(b64(bad_b64));
        }),
    );
    assert_one(&e, "content.privateKey", "not valid base64");

    let unterminated = "-----BEGIN PRIVATE KEY-----\nMIIE\n";
    let e = errors(
        Apn,
        cert_content("apns-cert.pem", "apns-key.pem").tap(|c| {
            c["privateKey"] = json!(unterminated);
        }),
    );
    assert_one(
        &e,
        "content.privateKey",
        "has no -----END PRIVATE KEY----- line",
    );

    let rsa_pkcs1_garbage =
        "-----BEGIN RSA PRIVATE KEY-----\nMAMCAQA=\n-----END RSA PRIVATE KEY-----\n";
    let e = errors(
        Apn,
        cert_content("apns-cert.pem", "apns-key.pem").tap(|c| {
            c["privateKey"] = json!(rsa_pkcs1_garbage);
        }),
    );
    assert_one(
        &e,
        "content.privateKey",
        "private key is not a valid RSA private key",
    );
}

#[test]
fn apn_cert_swapped_fields_and_wrong_blocks() {
    let e = errors(Apn, cert_content("apns-key.pem", "apns-cert.pem"));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(
        &e,
        "content.certificate",
        "holds a private key, not a certificate",
    );
    assert_has(
        &e,
        "content.privateKey",
        "holds a certificate, not a private key",
    );

    let e = errors(
        Apn,
        cert_content("apns-cert.pem", "apns-auth-key-public.pem"),
    );
    assert_one(&e, "content.privateKey", "holds a public key");

    let two_keys = format!(
        "{}{}",
        fixture("apns-key.pem"),
        fixture("other-rsa-key.pem")
    );
    let e = errors(
        Apn,
        json!({"certificate": b64(&fixture("apns-cert.pem")), "privateKey": b64(&two_keys)}),
    );
    assert_one(&e, "content.privateKey", "more than one private key");
}

#[test]
fn apn_cert_encrypted_keys_are_refused_with_a_hint() {
    let e = errors(Apn, cert_content("apns-cert.pem", "encrypted-key.pem"));
    assert_one(&e, "content.privateKey", "encrypted private key");

    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\nMIIE\n-----END RSA PRIVATE KEY-----\n";
    let e = errors(
        Apn,
        json!({"certificate": b64(&fixture("apns-cert.pem")), "privateKey": b64(legacy)}),
    );
    assert_one(&e, "content.privateKey", "encrypted");
}

#[test]
fn apn_cert_pkcs12_bundles_are_refused_with_a_hint() {
    let path = format!(
        "{}/../../testdata/credentials/apns.p12",
        env!("CARGO_MANIFEST_DIR")
    );
    let p12 = STANDARD.encode(std::fs::read(path).unwrap());
    let e = errors(Apn, json!({"certificate": p12, "privateKey": p12}));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(
        &e,
        "content.certificate",
        "certificate is a PKCS#12 (.p12) bundle",
    );
    assert_has(
        &e,
        "content.privateKey",
        "private key is a PKCS#12 (.p12) bundle",
    );
    assert!(e[0].message.contains("openssl pkcs12 -in cert.p12 -nodes"));
}

#[test]
fn apn_cert_missing_and_mistyped_fields() {
    let e = errors(Apn, json!({"certificate": b64(&fixture("apns-cert.pem"))}));
    assert_one(&e, "content.privateKey", "privateKey");
    assert!(e[0].message.contains("required"));

    let e = errors(
        Apn,
        json!({"certificate": 5, "privateKey": ["x"], "bundleId": true}),
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_has(
        &e,
        "content.certificate",
        "certificate must be a string, not a number",
    );
    assert_has(
        &e,
        "content.privateKey",
        "privateKey must be a string, not an array",
    );
    assert_has(
        &e,
        "content.bundleId",
        "bundleId must be a string, not a boolean",
    );

    let e = errors(Apn, json!({"certificate": "", "privateKey": "   "}));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.certificate", "must not be empty");
    assert_has(&e, "content.privateKey", "must not be empty");
}

#[test]
fn apn_cert_bad_bundle_id() {
    for bad in ["", "com.example app", "com.example/app", &"a".repeat(256)] {
        let mut content = fixture_json("apn-cert-content.json");
        content["bundleId"] = json!(bad);
        let e = errors(Apn, content);
        assert_one(&e, "content.bundleId", "bundleId ");
    }
}

#[test]
fn apn_unknown_fields_are_errors_with_suggestions() {
    let mut content = fixture_json("apn-cert-content.json");
    content["bundleID"] = json!("com.example.herald");
    content["color"] = json!("blue");
    let e = errors(Apn, content);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.bundleID", "did you mean \"bundleId\"?");
    assert_has(&e, "content.color", "unknown field \"color\"");

    let mut content = token_content();
    content["private_key"] = json!("x");
    content["topic"] = json!("x");
    let e = errors(Apn, content);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.private_key", "did you mean \"privateKey\"?");
    assert_has(&e, "content.topic", "did you mean \"bundleId\"?");
}

#[test]
fn apn_mixed_forms_are_refused() {
    let mut content = fixture_json("apn-cert-content.json");
    content["keyId"] = json!("ABCDE12345");
    let e = errors(Apn, content);
    assert_one(&e, "content", "mixes certificate auth");

    let mut content = token_content();
    content["certificate"] = json!(b64(&fixture("apns-cert.pem")));
    content["extra"] = json!(1);
    let e = errors(ApnSandbox, content);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content", "mixes certificate auth");
    assert_has(&e, "content.extra", "unknown field");
}

#[test]
fn apn_content_of_neither_form_and_non_objects() {
    let e = errors(Apn, json!({"privateKey": b64(&fixture("apns-key.pem"))}));
    assert_one(&e, "content", "needs either certificate auth");
    let e = errors(Apn, json!({}));
    assert_one(&e, "content", "needs either certificate auth");
    for bad in [json!("text"), json!([1]), json!(null), json!(3)] {
        for kind in [Apn, ApnSandbox, Fcm] {
            let e = errors(kind, bad.clone());
            assert_one(&e, "content", "content must be a JSON object");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// APNs token auth

#[test]
fn apn_token_fixture_content_is_accepted() {
    for kind in [Apn, ApnSandbox] {
        let v = accept(kind, token_content());
        assert_eq!(
            v.facts,
            CredentialFacts::Apn(ApnFacts {
                auth_method: ApnAuthMethod::Token,
                topic: "com.example.herald".into(),
                expires_at: None,
            })
        );
        let CredentialSecret::ApnToken {
            key_id,
            team_id,
            private_key_pem,
        } = &v.secret
        else {
            panic!("{v:?}")
        };
        assert_eq!(key_id, "ABCDE12345");
        assert_eq!(team_id, "HERALDTEAM");
        assert_eq!(
            der_of(private_key_pem),
            der_of(&fixture("apns-auth-key.p8"))
        );
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der_of(private_key_pem),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
    }
}

#[test]
fn apn_token_accepts_raw_pem_and_base64_der_p8_and_sec1() {
    let expected = accept(Apn, token_content()).secret;
    let mut raw = token_content();
    raw["privateKey"] = json!(fixture("apns-auth-key.p8"));
    assert_eq!(accept(Apn, raw).secret, expected);

    // only the base64 body of the .p8 (what some users paste)
    let mut body = token_content();
    body["privateKey"] = json!(STANDARD.encode(der_of(&fixture("apns-auth-key.p8"))));
    assert_eq!(accept(Apn, body).secret, expected);

    let mut sec1 = token_content();
    sec1["privateKey"] = json!(b64(&fixture("apns-ec-key-sec1.pem")));
    accept(Apn, sec1);
}

#[test]
fn apn_token_key_and_team_id_lengths() {
    for (field, value, needle) in [
        (
            "keyId",
            "ABCDE1234",
            "keyId must be exactly 10 characters, not 9",
        ),
        (
            "keyId",
            "ABCDE123456",
            "keyId must be exactly 10 characters, not 11",
        ),
        (
            "keyId",
            "ABCDE12345\n",
            "(remove the surrounding whitespace)",
        ),
        ("keyId", "", "not 0"),
        (
            "teamId",
            "HERALD-TEA",
            "teamId must contain only ASCII letters and digits",
        ),
        (
            "teamId",
            "HERALDTEAMX",
            "teamId must be exactly 10 characters",
        ),
    ] {
        let mut content = token_content();
        content[field] = json!(value);
        let e = errors(Apn, content);
        assert_one(&e, &format!("content.{field}"), needle);
    }
}

#[test]
fn apn_token_missing_fields_are_each_reported() {
    let e = errors(Apn, json!({"keyId": "ABCDE12345"}));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_has(&e, "content.teamId", "teamId");
    assert_has(&e, "content.bundleId", "bundleId");
    assert_has(&e, "content.privateKey", "privateKey");
    assert!(e.iter().all(|e| e.message.contains("required")));

    let mut content = token_content();
    content["bundleId"] = json!("");
    assert_one(
        &errors(Apn, content),
        "content.bundleId",
        "bundleId must not be empty",
    );
}

#[test]
fn apn_token_key_must_be_p256() {
    for (key, needle) in [
        (
            "other-rsa-key.pem",
            "private key is an RSA-2048 key but APNs token auth needs an EC P-256 key",
        ),
        (
            "p384-key.pem",
            "private key is an EC P-384 key but APNs token auth needs an EC P-256 key",
        ),
        ("ed25519-key.pem", "private key is an Ed25519 key but"),
        ("apns-auth-key-no-public.p8", "without its public key"),
        ("apns-cert.pem", "holds a certificate, not a private key"),
        ("encrypted-key.pem", "encrypted private key"),
    ] {
        let mut content = token_content();
        content["privateKey"] = json!(b64(&fixture(key)));
        let e = errors(Apn, content);
        assert_one(&e, "content.privateKey", needle);
    }
}

#[test]
fn apn_token_independent_problems_are_all_reported() {
    let e = errors(
        ApnSandbox,
        json!({"keyId": "short", "teamId": 42, "bundleId": "bad id", "privateKey": "!!", "kid": "x"}),
    );
    assert_eq!(e.len(), 5, "{e:#?}");
    assert_has(&e, "content.keyId", "exactly 10");
    assert_has(&e, "content.teamId", "must be a string");
    assert_has(&e, "content.bundleId", "may contain only");
    assert_has(
        &e,
        "content.privateKey",
        "neither PEM text nor valid base64",
    );
    assert_has(&e, "content.kid", "did you mean \"keyId\"?");
}

// ---------------------------------------------------------------------------------------------
// FCM

#[test]
fn fcm_fixture_content_is_accepted() {
    let v = accept(Fcm, fixture_json("fcm-content.json"));
    assert_eq!(
        v.facts,
        CredentialFacts::Fcm(FcmFacts {
            project_id: "herald-test".into(),
            client_email: "herald-test@herald-test.iam.gserviceaccount.com".into(),
        })
    );
    let CredentialSecret::FcmServiceAccount { json } = &v.secret else {
        panic!("{v:?}")
    };
    let stored: Value = serde_json::from_str(json).unwrap();
    let original = fixture_json("fcm-service-account.json");
    assert_eq!(
        stored, original,
        "a canonical service account is stored as given"
    );
    assert_rsa_pkcs8_pem(stored["private_key"].as_str().unwrap());
}

#[test]
fn fcm_accepts_the_json_object_and_raw_json_text() {
    let expected = accept(Fcm, fixture_json("fcm-content.json"));
    let object = json!({"privateKey": fixture_json("fcm-service-account.json")});
    assert_eq!(accept(Fcm, object), expected);
    let text = json!({"privateKey": fixture("fcm-service-account.json")});
    assert_eq!(accept(Fcm, text), expected);
}

#[test]
fn fcm_tolerates_missing_type_pkcs1_keys_escaped_newlines_and_http_token_uri() {
    let mut account = sa();
    account.remove("type");
    account.insert("token_uri".into(), json!("http://127.0.0.1:4000/token"));
    account.insert("private_key".into(), json!(fixture("apns-key-pkcs1.pem")));
    let v = accept(Fcm, fcm_content(&account));
    let CredentialSecret::FcmServiceAccount { json } = &v.secret else {
        panic!()
    };
    let stored: Value = serde_json::from_str(json).unwrap();
    assert_rsa_pkcs8_pem(stored["private_key"].as_str().unwrap());
    assert_eq!(stored["token_uri"], "http://127.0.0.1:4000/token");

    let mut escaped = sa();
    let key = escaped["private_key"]
        .as_str()
        .unwrap()
        .replace('\n', "\\n");
    escaped.insert("private_key".into(), json!(key));
    let v = accept(Fcm, fcm_content(&escaped));
    let CredentialSecret::FcmServiceAccount { json } = &v.secret else {
        panic!()
    };
    let stored: Value = serde_json::from_str(json).unwrap();
    assert_eq!(stored, fixture_json("fcm-service-account.json"));
}

#[test]
fn fcm_missing_each_required_field() {
    for field in ["project_id", "client_email", "private_key", "token_uri"] {
        let mut account = sa();
        account.remove(field);
        let e = errors(Fcm, fcm_content(&account));
        assert_one(
            &e,
            "content.privateKey",
            &format!("service account JSON is missing {field}"),
        );
    }
    let e = errors(Fcm, json!({"privateKey": {"type": "service_account"}}));
    assert_eq!(e.len(), 4, "{e:#?}");
}

#[test]
fn fcm_bad_field_values() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "type",
            json!("authorized_user"),
            "has type \"authorized_user\"",
        ),
        ("type", json!(7), "type other than \"service_account\""),
        ("project_id", json!(""), "project_id is empty"),
        (
            "project_id",
            json!("my project/x"),
            "project_id may contain only",
        ),
        (
            "client_email",
            json!("not-an-email"),
            "client_email is not an email address",
        ),
        (
            "client_email",
            json!(12),
            "client_email must be a string, not a number",
        ),
        (
            "token_uri",
            json!("ftp://example.com/token"),
            "token_uri is not an https:// or http:// URL",
        ),
        (
            "token_uri",
            json!("oauth2.googleapis.com/token"),
            "token_uri is not",
        ),
        (
            "private_key",
            json!(fixture("apns-auth-key.p8")),
            "private_key is an EC P-256 key, not an RSA key",
        ),
        (
            "private_key",
            json!(fixture("ed25519-key.pem")),
            "private_key is an Ed25519 key, not an RSA key",
        ),
        (
            "private_key",
            json!(fixture("rsa-1024-key.pem")),
            "smaller than 2048 bits",
        ),
        (
            "private_key",
            json!("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
            "private_key is not PEM text",
        ),
        (
            "private_key",
            json!(
                "-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEA\n-----END PRIVATE KEY-----\n"
            ),
            "private_key is not a valid",
        ),
        (
            "private_key",
            json!(fixture("encrypted-key.pem")),
            "encrypted private key",
        ),
    ];
    for (field, value, needle) in cases {
        let mut account = sa();
        account.insert(field.into(), value);
        let e = errors(Fcm, fcm_content(&account));
        assert_one(&e, "content.privateKey", needle);
    }
}

#[test]
fn fcm_independent_problems_are_all_reported() {
    let mut account = sa();
    account.insert("type".into(), json!("external_account"));
    account.remove("client_email");
    account.insert("token_uri".into(), json!("nope"));
    account.insert("private_key".into(), json!(fixture("p384-key.pem")));
    let e = errors(Fcm, fcm_content(&account));
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e.iter().all(|e| e.path == "content.privateKey"));
}

#[test]
fn fcm_private_key_shape_errors() {
    let cases = [
        (json!({"privateKey": 5}), "privateKey must be a string"),
        (json!({"privateKey": ""}), "must not be empty"),
        (
            json!({"privateKey": "%%%"}),
            "neither valid base64 nor JSON",
        ),
        (json!({"privateKey": b64("just text")}), "not JSON"),
        (
            json!({"privateKey": b64(&fixture("other-rsa-key.pem"))}),
            "holds a PEM key; FCM needs the whole service-account JSON",
        ),
        (
            json!({"privateKey": fixture("other-rsa-key.pem")}),
            "holds a PEM key",
        ),
        (
            json!({"privateKey": "{\"project_id\": "}),
            "service account JSON is not valid JSON (line 1, column",
        ),
        (json!({"privateKey": b64("[1, 2]")}), "not JSON"),
        (
            json!({}),
            "privateKey (the service-account JSON file, base64-encoded) is required",
        ),
    ];
    for (content, needle) in cases {
        let e = errors(Fcm, content);
        assert_one(&e, "content.privateKey", needle);
    }
}

#[test]
fn fcm_invalid_json_message_does_not_quote_the_input() {
    let mut text = fixture("fcm-service-account.json");
    text.insert_str(text.find("\"private_key\"").unwrap(), "garbage ");
    let e = errors(Fcm, json!({"privateKey": b64(&text)}));
    assert_one(&e, "content.privateKey", "is not valid JSON");
    assert!(!e[0].message.contains("garbage"));
}

#[test]
fn fcm_unknown_fields_and_apn_fields() {
    let mut content = fixture_json("fcm-content.json");
    content["projectId"] = json!("x");
    content["serviceAccount"] = json!("x");
    let e = errors(Fcm, content);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "content.projectId", "unknown field");
    assert_has(&e, "content.serviceAccount", "did you mean \"privateKey\"?");

    // APN content posted as FCM
    let e = errors(Fcm, token_content());
    assert!(e.iter().any(|e| e.path == "content.keyId"), "{e:#?}");
    assert!(e.iter().any(|e| e.path == "content.privateKey"), "{e:#?}");
}

// ---------------------------------------------------------------------------------------------
// Chat API

#[test]
fn chat_apn_accepts_matching_pem_pair_without_checking_expiry() {
    let c = validate_chat_apn(
        Some(&fixture("apns-expired-cert.pem")),
        Some(&fixture("apns-expired-key.pem")),
    )
    .unwrap();
    assert_no_secret(&format!("{c:?}"));
    assert_eq!(c.topic.as_deref(), Some("com.example.herald"));
    assert_eq!(c.expires_at, Some(datetime!(2024-01-01 0:00 UTC)));
    let Some(CredentialSecret::ApnCertificate { cert_pem, key_pem }) = c.secret() else {
        panic!()
    };
    assert_eq!(der_of(&cert_pem), der_of(&fixture("apns-expired-cert.pem")));
    assert_rsa_pkcs8_pem(&key_pem);
    assert_eq!(
        c.facts(),
        Some(CredentialFacts::Apn(ApnFacts {
            auth_method: ApnAuthMethod::Certificate,
            topic: "com.example.herald".into(),
            expires_at: Some(datetime!(2024-01-01 0:00 UTC)),
        }))
    );
}

#[test]
fn chat_apn_accepts_twilio_one_line_pem_and_halves_alone() {
    let one_line = |pem: String| pem.replace('\n', "");
    let c = validate_chat_apn(
        Some(&one_line(fixture("apns-cert.pem"))),
        Some(&one_line(fixture("apns-key-pkcs1.pem"))),
    )
    .unwrap();
    assert!(c.secret().is_some());

    let c = validate_chat_apn(Some(&fixture("apns-cert-no-uid.pem")), None).unwrap();
    assert!(c.private_key_pem.is_none() && c.secret().is_none());
    assert_eq!(c.topic, None);
    assert_eq!(c.facts(), None);

    let c = validate_chat_apn(None, Some(&fixture("apns-key.pem"))).unwrap();
    assert!(c.certificate_pem.is_none() && c.topic.is_none() && c.expires_at.is_none());
    // the stored normalized key can be passed back in to check a new certificate
    let stored_key = c.private_key_pem.clone().unwrap();
    validate_chat_apn(Some(&fixture("apns-cert.pem")), Some(&stored_key)).unwrap();

    let c = validate_chat_apn(None, None).unwrap();
    assert!(c.secret().is_none());
}

#[test]
fn chat_apn_rejections() {
    let check = |cert: Option<&str>, key: Option<&str>| {
        let e = validate_chat_apn(cert, key).unwrap_err();
        check_errors(&e);
        e
    };
    let e = check(
        Some(&fixture("apns-cert.pem")),
        Some(&fixture("other-rsa-key.pem")),
    );
    assert_one(
        &e,
        "PrivateKey",
        "private key does not match the certificate",
    );

    // Chat fields carry raw PEM, not base64
    let e = check(
        Some(&b64(&fixture("apns-cert.pem"))),
        Some(&b64(&fixture("apns-key.pem"))),
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_has(&e, "Certificate", "certificate is not PEM text");
    assert_has(&e, "PrivateKey", "private key is not PEM text");

    let e = check(
        Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
        None,
    );
    assert_one(&e, "Certificate", "not a valid X.509 certificate");
    let e = check(None, Some(&fixture("encrypted-key.pem")));
    assert_one(&e, "PrivateKey", "encrypted");
    let e = check(Some(""), None);
    assert_one(&e, "Certificate", "must not be empty");
}

#[test]
fn chat_gcm_api_key() {
    assert_eq!(
        validate_chat_gcm_api_key(" AIzaSyExampleKey \n").unwrap(),
        CredentialSecret::FcmServerKey {
            key: "AIzaSyExampleKey".into()
        }
    );
    let e = validate_chat_gcm_api_key("  ").unwrap_err();
    assert_eq!(e.path, "ApiKey");
    assert_eq!(e.message, "ApiKey must not be empty");
}

#[test]
fn chat_fcm_secret_classification() {
    let server_key = "AAAAabcdefg:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ";
    assert_eq!(
        classify_fcm_secret(server_key).unwrap(),
        FcmSecretKind::ServerKey(CredentialSecret::FcmServerKey {
            key: server_key.into()
        })
    );
    // a 39-character API key decodes as base64 but not to JSON: still a server key
    let api_key = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
    assert!(matches!(
        classify_fcm_secret(api_key).unwrap(),
        FcmSecretKind::ServerKey(_)
    ));

    let expected = accept(Fcm, fixture_json("fcm-content.json"));
    for secret in [
        fixture("fcm-service-account.json"),
        b64(&fixture("fcm-service-account.json")),
    ] {
        match classify_fcm_secret(&secret).unwrap() {
            FcmSecretKind::ServiceAccount(v) => {
                assert_no_secret(&format!("{v:?}"));
                assert_eq!(v, expected);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn chat_fcm_secret_rejections() {
    let e = classify_fcm_secret(" \n").unwrap_err();
    check_errors(&e);
    assert_one(&e, "Secret", "Secret must not be empty");

    let e = classify_fcm_secret("{\"type\": \"service_account\",").unwrap_err();
    check_errors(&e);
    assert_one(&e, "Secret", "is not valid JSON");

    let mut account = sa();
    account.remove("client_email");
    let e = classify_fcm_secret(&serde_json::to_string(&account).unwrap()).unwrap_err();
    check_errors(&e);
    assert_one(&e, "Secret", "service account JSON is missing client_email");
}

// ---------------------------------------------------------------------------------------------
// Secrets: storage format and redaction

#[test]
fn secret_bytes_round_trip_for_every_kind() {
    let mut secrets: Vec<CredentialSecret> = [
        (Apn, fixture_json("apn-cert-content.json")),
        (Apn, token_content()),
        (Fcm, fixture_json("fcm-content.json")),
    ]
    .into_iter()
    .map(|(kind, content)| accept(kind, content).secret)
    .collect();
    secrets.push(validate_chat_gcm_api_key("server-key").unwrap());
    let kinds: Vec<&str> = secrets.iter().map(CredentialSecret::kind).collect();
    assert_eq!(
        kinds,
        [
            "apnCertificate",
            "apnToken",
            "fcmServiceAccount",
            "fcmServerKey"
        ]
    );
    for secret in secrets {
        let bytes = secret.to_bytes();
        assert_eq!(CredentialSecret::from_bytes(&bytes).unwrap(), secret);
    }
}

#[test]
fn secret_storage_format_is_stable() {
    let secret = CredentialSecret::ApnToken {
        key_id: "ABCDE12345".into(),
        team_id: "HERALDTEAM".into(),
        private_key_pem: "PEM".into(),
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&secret.to_bytes()).unwrap(),
        json!({"v": 1, "type": "apnToken", "keyId": "ABCDE12345", "teamId": "HERALDTEAM", "privateKeyPem": "PEM"})
    );
    let cases = [
        (
            json!({"v": 1, "type": "apnCertificate", "certPem": "C", "keyPem": "K"}),
            CredentialSecret::ApnCertificate {
                cert_pem: "C".into(),
                key_pem: "K".into(),
            },
        ),
        (
            json!({"v": 1, "type": "fcmServiceAccount", "json": "{}"}),
            CredentialSecret::FcmServiceAccount { json: "{}".into() },
        ),
        (
            json!({"v": 1, "type": "fcmServerKey", "key": "k"}),
            CredentialSecret::FcmServerKey { key: "k".into() },
        ),
    ];
    for (stored, expected) in cases {
        let bytes = serde_json::to_vec(&stored).unwrap();
        assert_eq!(CredentialSecret::from_bytes(&bytes).unwrap(), expected);
    }
}

#[test]
fn secret_from_bytes_errors_do_not_quote_the_bytes() {
    for bad in [
        br#"{"v": 2, "type": "fcmServerKey", "key": "TOPSECRETKEY"}"#.as_slice(),
        br#"{"v": 1, "type": "TOPSECRETKEY"}"#.as_slice(),
        br#"{"v": 1, "type": "fcmServerKey", "key": 5, "x": "TOPSECRETKEY"}"#.as_slice(),
        br#"{"v": "TOPSECRETKEY"}"#.as_slice(),
        b"TOPSECRETKEY".as_slice(),
        b"".as_slice(),
    ] {
        let e = CredentialSecret::from_bytes(bad).unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        assert!(!format!("{e:?}").contains("TOPSECRET"), "{e:?}");
    }
}

#[test]
fn debug_output_redacts_secrets() {
    let secrets = [
        accept(Apn, fixture_json("apn-cert-content.json")),
        accept(Apn, token_content()),
        accept(Fcm, fixture_json("fcm-content.json")),
    ];
    for v in &secrets {
        let debug = format!("{v:?} {:?} {:#?}", v.secret, v.secret);
        assert_no_secret(&debug);
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
    let server_key = validate_chat_gcm_api_key("TOPSECRETSERVERKEY").unwrap();
    assert!(!format!("{server_key:?}").contains("TOPSECRET"));
    let kind = classify_fcm_secret("TOPSECRETSERVERKEY").unwrap();
    assert!(!format!("{kind:?}").contains("TOPSECRET"));
    let chat = validate_chat_apn(None, Some(&fixture("apns-key.pem"))).unwrap();
    assert_no_secret(&format!("{chat:?}"));
}

// ---------------------------------------------------------------------------------------------
// Facts and types serialization

#[test]
fn facts_serialize_to_the_api_shape() {
    let v = accept(Apn, fixture_json("apn-cert-content.json"));
    assert_eq!(
        serde_json::to_value(&v.facts).unwrap(),
        json!({"apn": {"authMethod": "certificate", "topic": "com.example.herald", "expiresAt": "2125-01-01T00:00:00Z"}})
    );
    let v = accept(Apn, token_content());
    assert_eq!(
        serde_json::to_value(&v.facts).unwrap(),
        json!({"apn": {"authMethod": "token", "topic": "com.example.herald", "expiresAt": null}})
    );
    let v = accept(Fcm, fixture_json("fcm-content.json"));
    let facts = serde_json::to_value(&v.facts).unwrap();
    assert_eq!(
        facts,
        json!({"fcm": {"projectId": "herald-test", "clientEmail": "herald-test@herald-test.iam.gserviceaccount.com"}})
    );
    for v in [
        accept(Apn, fixture_json("apn-cert-content.json")),
        accept(Apn, token_content()),
        accept(Fcm, fixture_json("fcm-content.json")),
    ] {
        let text = serde_json::to_string(&v.facts).unwrap();
        assert_eq!(
            serde_json::from_str::<CredentialFacts>(&text).unwrap(),
            v.facts
        );
    }
    // sub-second and non-UTC times are shown at whole seconds in UTC
    let facts = CredentialFacts::Apn(ApnFacts {
        auth_method: ApnAuthMethod::Certificate,
        topic: "t".into(),
        expires_at: Some(datetime!(2030-05-06 07:08:09.750 +02:00)),
    });
    assert_eq!(
        serde_json::to_value(&facts).unwrap()["apn"]["expiresAt"],
        "2030-05-06T05:08:09Z"
    );
}

#[test]
fn push_credential_type_spellings() {
    for (kind, text) in [(Apn, "APN"), (ApnSandbox, "APN_SANDBOX"), (Fcm, "FCM")] {
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(text));
        assert_eq!(
            serde_json::from_value::<PushCredentialType>(json!(text)).unwrap(),
            kind
        );
        assert_eq!(text.parse::<PushCredentialType>().unwrap(), kind);
        assert_eq!(kind.to_string(), text);
    }
    let e = "apn".parse::<PushCredentialType>().unwrap_err();
    assert_eq!(e.path, "credentialType");
    assert!(serde_json::from_value::<PushCredentialType>(json!("GCM")).is_err());
}

// ---------------------------------------------------------------------------------------------

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[test]
fn leak_detector_catches_key_material() {
    let key = fixture("apns-auth-key.p8");
    let body_line = key.lines().nth(1).unwrap().to_owned();
    let posted = b64(&key);
    for leaked in [
        format!("bad key {body_line}"),
        format!("x{}y", &posted[20..40]),
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_secret(&leaked)).is_err();
        assert!(caught, "{leaked}");
    }
    assert_no_secret("private key does not match the certificate");
}
