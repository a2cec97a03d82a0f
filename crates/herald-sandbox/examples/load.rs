//! Rough throughput check: starts a sandbox in-process (recording off) and pushes APNs requests
//! through it over a few HTTP/2 connections with many concurrent streams.
//!
//! `cargo run --release -p herald-sandbox --example load -- [requests] [connections] [streams]`

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use herald_sandbox::{RunningSandbox, SandboxOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).unwrap() + begin.len();
    let stop = pem[start..].find(&end).unwrap() + start;
    STANDARD
        .decode(pem[start..stop].split_whitespace().collect::<String>())
        .unwrap()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let total = *args.first().unwrap_or(&100_000);
    let connections = *args.get(1).unwrap_or(&4);
    let streams = *args.get(2).unwrap_or(&250);

    let dir = tempfile::tempdir()?;
    let sb = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse()?,
        credentials_dir: dir.path().to_path_buf(),
        record: false,
        ..SandboxOptions::default()
    })
    .await?;

    let token: Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("apns-token.json"),
    )?)?;
    let p8 = String::from_utf8(STANDARD.decode(token["privateKey"].as_str().unwrap())?)?;
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pem_der(&p8, "PRIVATE KEY"),
        &rng,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"ES256","kid":"{}"}}"#,
            token["keyId"].as_str().unwrap()
        )),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"{}","iat":{now}}}"#,
            token["teamId"].as_str().unwrap()
        ))
    );
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    let auth: Arc<str> = format!("bearer {input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())).into();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_der(
        &std::fs::read_to_string(dir.path().join("ca.pem"))?,
        "CERTIFICATE",
    )))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let base = sb.base_url();
    let per_task = total / (connections * streams);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let tcp = tokio::net::TcpStream::connect(sb.addr()).await?;
        tcp.set_nodelay(true)?;
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        for s in 0..streams {
            let mut sender = sender.clone();
            let auth = auth.clone();
            let url = format!("{base}/3/device/{:064x}", c * streams + s);
            tasks.spawn(async move {
                let mut ok = 0u64;
                for _ in 0..per_task {
                    let req = http::Request::post(url.as_str())
                        .header("authorization", &*auth)
                        .header("apns-topic", "com.example.herald")
                        .header("apns-push-type", "alert")
                        .body(Full::new(Bytes::from_static(
                            br#"{"aps":{"alert":{"title":"Hi","body":"Your order shipped"}}}"#,
                        )))
                        .unwrap();
                    sender.ready().await.unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    let status = resp.status();
                    resp.into_body().collect().await.unwrap();
                    if status == 200 {
                        ok += 1;
                    }
                }
                ok
            });
        }
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += r?;
    }
    let elapsed = started.elapsed();
    let sent = per_task * connections * streams;
    println!(
        "{sent} APNs requests ({ok} accepted) over {connections} connections x {streams} streams in {:.2?}: {:.0} req/s",
        elapsed,
        sent as f64 / elapsed.as_secs_f64()
    );
    sb.shutdown().await;
    Ok(())
}
