//! The server layer: listener, connections, the HTTP application and its
//! middleware, start-up and shutdown.
//!
//! `start.rs` wires a server from its configuration and `signals.rs` serves
//! until a signal; `app.rs` assembles the application. A connection is
//! accepted by `listener.rs` (connection limit) and served by
//! `connection.rs` (hyper) or `lean/` (watches and hot requests without
//! hyper); `hot_lane.rs` serves GET, PUT and DELETE of a plain key either
//! way, `dispatch.rs` hands every other request to the application;
//! `guarded_io.rs` keeps the socket's deadlines, `answers.rs` what answers
//! hold until sent, `stalls.rs` closes connections that take nothing.

mod access_log;
mod admission;
mod answers;
mod app;
mod bind;
mod body_limit;
mod body_timeout;
mod conn_config;
mod connection;
mod dispatch;
mod errors;
mod guarded_io;
mod hot_lane;
mod lean;
mod listener;
mod observe;
mod raw_response;
mod rewind;
mod signals;
mod stalls;
mod start;
mod tls;

pub use admission::Admission;
pub use app::app;
pub use body_limit::BodyLimit;
pub use signals::run;
pub use start::{Running, StartError, start};
