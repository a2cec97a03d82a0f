//! Sends through the providers to an in-process sandbox and prints notifications per second.
//!
//! `cargo run --release -p herald-providers --example throughput -- [apns|fcm|legacy] [total] [concurrency]`
//!
//! Client and sandbox share the machine, as in the project's end-to-end benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use herald_providers::{
    ApnsAuth, ApnsCredential, FcmCredential, FcmLegacyCredential, ProviderConfig, Providers,
    PushMessage,
};
use herald_sandbox::{RunningSandbox, SandboxOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let provider = args.get(1).map_or("apns", String::as_str).to_string();
    let total: usize = args.get(2).map_or(Ok(200_000), |s| s.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(2_000), |s| s.parse())?;

    let dir = tempfile::tempdir()?;
    let sandbox = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse()?,
        credentials_dir: dir.path().to_path_buf(),
        fail_rate: 0.0,
        latency_ms: 0,
        record: false,
    })
    .await?;
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f));
    let base = sandbox.base_url();
    let providers = Providers::new(ProviderConfig {
        apns_url: base.clone(),
        apns_sandbox_url: base.clone(),
        fcm_url: base.clone(),
        fcm_legacy_url: base,
        extra_ca_pem: Some(read("ca.pem")?.into_bytes()),
        ..ProviderConfig::default()
    })?;
    let msg = PushMessage {
        title: Some("Hello".into()),
        body: Some("Your order shipped".into()),
        ttl_seconds: 3600,
        ..PushMessage::new()
    };

    type Sender = Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;
    let send: Sender = match provider.as_str() {
        "apns" => {
            let token: serde_json::Value = serde_json::from_str(&read("apns-token.json")?)?;
            let client = providers.apns(
                "bench",
                1,
                &ApnsCredential {
                    auth: ApnsAuth::Token {
                        key_id: token["keyId"].as_str().unwrap().into(),
                        team_id: token["teamId"].as_str().unwrap().into(),
                        private_key_pem: token["privateKey"].as_str().unwrap().into(),
                    },
                    topic: token["bundleId"].as_str().unwrap().into(),
                    sandbox: false,
                },
            )?;
            let prepared = Arc::new(client.prepare(&msg));
            Arc::new(move |device: String| {
                let client = client.clone();
                let prepared = prepared.clone();
                Box::pin(async move {
                    client
                        .send(&prepared, &device, uuid::Uuid::now_v7())
                        .await
                        .is_delivered()
                })
            })
        }
        "fcm" => {
            let client = providers.fcm(
                "bench",
                1,
                &FcmCredential {
                    service_account_json: read("fcm-service-account.json")?,
                },
            )?;
            let prepared = Arc::new(client.prepare(&msg));
            Arc::new(move |device: String| {
                let client = client.clone();
                let prepared = prepared.clone();
                Box::pin(async move {
                    client
                        .send(&prepared, &device, uuid::Uuid::now_v7())
                        .await
                        .is_delivered()
                })
            })
        }
        _ => {
            let client = providers.fcm_legacy(
                "bench",
                1,
                &FcmLegacyCredential {
                    server_key: read("fcm-legacy-key.txt")?.trim().into(),
                },
            )?;
            let prepared = Arc::new(client.prepare(&msg));
            Arc::new(move |device: String| {
                let client = client.clone();
                let prepared = prepared.clone();
                Box::pin(async move {
                    client
                        .send(&prepared, &device, uuid::Uuid::now_v7())
                        .await
                        .is_delivered()
                })
            })
        }
    };

    // Warm up: connection, provider token / access token.
    assert!(send("warmup".into()).await, "warm-up send failed");

    let next = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let delivered = delivered.clone();
            let send = send.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    if send(format!("{i:064x}")).await {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed();
    let delivered = delivered.load(Ordering::Relaxed);
    println!(
        "{provider}: {delivered}/{total} delivered in {:.2}s = {:.0}/s (concurrency {concurrency})",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
    sandbox.shutdown().await;
    Ok(())
}
