//! The server layer: listener, routes, middleware and shutdown.

mod admission;
mod answers;
mod body_limit;
mod body_timeout;
mod connection;
mod errors;
mod guarded_io;
mod lean_watch;
mod listener;
mod observe;
mod raw_response;
mod rewind;
mod stalls;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::{Endpoint, EndpointExt, Route};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Context, FastPath, Gate, Limits};
use crate::auth::Auth;
use crate::backend::{Backend, Counted};
use crate::config::Config;
use crate::engines::{self, Engine};
use crate::metrics::{ConnectionCounters, Metrics};

pub use admission::Admission;
pub use body_limit::BodyLimit;
use connection::{AnswerLimits, ConnConfig};
use errors::Problems;
use guarded_io::Timeouts;
use observe::RecordMetrics;
use tls::{Tls, TlsFiles};

/// How long shutdown waits for requests in flight before closing their
/// connections; with watch streams ended at once, it is only a bound for
/// slow requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How long shutdown may take in all before [`run`] returns anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Builds the whole HTTP application over `context`.
///
/// A request's future is moved whole into its box, so its size is paid on
/// every request. An `async fn` layer keeps a copy of its `Request` (472
/// bytes) beside the inner future that took it, and an `async` block that
/// awaits a future it captured keeps that future twice; so the layers on
/// the way to the fast path map their inner future instead, and the full
/// API's future is boxed (`FastPath::long_way`): 8.5 KB per request
/// before, 1.3 KB after.
pub fn app<B: Backend>(
    context: Context<B>,
    admission: Admission,
    body_limit: BodyLimit,
) -> impl Endpoint<Output = poem::Response> + 'static {
    let metrics = context.metrics.clone();
    let keys = context.clone();
    let api = api::service(context);
    let docs = api.swagger_ui();
    let spec_json = api.spec_endpoint();
    let spec_yaml = api.spec_endpoint_yaml();
    let app = Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec_json)
        .at("/openapi.yaml", spec_yaml)
        .at("/store/", errors::empty_key)
        .at("/store/cas/", errors::empty_key)
        .at("/watch_key/", errors::empty_key);
    let rule = admission.clone();
    let gate: Gate = Arc::new(move |req, rules| rule.admit(req, rules));
    FastPath::new(app.with(admission), keys, gate)
        .with(body_limit)
        .with(RecordMetrics(metrics))
        .with(Problems)
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The data dir cannot be used: in use, damaged, older than it should
    /// be, in a newer format, or unreadable (exit code 2: an operator must
    /// act).
    DataDir(String),
    /// Flags that cannot go together, or a backend this build lacks (exit
    /// code 2).
    Config(String),
    /// etcd refused the login (`--etcd-user`).
    Etcd(String),
    Io(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DataDir(detail) | Self::Config(detail) | Self::Etcd(detail) => {
                f.write_str(detail)
            }
            Self::Io(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<engines::OpenError> for StartError {
    fn from(err: engines::OpenError) -> Self {
        match err {
            engines::OpenError::DataDir(detail) => Self::DataDir(detail),
            engines::OpenError::Config(detail) => Self::Config(detail),
            engines::OpenError::Etcd(detail) => Self::Etcd(detail),
            engines::OpenError::Io(err) => Self::Io(err),
        }
    }
}

/// A server accepting connections, started by [`start`].
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    store: Engine,
    auth: Option<Arc<Auth>>,
    tls: Option<Arc<Tls>>,
}

impl Running {
    /// Reads the auth file and the TLS files again (SIGHUP): new tokens
    /// serve from the next request and removed ones end their watch
    /// streams; new connections get the new certificate. A bad file keeps
    /// what was there, and the log says why.
    pub fn reload(&self) {
        if let Some(auth) = &self.auth {
            match auth.reload() {
                Ok(reloaded) => tracing::info!(
                    tokens = reloaded.tokens,
                    revoked = reloaded.revoked,
                    "reloaded the auth file"
                ),
                Err(err) => tracing::error!(error = %err, "kept the old tokens"),
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate"),
                Err(err) => tracing::error!(error = %err, "kept the old TLS certificate"),
            }
        }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Starts a graceful shutdown: stop accepting, end watch streams, let
    /// requests in flight finish.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped, then closes the store (with a
    /// data dir: the last writes reach the disk and the file is released).
    pub async fn wait(self) -> io::Result<()> {
        let served = self.server.await.map_err(io::Error::other);
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(io::Error::other)?;
        served
    }
}

/// Binds the first address `listen` resolves to that accepts a bind.
async fn bind(listen: &str) -> Result<TcpListener, StartError> {
    let addrs = tokio::net::lookup_host(listen).await.map_err(|err| {
        StartError::Io(io::Error::new(
            err.kind(),
            format!("cannot resolve --listen {listen:?} (write HOST:PORT or IP:PORT): {err}"),
        ))
    })?;
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) => {
                last = Some(io::Error::new(
                    err.kind(),
                    format!("cannot bind {addr}: {err}"),
                ))
            }
        }
    }
    Err(StartError::Io(last.unwrap_or_else(|| {
        io::Error::other(format!("--listen {listen:?} resolves to no address"))
    })))
}

