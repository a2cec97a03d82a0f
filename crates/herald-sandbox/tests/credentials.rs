//! Credential files, their reuse and address rewrite across starts, and the CLI surface.

mod common;

use std::os::unix::fs::PermissionsExt;

use clap::Parser;
use common::*;
use herald_sandbox::{
    CREDENTIAL_FILES, RunningSandbox, SandboxCli, SandboxCommand, SandboxOptions, run_cli,
    write_credentials,
};
use http::Method;
use serde_json::Value;

#[test]
fn write_credentials_writes_every_file_in_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    write_credentials(dir.path(), "127.0.0.1:8443".parse().unwrap()).unwrap();
    for f in CREDENTIAL_FILES {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let mode = |f: &str| {
        std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for secret in [
        "ca-key.pem",
        "apns-key.pem",
        "apns-token.json",
        "fcm-service-account.json",
        "fcm-legacy-key.txt",
    ] {
        assert_eq!(mode(secret), 0o600, "{secret}");
    }
    assert_eq!(mode("ca.pem"), 0o644);

    let c = Creds::load(dir.path());
    let apple_id = |s: &str| {
        s.len() == 10
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    assert!(apple_id(&c.key_id), "{}", c.key_id);
    assert!(apple_id(&c.team_id), "{}", c.team_id);
    assert_eq!(c.bundle_id, "com.example.herald");
    // The .p8 is PKCS#8 P-256 (ring would refuse anything else).
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &c.p8_der,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let token: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("apns-token.json")).unwrap())
            .unwrap();
    assert_eq!(
        token.as_object().unwrap().len(),
        4,
        "exactly the API's content object: {token}"
    );

    // Service account: Google's fields, a PKCS#8 RSA 2048 key.
    for field in [
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
    ] {
        assert!(c.account[field].is_string(), "{field}");
    }
    assert_eq!(c.account["type"], "service_account");
    assert_eq!(c.token_uri(), "https://127.0.0.1:8443/token");
    assert!(
        c.account["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(&c.rsa_der).unwrap();
    assert_eq!(rsa.public().modulus_len(), 256);

    // APNs certificate: signed by the CA, UID = bundle ID, RSA 2048, valid for years.
    let der = pem_der(&c.apns_cert_pem, "CERTIFICATE");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let uid = cert
        .subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == "0.9.2342.19200300.100.1.1")
        .and_then(|a| a.as_str().ok());
    assert_eq!(uid, Some("com.example.herald"));
    let ca_der = pem_der(&c.ca_pem, "CERTIFICATE");
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert!(ca.is_ca());
    let years = (cert.validity().not_after.timestamp() - now()) / (365 * 86400);
    assert!(years >= 5, "{years} years");
    let key =
        ring::signature::RsaKeyPair::from_pkcs8(&pem_der(&c.apns_key_pem, "PRIVATE KEY")).unwrap();
    assert_eq!(key.public().modulus_len(), 256);

    assert!(c.legacy_key.starts_with("AAAA") && c.legacy_key.len() > 100);

    let env = std::fs::read_to_string(dir.path().join("herald.env")).unwrap();
    let ca_path = dir.path().canonicalize().unwrap().join("ca.pem");
    let expected = format!(
        "HERALD_APNS_URL=https://127.0.0.1:8443\nHERALD_APNS_SANDBOX_URL=https://127.0.0.1:8443\n\
         HERALD_FCM_URL=https://127.0.0.1:8443\nHERALD_FCM_LEGACY_URL=https://127.0.0.1:8443\n\
         HERALD_EXTRA_CA_FILE={}\n",
        ca_path.display()
    );
    assert_eq!(env, expected);
}

#[tokio::test]
async fn a_later_start_reuses_the_ca_and_rewrites_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let creds_dir = dir.path().join("creds");
    let opts = SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: creds_dir.clone(),
        fail_rate: 0.0,
        latency_ms: 0,
        record: true,
    };
    // A missing directory is created and filled.
    let first = RunningSandbox::start(opts.clone()).await.unwrap();
    let ca_before = std::fs::read_to_string(creds_dir.join("ca.pem")).unwrap();
    let key_before = std::fs::read_to_string(creds_dir.join("apns-token.json")).unwrap();
    let env_before = std::fs::read_to_string(creds_dir.join("herald.env")).unwrap();
    assert!(env_before.contains(&first.base_url()), "{env_before}");
    let first_port = first.addr().port();
    first.shutdown().await;

    let second = RunningSandbox::start(opts).await.unwrap();
    assert_ne!(second.addr().port(), first_port);
    assert_eq!(
        std::fs::read_to_string(creds_dir.join("ca.pem")).unwrap(),
        ca_before,
        "same CA"
    );
    assert_eq!(
        std::fs::read_to_string(creds_dir.join("apns-token.json")).unwrap(),
        key_before
    );
    let env_after = std::fs::read_to_string(creds_dir.join("herald.env")).unwrap();
    assert!(
        env_after.contains(&format!("HERALD_FCM_URL={}\n", second.base_url())),
        "{env_after}"
    );
    let account: Value = serde_json::from_str(
        &std::fs::read_to_string(creds_dir.join("fcm-service-account.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(account["token_uri"], format!("{}/token", second.base_url()));
    let mode = std::fs::metadata(creds_dir.join("fcm-service-account.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "rewrite keeps the key file private");

    // A client trusting the first start's CA talks to the second start.
    let sb = Sandbox {
        running: Some(second),
        dir,
        creds: Creds::load(&creds_dir),
    };
    let r = sb.control(Method::GET, "/_sandbox/stats", None).await;
    assert_eq!(r.status, 200);
    let access = sb.access_token().await;
    assert!(!access.is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn a_directory_with_foreign_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: dir.path().to_path_buf(),
        ..SandboxOptions::default()
    })
    .await
    .err()
    .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ca.pem") && msg.contains("herald.env"),
        "{msg}"
    );
    assert!(
        !dir.path().join("ca.pem").exists(),
        "nothing written into a foreign directory"
    );
}

#[tokio::test]
async fn bad_fail_rate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: dir.path().to_path_buf(),
        fail_rate: 1.5,
        ..SandboxOptions::default()
    })
    .await;
    assert!(r.is_err());
}

