//! A small HTTP/2 client: a pool of multiplexed connections to one origin.
//!
//! Connections are opened on demand, one at a time, up to `max_connections`: a request goes to the
//! least-loaded open connection, and a new connection is opened only when every open one has as
//! many requests in flight as the server allows concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS).
//! When every connection is full and no more may be opened, requests queue inside h2 for a free
//! stream. Each connection answers a PING when it opens (which also surfaces a TLS 1.3 refusal of
//! our client certificate) and is pinged every [`PING_INTERVAL`] afterwards; one that does not
//! answer within [`PING_TIMEOUT`] is closed.
//!
//! A request that fails before the server can have seen it (the connection was already closed or
//! going away, the server's GOAWAY excluded the stream, or the stream was refused) is sent again on
//! another connection; one that fails after it may have been processed is reported as
//! [`SendError::MaybeSent`] and never resent here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use futures::future::Shared;
use h2::client::SendRequest;
use h2::{Ping, Reason};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use crate::tls;

/// How often an open connection is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered before the connection is closed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Response bodies are read up to this size (the rest is discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How many connections a request that was never sent tries before giving up.
const MAX_UNSENT_ATTEMPTS: usize = 3;

/// Scheme, host and port of a provider base URL, plus its path prefix.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    tls: bool,
    base_path: String,
    server_name: ServerName<'static>,
}

impl Origin {
    pub(crate) fn parse(url: &str) -> Result<Origin, String> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url:?}: the scheme must be https (or http)")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: user info is not supported"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a base URL has no query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| format!("{url:?}: bad host name: {e}"))?;
        Ok(Origin {
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            host,
            port,
            tls,
            base_path: uri.path().trim_end_matches('/').to_string(),
            server_name,
        })
    }

    /// The absolute URI of `path` (which starts with `/`) under this origin's base path.
    pub(crate) fn uri(&self, path: &str) -> Result<Uri, String> {
        let path_and_query = if self.base_path.is_empty() {
            PathAndQuery::try_from(path)
        } else {
            PathAndQuery::try_from(format!("{}{path}", self.base_path))
        }
        .map_err(|e| format!("bad request path {path:?}: {e}"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("bad request URI: {e}"))
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    #[cfg(test)]
    pub(crate) fn base_path(&self) -> &str {
        &self.base_path
    }
}

/// A response, its body read.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectErrorKind {
    /// TCP, DNS, timeouts, TLS errors that are not about our certificate.
    Network,
    /// The server refused our client certificate.
    ClientCertRejected,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub(crate) kind: ConnectErrorKind,
    pub(crate) message: Arc<str>,
}

impl ConnectError {
    fn network(message: impl Into<String>) -> Self {
        ConnectError {
            kind: ConnectErrorKind::Network,
            message: message.into().into(),
        }
    }

    fn from_io(what: &str, err: &std::io::Error) -> Self {
        if let Some(tls_err) = tls::rustls_error(err) {
            let kind = if tls::is_client_cert_rejection(tls_err) {
                ConnectErrorKind::ClientCertRejected
            } else {
                ConnectErrorKind::Network
            };
            return ConnectError {
                kind,
                message: format!("{what}: TLS: {tls_err}").into(),
            };
        }
        ConnectError::network(format!("{what}: {err}"))
    }

    fn from_h2(what: &str, err: &h2::Error) -> Self {
        let mut error = match err.get_io() {
            Some(io) => ConnectError::from_io(what, io),
            None => ConnectError::network(format!("{what}: {err}")),
        };
        // h2 keeps only the text of an I/O error, so a TLS alert is recognised by its wording.
        if tls::message_is_client_cert_rejection(&error.message) {
            error.kind = ConnectErrorKind::ClientCertRejected;
        }
        error
    }
}

/// Why a request got no response.
#[derive(Debug, Clone)]
pub(crate) enum SendError {
    /// No connection could be opened; nothing was sent.
    Connect(ConnectError),
    /// Every attempt failed before the request could reach the server; nothing was processed.
    Unsent(String),
    /// The request may have reached the server (the connection broke, the stream was reset).
    MaybeSent(String),
}

type ConnectFuture = Shared<Pin<Box<dyn Future<Output = Result<(), ConnectError>> + Send>>>;

