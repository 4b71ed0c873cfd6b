//! kv-store: a concurrent key-value store with an HTTP API.
//!
//! A request travels down the layers in this order:
//! - [`server`]: listener, middleware (rate limit, errors as problem+json),
//!   routes and graceful shutdown;
//! - [`api`]: the poem-openapi operations, which map HTTP onto store calls
//!   and generate the OpenAPI spec;
//! - [`store`]: the in-memory store itself, which knows nothing of HTTP.

pub mod api;
pub mod config;
pub mod metrics;
pub mod server;
pub mod store;
