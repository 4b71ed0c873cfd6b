//! Answers on their way to a client: the bytes a response body holds count
//! toward `--answer-memory` and toward its connection's debt until the
//! HTTP stack has sent them (or dropped them), so a client that stops
//! reading cannot pin memory. Past the budget, large answers are refused
//! 503; a connection whose debt makes no progress for `--send-timeout` is
//! closed (`stalls.rs`).
//!
//! Why at this layer: only here is a body seen as the bytes the socket
//! still has to take, on HTTP/1.1 and HTTP/2 alike, whatever operation
//! built it (a listing page, a batch, a large value).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use poem::IntoResponse;
use poem::http;

use super::dispatch::InFlight;
use super::guarded_io::ConnShared;
use crate::api::Problem;

/// Answers up to this size are always admitted, however full the budget:
/// the refusal itself is one, and each connection holds at most a few of
/// them in the HTTP stack's own buffers.
pub const ALWAYS_ADMITTED: usize = 16 * 1024;

/// A charged body goes to the HTTP stack this many bytes at a time
/// (HTTP/2's default frame size): the stack holds a few pieces, the answer
/// keeps the rest, and each piece the stack drops (sends) is progress for
/// `--send-timeout`. The budget is released when the last piece of a frame
/// is dropped: the pieces share the frame's allocation.
const PIECE: usize = 16 * 1024;

/// A response body as the connection sends it.
pub type AnswerBody = BoxBody<Bytes, std::io::Error>;

/// The answer to send for `response` on the connection `shared`: its body
/// charged, or a 503 if its bytes would pass `budget` (`--answer-memory`)
/// and its request was `safe` (GET or HEAD): the answer to a request that
/// may have written something is never thrown away (the API refuses a
/// batch before it runs instead).
///
/// On HTTP/1.1 an answer of at most [`ALWAYS_ADMITTED`] bytes is not
/// charged: hyper takes it into its write buffer at once, and holds one
/// answer per connection (it reads no next request until that one is
/// written), so counting it would only cost every small GET a few atomic
/// operations. On HTTP/2 every answer is charged, and each frame of a
/// streaming body (a watch) counts in the connection's debt: a client that
/// grants no flow-control window makes hyper hold what it polled, stream
/// by stream, without ever filling the socket.
pub fn admit(
    response: http::Response<AnswerBody>,
    shared: Arc<ConnShared>,
    in_flight: InFlight,
    budget: usize,
    safe: bool,
    h2: bool,
) -> http::Response<Answer> {
    let size = exact_size(&response);
    let used = &shared.counters().answer_bytes;
    let response = match size {
        Some(size)
            if safe && size > ALWAYS_ADMITTED && used.load(Ordering::Relaxed) + size > budget =>
        {
            shared.counters().refused_answer();
            let refused: poem::Response = Problem::answers_full(size).into_response();
            refused.into()
        }
        _ => response,
    };
    let size = exact_size(&response);
    let charged = match size {
        Some(size) if h2 || size > ALWAYS_ADMITTED => size,
        _ => 0,
    };
    let charge = (charged > 0).then(|| {
        used.fetch_add(charged, Ordering::Relaxed);
        shared.owe(charged);
        Arc::new(Charge {
            shared: shared.clone(),
            bytes: charged,
        })
    });
    response.map(|body| Answer {
        body,
        charge,
        owed: charged,
        rest: Bytes::new(),
        per_frame: h2 && size.is_none(),
        shared,
        _in_flight: in_flight,
    })
}

/// A body's length, when it is known before it is sent.
fn exact_size(response: &http::Response<AnswerBody>) -> Option<usize> {
    let size = response.body().size_hint().exact()?;
    usize::try_from(size).ok()
}

/// A response body that keeps its request in flight until hyper drops it,
/// and holds its answer's charge until every byte of it is freed.
pub struct Answer {
    body: AnswerBody,
    /// The answer's place in `--answer-memory`, shared by every frame it
    /// hands over: released when the last of them is dropped, as that is
    /// when the memory goes (pieces of a frame share its allocation).
    charge: Option<Arc<Charge>>,
    /// Bytes of the connection's debt this answer has not handed over in
    /// a piece yet.
    owed: usize,
    /// What is left of a charged frame.
    rest: Bytes,
    /// Count each frame in the connection's debt (a streaming body on
    /// HTTP/2).
    per_frame: bool,
    shared: Arc<ConnShared>,
    _in_flight: InFlight,
}

impl Answer {
    /// The next piece of `rest`: in the connection's debt until the stack
    /// drops it.
    fn piece(&mut self) -> Bytes {
        let piece = self.rest.split_to(PIECE.min(self.rest.len()));
        self.owed = self.owed.saturating_sub(piece.len());
        Bytes::from_owner(Piece {
            bytes: piece,
            shared: self.shared.clone(),
        })
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(self.piece()))));
        }
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame);
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        if data.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(charge) = &self.charge {
            // The frame's allocation keeps the charge; its pieces share
            // both.
            self.rest = Bytes::from_owner(Charged {
                bytes: data,
                _charge: charge.clone(),
            });
            return Poll::Ready(Some(Ok(Frame::data(self.piece()))));
        }
        if self.per_frame {
            // A streaming body's frame (not in the budget: a watch's
            // frames are charged to its watcher).
            self.shared.owe(data.len());
            self.owed += data.len();
            self.rest = data;
            return Poll::Ready(Some(Ok(Frame::data(self.piece()))));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // What was never handed over leaves the connection's debt now.
        self.shared.repaid(self.owed);
    }
}

/// An answer's bytes in `--answer-memory`.
struct Charge {
    shared: Arc<ConnShared>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shared
            .counters()
            .answer_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A frame of a charged answer: its allocation holds the charge.
struct Charged {
    bytes: Bytes,
    _charge: Arc<Charge>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A piece of an answer in the HTTP stack's hands: in the connection's
/// debt until dropped (sent), which is the progress `--send-timeout`
/// watches for.
struct Piece {
    bytes: Bytes,
    shared: Arc<ConnShared>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.shared.repaid(self.bytes.len());
    }
}
