//! A hot request (GET, PUT or DELETE of a plain key) served without hyper:
//! by the same hot lane hyper's requests go to, its answer written as hyper
//! writes it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use poem::http::{self, Method, uri::Scheme};
use poem::{Body, Endpoint, IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Served;
use super::head::{LeanRequest, Opening};
use super::response::{self, Framing};
use crate::api::Answered;
use crate::backend::Backend;
use crate::server::answers::{self, Answer, AnswerBody};
use crate::server::conn_config::ConnConfig;
use crate::server::dispatch::{self, InFlight, Origin, answer};
use crate::server::guarded_io::{ConnShared, GuardedIo};

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
    first: Box<LeanRequest>,
    scheme: &Scheme,
    peer: SocketAddr,
    shared: &Arc<ConnShared>,
) -> RunEnd
where
    E: Endpoint<Output = Response>,
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = first;
    loop {
        let served = serve(config, io, read, request, scheme, peer, shared);
        let served = tokio::select! {
            biased;
            _ = shared.signalled(true) => return RunEnd::Closed,
            served = served => served,
        };
        if let Served::Close = served {
            return RunEnd::Closed;
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
async fn serve<E, B, S>(
    config: &ConnConfig<E, B>,
    io: &mut S,
    read: &mut BytesMut,
    request: Box<LeanRequest>,
    scheme: &Scheme,
    peer: SocketAddr,
    shared: &Arc<ConnShared>,
) -> Served
where
    E: Endpoint<Output = Response>,
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let in_flight = InFlight::start(shared.clone());
    let LeanRequest {
        head,
        body,
        keep_alive,
    } = *request;
    let safe = head.method == Method::GET;
    let response = match config.hot.serve_whole(head, body, peer).await {
        // Written with its head in one buffer; as small as this, an answer
        // is charged to nothing (`answers::admit`).
        Ok(Answered::Plain(plain)) if plain.body_len() <= answers::ALWAYS_ADMITTED => {
            let whole = response::encode_plain(plain, keep_alive);
            let sent = response::send(io, read, whole, None::<Answer>, Framing::Length).await;
            drop(in_flight);
            return response::served(sent, !keep_alive, peer);
        }
        Ok(answer) => answer.into_response().into(),
        // The reader took it for the hot lane's, so this does not happen;
        // if it did, the application answers it as it would any other.
        Err((head, body)) => {
            let origin = Origin {
                local: config.local_addr,
                peer,
                scheme: scheme.clone(),
            };
            let request = dispatch::request(head, Body::from(body), &origin, None);
            let response: http::Response<AnswerBody> =
                Box::pin(answer(&config.app, request)).await.into();
            response
        }
    };
    let memory = config.answers.memory;
    let answer = answers::admit(response, shared.clone(), in_flight, memory, safe, false);
    let answer = response::prepare(answer, keep_alive);
    let sent = response::send(io, read, answer.head, Some(answer.body), answer.framing).await;
    response::served(sent, answer.closes, peer)
}
