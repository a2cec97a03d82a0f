//! A minimal HTTP/1.1 keep-alive client on hyper: one connection per load worker, so the load
//! generator costs as little CPU as possible next to the server it measures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Where Herald listens and how to authenticate.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authorization: String,
}

impl Target {
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> Target {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Target {
            addr,
            authorization: format!("Basic {basic}"),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    target: Target,
    sender: SendRequest<Body>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            target: target.clone(),
            sender,
        })
    }

    /// Sends one request; returns the status and the whole body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes)> {
        self.sender.ready().await.context("connection closed")?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.target.addr.to_string())
            .header("authorization", &self.target.authorization);
        let body: Body = match body {
            Some(bytes) => {
                builder = builder.header("content-type", "application/json");
                Full::new(bytes).boxed()
            }
            None => Empty::new().boxed(),
        };
        let response = self.sender.send_request(builder.body(body)?).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// A JSON request that must answer `expect`.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: u16,
    ) -> Result<Value> {
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap()));
        let (status, answer) = self.send(method.clone(), path, bytes).await?;
        if status != expect {
            bail!(
                "{method} {path}: expected {expect}, got {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer)
            .map_err(|e| anyhow!("{method} {path}: answer is not JSON: {e}"))
    }
}

/// Waits until `GET path` answers 200 (bounded).
pub async fn wait_healthy(addr: SocketAddr, path: &str, bound: Duration) -> Result<()> {
    let target = Target::new(addr, "", "");
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(mut conn) = Conn::open(&target).await
            && let Ok((200, _)) = conn.send(Method::GET, path, None).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} did not answer 200 within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latencies of one load run, in microseconds.
#[derive(Default)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    pub fn record(&mut self, since: Instant) {
        self.0
            .push(since.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let index = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[index] as f64 / 1000.0
    }
}
