//! The HTTP server: router, middleware, listeners, background tasks and graceful shutdown.

pub mod app;
pub(crate) mod conn;
mod extract;
pub mod failed_connector;
mod json_log;
pub mod log_writer;
pub mod middleware;
mod polled;
pub mod reload;
pub mod routes;
pub mod stored_connector;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{CorsOrigin, ListenAddr};
use crate::metrics::Metrics;
use crate::oidc::Provider;
use middleware::SecurityHeaders;
use routes::AppState;

/// Request bodies larger than this are refused with 413: nothing lanyard accepts is bigger.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the TLS certificate {cert} / key {key}: {reason}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot load the client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// How the server listens, from the config's `web` and `telemetry` sections.
#[derive(Debug, Clone, Default)]
pub struct ListenSettings {
    pub http: Option<ListenAddr>,
    pub https: Option<ListenAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub telemetry: Option<ListenAddr>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub allowed_origins: Vec<CorsOrigin>,
    /// `web.allowedHeaders`: request headers CORS preflights allow (Dex's default:
    /// `Authorization`).
    pub allowed_headers: Vec<HeaderName>,
    pub remote_ip: crate::config::ClientRemoteIp,
    pub tls_min_version: Option<crate::config::TlsVersion>,
    pub tls_max_version: Option<crate::config::TlsVersion>,
    pub limits: crate::config::ConnectionLimits,
}

/// What the kubeconfig page shows: the `kubernetes:` section, and the secrets of clients
/// whose cluster hands them to users (`clientSecretForUsers`).
#[derive(Debug, Clone, Default)]
pub struct KubePage {
    pub kubernetes: crate::config::KubernetesConfig,
    pub user_secrets: std::collections::HashMap<String, String>,
}

/// The generation of [`AppState`] requests start with now. A config reload replaces it;
/// requests in flight keep the generation they started with.
#[derive(Clone)]
pub struct Live(Arc<RwLock<AppState>>);

impl Live {
    pub fn new(state: AppState) -> Self {
        Live(Arc::new(RwLock::new(state)))
    }

    pub fn current(&self) -> AppState {
        // The lock guards a plain swap of Arcs: a panic cannot leave it half-written.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, next: AppState) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

/// Each handler extracts its state once, so each request uses one generation throughout.
impl FromRef<Live> for AppState {
    fn from_ref(live: &Live) -> AppState {
        live.current()
    }
}

/// What a listener serves: a router, and for the issuer's listeners the polled routes
/// answered before it (see `polled`).
#[derive(Clone)]
pub struct App {
    router: Router,
    polled: Option<Arc<polled::PolledRoutes>>,
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        App {
            router,
            polled: None,
        }
    }
}

/// Builds the main router: every protocol route under the issuer's path.
pub fn router(
    live: Live,
    metrics: Arc<Metrics>,
    settings: &ListenSettings,
) -> Result<App, ServeError> {
    // The issuer needs a restart to change, so every generation has this path.
    let base = live.current().provider.settings.base_path();
    let extra = settings.headers.clone();

    // Over https, browsers are told to keep to https unless `web.headers` says otherwise.
    let hsts = (live.current().provider.settings.issuer.scheme() == "https"
        && !extra
            .iter()
            .any(|(name, _)| name == axum::http::header::STRICT_TRANSPORT_SECURITY))
    .then(|| HeaderValue::from_static(middleware::DEFAULT_HSTS));
    // Only the machine-facing endpoints answer CORS; /auth and the pages never do.
    let machine = if settings.allowed_origins.is_empty() {
        routes::machine_routes()
    } else {
        cors_routes(&settings.allowed_origins, &settings.allowed_headers)
    };
    let issuer = routes::issuer_routes()
        .merge(machine)
        .with_state(live.clone());
    let polled_live = settings.allowed_origins.is_empty().then(|| live.clone());
    let app = if base.is_empty() {
        issuer
    } else {
        // A nested router answers `<issuer>` but not `<issuer>/`; people type both, and the
        // host's `/` as well, so all three lead where `<issuer>` does.
        let home = get(routes::home).with_state(live);
        Router::new()
            .nest(&base, issuer)
            .route(&format!("{base}/"), home.clone())
            .route("/", home)
    };
    let quiet: Arc<[String]> = [routes::JWKS_ROUTE, routes::DISCOVERY_ROUTE]
        .iter()
        .map(|route| format!("{base}{route}"))
        .collect();
    let front = Arc::new(middleware::Front {
        headers: SecurityHeaders {
            extra: Arc::new(extra),
            hsts,
        },
        metrics,
        remote_ip: Arc::new(settings.remote_ip.clone()),
        quiet,
    });
    let polled =
        polled_live.map(|live| Arc::new(polled::PolledRoutes::new(live, front.clone(), &base)));
    let router = app
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn_with_state(
            settings.limits.request_body,
            middleware::read_body,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            front,
            middleware::front,
        ));
    Ok(App { router, polled })
}

/// Request headers a CORS preflight always allows, whatever `web.allowedHeaders` says (as
/// Dex's CORS handler does).
const ALWAYS_ALLOWED_HEADERS: [HeaderName; 4] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_LANGUAGE,
    header::ORIGIN,
];

