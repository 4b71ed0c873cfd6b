//! A watch request served without hyper: through the application, its
//! stream written as chunks.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use poem::http::{self, uri::Scheme};
use poem::{Body, Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Served;
use super::head::LeanRequest;
use super::response;
use crate::server::conn_config::ConnConfig;
use crate::server::dispatch::{self, InFlight, Origin, answer};
use crate::server::guarded_io::ConnShared;
use crate::watch::Closer;

/// Answers `request` through the application and writes the answer,
/// keeping any bytes the client sends meanwhile in `read`.
pub async fn serve<E, B, S>(
    config: &ConnConfig<E, B>,
    io: &mut S,
    read: &mut BytesMut,
    request: Box<LeanRequest>,
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
    let LeanRequest {
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
    let answer = response::prepare(response, keep_alive);
    let sent = response::send(io, read, answer.head, answer.body, answer.framing).await;
    response::served(sent, answer.closes, peer)
}
