//! Accepting connections: the connection cap, TLS handshakes and the per-connection
//! timeouts, so that slow or idle clients cannot hold connections (and file descriptors)
//! forever.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::{App, ServeError, SHUTDOWN_GRACE};
use crate::config::{ConnectionLimits, TlsVersion};

/// How long an HTTP/2 peer has to answer a keep-alive ping.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` flips to true,
/// then waits for the open connections to finish.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: App,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper starts the header timer whenever it waits for a request head, so it also bounds
    // how long an HTTP/1 connection may sit idle between requests.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // Pings find HTTP/2 peers that went away while a request was in flight.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle))
        .keep_alive_timeout(PING_TIMEOUT);
    let builder = Arc::new(builder);
    loop {
        // At the cap, new connections wait in the kernel's backlog until one closes.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: neither
                    // stops the server.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            tls.clone(),
            Connection {
                app: app.clone(),
                builder: builder.clone(),
                idle: limits.idle,
                first_request: limits.header_read,
                shutdown: shutdown.clone(),
                _permit: permit,
            },
            limits.tls_handshake,
        ));
    }
    // Refuse new connections at once; the open ones finish (each holds a permit).
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// What one connection's task needs besides its stream.
struct Connection {
    app: App,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle: Duration,
    /// How long a connection may take to start its first request (`web.headerReadTimeout`).
    first_request: Duration,
    shutdown: watch::Receiver<bool>,
    /// Returned to the cap when the connection closes.
    _permit: OwnedSemaphorePermit,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    conn: Connection,
    handshake_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => drive(stream, peer, conn).await,
        Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(stream)) => drive(stream, peer, conn).await,
            Ok(Err(e)) => tracing::debug!(client_addr = %peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(client_addr = %peer, "TLS handshake timed out"),
        },
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended; `None` until the first one starts.
    last_done: Mutex<Option<Instant>>,
    opened: Instant,
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The lock guards an Instant: a panic cannot leave it half-written.
        *self.0.last_done.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// When the connection will have been idle (no request in flight) for `idle`, or `None`
    /// while a request is being served. Before its first request a connection gets only
    /// `first`: until hyper has seen which HTTP version the client speaks, its header timer
    /// has not started.
    fn idle_deadline(&self, idle: Duration, first: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(
            match *self.last_done.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(done) => done + idle,
                None => self.opened + first.min(idle),
            },
        )
    }
}

async fn drive<I>(io: I, peer: SocketAddr, mut conn: Connection)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last_done: Mutex::new(None),
        opened: Instant::now(),
    });
    let service = {
        let activity = activity.clone();
        let app = conn.app.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let busy = activity.begin();
            let answered = app.polled.as_ref().and_then(|p| p.answer(&request));
            let router = app.router.clone();
            async move {
                let response = match answered {
                    Some(response) => Ok(response),
                    None => {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        router.oneshot(request).await
                    }
                };
                drop(busy);
                response
            }
        })
    };
    let served = conn.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    // Set once the connection was asked to close: what is in flight then gets the grace
    // period, after which the connection is dropped.
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(at) => at + SHUTDOWN_GRACE,
            None => activity
                .idle_deadline(conn.idle, conn.first_request)
                .unwrap_or_else(|| Instant::now() + conn.idle),
        };
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(client_addr = %peer, error = %e, "connection closed");
                }
                return;
            }
            _ = stopped(&mut conn.shutdown), if closing.is_none() => {
                served.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    return;
                }
                let idle_until = activity.idle_deadline(conn.idle, conn.first_request);
                if idle_until.is_some_and(|d| d <= Instant::now()) {
                    served.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
        }
    }
}

/// The TLS server settings: the certificate chain and key from PEM files, the versions
/// `web.tlsMinVersion`/`web.tlsMaxVersion` allow, HTTP/2 and HTTP/1.1 by ALPN.
pub(super) fn tls_acceptor(
    cert: &Path,
    key: &Path,
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<TlsAcceptor, ServeError> {
    let mut config = tls_server_config(cert, key, min, max, None)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A rustls server config from PEM files, within the TLS versions `min`..=`max`; with
/// `client_ca`, clients must present a certificate that CA signed.
pub(crate) fn tls_server_config(
    cert: &Path,
    key: &Path,
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |reason: String| ServeError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("the certificate file holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(e.to_string()))?;
    let in_range = |v: TlsVersion| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| in_range(*v))
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_protocol_versions(&versions);
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let fail_ca = |reason: String| ServeError::ClientCa {
                path: ca.to_path_buf(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| fail_ca(e.to_string()))? {
                roots
                    .add(c.map_err(|e| fail_ca(e.to_string()))?)
                    .map_err(|e| fail_ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(fail_ca("the file holds no certificate".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .map_err(|e| fail_ca(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, private)
        .map_err(|e| fail(e.to_string()))
}
