//! Dex's gRPC API (`api.Dex`, proto/api.proto), served with tonic on `grpc.addr`: plaintext
//! or TLS, with client certificates required when `grpc.tlsClientCA` is set.

pub mod proto;
mod service;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lanyard_connectors::PasswordHasher;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use crate::config::{Config, GrpcConfig};
use crate::oidc::Provider;
use crate::server::conn::tls_server_config;
use crate::server::ServeError;
pub use service::{server_version, API_VERSION};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API reads of the running server: the generation requests start with now, and
/// the config in effect (its static clients and passwords are read-only through the API).
#[async_trait]
pub trait Running: Send + Sync + 'static {
    fn provider(&self) -> Arc<Provider>;
    async fn config(&self) -> Config;
}

/// Serves the API on `listener` until `shutdown` flips to true; then lets calls in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    settings: GrpcConfig,
    running: Arc<dyn Running>,
    hasher: Arc<PasswordHasher>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let api = service::DexApi {
        running,
        hasher,
        connectors_crud: settings.connectors_crud,
    };
    let mut router =
        tonic::transport::Server::builder().add_service(proto::dex_server::DexServer::new(api));
    if settings.reflection {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
        router = router.add_service(reflection).add_service(reflection_alpha);
    }
    let stop = {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }
    };
    let served = match &settings.tls {
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .await
        }
        Some(tls) => {
            let mut config = tls_server_config(
                &tls.cert,
                &tls.key,
                tls.min_version,
                tls.max_version,
                tls.client_ca.as_deref(),
            )?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(e) => {
                                tracing::warn!(error = %e, "gRPC API: accepting a connection failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    // Handshakes run on their own, so a slow client holds up no other.
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "gRPC API: TLS handshake refused")
                            }
                            Err(_) => tracing::info!(%peer, "gRPC API: TLS handshake timed out"),
                        }
                    });
                }
            });
            router
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), stop)
                .await
        }
    };
    served.map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))
}
