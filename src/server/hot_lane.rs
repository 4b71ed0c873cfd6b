//! The hot lane: GET, PUT and DELETE of one plain key, served from hyper's
//! request before any poem type is built. Everything else goes to the poem
//! application.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use poem::IntoResponse;
use poem::http;

use super::admission::Admission;
use super::answers::AnswerBody;
use super::dispatch;
use super::guarded_io::Timeouts;
use super::observe::{Record, Recorder, body_size};
use crate::api::{Answered, FastPath, HeaderFields, Hot, RequestHead, SentBody};
use crate::auth::Caller;
use crate::backend::Backend;

/// What the lane needs beside the API's [`FastPath`]: the rules the
/// application's middleware applies to the same requests (admission from
/// the route table, the request body limit) and where requests are
/// recorded. Nothing is decided twice: the middleware and the lane call the
/// same [`Admission`] and [`Recorder`].
pub struct HotLane<B> {
    fast: FastPath<B>,
    admission: Admission,
    recorder: Recorder,
    /// `--max-request-bytes` (as the application's body limit has it): a
    /// PUT that may be longer takes the long way, which answers 413.
    max_body: usize,
}

impl<B: Backend> HotLane<B> {
    pub fn new(
        fast: FastPath<B>,
        admission: Admission,
        recorder: Recorder,
        max_body: usize,
    ) -> Self {
        Self {
            fast,
            admission,
            recorder,
            max_body,
        }
    }

    /// The bound on a PUT's body the lane takes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The answer to `req` if it has a shape the lane takes, recorded as
    /// the application records its answers; `req` back otherwise.
    pub async fn serve(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        timeouts: &Timeouts,
    ) -> Result<http::Response<AnswerBody>, http::Request<Incoming>> {
        let started = Instant::now();
        let (head, incoming) = req.into_parts();
        let Some(hot) = Hot::of(&head, self.max_body) else {
            return Err(http::Request::from_parts(head, incoming));
        };
        let body = SentBody::Streaming(dispatch::body(&head, incoming, timeouts));
        let answer = self.answer(started, &head, hot, peer, body).await;
        Ok(answer.into_response().into())
    }

    /// [`Self::serve`] for a request whose body the lean path has read
    /// whole, its head read in place; the body back if the lane does not
    /// take it.
    pub async fn serve_whole<H: RequestHead>(
        &self,
        head: &H,
        body: Bytes,
        peer: SocketAddr,
    ) -> Result<Answered, Bytes> {
        let started = Instant::now();
        let Some(hot) = Hot::of(head, self.max_body) else {
            return Err(body);
        };
        Ok(self
            .answer(started, head, hot, peer, SentBody::Whole(body))
            .await)
    }

    async fn answer(
        &self,
        started: Instant,
        head: &impl HeaderFields,
        hot: Hot<'_>,
        peer: SocketAddr,
        body: SentBody,
    ) -> Answered {
        let operation = hot.operation();
        let (mut answer, caller, operation) =
            match self.admission.admit(head, Some(peer), hot.rules()) {
                Err(refused) => (Answered::Problem(*refused), None, "other"),
                Ok(caller) => {
                    let caller = caller.unwrap_or(Caller::Anyone);
                    let answer = self.fast.answer(hot, &caller, body).await;
                    (answer, Some(caller), operation)
                }
            };
        let (status, bytes) = match &mut answer {
            Answered::Plain(plain) => (plain.status(), u64::try_from(plain.body_len()).ok()),
            Answered::Problem(response) => (
                response.status(),
                match self.recorder.logs() {
                    true => body_size(response),
                    false => None,
                },
            ),
        };
        self.recorder.record(&Record {
            client: Some(peer),
            caller: caller.as_ref(),
            operation,
            status: status.as_u16(),
            bytes,
            took: started.elapsed(),
        });
        answer
    }
}