/// The connection limit: `--max-connections`, or derived from the open-file
/// limit (raised to its hard limit first).
fn max_connections(config: &Config) -> usize {
    let fd_limit = listener::raise_fd_limit();
    let max = match (config.max_connections, fd_limit) {
        (Some(max), Some(limit)) => {
            if max + listener::RESERVED_FDS > limit {
                tracing::warn!(
                    "--max-connections {max} is close to the open-file limit {limit}: accepting \
                     may run out of descriptors (it backs off and logs when it does)"
                );
            }
            max
        }
        (Some(max), None) => max,
        (None, Some(limit)) => listener::default_max_connections(limit),
        (None, None) => 1024,
    };
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// Opens the store, binds `config.listen` and serves the store there until
/// [`Running::stop`].
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let auth = match &config.auth_file {
        Some(path) => {
            let auth = Auth::load(path).map_err(|err| StartError::Config(err.to_string()))?;
            if auth.is_empty() {
                tracing::warn!(
                    "the auth file holds no token: every request but probes and docs is refused"
                );
            }
            Some(Arc::new(auth))
        }
        None => None,
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            };
            Some(Arc::new(Tls::load(files).map_err(StartError::Config)?))
        }
        _ => None,
    };
    // Before binding, so nothing answers until the data is there.
    let store = Engine::open(config).await?;
    let listener = match bind(&config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tokio::task::spawn_blocking(move || store.close())
                .await
                .map_err(io::Error::other)?;
            return Err(err);
        }
    };
    let local_addr = listener.local_addr()?;
    if auth.is_none() && !local_addr.ip().is_loopback() {
        tracing::warn!(
            "no --auth-file: anyone who can reach {local_addr} may read and write every key"
        );
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(store.clone().run()),
    );
    if !store.started().await {
        tracing::warn!("etcd cannot be reached yet: answering 503 until it can");
    }
    let connections = Arc::new(ConnectionCounters::default());
    let counted = Counted::new(store.clone());
    let figures = counted.clone();
    let context = Context {
        metrics: Arc::new(Metrics::new(
            move || figures.stats_now(),
            connections.clone(),
        )),
        connections: connections.clone(),
        store: counted,
        limits: Limits {
            max_key_bytes: config.max_key_bytes as usize,
            max_value_bytes: config.max_value_bytes as usize,
            max_batch_ops: config.max_batch_ops as usize,
            max_watch_keys: config.max_watch_keys as usize,
            max_page_bytes: config.max_page_bytes as usize,
            max_batch_answer_bytes: config.max_batch_answer_bytes as usize,
            answer_memory: usize::try_from(config.answer_memory).unwrap_or(usize::MAX),
        },
        shutdown: shutdown.clone(),
    };
    let admission = Admission::new(config, auth.clone());
    tokio::spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(admission.clone().forget_idle_clients()),
    );
    // A PUT must always be able to carry a value of the largest size.
    let body_limit = BodyLimit {
        max: (config.max_request_bytes as usize).max(config.max_value_bytes as usize),
    };
    let timeouts = Timeouts {
        header: config.header_timeout,
        body: config.body_timeout,
        idle: config.idle_timeout,
        send: config.send_timeout,
    };
    let answers = AnswerLimits {
        memory: context.limits.answer_memory,
        streams: config.max_streams,
    };
    let app = app(context, admission, body_limit);
    let conn_config = Arc::new(ConnConfig::new(
        app,
        local_addr,
        timeouts,
        answers,
        tls.clone(),
        connections.clone(),
    ));
    let server = tokio::spawn(listener::run(
        listener,
        conn_config,
        max_connections(config),
        connections,
        shutdown.clone(),
        SHUTDOWN_GRACE,
    ));
    Ok(Running {
        local_addr,
        shutdown,
        server,
        store,
        auth,
        tls,
    })
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully. Fails only if
/// the server cannot start.
pub async fn run(config: &Config) -> Result<(), StartError> {
    let running = start(config).await?;
    // Installed before the address is logged: whoever waits for that line
    // may signal at once.
    let signal = shutdown_signal();
    let reloads = reloads(&running);
    tracing::info!(
        "kv-store {} listening on {}://{} (Swagger UI at /docs)",
        env!("CARGO_PKG_VERSION"),
        running.scheme(),
        running.local_addr
    );
    tokio::select! {
        () = signal => {}
        () = reloads => {}
    }
    tracing::info!("shutting down");
    running.stop();
    match tokio::time::timeout(SHUTDOWN_LIMIT, running.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "server failed while stopping"),
        Err(_) => tracing::warn!("connections still open after {SHUTDOWN_LIMIT:?}; exiting anyway"),
    }
    Ok(())
}

/// A future that resolves on SIGINT or SIGTERM; the handlers are installed
/// when this is called, not when the future is first polled.
/// Reloads on every SIGHUP; never completes. The handler is installed at
/// once (SIGHUP would otherwise end the process).
#[cfg(unix)]
fn reloads(running: &Running) -> impl Future<Output = ()> + '_ {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        match hangups {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    running.reload();
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot listen for SIGHUP: no reloads"),
        }
        std::future::pending().await
    }
}

#[cfg(not(unix))]
fn reloads(_: &Running) -> impl Future<Output = ()> + '_ {
    std::future::pending()
}

#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (interrupt, terminate) => {
                if let Some(err) = interrupt.err().or(terminate.err()) {
                    tracing::warn!(error = %err, "cannot listen for signals; falling back to Ctrl-C");
                }
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
