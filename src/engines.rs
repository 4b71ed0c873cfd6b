//! The engines a server can run on, and the one place that names them:
//! [`Engine`] is whichever the configuration asks for, and serves the
//! [`Backend`] contract by handing each call to it. Nothing above this
//! module (the API, the server) knows which engine answers.

use std::io;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::backend::Backend;
use crate::config::{BackendKind, Config, FsyncMode};
use crate::domain::{
    Backup, BackupError, BatchError, Current, Entry, Fence, LeaseError, LeaseId, LeasePage,
    LeaseState, Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness,
    Stats, StorageError, Txn, TxnOutcome, WatchError, Watched,
};
#[cfg(feature = "etcd")]
use crate::etcd::EtcdStore;
use crate::store::{Fsync, Store, StoreConfig};
use crate::watch::{Closer, WatchItem, WatchLimits};

// `--max-key-bytes` (config.rs) stops where an entry's key length does.
const _: () = assert!(crate::domain::MAX_KEY_BYTES == 16_777_215);

/// The engine serving this process's keys.
#[derive(Clone)]
pub enum Engine {
    /// In this process (with `--data-dir`, also on disk).
    Memory(Store),
    /// In an etcd cluster that any number of nodes share.
    #[cfg(feature = "etcd")]
    Etcd(EtcdStore),
}

/// Hands a call to whichever engine this is.
macro_rules! forward {
    ($self:ident, $engine:ident => $call:expr) => {
        match $self {
            Engine::Memory($engine) => $call,
            #[cfg(feature = "etcd")]
            Engine::Etcd($engine) => $call,
        }
    };
}

impl Backend for Engine {
    /// Boxed once per watch: the engines' streams differ in type.
    type Watch = BoxStream<'static, WatchItem>;
    /// Boxed once per backup, for the same reason.
    type Backup = BoxStream<'static, Result<Entry, StorageError>>;

    fn name(&self) -> &'static str {
        forward!(self, engine => Backend::name(engine))
    }

    async fn get(&self, key: &str) -> Result<Option<Current>, StorageError> {
        forward!(self, engine => Backend::get(engine, key).await)
    }

    async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        forward!(self, engine => Backend::apply(engine, op).await)
    }

    async fn batch(&self, ops: &[Op], fences: &[Fence]) -> Result<Vec<Outcome>, BatchError> {
        forward!(self, engine => Backend::batch(engine, ops, fences).await)
    }

    async fn txn(&self, txn: &Txn, fences: &[Fence]) -> Result<TxnOutcome, StorageError> {
        forward!(self, engine => Backend::txn(engine, txn, fences).await)
    }

    async fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> Result<LeaseState, LeaseError> {
        forward!(self, engine => Backend::grant(engine, id, ttl, owner).await)
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<u64, LeaseError> {
        forward!(self, engine => Backend::keep_alive(engine, id).await)
    }

    async fn lease(&self, id: LeaseId, keys: bool) -> Result<LeaseState, LeaseError> {
        forward!(self, engine => Backend::lease(engine, id, keys).await)
    }

    async fn leases(&self, after: Option<LeaseId>, limit: usize) -> Result<LeasePage, LeaseError> {
        forward!(self, engine => Backend::leases(engine, after, limit).await)
    }

    async fn revoke(&self, id: LeaseId) -> Result<u64, LeaseError> {
        forward!(self, engine => Backend::revoke(engine, id).await)
    }

    fn max_batch_ops(&self) -> Option<usize> {
        forward!(self, engine => Backend::max_batch_ops(engine))
    }

    async fn range(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        forward!(self, engine => Backend::range(engine, request).await)
    }

    async fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> Result<PrefixDeleted, StorageError> {
        forward!(self, engine => Backend::delete_prefix(engine, prefix, fences).await)
    }

    async fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> Result<Self::Watch, WatchError> {
        forward!(self, engine => Ok(Backend::watch(engine, watched, since, closer)
            .await?
            .boxed()))
    }

    async fn backup(&self) -> Result<Backup<Self::Backup>, BackupError> {
        forward!(self, engine => Backend::backup(engine).await.map(|backup| Backup {
            revision: backup.revision,
            leases: backup.leases,
            entries: backup.entries.boxed(),
        }))
    }

    async fn stats(&self) -> Result<Stats, StorageError> {
        forward!(self, engine => Backend::stats(engine).await)
    }

    fn stats_now(&self) -> Stats {
        forward!(self, engine => Backend::stats_now(engine))
    }

    async fn readiness(&self) -> Readiness {
        forward!(self, engine => Backend::readiness(engine).await)
    }

    async fn run(self) {
        forward!(self, engine => Backend::run(engine).await)
    }

    async fn started(&self) -> bool {
        forward!(self, engine => Backend::started(engine).await)
    }

    fn close(&self) {
        forward!(self, engine => Backend::close(engine))
    }
}

/// Why an engine could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The data dir cannot be used: in use, damaged, older than it should
    /// be, in a newer format, or unreadable.
    DataDir(String),
    /// Flags that cannot go together, or an engine this build lacks.
    Config(String),
    /// etcd refused the login (`--etcd-user`) or a TLS file is missing.
    Etcd(String),
    Io(io::Error),
}

