//! A hand-rolled minimal client for the sandbox: TLS (tokio-rustls, ring) + hyper HTTP/2 or
//! HTTP/1.1 connections we control one by one, plus JWT signing from the credential files.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use herald_sandbox::{RunningSandbox, SandboxOptions};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Credentials are generated once per test binary (RSA key generation is the slow part) and
/// copied into a fresh directory for every sandbox. The template names another address than
/// any sandbox binds, so every start exercises the address rewrite.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("herald-sandbox-template-")
            .tempdir()
            .expect("tempdir")
            .keep();
        herald_sandbox::write_credentials(&dir, "127.0.0.1:9".parse().unwrap())
            .expect("write_credentials");
        dir
    })
}

pub fn copy_template(to: &Path) {
    for entry in std::fs::read_dir(template()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

pub struct Sandbox {
    pub running: Option<RunningSandbox>,
    pub dir: tempfile::TempDir,
    pub creds: Creds,
}

impl Sandbox {
    pub fn sb(&self) -> &RunningSandbox {
        self.running.as_ref().unwrap()
    }
    pub fn addr(&self) -> SocketAddr {
        self.sb().addr()
    }
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub async fn start() -> Sandbox {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut SandboxOptions)) -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    copy_template(dir.path());
    let mut opts = SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: dir.path().to_path_buf(),
        fail_rate: 0.0,
        latency_ms: 0,
        record: true,
    };
    f(&mut opts);
    let running = RunningSandbox::start(opts).await.expect("sandbox starts");
    let creds = Creds::load(dir.path());
    Sandbox {
        running: Some(running),
        dir,
        creds,
    }
}

/// What a client reads from the credential files.
pub struct Creds {
    pub key_id: String,
    pub team_id: String,
    pub bundle_id: String,
    pub p8_der: Vec<u8>,
    pub account: Value,
    pub rsa_der: Vec<u8>,
    pub legacy_key: String,
    pub ca_pem: String,
    pub apns_cert_pem: String,
    pub apns_key_pem: String,
}

pub fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("PEM begin") + begin.len();
    let stop = pem[start..].find(&end).expect("PEM end") + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(b64).unwrap()
}

impl Creds {
    pub fn load(dir: &Path) -> Creds {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let token: Value = serde_json::from_str(&read("apns-token.json")).unwrap();
        let p8_pem = String::from_utf8(
            STANDARD
                .decode(token["privateKey"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let account: Value = serde_json::from_str(&read("fcm-service-account.json")).unwrap();
        let rsa_der = pem_der(account["private_key"].as_str().unwrap(), "PRIVATE KEY");
        Creds {
            key_id: token["keyId"].as_str().unwrap().to_owned(),
            team_id: token["teamId"].as_str().unwrap().to_owned(),
            bundle_id: token["bundleId"].as_str().unwrap().to_owned(),
            p8_der: pem_der(&p8_pem, "PRIVATE KEY"),
            account,
            rsa_der,
            legacy_key: read("fcm-legacy-key.txt").trim().to_owned(),
            ca_pem: read("ca.pem"),
            apns_cert_pem: read("apns-cert.pem"),
            apns_key_pem: read("apns-key.pem"),
        }
    }

    pub fn project_id(&self) -> &str {
        self.account["project_id"].as_str().unwrap()
    }

    pub fn client_email(&self) -> &str {
        self.account["client_email"].as_str().unwrap()
    }

    pub fn token_uri(&self) -> &str {
        self.account["token_uri"].as_str().unwrap()
    }

    /// An APNs provider token issued at `iat`.
    pub fn apns_jwt(&self, iat: i64) -> String {
        sign_es256(
            &self.p8_der,
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": iat}),
        )
    }

    /// A Google OAuth assertion with the standard claims, `patch` merged over them.
    pub fn fcm_assertion(&self, patch: Value) -> String {
        let now = now();
        let mut claims = json!({
            "iss": self.client_email(),
            "scope": FCM_SCOPE,
            "aud": self.token_uri(),
            "iat": now,
            "exp": now + 3600,
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let kid = self.account["private_key_id"].as_str().unwrap();
        sign_rs256(
            &self.rsa_der,
            &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
            &claims,
        )
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

pub fn sign_es256(p8_der: &[u8], header: &Value, claims: &Value) -> String {
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, p8_der, &rng).unwrap();
    let input = signing_input(header, claims);
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

pub fn sign_rs256(pkcs8_der: &[u8], header: &Value, claims: &Value) -> String {
    let rng = ring::rand::SystemRandom::new();
    let key = RsaKeyPair::from_pkcs8(pkcs8_der).unwrap();
    let input = signing_input(header, claims);
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig))
}

// ---------------------------------------------------------------------------------------------
// Connections

pub struct Tls {
    pub alpn: Vec<Vec<u8>>,
    pub client_cert: Option<(String, String)>,
}

pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    tls: Tls,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pem_der(ca_pem, "CERTIFICATE")))
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match tls.client_cert {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(pem_der(&cert_pem, "CERTIFICATE"))],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_der(&key_pem, "PRIVATE KEY"))),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    // Without it, Nagle + delayed ACK add ~40 ms to every request on loopback.
    tcp.set_nodelay(true)?;
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }
    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/2 connection.
