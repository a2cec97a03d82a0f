//! A scriptable HTTP/2-over-TLS server on loopback for the unit tests of the clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Notify, mpsc};

use crate::tls::tests::{SERVER_CERT_PEM, SERVER_KEY_PEM, TEST_CA_PEM};

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// 0-based index of the connection it came on.
    pub(crate) conn: usize,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What to do with a request.
pub(crate) enum Action {
    Respond(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Respond, then shut the connection down gracefully (GOAWAY).
    RespondThenGoAway(u16, Vec<u8>),
    /// Reset the stream with this reason.
    Reset(Reason),
    /// Drop the whole connection without answering.
    DropConnection,
    /// Stop reading and writing the connection (no answers, no PING replies), keeping it open.
    Freeze,
}

pub(crate) type Handler = Arc<dyn Fn(&Recorded, usize) -> Action + Send + Sync>;

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<Mutex<Vec<Recorded>>>,
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) closed: Arc<AtomicUsize>,
    closed_notify: Arc<Notify>,
}

pub(crate) struct Options {
    pub(crate) max_concurrent_streams: u32,
    /// Every response waits until this many requests are being handled at once.
    pub(crate) barrier: Option<usize>,
    /// Require a client certificate signed by the test CA.
    pub(crate) client_auth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrent_streams: 100,
            barrier: None,
            client_auth: false,
        }
    }
}

enum Control {
    GoAway,
    Freeze(h2::server::SendResponse<Bytes>),
    /// Drop the connection; the stream's responder goes along so that dropping it first cannot
    /// reset the stream before the connection goes.
    Drop(h2::server::SendResponse<Bytes>),
}

impl TestServer {
    pub(crate) async fn start(options: Options, handler: Handler) -> TestServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if options.client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(TEST_CA_PEM.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let certs = CertificateDer::pem_slice_iter(SERVER_CERT_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes()).unwrap();
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let closed_notify = Arc::new(Notify::new());
        let barrier = options.barrier.map(|n| Arc::new(Barrier::new(n)));
        let server = TestServer {
            addr,
            requests: requests.clone(),
            connections: connections.clone(),
            closed: closed.clone(),
            closed_notify: closed_notify.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let requests = requests.clone();
                let barrier = barrier.clone();
                let connections = connections.clone();
                let closed = closed.clone();
                let closed_notify = closed_notify.clone();
                let max_streams = options.max_concurrent_streams;
                tokio::spawn(async move {
                    let conn_index = connections.fetch_add(1, Ordering::SeqCst);
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, conn_index, max_streams, handler, requests, barrier).await;
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                    closed_notify.notify_waiters();
                });
            }
        });
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub(crate) fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` connections have ended on the server side.
    pub(crate) async fn wait_closed(&self, n: usize) {
        loop {
            let notified = self.closed_notify.notified();
            if self.closed.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

async fn serve<T>(
    io: T,
    conn_index: usize,
    max_streams: u32,
    handler: Handler,
    requests: Arc<Mutex<Vec<Recorded>>>,
    barrier: Option<Arc<Barrier>>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(io)
        .await
    else {
        return;
    };
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();
    loop {
        tokio::select! {
            accepted = conn.accept() => {
                let Some(Ok((request, mut respond))) = accepted else { return };
                let handler = handler.clone();
                let requests = requests.clone();
                let barrier = barrier.clone();
                let control_tx = control_tx.clone();
                tokio::spawn(async move {
                    let (parts, mut body) = request.into_parts();
                    let mut data = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let Ok(chunk) = chunk else { return };
                        let _ = body.flow_control().release_capacity(chunk.len());
                        data.extend_from_slice(&chunk);
                    }
                    let recorded = Recorded {
                        conn: conn_index,
                        path: parts.uri.path().to_string(),
                        headers: parts.headers,
                        body: Bytes::from(data),
                    };
                    let index = {
                        let mut all = requests.lock().unwrap();
                        all.push(recorded.clone());
                        all.len() - 1
                    };
                    if let Some(barrier) = barrier {
                        barrier.wait().await;
                    }
                    let respond_with = |respond: &mut h2::server::SendResponse<Bytes>,
                                        status: u16,
                                        headers: Vec<(&'static str, String)>,
                                        body: Vec<u8>| {
                        let mut response = Response::new(());
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        for (name, value) in headers {
                            response.headers_mut().insert(name, value.parse().unwrap());
                        }
                        if let Ok(mut stream) = respond.send_response(response, body.is_empty())
                            && !body.is_empty() {
                                let _ = stream.send_data(Bytes::from(body), true);
                            }
                    };
                    match handler(&recorded, index) {
                        Action::Respond(status, headers, body) => {
                            respond_with(&mut respond, status, headers, body)
                        }
                        Action::RespondThenGoAway(status, body) => {
                            respond_with(&mut respond, status, vec![], body);
                            let _ = control_tx.send(Control::GoAway);
                        }
                        Action::Reset(reason) => respond.send_reset(reason),
                        Action::DropConnection => {
                            let _ = control_tx.send(Control::Drop(respond));
                        }
                        Action::Freeze => {
                            let _ = control_tx.send(Control::Freeze(respond));
                        }
                    }
                });
            }
            Some(control) = control_rx.recv() => match control {
                Control::GoAway => conn.graceful_shutdown(),
                Control::Freeze(respond) => {
                    // Hold the connection without polling it until the client goes away.
                    let _held = (conn, respond);
                    std::future::pending::<()>().await;
                    return;
                }
                Control::Drop(respond) => {
                    drop(conn);
                    drop(respond);
                    return;
                }
            },
        }
    }
}

pub(crate) fn ok() -> Action {
    Action::Respond(200, vec![], vec![])
}
