//! The scenarios of issue #5. Each returns raw per-run samples; `main` turns them into figures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{Conn, Latencies, Target};
use crate::procs::{Proc, Sandbox, Server};

pub const APP: &str = "bench";

/// APN and FCM credentials of app `bench` from the sandbox's files.
pub async fn create_credentials(server: &Server, sandbox: &Sandbox) -> Result<()> {
    let apn: Value = serde_json::from_slice(&std::fs::read(sandbox.dir.join("apns-token.json"))?)?;
    let fcm_json = std::fs::read(sandbox.dir.join("fcm-service-account.json"))?;
    let fcm = json!({"privateKey": base64::engine::general_purpose::STANDARD.encode(fcm_json)});
    let mut conn = server.conn().await?;
    for (kind, content) in [("APN", apn), ("FCM", fcm)] {
        conn.json(
            Method::POST,
            "/v1/PushNotifications/Credentials",
            Some(&json!({"credentialType": kind, "appName": APP, "content": content})),
            202,
        )
        .await?;
    }
    Ok(())
}

/// Waits until no operation is PROCESSING or SCHEDULED, so one scenario's leftovers (the accept
/// scenario queues many small sends) do not run during the next one.
pub async fn settle(server: &Server) -> Result<()> {
    let mut conn = server.conn().await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let mut busy = false;
        for status in ["PROCESSING", "SCHEDULED"] {
            let page = conn
                .json(
                    Method::GET,
                    &format!("/v1/PushNotifications/Operations?status={status}&pageSize=1"),
                    None,
                    200,
                )
                .await?;
            busy |= page["operations"].as_array().is_some_and(|a| !a.is_empty());
        }
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("operations still processing after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Recipients of one send request.
pub enum Recipients {
    /// Direct tokens `prefix-i`, alternating APN / FCM.
    Tokens { prefix: String, count: usize },
    /// These users.
    Users(Vec<String>),
}

fn send_body(recipients: &Recipients) -> Bytes {
    let to: Vec<Value> = match recipients {
        Recipients::Tokens { prefix, count } => (0..*count)
            .map(|i| {
                json!({"token": format!("{prefix}-{i:07}"), "provider": if i % 2 == 0 { "APN" } else { "FCM" }})
            })
            .collect(),
        Recipients::Users(users) => users.iter().map(|u| json!({"userId": u})).collect(),
    };
    let body = json!({
        "from": {"appName": APP},
        "to": to,
        "content": {"title": "Herald bench", "body": "Your order shipped", "data": {"orderId": "42"}},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

/// Result of one fan-out run.
pub struct FanoutRun {
    pub notifications: u64,
    pub seconds: f64,
    pub peak_rss_mb: Option<f64>,
}

/// Posts every request (at most 8 in flight), then polls the operations until every one is
/// COMPLETED. The clock runs from the first POST to the last COMPLETED seen. Bodies are built
/// before the clock starts.
pub async fn fanout(
    server: &Server,
    requests: Vec<Recipients>,
    watch_rss: Option<&Proc>,
) -> Result<FanoutRun> {
    let bodies: Vec<Bytes> = requests.iter().map(send_body).collect();
    let expected: u64 = requests
        .iter()
        .map(|r| match r {
            Recipients::Tokens { count, .. } => *count as u64,
            Recipients::Users(u) => u.len() as u64,
        })
        .sum();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..8.min(bodies.len()) {
        conns.push(server.conn().await?);
    }
    let mut poll = server.conn().await?;
    let started = Instant::now();
    let mut posters = Vec::new();
    for mut conn in conns {
        let bodies = bodies.clone();
        let next = next.clone();
        posters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let (status, answer) = conn
                    .send(Method::POST, "/v1/PushNotifications", Some(body.clone()))
                    .await?;
                if status != 202 {
                    bail!(
                        "send answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                let v: Value = serde_json::from_slice(&answer)?;
                ids.push(v["operationId"].as_str().context("operationId")?.to_owned());
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    let mut sampler_peak = None;
    for poster in posters {
        ids.extend(poster.await??);
    }
    eprintln!(
        "  all {} sends accepted after {:.2} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let mut sent = 0u64;
    let mut other = 0u64;
    let mut pending = ids;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let op = poll
                .json(
                    Method::GET,
                    &format!("/v1/PushNotifications/Operations/{id}"),
                    None,
                    200,
                )
                .await?;
            if op["status"] == "COMPLETED" || op["status"] == "CANCELED" {
                let s = &op["stats"];
                sent += s["sent"].as_u64().unwrap_or(0);
                other += s["total"].as_u64().unwrap_or(0) - s["sent"].as_u64().unwrap_or(0);
            } else {
                still.push(id);
            }
        }
        pending = still;
        if let Some(proc) = watch_rss
            && let Some(rss) = proc.rss_mb()
        {
            sampler_peak = Some(sampler_peak.unwrap_or(0.0f64).max(rss));
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("fan-out did not complete in 30 minutes");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if sent != expected {
        bail!("fan-out: {sent} of {expected} notifications SENT ({other} in other states)");
    }
    Ok(FanoutRun {
        notifications: sent,
        seconds,
        peak_rss_mb: sampler_peak,
    })
}

/// Result of one closed-loop load run.
pub struct LoadRun {
    pub requests: u64,
    pub seconds: f64,
    pub latencies: Latencies,
}

/// `workers` connections, each sending `make(worker, i)` back to back until `until` says stop;
/// every answer must be `expect`.
pub async fn closed_loop<F>(
    target: &Target,
    workers: usize,
    path: &'static str,
    total: Option<usize>,
    duration: Option<Duration>,
    expect: u16,
    make: F,
) -> Result<LoadRun>
where
    F: Fn(usize) -> Bytes + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..workers {
        conns.push(Conn::open(target).await?);
    }
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = Vec::new();
    for mut conn in conns {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) {
                    break;
                }
                let body = make(i);
                let sent = Instant::now();
                let (status, answer) = conn.send(Method::POST, path, Some(body)).await?;
                latencies.record(sent);
                if status != expect {
                    bail!(
                        "POST {path} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Latencies::default();
    for task in tasks {
        latencies.merge(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoadRun {
        requests: latencies.0.len() as u64,
        seconds,
        latencies,
    })
}

/// Every user ID of the account (GET /Users, 1000 a page).
pub async fn all_users(server: &Server) -> Result<Vec<String>> {
    let mut conn = server.conn().await?;
    let mut users = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/PushNotifications/Users?pageSize=1000&pageToken={t}"),
            None => "/v1/PushNotifications/Users?pageSize=1000".to_owned(),
        };
        let page = conn.json(Method::GET, &path, None, 200).await?;
        for user in page["users"].as_array().context("users")? {
            users.push(user["id"].as_str().context("id")?.to_owned());
        }
        match page["pagination"]["next"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(users),
        }
    }
}

/// The device token of the ceiling's requests (the sandbox answers 200 to any token).
const CEILING_DEVICE_TOKEN: &str = "benchceilingtoken0001";

/// The APNs payload of the ceiling's requests: the alert of the fan-out scenarios.
fn ceiling_payload() -> Value {
    json!({"aps": {"alert": {"title": "Herald bench", "body": "Your order shipped"}, "sound": "default"}, "orderId": "42"})
}

/// `apns-token.json` of the sandbox and the PEM of its `.p8` key.
fn apns_token_file(dir: &Path) -> Result<(Value, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let content: Value = serde_json::from_slice(&std::fs::read(dir.join("apns-token.json"))?)?;
    let pem =
        String::from_utf8(b64.decode(content["privateKey"].as_str().context("privateKey")?)?)?;
    Ok((content, pem))
}

/// An ES256 provider token for the sandbox's APNs endpoint, from `apns-token.json`.
pub fn apns_jwt(dir: &Path) -> Result<(String, String)> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (content, pem) = apns_token_file(dir)?;
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = b64.decode(der_b64)?;
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| anyhow::anyhow!("apns key: {e}"))?;
    let header = json!({"alg": "ES256", "kid": content["keyId"]});
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({"iss": content["teamId"], "iat": iat});
    let input = format!(
        "{}.{}",
        b64url.encode(serde_json::to_vec(&header)?),
        b64url.encode(serde_json::to_vec(&claims)?)
    );
    let signature = key
        .sign(&rng, input.as_bytes())
        .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
    let topic = content["bundleId"]
        .as_str()
        .unwrap_or("com.example.herald")
        .to_owned();
    Ok((
        format!("{input}.{}", b64url.encode(signature.as_ref())),
        topic,
    ))
}

/// `h2load` posting one APNs payload to the sandbox; returns requests per second.
pub fn h2load(
    h2load: &str,
    sandbox: &Sandbox,
    work: &Path,
    requests: usize,
    connections: usize,
    streams: usize,
) -> Result<H2loadRun> {
    let (jwt, topic) = apns_jwt(&sandbox.dir)?;
    let payload = work.join("apns-payload.json");
    std::fs::write(&payload, serde_json::to_vec(&ceiling_payload())?)?;
    let cpu_before = cpu_seconds(libc::RUSAGE_CHILDREN);
    let sandbox_cpu_before = sandbox.proc.cpu_seconds().context("sandbox CPU time")?;
    let output = std::process::Command::new(h2load)
        .arg("-n")
        .arg(requests.to_string())
        .arg("-c")
        .arg(connections.to_string())
        .arg("-m")
        .arg(streams.to_string())
        .arg("-t")
        .arg("1")
        .arg("-d")
        .arg(&payload)
        .arg("-H")
        .arg(format!("authorization: bearer {jwt}"))
        .arg("-H")
        .arg(format!("apns-topic: {topic}"))
        .arg("-H")
        .arg("apns-push-type: alert")
        .arg("-H")
        .arg("content-type: application/json")
        .arg(format!(
            "https://{}/3/device/{CEILING_DEVICE_TOKEN}",
            sandbox.addr
        ))
        .output()
        .with_context(|| format!("running {h2load}"))?;
    // The reaped h2load is the only child that has exited: the difference is its CPU time.
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu_before;
    let sandbox_cpu = sandbox.proc.cpu_seconds().context("sandbox CPU time")? - sandbox_cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // "status codes: 100000 2xx, 0 3xx, 0 4xx, 0 5xx"
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .context("h2load: no status codes line")?;
    let ok: u64 = codes
        .trim_start_matches("status codes:")
        .split(',')
        .next()
        .and_then(|s| s.trim().strip_suffix(" 2xx"))
        .and_then(|s| s.trim().parse().ok())
        .context("h2load: 2xx count")?;
    if ok != requests as u64 {
        bail!("h2load: only {ok} of {requests} answered 2xx:\n{text}");
    }
    // "finished in 1.23s, 81234.56 req/s, 12.34MB/s"
    let finished = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .context("h2load: no finished line")?;
    let rate = finished
        .split(',')
        .nth(1)
        .and_then(|s| s.trim().strip_suffix(" req/s"))
        .and_then(|s| s.trim().parse().ok())
        .context("h2load: req/s")?;
    let run = H2loadRun {
        requests_per_s: rate,
        h2load_cpu_us: cpu * 1e6 / requests as f64,
        sandbox_cpu_us: sandbox_cpu * 1e6 / requests as f64,
    };
    eprintln!(
        "  h2load: {requests} requests, {rate:.0}/s, CPU per request: h2load {:.1} µs, sandbox {:.1} µs",
        run.h2load_cpu_us, run.sandbox_cpu_us
    );
    Ok(run)
}

/// Result of one h2load run against the sandbox.
pub struct H2loadRun {
    pub requests_per_s: f64,
    /// CPU time per request of h2load and of the sandbox.
    pub h2load_cpu_us: f64,
    pub sandbox_cpu_us: f64,
}

/// User plus system CPU seconds of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Result of one run of Herald's own APNs client.
pub struct ClientRun {
    pub requests_per_s: f64,
    /// CPU time per request of this process (the client) and of the sandbox.
    pub client_cpu_us: f64,
    pub sandbox_cpu_us: f64,
    /// HTTP/2 connections the clients opened (the pool opens more only when streams run out).
    pub connections: u64,
}

/// Herald's own APNs client (`herald-providers`, built and called as the delivery engine does)
/// posting the h2load ceiling's payload to the sandbox: `clients` clients (the engine has one per
/// credential), each with at most `in_flight` sends at once (the engine's per-credential
/// concurrency), no database. Fresh clients every run, so the clock includes connecting, as
/// h2load's does.
pub async fn client_ceiling(
    sandbox: &Sandbox,
    requests: usize,
    clients: usize,
    in_flight: usize,
) -> Result<ClientRun> {
    use herald_providers::{
        ApnsAuth, ApnsCredential, ApnsPrepared, ProviderConfig, Providers, PushMessage,
    };
    // The variables `herald serve` gets: sandbox URLs and its CA.
    let config = ProviderConfig::from_lookup(|name| {
        sandbox
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })?;
    let providers = Providers::new(config)?;
    let (content, pem) = apns_token_file(&sandbox.dir)?;
    let field = |name: &str| {
        content[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("apns-token.json: {name}"))
    };
    let credential = ApnsCredential {
        auth: ApnsAuth::Token {
            key_id: field("keyId")?,
            team_id: field("teamId")?,
            private_key_pem: pem,
        },
        topic: field("bundleId")?,
        sandbox: false,
    };
    let message = PushMessage {
        title: Some("Herald bench".into()),
        body: Some("Your order shipped".into()),
        sound: Some("default".into()),
        data: [("orderId".to_owned(), json!("42"))].into_iter().collect(),
        ..PushMessage::new()
    };
    let prepared = Arc::new(ApnsPrepared::new(&message));
    let rendered: Value = serde_json::from_slice(prepared.payload())?;
    if rendered != ceiling_payload() {
        bail!("client ceiling: payload {rendered} is not h2load's");
    }

    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_seconds(libc::RUSAGE_SELF);
    let sandbox_cpu_before = sandbox.proc.cpu_seconds().context("sandbox CPU time")?;
    let started = Instant::now();
    let mut apns_clients = Vec::new();
    let mut senders = Vec::new();
    for c in 0..clients {
        let client = providers.apns(&format!("bench-client-ceiling-{c}"), 1, &credential)?;
        // One task per send slot: at most `in_flight` sends through this client at once, like
        // the engine's per-credential semaphore.
        for _ in 0..in_flight {
            let client = client.clone();
            let prepared = prepared.clone();
            let next = next.clone();
            senders.push(tokio::spawn(async move {
                let mut delivered = 0u64;
                let mut failure = None;
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let outcome = client
                        .send(&prepared, CEILING_DEVICE_TOKEN, uuid::Uuid::now_v7())
                        .await;
                    if outcome.is_delivered() {
                        delivered += 1;
                    } else {
                        failure.get_or_insert(outcome);
                    }
                }
                (delivered, failure)
            }));
        }
        apns_clients.push(client);
    }
    let mut delivered = 0u64;
    let mut failure = None;
    for sender in senders {
        let (d, f) = sender.await?;
        delivered += d;
        failure = failure.or(f);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu_before;
    let sandbox_cpu = sandbox.proc.cpu_seconds().context("sandbox CPU time")? - sandbox_cpu_before;
    if delivered != requests as u64 {
        bail!(
            "client ceiling: only {delivered} of {requests} delivered; first failure: {}",
            failure.map(|o| o.to_string()).unwrap_or_default()
        );
    }
    let connections = apns_clients.iter().map(|c| c.connections_opened()).sum();
    let rate = requests as f64 / seconds;
    let run = ClientRun {
        requests_per_s: rate,
        client_cpu_us: cpu * 1e6 / requests as f64,
        sandbox_cpu_us: sandbox_cpu * 1e6 / requests as f64,
        connections,
    };
    eprintln!(
        "  Herald client: {requests} requests in {seconds:.2} s, {rate:.0}/s, {connections} connections, CPU per request: client {:.1} µs, sandbox {:.1} µs",
        run.client_cpu_us, run.sandbox_cpu_us
    );
    Ok(run)
}
