//! The etcd backend: the store's calls over an etcd cluster, so that any
//! number of kv-store nodes serve the same keys and none holds them.
//!
//! etcd's data model is the store's own (one revision for the whole store,
//! a `mod_revision` per key, watches from a revision, compaction), so the
//! mapping is direct: a key is `--etcd-prefix` + the key; revisions and
//! ETags are etcd's, the same on every node; a write or a batch is one
//! transaction (`ops.rs`, `txn.rs`); a listing is a range at the cursor's
//! revision (`range.rs`); watches fan out from one etcd watch per node
//! (`hub.rs`); leases are etcd's (`leases.rs`).
//!
//! What kv-store keeps beside the keys (who holds each lease) lives just
//! past them: `--etcd-prefix`, the byte 0xff, then a name. A key is UTF-8,
//! which never has that byte, so every range of keys ends before it.
//!
//! Every call to etcd is bounded by `--etcd-timeout`: when etcd is down or
//! has no quorum the client gets a 503 in time, never a hung request.

mod backend;
mod fence;
mod hub;
mod leases;
mod ops;
mod range;
mod txn;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, GetResponse, Identity, KeyValue, TlsOptions,
};

use crate::domain::Readiness;
use crate::domain::{Current, Entry, Fence, LeaseId, Meta, Stats, StorageError, Value};
use crate::watch::WatchLimits;

use hub::Hub;

/// How to reach the cluster and what to ask of it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Put in front of every key (`--etcd-prefix`).
    pub prefix: String,
    pub timeout: Duration,
    /// The cluster's `--max-txn-ops`.
    pub max_txn_ops: usize,
    pub user: Option<(String, String)>,
    /// TLS to etcd: the CA (PEM) and a client certificate and key (PEM).
    pub tls: Option<EtcdTls>,
    /// Events the node keeps for watch resume, and their bytes.
    pub history: usize,
    pub history_bytes: usize,
    pub watch: WatchLimits,
}

/// TLS settings for the connections to etcd, as PEM bytes.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why the backend could not start.
#[derive(Debug)]
pub struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// A handle on the cluster. Cloning it is cheap.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `--etcd-prefix`, in front of every key.
    namespace: Vec<u8>,
    timeout: Duration,
    max_txn_ops: usize,
    /// The key count `/status` last read, for metrics scrapes.
    keys: AtomicU64,
    hub: Hub,
}

