//! Command-line and environment configuration.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the keys live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// In this process (with --data-dir, also on disk).
    Memory,
    /// In an etcd cluster (--etcd-endpoints): any number of kv-store nodes
    /// serve the same keys. Needs a build with `--features etcd`.
    Etcd,
}

/// When a write counts as done with `--data-dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsyncMode {
    /// A 2xx means the write is on stable storage (concurrent writers share
    /// each flush).
    Always,
    /// Flushed every second: a crash can lose up to 1 s of answered writes.
    Interval,
    /// Flushed every 30 s: a crash can lose up to 30 s of answered writes.
    Never,
}

/// kv-store: a concurrent key-value store with an HTTP API.
///
/// Every flag can also be set through the environment variable named in its
/// help.
#[derive(Clone, Debug, Parser)]
#[command(name = "kv-store", version, about, args_override_self = true)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Tokens that may use the server (TOML; see the README's "Access
    /// control"). Without it, anyone who can reach the server may do
    /// anything. SIGHUP reloads it.
    #[arg(help_heading = "Security", long, env = "KV_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Serve HTTPS only, with this certificate chain (PEM; with --tls-key).
    /// SIGHUP reloads it.
    #[arg(
        help_heading = "Security",
        long,
        env = "KV_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        help_heading = "Security",
        long,
        env = "KV_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// With --tls-cert: require client certificates signed by this CA
    /// (PEM): mutual TLS.
    #[arg(
        help_heading = "Security",
        long,
        env = "KV_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Address to listen on: IP:PORT or HOST:PORT (the host name is
    /// resolved; the first address that binds is used).
    #[arg(help_heading = "Network", long, env = "KV_LISTEN", default_value = "127.0.0.1:3000",
          value_parser = listen_address)]
    pub listen: String,

    /// Requests per second allowed per client IP; 0 turns rate limiting off.
    #[arg(help_heading = "Security", long, env = "KV_RATE_LIMIT", default_value_t = 1000,
          allow_negative_numbers = true, value_parser = whole_number)]
    pub rate_limit: u32,

    /// Requests a client may send at once before the rate applies [default:
    /// the rate].
    #[arg(help_heading = "Security", long, env = "KV_RATE_BURST")]
    pub rate_burst: Option<NonZeroU32>,

    /// Longest key accepted, in bytes (at most 16 MiB - 1: a key's length
    /// shares a word of its record with the record's flags).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_KEY_BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    pub max_key_bytes: u32,

    /// Largest value accepted, in bytes.
    #[arg(help_heading = "Limits", long, env = "KV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(0..))]
    pub max_value_bytes: u32,

    /// Largest request body, in bytes (bounds batch and watch requests; a
    /// PUT may always carry a value of --max-value-bytes).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_bytes: u32,

    /// Most operations in one batch.
    #[arg(help_heading = "Limits", long, env = "KV_MAX_BATCH_OPS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_ops: u32,

    /// Most guards and operations, together, in one transaction (etcd's
    /// default --max-txn-ops: a transaction that fits here fits etcd).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_TXN_OPS", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_txn_ops: u32,

    /// Longest a lock acquisition or an election campaign waits in line
    /// (a request asks for less with `wait`).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_LOCK_WAIT", default_value = "60s", value_parser = duration)]
    pub max_lock_wait: Duration,

    /// Most keys one watch stream may watch.
    #[arg(help_heading = "Watches", long, env = "KV_MAX_WATCH_KEYS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watch_keys: u32,

    /// Bytes of keys and values one listing page may hold; a page ends
    /// before it would pass them (it always holds one key).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_PAGE_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_page_bytes: u32,

    /// Bytes of values one batch answer may carry; a GET past it gets
    /// status 413 in its result, without its value (a batch answer always
    /// holds one value, however large).
    #[arg(help_heading = "Limits", long, env = "KV_MAX_BATCH_ANSWER_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_answer_bytes: u32,

    /// Events kept for watch resume.
    #[arg(help_heading = "Watches", long, env = "KV_HISTORY", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub history: u32,

    /// Bytes of keys and values the history may hold; the oldest events go
    /// first when it is full.
    #[arg(help_heading = "Watches", long, env = "KV_HISTORY_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_bytes: u64,

    /// Bytes a watch stream may hold (events queued for it and encoded
    /// frames not yet written to its socket) before the server ends it and
    /// closes its connection (the client then resumes with Last-Event-ID).
    #[arg(help_heading = "Watches", long, env = "KV_WATCH_QUEUE_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_queue_bytes: u64,

    /// Time a request's head (request line and headers) may take to
    /// arrive, from its first byte (or from the connection's start).
    #[arg(help_heading = "Network", long, env = "KV_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,

    /// Time a request body may go without a byte arriving.
    #[arg(help_heading = "Network", long, env = "KV_BODY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_timeout: Duration,

    /// Time a connection with no request in flight stays open (watch
    /// streams are in flight while open, and send heartbeats).
    #[arg(help_heading = "Network", long, env = "KV_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Time a connection may go with something to send (a full socket, or
    /// answers its client takes nothing of, such as an HTTP/2 client that
    /// grants no window) and nothing sent; then it is closed, watch
    /// streams and all.
    #[arg(help_heading = "Network", long, env = "KV_SEND_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub send_timeout: Duration,

    /// Bytes of answers (listing pages, batch results, values) all clients
    /// together may hold built and not yet taken; past it an answer over
    /// 16 KiB is refused 503 with Retry-After.
    #[arg(help_heading = "Network", long, env = "KV_ANSWER_MEMORY", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub answer_memory: u64,

    /// Requests one HTTP/2 connection may have open at once (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(help_heading = "Network", long, env = "KV_MAX_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// Most client connections open at once; one more is answered 503 and
    /// closed [default: the open-file limit (raised to its hard limit at
    /// start) less 64].
    #[arg(help_heading = "Network", long, env = "KV_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// How often a watch stream with no event meanwhile is sent a comment
    /// (`:`), so that proxies keep it open and a vanished client is noticed.
    #[arg(help_heading = "Watches", long, env = "KV_WATCH_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub watch_heartbeat: Duration,

    /// Most leases at once on the memory store (each holds a few hundred
    /// bytes and its keys' names); one more is answered 503. On etcd,
    /// etcd's own limits apply.
    #[arg(help_heading = "Limits", long, env = "KV_MAX_LEASES", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_leases: u64,

    /// Most watch streams open at once; one more is answered 503.
    #[arg(help_heading = "Watches", long, env = "KV_MAX_WATCHES", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_watches: u64,

    /// Bytes all watch streams together may hold (queued events and
    /// encoded frames not yet written); past it the streams furthest
    /// behind are ended first [default: a quarter of the machine's memory].
    #[arg(help_heading = "Watches", long, env = "KV_WATCH_MEMORY",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_memory: Option<u64>,

    /// Take the client IP for rate limiting from X-Forwarded-For (only
    /// behind a proxy you trust: clients can forge the header).
    #[arg(help_heading = "Security", long, env = "KV_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Where the keys live: in this process, or in an etcd cluster.
    #[arg(help_heading = "Storage", long, env = "KV_BACKEND", value_enum, default_value_t = BackendKind::Memory)]
    pub backend: BackendKind,

    /// With --backend etcd: the etcd members' client URLs, comma-separated.
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// With --backend etcd: the prefix every key is stored under in etcd,
    /// so several stores (or other users) can share a cluster. Not empty:
    /// who holds each lease is kept beside the keys, under it.
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_PREFIX",
        default_value = "kv-store/"
    )]
    pub etcd_prefix: String,

    /// With --backend etcd: how long a request waits for etcd before it is
    /// answered 503.
    #[arg(help_heading = "etcd (--backend etcd)", long, env = "KV_ETCD_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub etcd_timeout: Duration,

    /// With --backend etcd: the cluster's --max-txn-ops; a batch with more
    /// operations is answered 413 before it is sent.
    #[arg(help_heading = "etcd (--backend etcd)", long, env = "KV_ETCD_MAX_TXN_OPS", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub etcd_max_txn_ops: u32,

    /// With --backend etcd: the etcd user to authenticate as (with
    /// --etcd-password).
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_USER",
        requires = "etcd_password"
    )]
    pub etcd_user: Option<String>,

    /// With --backend etcd: the etcd user's password (prefer the
    /// environment variable: a flag shows in the process list).
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,

    /// With --backend etcd and https:// endpoints: the CA certificate (PEM)
    /// that signed etcd's server certificates.
    #[arg(help_heading = "etcd (--backend etcd)", long, env = "KV_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// With --backend etcd: a client certificate (PEM) to show etcd, with
    /// --etcd-key (etcd's --client-cert-auth).
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_CERT",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<PathBuf>,

    /// With --backend etcd: the private key (PEM) of --etcd-cert.
    #[arg(
        help_heading = "etcd (--backend etcd)",
        long,
        env = "KV_ETCD_KEY",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<PathBuf>,

    /// Keep the store in this directory as well as in memory, so it survives
    /// restarts and crashes. Without it the store lives in memory only.
    /// Only with --backend memory.
    #[arg(help_heading = "Storage", long, env = "KV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: when a write counts as done (see the README's
    /// "Durability").
    #[arg(help_heading = "Storage", long, env = "KV_FSYNC", value_enum, default_value_t = FsyncMode::Always)]
    pub fsync: FsyncMode,

    /// Log format.
    #[arg(help_heading = "Logging", long, env = "KV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// One log line per request (time, client, token name, operation,
    /// status, bytes, duration; never a value or a secret), in
    /// --log-format; `false` turns it off.
    #[arg(help_heading = "Logging", long, env = "KV_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// Write the OpenAPI spec (JSON) to stdout and exit.
    #[arg(long)]
    pub print_openapi: bool,
}