impl Engine {
    /// The engine `config` asks for: in memory, loaded from `--data-dir`,
    /// or an etcd cluster.
    pub async fn open(config: &Config) -> Result<Self, OpenError> {
        match config.backend {
            BackendKind::Memory => {
                // Loading a data dir can take a while and may block: keep
                // it off the async workers.
                let owned = config.clone();
                let store = tokio::task::spawn_blocking(move || open_store(&owned))
                    .await
                    .map_err(|err| OpenError::Io(io::Error::other(err)))??;
                Ok(Self::Memory(store))
            }
            BackendKind::Etcd if config.data_dir.is_some() => Err(OpenError::Config(
                "--data-dir keeps a memory store on disk; with --backend etcd the keys live \
                 in etcd: drop one of the two"
                    .to_owned(),
            )),
            #[cfg(feature = "etcd")]
            BackendKind::Etcd if config.etcd_prefix.is_empty() => Err(OpenError::Config(
                "--etcd-prefix may not be empty: kv-store keeps who holds each lease beside the \
                 keys, under the prefix (the default is kv-store/)"
                    .to_owned(),
            )),
            #[cfg(feature = "etcd")]
            BackendKind::Etcd => {
                let etcd = crate::etcd::EtcdConfig {
                    endpoints: config.etcd_endpoints.clone(),
                    prefix: config.etcd_prefix.clone(),
                    timeout: config.etcd_timeout,
                    max_txn_ops: config.etcd_max_txn_ops as usize,
                    user: config.etcd_user.clone().zip(config.etcd_password.clone()),
                    tls: etcd_tls(config)?,
                    history: config.history as usize,
                    history_bytes: config.history_bytes as usize,
                    watch: watch_limits(config),
                };
                let store = EtcdStore::connect(etcd)
                    .await
                    .map_err(|err| OpenError::Etcd(err.to_string()))?;
                tracing::info!(
                    "serving the keys under {:?} in etcd at {}",
                    config.etcd_prefix,
                    config.etcd_endpoints.join(",")
                );
                Ok(Self::Etcd(store))
            }
            #[cfg(not(feature = "etcd"))]
            BackendKind::Etcd => Err(OpenError::Config(
                "this build has no etcd backend: build with `cargo build --release --features \
                 etcd` (needs protoc: apt-get install protobuf-compiler libprotobuf-dev)"
                    .to_owned(),
            )),
        }
    }
}

/// The TLS files for etcd, read now so that a missing one is an error at
/// start, not a failure on the first request.
#[cfg(feature = "etcd")]
fn etcd_tls(config: &Config) -> Result<Option<crate::etcd::EtcdTls>, OpenError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|err| OpenError::Config(format!("cannot read {}: {err}", path.display())))
    };
    let ca = config.etcd_ca.as_deref().map(read).transpose()?;
    let identity = match (&config.etcd_cert, &config.etcd_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok((ca.is_some() || identity.is_some()).then_some(crate::etcd::EtcdTls { ca, identity }))
}

/// The machine's memory in bytes (1 GiB where it cannot be read), for the
/// default `--watch-memory`.
fn machine_memory() -> usize {
    const FALLBACK: usize = 1 << 30;
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return FALLBACK;
    };
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<usize>().ok())
        .map_or(FALLBACK, |kib| kib.saturating_mul(1024))
}

/// The watch limits the flags set.
fn watch_limits(config: &Config) -> WatchLimits {
    WatchLimits {
        per_watcher: config.watch_queue_bytes as usize,
        total: config
            .watch_memory
            .map_or_else(|| machine_memory() / 4, |bytes| bytes as usize),
        watchers: usize::try_from(config.max_watches).unwrap_or(usize::MAX),
        heartbeat: config.watch_heartbeat,
    }
}

/// The memory store: in memory, or loaded from `--data-dir`.
fn open_store(config: &Config) -> Result<Store, OpenError> {
    let store_config = StoreConfig {
        history: config.history as usize,
        history_bytes: config.history_bytes as usize,
        watch: watch_limits(config),
        max_leases: usize::try_from(config.max_leases).unwrap_or(usize::MAX),
    };
    let Some(dir) = &config.data_dir else {
        return Ok(Store::new(store_config));
    };
    let fsync = match config.fsync {
        FsyncMode::Always => Fsync::Always,
        FsyncMode::Interval => Fsync::Interval,
        FsyncMode::Never => Fsync::Never,
    };
    let started = std::time::Instant::now();
    let (store, recovered) =
        Store::open(store_config, dir, fsync).map_err(|err| OpenError::DataDir(err.to_string()))?;
    tracing::info!(
        "loaded {} keys at revision {} from {} in {:?} ({} expired while the server was down; fsync {:?})",
        store.stats().keys,
        recovered.revision,
        dir.display(),
        started.elapsed(),
        recovered.expired,
        config.fsync,
    );
    Ok(store)
}