#[derive(Parser)]
struct Herald {
    #[command(subcommand)]
    command: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    Sandbox(SandboxCli),
}

fn parse(args: &[&str]) -> SandboxCli {
    let Top::Sandbox(cli) = Herald::try_parse_from(args).unwrap().command;
    cli
}

#[test]
fn cli_flags_and_defaults() {
    let cli = parse(&["herald", "sandbox"]);
    assert_eq!(cli.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(
        cli.credentials,
        std::path::PathBuf::from("./sandbox-credentials")
    );
    assert_eq!(
        (cli.fail_rate, cli.latency_ms, cli.no_record),
        (0.0, 0, false)
    );
    assert!(cli.command.is_none());

    let cli = parse(&[
        "herald",
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--credentials",
        "/tmp/x",
        "--fail-rate",
        "0.25",
        "--latency-ms",
        "20",
        "--no-record",
    ]);
    assert_eq!(cli.listen.port(), 0);
    assert_eq!(
        (cli.fail_rate, cli.latency_ms, cli.no_record),
        (0.25, 20, true)
    );

    let cli = parse(&[
        "herald",
        "sandbox",
        "credentials",
        "--out",
        "/tmp/c",
        "--listen",
        "127.0.0.1:9000",
    ]);
    match cli.command {
        Some(SandboxCommand::Credentials { out, listen }) => {
            assert_eq!(out, std::path::PathBuf::from("/tmp/c"));
            assert_eq!(listen.port(), 9000);
        }
        None => panic!("credentials subcommand"),
    }
    assert!(
        Herald::try_parse_from(["herald", "sandbox", "credentials"]).is_err(),
        "--out is required"
    );
    assert!(Herald::try_parse_from(["herald", "sandbox", "--fail-rate", "lots"]).is_err());
}

#[tokio::test]
async fn cli_credentials_subcommand_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    run_cli(parse(&[
        "herald",
        "sandbox",
        "credentials",
        "--out",
        out_s,
        "--listen",
        "127.0.0.1:9443",
    ]))
    .await
    .unwrap();
    for f in CREDENTIAL_FILES {
        assert!(out.join(f).is_file(), "{f}");
    }
    let env = std::fs::read_to_string(out.join("herald.env")).unwrap();
    assert!(
        env.starts_with("HERALD_APNS_URL=https://127.0.0.1:9443\n"),
        "{env}"
    );
}