impl EtcdStore {
    /// A client for the cluster. It does not wait for etcd (the channel
    /// connects on first use), so the server starts while etcd is down and
    /// answers 503 until it is back; with a user it logs in first.
    pub async fn connect(config: EtcdConfig) -> Result<Self, ConnectError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            // A ping every 10 s, to be answered within --etcd-timeout: a
            // node cut off from etcd notices within that, and its watch
            // streams end instead of going quiet. Not more often: etcd
            // closes connections that ping more than every 5 s
            // (--grpc-keepalive-min-time).
            .with_keep_alive(KEEP_ALIVE, config.timeout)
            // Without a leader etcd refuses instead of serving stale reads
            // and keeping watches open that see nothing.
            .with_require_leader(true);
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &config.tls {
            let mut settings = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                settings = settings.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                settings = settings.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(settings);
        }
        let connect = Client::connect(&config.endpoints, Some(options));
        let client = tokio::time::timeout(config.timeout, connect)
            .await
            .map_err(|_| {
                ConnectError(format!(
                    "etcd at {} did not answer the login within {:?}",
                    config.endpoints.join(","),
                    config.timeout
                ))
            })?
            .map_err(|err| {
                ConnectError(format!(
                    "cannot use etcd at {}: {err}",
                    config.endpoints.join(",")
                ))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                namespace: config.prefix.into_bytes(),
                timeout: config.timeout,
                max_txn_ops: config.max_txn_ops,
                keys: AtomicU64::new(0),
                hub: Hub::new(config.history, config.history_bytes, config.watch),
            }),
        })
    }

    pub fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops
    }

    /// The key as etcd stores it.
    fn full(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.inner.namespace.len() + key.len());
        full.extend_from_slice(&self.inner.namespace);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// A name kv-store keeps past the keys (see the module's doc).
    fn beside(&self, name: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.inner.namespace.len() + 1 + name.len());
        full.extend_from_slice(&self.inner.namespace);
        full.push(0xff);
        full.extend_from_slice(name);
        full
    }

    /// Where the keys starting with `full_prefix` (a key as etcd stores
    /// it) end: for the whole namespace, where what is kept beside the
    /// keys begins.
    fn keys_end(&self, full_prefix: &[u8]) -> Vec<u8> {
        if full_prefix == &self.inner.namespace[..] {
            self.beside(b"")
        } else {
            range::prefix_end(full_prefix)
        }
    }

    /// The key as clients know it: etcd's without the namespace. Keys
    /// written around kv-store may not be UTF-8; they are shown lossily.
    fn short<'a>(&self, full: &'a [u8]) -> std::borrow::Cow<'a, str> {
        let key = full.strip_prefix(&self.inner.namespace[..]).unwrap_or(full);
        String::from_utf8_lossy(key)
    }

    /// A record of what etcd holds, as the store's other layers use it.
    fn entry(&self, kv: &KeyValue) -> Entry {
        self.entry_until(kv, None)
    }

    /// The same, expiring at `deadline` (a key's TTL, where it is known).
    fn entry_until(&self, kv: &KeyValue, deadline: Option<tokio::time::Instant>) -> Entry {
        let key = self.short(kv.key());
        let value = String::from_utf8_lossy(kv.value());
        Entry::new(&key, value.as_bytes(), meta(kv), deadline)
    }

    fn current(&self, kv: &KeyValue) -> Current {
        Current {
            value: Value::from(String::from_utf8_lossy(kv.value()).into_owned()),
            meta: meta(kv),
        }
    }

    /// Runs one call to etcd within `--etcd-timeout`. A call that never
    /// reached etcd (the member it was sent to is down: tonic's balancer
    /// keeps trying dead members) is tried again, so another member
    /// answers; any other failure is the answer.
    async fn call<T, Fut>(&self, mut attempt: impl FnMut() -> Fut) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        loop {
            match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(err)) if never_sent(&err) => {
                    tokio::time::sleep(RETRY_UNSENT).await;
                }
                Ok(Err(err)) => return Err(Failure::from(err)),
                Err(_) => {
                    return Err(Failure::Unavailable(format!(
                        "etcd did not answer within --etcd-timeout ({:?})",
                        self.inner.timeout
                    )));
                }
            }
        }
    }

    /// A range read.
    async fn read(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Failure> {
        self.call(|| {
            let mut kv = self.inner.client.kv_client();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Current>, StorageError> {
        let answer = self
            .read(self.full(key), None)
            .await
            .map_err(Failure::storage)?;
        Ok(answer.kvs().first().map(|kv| self.current(kv)))
    }

    /// The store's revision and key count (a count-only range over the
    /// namespace).
    async fn count(&self) -> Result<(u64, u64), Failure> {
        let end = self.keys_end(&self.inner.namespace);
        let options = GetOptions::new().with_range(end).with_count_only();
        let answer = self
            .read(self.inner.namespace.clone(), Some(options))
            .await?;
        let revision = answer
            .header()
            .map_or(0, |header| revision(header.revision()));
        let keys = u64::try_from(answer.count()).unwrap_or(0);
        self.inner.keys.store(keys, Ordering::Relaxed);
        Ok((revision, keys))
    }

    pub async fn stats(&self) -> Result<Stats, StorageError> {
        let (revision, keys) = self.count().await.map_err(Failure::storage)?;
        Ok(Stats {
            revision,
            keys,
            ..self.stats_now()
        })
    }

    /// The revision this node's watch has reached and the key count last
    /// read.
    pub fn stats_now(&self) -> Stats {
        Stats {
            keys: self.inner.keys.load(Ordering::Relaxed),
            ..self.inner.hub.stats()
        }
    }

    /// Ready when etcd answers a linearizable read (so it has a quorum) and
    /// this node's watch runs.
    pub async fn readiness(&self) -> Readiness {
        if let Err(failure) = self.count().await {
            return Readiness::NotReady(failure.to_string());
        }
        if !self.inner.hub.is_live() {
            return Readiness::NotReady("this node's watch on etcd is not running yet".to_owned());
        }
        Readiness::Ready
    }
}

/// How often a node pings etcd on each connection.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long a call that never reached etcd waits before it is tried again.
const RETRY_UNSENT: Duration = Duration::from_millis(10);

/// Whether a call failed before etcd could have seen it: its connection
/// could not be made.
fn never_sent(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            message.contains("tcp connect error") || message.contains("Connection refused")
        }
        _ => false,
    }
}

/// etcd's revisions are `i64`; they are never negative.
fn revision(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// A key's revisions, version and lease as etcd keeps them (a key's own
/// TTL is a lease in etcd, one kv-store made for it: not shown).
fn meta(kv: &KeyValue) -> Meta {
    Meta {
        create_revision: revision(kv.create_revision()),
        mod_revision: revision(kv.mod_revision()),
        version: revision(kv.version()),
        lease: u64::try_from(kv.lease())
            .ok()
            .filter(|id| !leases::for_a_ttl(*id))
            .and_then(LeaseId::new),
    }
}

/// What went wrong in a call to etcd, sorted by what the client should do.
#[derive(Debug)]
enum Failure {
    /// Unreachable, no leader, timed out: retry later.
    Unavailable(String),
    /// The revision asked for was compacted away.
    Compacted,
    /// The revision asked for is ahead of the cluster.
    Future,
    /// etcd refused the request as too large.
    TooLarge(String),
    /// A lease named does not exist.
    NoLease,
    /// A lease granted with an id etcd already has.
    LeaseExists,
    /// A fenced write's fence did not hold at its commit.
    Fenced(Fence),
}

impl From<etcd_client::Error> for Failure {
    fn from(err: etcd_client::Error) -> Self {
        if let etcd_client::Error::LeaseKeepAliveError(message) = &err
            && message.contains("lease not found")
        {
            return Self::NoLease;
        }
        let etcd_client::Error::GRpcStatus(status) = &err else {
            return Self::Unavailable(format!("etcd cannot be reached: {err}"));
        };
        let message = status.message();
        if message.contains("required revision has been compacted") {
            Self::Compacted
        } else if message.contains("required revision is a future revision") {
            Self::Future
        } else if message.contains("requested lease not found") {
            Self::NoLease
        } else if message.contains("lease already exists") {
            Self::LeaseExists
        } else if message.contains("request is too large")
            || message.contains("too many operations")
        {
            Self::TooLarge(format!("etcd refused the request: {message}"))
        } else {
            Self::Unavailable(format!("etcd cannot serve: {message}"))
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(detail) | Self::TooLarge(detail) => f.write_str(detail),
            Self::Compacted => f.write_str("etcd compacted the revision away"),
            Self::Future => f.write_str("the revision is ahead of etcd's"),
            Self::NoLease => f.write_str("etcd has no such lease"),
            Self::LeaseExists => f.write_str("etcd has a lease with that id"),
            Self::Fenced(fence) => StorageError::FenceLost(fence.clone()).fmt(f),
        }
    }
}

impl Failure {
    fn storage(self) -> StorageError {
        self.storage_naming(None)
    }

    /// As [`Failure::storage`], for a write that named `lease`.
    fn storage_naming(self, lease: Option<LeaseId>) -> StorageError {
        match self {
            Self::NoLease if let Some(lease) = lease => StorageError::LeaseNotFound(lease),
            Self::TooLarge(detail) => StorageError::TooLarge(detail.into()),
            Self::Fenced(fence) => StorageError::FenceLost(fence),
            other => StorageError::Unavailable(other.to_string().into()),
        }
    }
}
