//! The server layer: listener, routes, middleware and shutdown.

mod body_limit;
mod errors;
mod observe;
mod rate_limit;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::http::Method;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, EndpointExt, Route};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Context, Limits};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreConfig};

pub use body_limit::BodyLimit;
use errors::{AllowTable, Problems};
use observe::RecordMetrics;
pub use rate_limit::RateLimit;

/// How long shutdown waits for open connections before dropping them; with
/// watch streams ended at once, it is only a bound for slow requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How long shutdown may take in all before [`run`] returns anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Paths the rate limiter lets through: probes must not be throttled.
const UNLIMITED_PATHS: &[&str] = &["/healthz", "/metrics"];

/// Builds the whole HTTP application over `context`.
pub fn app(
    context: Context,
    rate_limit: RateLimit,
    body_limit: BodyLimit,
) -> impl Endpoint + 'static {
    let mut routes = api::routes();
    routes.extend(
        ["/openapi.json", "/openapi.yaml"].map(|path| (path.to_owned(), vec![Method::GET])),
    );
    let metrics = context.metrics.clone();
    let api = api::service(context);
    let docs = api.swagger_ui();
    let spec_json = api.spec_endpoint();
    let spec_yaml = api.spec_endpoint_yaml();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec_json)
        .at("/openapi.yaml", spec_yaml)
        .at("/store/", errors::empty_key)
        .at("/store/cas/", errors::empty_key)
        .at("/watch_key/", errors::empty_key)
        .with(body_limit)
        .with(rate_limit)
        .with(RecordMetrics(metrics))
        .with(Problems {
            allow: Arc::new(AllowTable::new(routes)),
        })
}

/// A server accepting connections, started by [`start`].
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Starts a graceful shutdown: stop accepting, end watch streams, let
    /// requests in flight finish.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> io::Result<()> {
        self.server.await.map_err(io::Error::other)?
    }
}

/// Binds `config.listen` and serves the store there until [`Running::stop`].
pub async fn start(config: &Config) -> io::Result<Running> {
    let acceptor = TcpListener::bind(config.listen).into_acceptor().await?;
    let local_addr = acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr().copied())
        .ok_or_else(|| io::Error::other("the listener has no TCP address"))?;

    let shutdown = CancellationToken::new();
    let store = Store::new(StoreConfig {
        history: config.history as usize,
        history_bytes: config.history_bytes as usize,
        watch_queue_bytes: config.watch_queue_bytes as usize,
    });
    tokio::spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(store.clone().run_expiry()),
    );
    let context = Context {
        metrics: Arc::new(Metrics::new(store.clone())),
        store,
        limits: Limits {
            max_key_bytes: config.max_key_bytes as usize,
            max_value_bytes: config.max_value_bytes as usize,
            max_batch_ops: config.max_batch_ops as usize,
            max_watch_keys: config.max_watch_keys as usize,
        },
        shutdown: shutdown.clone(),
    };
    let rate_limit = RateLimit::new(config, UNLIMITED_PATHS);
    tokio::spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(rate_limit.clone().forget_idle_clients()),
    );
    // A PUT must always be able to carry a value of the largest size.
    let body_limit = BodyLimit {
        max: (config.max_request_bytes as usize).max(config.max_value_bytes as usize),
    };
    let app = app(context, rate_limit, body_limit);
    let server = tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            shutdown.clone().cancelled_owned(),
            Some(SHUTDOWN_GRACE),
        ),
    );
    Ok(Running {
        local_addr,
        shutdown,
        server,
    })
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully. Fails only if
/// the server cannot start.
pub async fn run(config: &Config) -> io::Result<()> {
    let running = start(config).await?;
    tracing::info!(
        "kv-store {} listening on http://{} (Swagger UI at /docs)",
        env!("CARGO_PKG_VERSION"),
        running.local_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop();
    match tokio::time::timeout(SHUTDOWN_LIMIT, running.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "server failed while stopping"),
        Err(_) => tracing::warn!("connections still open after {SHUTDOWN_LIMIT:?}; exiting anyway"),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