/// A pool of HTTP/2 connections to one origin.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    origin: Origin,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_connections: usize,
    connect_timeout: Duration,
    /// PING every this long, and give up on a connection whose PING goes unanswered this long.
    keep_alive: (Duration, Duration),
    state: Mutex<PoolState>,
    connections_opened: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    conns: Vec<Arc<Conn>>,
    connecting: Option<ConnectFuture>,
}

struct Conn {
    send: SendRequest<Bytes>,
    in_flight: AtomicUsize,
    shared: Arc<ConnShared>,
}

#[derive(Default)]
struct ConnShared {
    /// No new requests go to this connection.
    closed: AtomicBool,
    /// Set when the connection is finished (driver task ended).
    finished: Notify,
    /// Asks the driver task to drop the connection.
    kill: Notify,
}

impl Conn {
    fn is_usable(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn capacity(&self) -> usize {
        self.send.current_max_send_streams().max(1)
    }

    fn retire(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// A connection taken for one request; counts as in flight until dropped.
struct Lease(Arc<Conn>);

impl Lease {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(conn.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum RoundTripError {
    Unsent(h2::Error),
    MaybeSent(String),
}

/// Whether the server cannot have processed the stream that failed with `err`: it was excluded by
/// the server's GOAWAY (stream id above its last stream id, or opened after the GOAWAY), or refused.
fn unprocessed(err: &h2::Error) -> bool {
    (err.is_go_away() && err.is_remote())
        || (err.is_reset() && err.is_remote() && err.reason() == Some(Reason::REFUSED_STREAM))
}

impl Pool {
    pub(crate) fn new(
        origin: Origin,
        tls: Option<Arc<rustls::ClientConfig>>,
        max_connections: usize,
        connect_timeout: Duration,
    ) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                origin,
                tls,
                max_connections: max_connections.max(1),
                connect_timeout,
                keep_alive: (PING_INTERVAL, PING_TIMEOUT),
                state: Mutex::new(PoolState::default()),
                connections_opened: AtomicU64::new(0),
            }),
        }
    }

    /// The same pool with other keep-alive timings (tests).
    #[cfg(test)]
    pub(crate) fn with_keep_alive(self, interval: Duration, timeout: Duration) -> Pool {
        let mut inner = Arc::try_unwrap(self.inner)
            .ok()
            .expect("keep-alive timings are set before the pool is shared");
        inner.keep_alive = (interval, timeout);
        Pool {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// How many connections this pool has opened so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }

    /// Sends one request (built by `make`, once per attempt) with `body`, and reads the response.
    pub(crate) async fn send(
        &self,
        make: impl Fn() -> Request<()>,
        body: &Bytes,
    ) -> Result<RawResponse, SendError> {
        let mut last_error = String::new();
        for _ in 0..MAX_UNSENT_ATTEMPTS {
            let lease = self.acquire().await.map_err(SendError::Connect)?;
            let conn = &lease.0;
            match round_trip(conn, make(), body).await {
                Ok(response) => return Ok(response),
                Err(RoundTripError::MaybeSent(message)) => {
                    return Err(SendError::MaybeSent(message));
                }
                Err(RoundTripError::Unsent(err)) => {
                    if !err.is_reset() {
                        // The connection is closed or going away: stop using it.
                        conn.retire();
                    }
                    tracing::debug!(origin = %self.inner.origin.authority, error = %err,
                        "request not processed by the server; sending it again");
                    last_error = err.to_string();
                }
            }
        }
        Err(SendError::Unsent(last_error))
    }

    /// A connection for one more request: the least-loaded open one with a free stream; else a new
    /// one (one connect at a time; requests wait for it) while fewer than `max_connections` are
    /// open; else the least-loaded one (the request waits inside h2 for a free stream).
    async fn acquire(&self) -> Result<Lease, ConnectError> {
        loop {
            let connecting = {
                let mut state = self.inner.state.lock().expect("pool lock");
                state.conns.retain(|c| c.is_usable());
                let best = state.conns.iter().min_by_key(|c| c.load());
                if let Some(conn) = best
                    && (conn.load() < conn.capacity()
                        || state.conns.len() >= self.inner.max_connections)
                {
                    return Ok(Lease::new(conn));
                }
                if state.connecting.is_none() {
                    state.connecting = Some(self.start_connect());
                }
                state.connecting.clone().expect("just set")
            };
            if let Err(err) = connecting.await {
                // Keep using what is open rather than failing the request.
                let state = self.inner.state.lock().expect("pool lock");
                return match state
                    .conns
                    .iter()
                    .filter(|c| c.is_usable())
                    .min_by_key(|c| c.load())
                {
                    Some(conn) => Ok(Lease::new(conn)),
                    None => Err(err),
                };
            }
            // Connected: look again (the new connection is in the pool).
        }
    }

    fn start_connect(&self) -> ConnectFuture {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(inner.connect_timeout, connect(&inner)).await {
                Ok(result) => result,
                Err(_) => Err(ConnectError::network(format!(
                    "connecting to {} timed out after {:?}",
                    inner.origin.authority, inner.connect_timeout
                ))),
            };
            let mut state = inner.state.lock().expect("pool lock");
            state.connecting = None;
            match result {
                Ok(conn) => {
                    inner.connections_opened.fetch_add(1, Ordering::Relaxed);
                    state.conns.push(conn);
                    Ok(())
                }
                Err(err) => {
                    tracing::warn!(origin = %inner.origin.authority, error = %err.message,
                        "provider connection failed");
                    Err(err)
                }
            }
        });
        let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(ConnectError::network(format!("connect task: {e}"))))
        });
        fut.shared()
    }
}

