//! Starting a server from its configuration: the engine, the listener,
//! the application and the background tasks, wired together; and what a
//! running server can be asked (reload, stop, wait).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::access_log::AccessLog;
use super::admission::Admission;
use super::app::app;
use super::bind::{bind, max_connections};
use super::body_limit::BodyLimit;
use super::conn_config::{AnswerLimits, ConnConfig};
use super::guarded_io::Timeouts;
use super::hot_lane::HotLane;
use super::listener;
use super::observe::Recorder;
use super::tls::{Tls, TlsFiles};
use crate::api::{Context, FastPath, Limits, routes};
use crate::auth::Auth;
use crate::backend::{Backend, Counted};
use crate::config::Config;
use crate::engines::{self, Engine};
use crate::metrics::{ConnectionCounters, Metrics};

/// How long shutdown waits for requests in flight before closing their
/// connections; with watch streams ended at once, it is only a bound for
/// slow requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

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
    access_log: Option<AccessLog>,
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
        if let Some(log) = &self.access_log {
            log.close();
        }
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(io::Error::other)?;
        served
    }
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
            // The route table lists the hottest operations first.
            &routes::ROUTES
                .iter()
                .map(|route| route.operation)
                .collect::<Vec<_>>(),
        )),
        connections: connections.clone(),
        store: counted,
        limits: Limits {
            max_key_bytes: config.max_key_bytes as usize,
            max_value_bytes: config.max_value_bytes as usize,
            max_batch_ops: config.max_batch_ops as usize,
            max_txn_ops: config.max_txn_ops as usize,
            max_watch_keys: config.max_watch_keys as usize,
            max_page_bytes: config.max_page_bytes as usize,
            max_batch_answer_bytes: config.max_batch_answer_bytes as usize,
            answer_memory: usize::try_from(config.answer_memory).unwrap_or(usize::MAX),
            max_lock_wait: config.max_lock_wait,
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
    let access_log = match config.access_log {
        true => Some(AccessLog::start(config.log_format)?),
        false => None,
    };
    let recorder = Recorder {
        metrics: context.metrics.clone(),
        access_log: access_log.clone(),
    };
    let hot = HotLane::new(
        FastPath::new(context.clone()),
        admission.clone(),
        recorder.clone(),
        body_limit.max,
    );
    let app = app(context, admission, body_limit, recorder);
    let conn_config = Arc::new(ConnConfig::new(
        app,
        hot,
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
        access_log,
    })
}
