//! The command line: connection flags shared by every command, then one
//! subcommand.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::failure::EXIT_CODES;

#[derive(Parser)]
#[command(
    name = "kvctl",
    version,
    about = "A command-line client for kv-store",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,

    /// How answers are printed: simple (values, as a shell script wants
    /// them), json (one JSON document per answer, key or event) or table.
    #[arg(short, long, global = true, env = "KVCTL_OUTPUT", value_enum, default_value_t = Output::Simple)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// Servers to send requests to, comma-separated: when one cannot be
    /// connected to, the next is tried (a request that reached a server is
    /// never sent twice).
    #[arg(
        long,
        global = true,
        env = "KVCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub endpoints: Vec<String>,

    /// Bearer token (from `kv-store token new`), needed when the server
    /// runs with --auth-file.
    #[arg(long, global = true, env = "KVCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM file of the CA that signed the servers' certificates (instead of
    /// the system's roots).
    #[arg(long, global = true, env = "KVCTL_CACERT")]
    pub cacert: Option<PathBuf>,

    /// PEM file of a client certificate to present (with --key).
    #[arg(long, global = true, env = "KVCTL_CERT", requires = "client_key")]
    pub cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(
        id = "client_key",
        long = "key",
        global = true,
        env = "KVCTL_KEY",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// Most time one request may take (watches, lock waits and snapshots
    /// are not bounded by it).
    #[arg(long, global = true, env = "KVCTL_TIMEOUT", default_value = "15s",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Simple,
    Json,
    Table,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print a key's value (exit 3 if there is no such key).
    Get { key: String },

    /// Write a key: the value from the argument, --file, or standard input.
    Put {
        key: String,
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Seconds until the key expires.
        #[arg(long, conflicts_with = "lease")]
        ttl: Option<NonZeroU64>,
        /// Put the key on this lease (16 hex digits).
        #[arg(long)]
        lease: Option<String>,
        /// Write only if the key is at this revision (exit 4 if not).
        #[arg(long, conflicts_with = "if_absent")]
        if_match: Option<u64>,
        /// Write only if the key does not exist (exit 4 if it does).
        #[arg(long)]
        if_absent: bool,
        /// Write only while lock NAME is held with TOKEN (exit 4 if not).
        #[arg(long, value_name = "NAME=TOKEN")]
        fence: Option<String>,
    },

    /// Delete a key, or every key under a prefix.
    Del {
        key: String,
        /// Delete every key starting with KEY, at one revision.
        #[arg(long, conflicts_with = "if_match")]
        prefix: bool,
        /// Delete only if the key is at this revision (exit 4 if not).
        #[arg(long)]
        if_match: Option<u64>,
        /// Delete only while lock NAME is held with TOKEN (exit 4 if not).
        #[arg(long, value_name = "NAME=TOKEN")]
        fence: Option<String>,
    },

    /// List the keys under a prefix (all keys without one), every page at
    /// the first page's revision.
    Ls {
        prefix: Option<String>,
        /// Keys only, no values.
        #[arg(long)]
        keys_only: bool,
        /// Keys asked for per request.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        page_size: u64,
    },

    /// Print changes to keys and prefixes as they happen; after a
    /// disconnect it resumes where it was, on the next endpoint if need be.
    Watch {
        /// Keys to watch.
        keys: Vec<String>,
        /// Watch every key under this prefix (repeatable).
        #[arg(long)]
        prefix: Vec<String>,
        /// Replay from after this revision (default: from now on).
        #[arg(long)]
        since: Option<u64>,
        /// Print the current value of each watched key first.
        #[arg(long, conflicts_with = "since")]
        snapshot: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Run this command for each event instead of printing it, with
        /// KV_WATCH_EVENT, KV_WATCH_KEY, KV_WATCH_VALUE and KV_WATCH_REVISION
        /// in its environment.
        #[arg(last = true)]
        exec: Vec<String>,
    },

    /// The server's state and counters.
    Status,

    /// Online backups of the whole store.
    #[command(subcommand)]
    Snapshot(Snapshot),

    /// Write every key under a prefix, at one revision, as JSON lines (with
    /// TTLs and leases), to standard output or --file.
    Export {
        prefix: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Keys asked for per request.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        page_size: u64,
    },

    /// Write the keys of an export (a file, or standard input), in atomic
    /// batches; leases are granted anew with the time they had left.
    Import {
        /// The export; standard input when absent or `-`.
        file: Option<PathBuf>,
        /// Keys written per batch (at most the server's --max-batch-ops).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
        batch_size: u64,
    },

    /// Leases: TTLs that many keys share.
    #[command(subcommand)]
    Lease(Lease),

    /// Run a transaction, given as JSON (the API's TxnRequest: guards, then,
    /// else) in a file or on standard input.
    Txn {
        /// The transaction; standard input when absent or `-`.
        file: Option<PathBuf>,
    },

    /// Run a command while holding a lock; the command is stopped (SIGTERM)
    /// if the lock is lost. Its environment has KV_LOCK_NAME, KV_LOCK_TOKEN
    /// (send `If-Fence: NAME=TOKEN` with its writes) and KV_LOCK_LEASE.
    Lock {
        name: String,
        /// Seconds the lock outlives kvctl if kvctl dies (the lease's TTL;
        /// kvctl keeps it alive meanwhile).
        #[arg(long, default_value = "10")]
        ttl: NonZeroU64,
        /// Seconds to wait in line (exit 4 when they run out); the server's
        /// --max-lock-wait when absent.
        #[arg(long)]
        wait: Option<u64>,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum Snapshot {
    /// Save a consistent copy of the whole store (GET /backup) to FILE,
    /// checked before it is kept; `kv-store restore FILE` builds a data
    /// dir from it.
    Save { file: PathBuf },
}

#[derive(Subcommand)]
pub enum Lease {
    /// Grant a lease of TTL seconds.
    Grant {
        ttl: NonZeroU64,
        /// The id to give it (16 hex digits); the server picks one without.
        #[arg(long)]
        id: Option<String>,
    },
    /// Revoke a lease: its keys are deleted.
    Revoke { id: String },
    /// Keep a lease alive until interrupted (exit 3 once it is gone).
    KeepAlive { id: String },
    /// A lease's TTL left and granted, and with --keys its keys.
    Get {
        id: String,
        #[arg(long)]
        keys: bool,
    },
    /// Every lease.
    List,
}