/// `web.allowedHeaders` when the config gives none (Dex's default).
const DEFAULT_ALLOWED_HEADERS: [HeaderName; 1] = [header::AUTHORIZATION];

fn cors_routes(origins: &[CorsOrigin], headers: &[HeaderName]) -> Router<Live> {
    let allow = if origins.contains(&CorsOrigin::Any) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| match o {
            CorsOrigin::Exact(value) => Some(value.clone()),
            CorsOrigin::Any => None,
        }))
    };
    let configured: &[HeaderName] = if headers.is_empty() {
        &DEFAULT_ALLOWED_HEADERS
    } else {
        headers
    };
    let allowed: Vec<HeaderName> = ALWAYS_ALLOWED_HEADERS
        .into_iter()
        .chain(configured.iter().cloned())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(allowed);
    routes::machine_routes().layer(cors)
}

/// The telemetry router: liveness, readiness (a signing key loaded; storage's state in the body),
/// Dex's `/healthz` and Prometheus metrics.
pub fn telemetry_router(provider: Arc<Provider>, metrics: Arc<Metrics>) -> Router {
    #[derive(Clone)]
    struct T {
        provider: Arc<Provider>,
        metrics: Arc<Metrics>,
    }
    Router::new()
        .route("/healthz/live", get(|| async { "ok" }))
        .route(
            "/healthz",
            get(|State(t): State<T>, RawQuery(query): RawQuery| async move {
                health_checks(&t.provider, query.as_deref()).await
            }),
        )
        .route(
            "/healthz/ready",
            get(|State(t): State<T>| async move {
                // Ready means this process can serve what only it can: it has a signing key
                // and its listeners are up (they are bound before this one). The database is
                // shared by every replica, so failing readiness on it would take all of them
                // out of the Service at once, and with them discovery and JWKS, which
                // kube-apiserver needs and which are served from memory. Storage trouble
                // shows here in the body, in the log and in lanyard_storage_errors_total.
                if t.provider.keys.signing_kid().is_none() {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no signing key\n",
                    )
                        .into_response();
                }
                match t.provider.storage.ping().await {
                    Ok(()) => (StatusCode::OK, "ok\n").into_response(),
                    Err(err) => {
                        crate::metrics::count_storage_error();
                        tracing::warn!(error = %err, "readiness check: storage unreachable");
                        (
                            StatusCode::OK,
                            "ok; storage unreachable: discovery and JWKS are served, \
                             logins and tokens fail until it is back\n",
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(t): State<T>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    t.metrics.render(&t.provider.keys, t.provider.now()),
                )
            }),
        )
        .with_state(T { provider, metrics })
}

/// Dex's telemetry `/healthz`: a JSON object with one entry per check, 200 when every check
/// passes, else 503; `?type=short` gives `PASS` or `FAIL` per check. Dex checks its storage;
/// lanyard also checks that it has a key to sign with. Unlike `/healthz/ready` this fails while
/// storage is unreachable, as Dex's does: probes belong on `/healthz/live` and `/healthz/ready`.
async fn health_checks(provider: &Provider, query: Option<&str>) -> Response {
    let now = provider.now();
    let storage = match provider.storage.ping().await {
        Ok(()) => None,
        Err(err) => {
            crate::metrics::count_storage_error();
            tracing::warn!(error = %err, "health check: storage unreachable");
            Some("storage unreachable")
        }
    };
    let signing_key = provider
        .keys
        .signing_kid()
        .is_none()
        .then_some("no signing key");
    let checks = [("storage", storage), ("signingKey", signing_key)];
    let healthy = checks.iter().all(|(_, failure)| failure.is_none());
    let short = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "type" && v == "short")
    });
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, failure)| {
            let result = if short {
                serde_json::json!(if failure.is_none() { "PASS" } else { "FAIL" })
            } else {
                let mut result = serde_json::json!({
                    "timestamp": crate::login::rfc3339(now),
                    "contiguousFailures": u8::from(failure.is_some()),
                });
                if let Some(message) = failure {
                    result["error"] = serde_json::json!({ "message": message });
                }
                result
            };
            (name.to_string(), result)
        })
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves `app` on a bound listener until `shutdown` flips to true.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: App,
    limits: crate::config::ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    conn::serve(listener, None, app, limits, shutdown).await
}

/// Serves `app` over TLS (rustls) until `shutdown` flips to true.
pub async fn serve_https(
    addr: ListenAddr,
    settings: &ListenSettings,
    cert: PathBuf,
    key: PathBuf,
    app: App,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let tls = conn::tls_acceptor(
        &cert,
        &key,
        settings.tls_min_version,
        settings.tls_max_version,
    )?;
    let listener = bind(&addr).await?;
    conn::serve(listener, Some(tls), app, settings.limits, shutdown).await
}

/// Listens on `addr`; a host name is resolved now, as Go's `net.Listen` resolves it for Dex.
pub async fn bind(addr: &ListenAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let bound = match addr {
        ListenAddr::Ip(ip) => tokio::net::TcpListener::bind(ip).await,
        ListenAddr::Host { name, port } => {
            tokio::net::TcpListener::bind((name.as_str(), *port)).await
        }
    };
    bound.map_err(|source| ServeError::Bind {
        addr: addr.clone(),
        source,
    })
}
