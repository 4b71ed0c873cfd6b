//! The integration tests, one binary: each suite a module, all against a
//! server on a real socket (the API suites also against real etcd members
//! with `KV_TEST_BACKEND=etcd`). One binary links the crate once instead of
//! once per suite; only the tests that must run alone (crash, disk full,
//! cluster, consistency) have binaries of their own.
//!
//! Run one suite with `cargo test --test it -- keys::`.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod backup;
mod batch;
mod cli;
mod concurrency;
mod durability;
mod elections;
mod errors;
mod hardening;
mod keys;
mod keyspace;
mod kvctl;
mod leases;
mod locks;
mod metrics;
mod openapi;
mod sdk_rust;
mod tls;
mod txn;
mod watch;
mod watch_transports;