async fn round_trip(
    conn: &Conn,
    request: Request<()>,
    body: &Bytes,
) -> Result<RawResponse, RoundTripError> {
    let mut send = conn.send.clone();
    let (response, mut stream) = send
        .send_request(request, body.is_empty())
        .map_err(RoundTripError::Unsent)?;
    let failed = |err: h2::Error| {
        if unprocessed(&err) {
            RoundTripError::Unsent(err)
        } else {
            RoundTripError::MaybeSent(format!("connection error: {err}"))
        }
    };
    if !body.is_empty() {
        stream.send_data(body.clone(), true).map_err(failed)?;
    }
    let response = response.await.map_err(failed)?;
    let (parts, mut recv) = response.into_parts();
    let mut buf = BytesMut::new();
    if !recv.is_end_stream() {
        while let Some(chunk) = recv.data().await {
            let chunk =
                chunk.map_err(|e| RoundTripError::MaybeSent(format!("reading response: {e}")))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() <= MAX_RESPONSE_BODY {
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(RawResponse {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
    })
}

async fn connect(inner: &PoolInner) -> Result<Arc<Conn>, ConnectError> {
    let origin = &inner.origin;
    let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|e| ConnectError::from_io(&format!("connecting to {}", origin.authority), &e))?;
    let _ = tcp.set_nodelay(true);
    match &inner.tls {
        None => handshake(tcp, origin, inner.keep_alive).await,
        Some(config) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(origin.server_name.clone(), tcp)
                .await
                .map_err(|e| {
                    ConnectError::from_io(&format!("TLS handshake with {}", origin.authority), &e)
                })?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(ConnectError::network(format!(
                    "{} did not negotiate HTTP/2 (ALPN h2)",
                    origin.authority
                )));
            }
            handshake(tls, origin, inner.keep_alive).await
        }
    }
}