/// What to do instead of serving.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Tokens for --auth-file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Build a data dir from a backup (`GET /backup`), checked first: a
    /// file cut short or altered is refused. Then start the server with
    /// --data-dir on it.
    Restore(Restore),
}

/// `kv-store restore FILE --data-dir DIR`.
#[derive(Clone, Debug, Args)]
pub struct Restore {
    /// The backup file.
    pub from: std::path::PathBuf,
    /// The data dir to build (new, or holding no store).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
}

/// `kv-store token ...`
#[derive(Clone, Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token (once: only its hash is kept), then the
    /// [[token]] block that admits it, to add to the auth file.
    New(NewToken),
}

/// `kv-store token new`: the new token's name and scopes.
#[derive(Clone, Debug, Args)]
pub struct NewToken {
    /// Shown in logs and 403s.
    #[arg(long)]
    pub name: String,
    /// A key prefix the token may read ("" for every key); repeat for more.
    #[arg(long)]
    pub read: Vec<String>,
    /// A key prefix the token may write (and read); repeat for more.
    #[arg(long)]
    pub write: Vec<String>,
    /// May read /status and /metrics.
    #[arg(long)]
    pub admin: bool,
}

/// A duration such as `10s`, `500ms` or `1m 30s`.
fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{err}; write a duration such as 10s, 500ms or 2m"))?;
    if duration.is_zero() {
        return Err("must be longer than 0".to_owned());
    }
    Ok(duration)
}

/// A whole number from 0 to `u32::MAX`, with a message that says so.
fn whole_number(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number from 0 to {}", u32::MAX))
}

/// `HOST:PORT` or `IP:PORT` (`[::1]:3000` for IPv6); the host is resolved
/// when the server binds.
fn listen_address(text: &str) -> Result<String, String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not HOST:PORT or IP:PORT (e.g. localhost:3000, 0.0.0.0:3000, [::1]:3000)"
        ))
    }
}
