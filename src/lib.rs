//! kv-store: a concurrent key-value store with an HTTP API.
//!
//! A request travels down the layers in this order:
//! - [`server`]: listener, middleware (rate limit, errors as problem+json),
//!   routes and graceful shutdown;
//! - [`api`]: the poem-openapi operations, which map HTTP onto store calls
//!   and generate the OpenAPI spec;
//! - [`backend`]: the seam the API calls, which is one of:
//! - [`store`]: the in-process store, which knows nothing of HTTP, or
//! - `etcd` (cargo feature `etcd`): the same calls over an etcd cluster.

pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod metrics;
pub mod server;
pub mod store;