async fn handshake<T>(
    io: T,
    origin: &Origin,
    keep_alive: (Duration, Duration),
) -> Result<Arc<Conn>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let what = format!("HTTP/2 with {}", origin.authority);
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| ConnectError::from_h2(&what, &e))?;
    let mut ping_pong = connection
        .ping_pong()
        .expect("ping_pong is taken once, here");
    let shared = Arc::new(ConnShared::default());
    let (finished_tx, mut finished_rx) = oneshot::channel::<Result<(), h2::Error>>();
    let driver_shared = shared.clone();
    let authority = origin.authority.clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            result = connection => result,
            _ = driver_shared.kill.notified() => Ok(()),
        };
        driver_shared.closed.store(true, Ordering::Release);
        driver_shared.finished.notify_waiters();
        if let Err(err) = &result {
            tracing::debug!(origin = %authority, error = %err, "provider connection closed");
        }
        let _ = finished_tx.send(result);
    });
    // One PING round trip before the connection is used: the server has read our preface and TLS
    // is really up (a TLS 1.3 server refuses a client certificate only after the handshake).
    enum Ready {
        Pong,
        PingFailed(h2::Error),
        Finished(Option<h2::Error>),
    }
    let ready = tokio::select! {
        pong = ping_pong.ping(Ping::opaque()) => match pong {
            Ok(_) => Ready::Pong,
            Err(e) => Ready::PingFailed(e),
        },
        finished = &mut finished_rx => Ready::Finished(finished.ok().and_then(|r| r.err())),
    };
    let failure = match ready {
        Ready::Pong => None,
        // Prefer the connection's own error (it carries the TLS alert) over the ping's.
        Ready::PingFailed(ping_err) => {
            match tokio::time::timeout(Duration::from_secs(1), finished_rx).await {
                Ok(Ok(Err(conn_err))) => Some(Some(conn_err)),
                _ => Some(Some(ping_err)),
            }
        }
        Ready::Finished(err) => Some(err),
    };
    if let Some(err) = failure {
        shared.kill.notify_one();
        return Err(match err {
            Some(e) => ConnectError::from_h2(&what, &e),
            None => ConnectError::network(format!("{what}: connection closed during setup")),
        });
    }
    tokio::spawn(keep_connection_alive(ping_pong, shared.clone(), keep_alive));
    Ok(Arc::new(Conn {
        send,
        in_flight: AtomicUsize::new(0),
        shared,
    }))
}

