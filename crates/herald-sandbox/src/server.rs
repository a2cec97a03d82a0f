//! The TLS listener: one port, ALPN `h2` and `http/1.1`, optional client certificates, routing
//! to the fake providers and the control API, GOAWAY and graceful shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::apns::{self, ConnJwt};
use crate::credentials::{self, Loaded, UID_OID};
use crate::http_util::{self, HandlerResult};
use crate::state::State;
use crate::{control, fcm, legacy};

/// How long shutdown waits for in-flight requests before dropping connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection facts: the client certificate's topic and the APNs provider token in use.
pub(crate) struct ConnState {
    pub cert_topic: Option<String>,
    pub apns_jwt: Mutex<Option<ConnJwt>>,
}

pub(crate) fn tls_config(loaded: &Loaded) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_der = credentials::pem_decode(&loaded.ca_cert_pem, "CERTIFICATE")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.clone()))
        .context("adding the sandbox CA to the client-certificate roots")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("client certificate verifier: {e}"))?;
    let (cert, key) = credentials::server_certificate(loaded)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert), CertificateDer::from(ca_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections until `shutdown` turns true (or its sender is dropped), then asks every
/// connection to finish (HTTP/2 GOAWAY) and waits a little for in-flight requests.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(connection(tcp, peer, acceptor.clone(), state.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Closes a connection whose TLS handshake failed the way a server should: the alert is already
/// sent; our side is shut down and what the client still sends (a TLS 1.3 client sends its
/// HTTP/2 preface before it reads our verdict on its certificate) is read and dropped until it
/// closes too. Closing with that data unread makes the kernel answer with a reset, which can
/// reach the client before the alert does (the client then sees "connection reset", not the
/// certificate's rejection).
async fn close_gracefully(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let accept = acceptor.accept(tcp).into_fallible();
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((e, tcp))) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            close_gracefully(tcp).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let cert_topic = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| certificate_uid(c));
    let conn = Arc::new(ConnState {
        cert_topic,
        apns_jwt: Mutex::new(None),
    });

    let svc_state = state.clone();
    let service = service_fn(move |req| route(svc_state.clone(), conn.clone(), req));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .max_pending_accept_reset_streams(1000)
        .max_local_error_reset_streams(Some(100_000));
    builder.http1().timer(TokioTimer::new());
    // Without ALPN the auto builder tells HTTP/2 (prior knowledge) from HTTP/1.1 by the preface.
    let builder = match alpn.as_deref() {
        Some(b"h2") => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None => builder,
    };

    state.open_connections.fetch_add(1, Ordering::Relaxed);
    let mut goaway = state.goaway.subscribe();
    goaway.borrow_and_update();
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        changed = goaway.changed() => {
            if changed.is_ok() {
                tracing::debug!(%peer, "GOAWAY requested through the control API");
            }
            served.as_mut().graceful_shutdown();
            served.as_mut().await
        }
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            served.as_mut().await
        }
    };
    state.open_connections.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The UID attribute of a certificate subject: the topic of an APNs certificate.
fn certificate_uid(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let oid = x509_parser::der_parser::oid::Oid::from(&UID_OID).ok()?;
    cert.subject()
        .iter_attributes()
        .find(|a| a.attr_type() == &oid)
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

async fn route(state: Arc<State>, conn: Arc<ConnState>, req: Request<Incoming>) -> HandlerResult {
    let path = req.uri().path();
    if path == "/_sandbox" || path.starts_with("/_sandbox/") {
        return control::handle(state, req).await;
    }
    let latency = state.latency();
    let push = path.starts_with("/3/device") || path.starts_with("/v1/") || path == "/fcm/send";
    // Counted until the answer leaves, latency included; only while recording: the shared
    // counters cost a few contended atomics per request, ~3 % of the sandbox's CPU, which a
    // benchmark (`--no-record`) should not pay.
    let counted = (push && state.recording()).then(|| state.clone());
    let _in_flight = counted.as_ref().map(|state| state.stats.in_flight());
    let result = if path == "/3/device" || path.starts_with("/3/device/") {
        apns::handle(state, conn, req).await
    } else if path == "/token" {
        fcm::token(state, req).await
    } else if path.starts_with("/v1/") {
        fcm::send(state, req).await
    } else if path == "/fcm/send" {
        legacy::handle(state, req).await
    } else {
        Ok(http_util::json(
            404,
            &serde_json::json!({"reason": "BadPath"}),
        ))
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    result
}