pub struct H2 {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    pub driver: JoinHandle<Result<(), hyper::Error>>,
}

impl H2 {
    pub async fn connect(sb: &Sandbox) -> H2 {
        Self::connect_with(sb, None).await
    }

    pub async fn connect_cert(sb: &Sandbox) -> H2 {
        let cert = (
            sb.creds.apns_cert_pem.clone(),
            sb.creds.apns_key_pem.clone(),
        );
        Self::connect_with(sb, Some(cert)).await
    }

    pub async fn connect_with(sb: &Sandbox, client_cert: Option<(String, String)>) -> H2 {
        let stream = tls_connect(
            sb.addr(),
            &sb.creds.ca_pem,
            Tls {
                alpn: vec![b"h2".to_vec()],
                client_cert,
            },
        )
        .await
        .expect("TLS connect");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        let driver = tokio::spawn(conn);
        H2 { sender, driver }
    }

    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.expect("request answered")
    }
}

/// One HTTP/1.1 connection.
pub struct H1 {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(sb: &Sandbox) -> H1 {
        let stream = tls_connect(
            sb.addr(),
            &sb.creds.ca_pem,
            Tls {
                alpn: vec![b"http/1.1".to_vec()],
                client_cert: None,
            },
        )
        .await
        .expect("TLS connect");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        H1 { sender }
    }

    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.expect("request answered")
    }
}

pub fn request(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

impl Sandbox {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sb().base_url())
    }

    /// A control API call over its own HTTP/2 connection.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut h2 = H2::connect(self).await;
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        h2.send(request(
            method,
            &self.url(path),
            &[("content-type", "application/json")],
            body,
        ))
        .await
    }

    pub async fn fault(&self, fault: Value) {
        let r = self
            .control(Method::POST, "/_sandbox/faults", Some(fault))
            .await;
        assert_eq!(r.status, 201, "fault accepted: {:?}", r.body);
    }

    pub async fn stats(&self) -> Value {
        self.control(Method::GET, "/_sandbox/stats", None)
            .await
            .json()
    }

    pub async fn received(&self, token: &str) -> Vec<Value> {
        let r = self
            .control(
                Method::GET,
                &format!("/_sandbox/received?token={token}"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        r.json().as_array().unwrap().clone()
    }

    /// An APNs push with a valid provider token and the given extra headers.
    pub fn apns_request(
        &self,
        token: &str,
        jwt: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Request<Full<Bytes>> {
        let auth = format!("bearer {jwt}");
        let mut all: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        request(
            Method::POST,
            &self.url(&format!("/3/device/{token}")),
            &all,
            body.to_owned(),
        )
    }

    /// Gets an access token from the OAuth endpoint.
    pub async fn access_token(&self) -> String {
        let mut h2 = H2::connect(self).await;
        let r = h2
            .send(self.token_request(&self.creds.fcm_assertion(json!({}))))
            .await;
        assert_eq!(r.status, 200, "token grant: {:?}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub fn token_request(&self, assertion: &str) -> Request<Full<Bytes>> {
        let form = format!(
            "grant_type={}&assertion={assertion}",
            JWT_BEARER.replace(':', "%3A")
        );
        request(
            Method::POST,
            &self.url("/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
    }

    pub fn fcm_request(
        &self,
        access_token: &str,
        project: &str,
        body: &Value,
    ) -> Request<Full<Bytes>> {
        let auth = format!("Bearer {access_token}");
        request(
            Method::POST,
            &self.url(&format!("/v1/projects/{project}/messages:send")),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(body).unwrap(),
        )
    }

    pub fn legacy_request(&self, auth: &str, body: &Value) -> Request<Full<Bytes>> {
        request(
            Method::POST,
            &self.url("/fcm/send"),
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(body).unwrap(),
        )
    }
}

/// A realistic APNs device token: 64 hex characters.
pub fn apns_token(n: u32) -> String {
    format!("{:064x}", 0x5eed_0000_u64 + n as u64)
}

/// A realistic FCM registration token shape.
pub fn fcm_token(n: u32) -> String {
    format!("dQw4w9WgXcQ:APA91bH{n:08}{}", "x".repeat(130))
}

pub const ALERT: &str = r#"{"aps":{"alert":{"title":"Hi","body":"Your order shipped"}}}"#;
