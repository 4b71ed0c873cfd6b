//! HTTP/1.1 requests served without hyper: watches, and the hot lane's
//! requests.
//!
//! Why, for watches: hyper keeps an 8 KiB read buffer and an 8 KiB header
//! buffer for as long as an HTTP/1 connection lives (and has no knob to
//! shrink them), so an idle watcher cost 35 KB of server memory, where a
//! watch needs neither buffer once its request is read (BENCHMARKS.md,
//! "Watch fan-out"). For the hot lane's GET, PUT and DELETE of a plain key:
//! hyper's HTTP/1 machinery was half of what such a request cost
//! (BENCHMARKS.md, "Issue 26").
//!
//! A connection's requests are read here ([`head`]) while they come in a
//! shape the lean path takes; a watch is handed to the same application as
//! every other request (router, admission, limits, metrics: nothing is
//! bypassed) and a hot request to the same hot lane hyper's requests go to
//! ([`super::hot_lane`]), and the answer is written here ([`response`]):
//! the head as hyper writes it, then the body (a watch's shared frames as
//! chunks). Anything else (another request, a shape left to hyper, HTTP/2)
//! goes to hyper with the bytes read so far, and the connection stays with
//! hyper from then on.

mod head;
mod hot;
mod response;
mod watch;

pub use head::{Opening, read};
pub use hot::{RunEnd, serve_run as serve_hot_run};
pub use watch::serve as serve_watch;

/// What becomes of the connection after a request the lean path served.
pub enum Served {
    /// Read the next request (HTTP/1.1 keep-alive).
    KeepAlive,
    Close,
}
