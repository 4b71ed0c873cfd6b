//! Watch connections served without hyper.
//!
//! Why: hyper keeps an 8 KiB read buffer and an 8 KiB header buffer for as
//! long as an HTTP/1 connection lives (and has no knob to shrink them), so
//! an idle watcher cost 35 KB of server memory, where a watch needs
//! neither buffer once its request is read (BENCHMARKS.md, "Watch
//! fan-out"). An HTTP/1.1 connection whose first request is a watch in
//! the common shape is read here ([`head`]), handed to the same
//! application as every other request (router, admission, limits, metrics:
//! nothing is bypassed) and its answer written here ([`response`]): the
//! head, then each event's shared frame as a chunk. Anything else (another
//! request, a shape left to hyper, HTTP/2) goes to hyper with the bytes
//! read so far, and the connection stays with hyper from then on.

mod head;
mod response;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body::Body as HttpBody;
use http_body_util::combinators::BoxBody;
use poem::http::{self, header, uri::Scheme};
use poem::{Body, Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite};

pub use head::{Opening, read};

use super::conn_config::ConnConfig;
use super::dispatch::{self, InFlight, Origin, answer};
use super::guarded_io::ConnShared;
use crate::watch::Closer;
use head::WatchRequest;
use response::Cut;

/// What becomes of the connection after a request the lean path served.
pub enum Served {
    /// Read the next request (HTTP/1.1 keep-alive).
    KeepAlive,
    Close,
}

/// Answers `request` through the application and writes the answer,
/// keeping any bytes the client sends meanwhile in `read`.
pub async fn serve<E, B, S>(
    config: &ConnConfig<E, B>,
    io: &mut S,
    read: &mut BytesMut,
    request: Box<WatchRequest>,
    scheme: Scheme,
    peer: SocketAddr,
    shared: &Arc<ConnShared>,
) -> Served
where
    E: Endpoint<Output = Response>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _in_flight = InFlight::start(shared.clone());
    config.counters.lean_watch();
    let WatchRequest {
        head,
        body,
        keep_alive,
    } = *request;
    let closer: Closer = shared.clone();
    let origin = Origin {
        local: config.local_addr,
        peer,
        scheme,
    };
    let request = dispatch::request(head, Body::from(body), &origin, Some(closer));
    // Boxed: the application's future would otherwise stay in the
    // connection's task for as long as the stream it opened.
    let response: http::Response<BoxBody<Bytes, std::io::Error>> =
        Box::pin(answer(&config.app, request)).await.into();
    let (mut head, body) = response.into_parts();
    let size = body.size_hint().exact();
    let (head_bytes, framing) = response::encode_head(&mut head, size, keep_alive);
    let closes = !keep_alive || head::has_token(&head.headers, header::CONNECTION, "close");
    drop(head);
    match response::send(io, read, head_bytes, body, framing).await {
        Ok(()) if !closes => Served::KeepAlive,
        Ok(()) => Served::Close,
        Err(Cut::Socket) => Served::Close,
        Err(Cut::Body(err)) => {
            tracing::debug!(%peer, error = %err, "a watch body failed");
            Served::Close
        }
    }
}