async fn keep_connection_alive(
    mut ping_pong: h2::PingPong,
    shared: Arc<ConnShared>,
    (interval, timeout): (Duration, Duration),
) {
    loop {
        let finished = shared.finished.notified();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = finished => return,
        }
        match tokio::time::timeout(timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!("provider connection did not answer a ping; closing it");
                shared.closed.store(true, Ordering::Release);
                shared.kill.notify_one();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Action, Options, TestServer, ok};
    use crate::tls::tests::TEST_CA_PEM;

    fn pool_for(url: &str, extra_ca: bool, max: usize) -> Pool {
        let roots = tls::root_store(extra_ca.then_some(TEST_CA_PEM.as_bytes())).unwrap();
        let config = tls::client_config(&roots, &[b"h2"]).unwrap();
        Pool::new(
            Origin::parse(url).unwrap(),
            Some(config),
            max,
            Duration::from_secs(10),
        )
    }

    async fn post(pool: &Pool, path: &str) -> Result<RawResponse, SendError> {
        let uri = pool.origin().uri(path).unwrap();
        let make = || {
            let mut request = Request::new(());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            request
        };
        pool.send(make, &Bytes::from_static(b"{}")).await
    }

    async fn post_many(pool: &Pool, n: usize) -> Vec<Result<RawResponse, SendError>> {
        futures::future::join_all((0..n).map(|i| {
            let pool = pool.clone();
            async move { post(&pool, &format!("/r/{i}")).await }
        }))
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multiplexes_streams_on_one_connection() {
        // Every response waits until 20 requests are in flight together.
        let server = TestServer::start(
            Options {
                barrier: Some(20),
                ..Options::default()
            },
            Arc::new(|_, _| Action::Respond(200, vec![], b"done".to_vec())),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        for result in post_many(&pool, 20).await {
            let response = result.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(&response.body[..], b"done");
        }
        assert_eq!(pool.connections_opened(), 1);
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!(server.recorded().len(), 20);
        assert!(server.recorded().iter().all(|r| &r.body[..] == b"{}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opens_connections_on_demand_when_streams_run_out() {
        // 2 streams per connection, 6 requests that must all be in flight at once: 3 connections.
        let server = TestServer::start(
            Options {
                max_concurrent_streams: 2,
                barrier: Some(6),
                ..Options::default()
            },
            Arc::new(|_, _| ok()),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        for result in post_many(&pool, 6).await {
            assert_eq!(result.unwrap().status, 200);
        }
        assert_eq!(pool.connections_opened(), 3);
        assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queues_when_every_connection_is_full() {
        let server = TestServer::start(
            Options {
                max_concurrent_streams: 2,
                ..Options::default()
            },
            Arc::new(|_, _| ok()),
        )
        .await;
        let pool = pool_for(&server.url(), true, 1);
        for result in post_many(&pool, 30).await {
            assert_eq!(result.unwrap().status, 200);
        }
        assert_eq!(pool.connections_opened(), 1);
        assert_eq!(server.recorded().len(), 30);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_goaway() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, index| {
                if index == 0 {
                    Action::RespondThenGoAway(200, vec![])
                } else {
                    ok()
                }
            }),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        assert_eq!(post(&pool, "/a").await.unwrap().status, 200);
        server.wait_closed(1).await;
        // The pool still holds the first connection; the request fails on it before being
        // processed and goes out again on a new connection.
        assert_eq!(post(&pool, "/b").await.unwrap().status, 200);
        assert_eq!(pool.connections_opened(), 2);
        let recorded = server.recorded();
        assert_eq!(recorded.len(), 2);
        assert_eq!((recorded[0].conn, recorded[1].conn), (0, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_streams_are_sent_again() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, index| {
                if index == 0 {
                    Action::Reset(Reason::REFUSED_STREAM)
                } else {
                    ok()
                }
            }),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        assert_eq!(post(&pool, "/a").await.unwrap().status, 200);
        assert_eq!(server.recorded().len(), 2);
        assert_eq!(pool.connections_opened(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_resets_are_maybe_sent() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, _| Action::Reset(Reason::INTERNAL_ERROR)),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        let err = post(&pool, "/a").await.unwrap_err();
        assert!(matches!(err, SendError::MaybeSent(_)), "{err:?}");
        assert_eq!(server.recorded().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_lost_after_sending_is_maybe_sent() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, index| {
                if index == 0 {
                    Action::DropConnection
                } else {
                    ok()
                }
            }),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4);
        let err = post(&pool, "/a").await.unwrap_err();
        assert!(matches!(err, SendError::MaybeSent(_)), "{err:?}");
        // Not resent by the pool.
        assert_eq!(server.recorded().len(), 1);
        // The next request gets a new connection.
        assert_eq!(post(&pool, "/b").await.unwrap().status, 200);
        assert_eq!(pool.connections_opened(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_ping_closes_the_connection() {
        // The server stops reading the connection after the first request: no answer, no PONG.
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, index| if index == 0 { Action::Freeze } else { ok() }),
        )
        .await;
        let pool = pool_for(&server.url(), true, 4)
            .with_keep_alive(Duration::from_millis(50), Duration::from_millis(200));
        // The request is not left hanging until its deadline: the dead connection is closed and
        // the request reported as possibly sent.
        let err = post(&pool, "/a").await.unwrap_err();
        assert!(matches!(err, SendError::MaybeSent(_)), "{err:?}");
        assert_eq!(post(&pool, "/b").await.unwrap().status, 200);
        assert_eq!(pool.connections_opened(), 2);
    }

    #[tokio::test]
    async fn connect_errors() {
        // Nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let pool = pool_for(&format!("https://127.0.0.1:{port}"), true, 4);
        match post(&pool, "/").await {
            Err(SendError::Connect(err)) => assert_eq!(err.kind, ConnectErrorKind::Network),
            other => panic!("{other:?}"),
        }
        // A server whose certificate we do not trust.
        let server = TestServer::start(Options::default(), Arc::new(|_, _| ok())).await;
        let pool = pool_for(&server.url(), false, 4);
        match post(&pool, "/").await {
            Err(SendError::Connect(err)) => {
                assert_eq!(err.kind, ConnectErrorKind::Network);
                assert!(err.message.contains("TLS"), "{}", err.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(server.recorded().is_empty());
    }

    #[test]
    fn origins() {
        let o = Origin::parse("https://api.push.apple.com").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.tls),
            ("api.push.apple.com", 443, true)
        );
        assert_eq!(
            o.uri("/3/device/abc").unwrap().to_string(),
            "https://api.push.apple.com/3/device/abc"
        );
        let o = Origin::parse("https://127.0.0.1:8443/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 8443));
        assert_eq!(o.base_path(), "");
        assert_eq!(
            o.uri("/fcm/send").unwrap().to_string(),
            "https://127.0.0.1:8443/fcm/send"
        );
        let o = Origin::parse("http://[::1]:9000/prefix/").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.tls), ("::1", 9000, false));
        assert_eq!(
            o.uri("/v1/projects/p/messages:send").unwrap().to_string(),
            "http://[::1]:9000/prefix/v1/projects/p/messages:send"
        );
        for bad in [
            "api.push.apple.com",
            "ftp://x",
            "https://u:p@host",
            "https://h/?q=1",
            "",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}
