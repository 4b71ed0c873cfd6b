//! kv-store: a concurrent key-value store with an HTTP API.
//!
//! A request travels down the layers in this order:
//! - [`server`]: listener, middleware (rate limit, errors as problem+json),
//!   routes and graceful shutdown;
//! - [`api`]: the poem-openapi operations, which map HTTP onto backend
//!   calls and generate the OpenAPI spec;
//! - [`coord`]: locks and elections, built once from backend calls;
//! - [`backend`]: the seam: the contract every engine meets, and the
//!   counting done once above it;
//! - [`engines`]: the one place that names the engines, picked at start:
//! - [`store`]: the in-process engine, which knows nothing of HTTP, or
//! - `etcd` (cargo feature `etcd`): the same calls over an etcd cluster.
//!
//! Beside them: [`domain`], the types every layer shares (a leaf), and
//! [`watch`], the watch machinery every engine feeds.

pub mod api;
pub mod auth;
pub mod backend;
pub mod backup;
pub mod config;
pub mod coord;
pub mod domain;
pub mod engines;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod metrics;
pub mod server;
pub mod store;
pub mod watch;
