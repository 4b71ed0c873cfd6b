//! A hot request (GET, PUT or DELETE of a plain key) served without hyper:
//! by the same hot lane hyper's requests go to, its answer written as hyper
//! writes it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Served;
use super::head::{self, HotRequest, Opening};
use super::response;
use crate::api::{Answered, RequestHead};
use crate::backend::Backend;
use crate::server::answers;
use crate::server::conn_config::ConnConfig;
use crate::server::dispatch::InFlight;
use crate::server::guarded_io::{ConnShared, GuardedIo};

/// The most room a run keeps for its answers between them.
const KEPT_OUT: usize = 2048;

/// What ended a run of hot requests.
pub enum RunEnd {
    /// The connection is done (closed, gone, or the server stops).
    Closed,
    /// The next request is not a hot one: the caller serves it.
    Next(Opening),
}

/// Serves `first` and the hot requests that follow it on the connection,
/// until one is not hot. A run is one future (the caller boxes it once),
/// however many requests it serves.
pub async fn serve_run<E, B, S>(
    config: &ConnConfig<E, B>,
    io: &mut GuardedIo<S>,
    read: &mut BytesMut,
    first: Box<HotRequest>,
    peer: SocketAddr,
    shared: &Arc<ConnShared>,
) -> RunEnd
where
    E: Endpoint<Output = Response>,
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = first;
    // Each plain answer is written from here: one buffer for the run.
    let mut out = Vec::new();
    loop {
        let served = serve(config, io, read, &mut out, request, peer, shared);
        let served = tokio::select! {
            biased;
            _ = shared.signalled(true) => return RunEnd::Closed,
            served = served => served,
        };
        match served {
            Some(Served::KeepAlive) => {}
            Some(Served::Close) => return RunEnd::Closed,
            None => return RunEnd::Next(Opening::Other),
        }
        let opening = tokio::select! {
            biased;
            _ = shared.signalled(false) => return RunEnd::Closed,
            opening = super::read(io, read, config.hot.max_body()) => opening,
        };
        request = match opening {
            Opening::Hot(next) => next,
            other => return RunEnd::Next(other),
        };
    }
}

/// Answers `request` through the hot lane and writes the answer, keeping
/// any bytes the client sends meanwhile (the next request) in `read`.
/// `None`: the lane did not take it (the reader asks the lane's own
/// [`crate::api::Hot::of`], so this does not happen), and its bytes are
/// back in `read` for hyper.
async fn serve<E, B, S>(
    config: &ConnConfig<E, B>,
    io: &mut S,
    read: &mut BytesMut,
    out: &mut Vec<u8>,
    request: Box<HotRequest>,
    peer: SocketAddr,
    shared: &Arc<ConnShared>,
) -> Option<Served>
where
    E: Endpoint<Output = Response>,
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let in_flight = InFlight::start(shared.clone());
    // Read in place: the head is a few hundred bytes to copy out.
    let mut request = request;
    let (body, keep_alive) = (std::mem::take(&mut request.body), request.keep_alive);
    let answer = match config.hot.serve_whole(&request.head, body, peer).await {
        Ok(answer) => answer,
        Err(body) => {
            head::unread(request.head, body, read);
            return None;
        }
    };
    let response = match answer {
        // Written with its head in one buffer; as small as this, an answer
        // is charged to nothing (`answers::admit`).
        Answered::Plain(plain) if plain.body_len() <= answers::ALWAYS_ADMITTED => {
            response::encode_plain(&plain, keep_alive, out);
            drop(plain);
            let sent = response::send_all(io, read, out).await;
            drop(in_flight);
            if out.capacity() > KEPT_OUT {
                // A large value went out: an idle connection keeps no room
                // for the next.
                *out = Vec::new();
            }
            return Some(response::served(sent, !keep_alive, peer));
        }
        other => other.into_response().into(),
    };
    let memory = config.answers.memory;
    let safe = *request.head.method() == Method::GET;
    let answer = answers::admit(response, shared.clone(), in_flight, memory, safe, false);
    let answer = response::prepare(answer, keep_alive);
    let sent = response::send(io, read, answer.head, answer.body, answer.framing).await;
    Some(response::served(sent, answer.closes, peer))
}
