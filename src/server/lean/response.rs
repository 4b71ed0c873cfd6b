//! An answer written to the socket without hyper: the head as hyper writes
//! it for HTTP/1.1, then the body, chunked when its length is unknown, each
//! chunk straight from the body's own `Bytes`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as HttpBody;
use poem::http::{self, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Served;
use super::head::has_token;
use crate::api::Plain;

/// How a body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (also for no body at all).
    Length,
    Chunked,
}

/// The most buffers one `writev` takes (a snapshot's frames coalesce).
const MAX_SLICES: usize = 64;

/// Up to this many bytes of small parts (an event's chunk: size line,
/// frame, CRLF) are copied into one buffer on the stack and sent with one
/// `send`: a `writev` of them costs the kernel more than the copy
/// (BENCHMARKS.md, "Watchers at scale").
const COALESCE: usize = 2048;

/// How much of the body is pulled ahead of the socket. Frames wait in
/// the store's queue otherwise, where `--watch-queue-bytes` counts them.
const MAX_QUEUED: usize = 48;

/// Bytes a client may send during a stream (a pipelined request) before
/// the connection stops reading, as hyper stops when its buffer is full.
const MAX_PIPELINED: usize = 8 * 1024;

const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The response head hyper would write for `head` and a body of `size`
/// (`None`: unknown), and how the body must be framed.
pub fn encode_head(
    head: &mut http::response::Parts,
    size: Option<u64>,
    keep_alive: bool,
) -> (Vec<u8>, Framing) {
    if !keep_alive && !head.headers.contains_key(header::CONNECTION) {
        head.headers
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let mut out = Vec::with_capacity(256);
    push_status(&mut out, head.status);
    for (name, value) in &head.headers {
        push_field(&mut out, name.as_str(), value.as_bytes());
    }
    let framing = match size {
        _ if bodiless(head.status) || head.headers.contains_key(header::CONTENT_LENGTH) => {
            Framing::Length
        }
        Some(len) => {
            push_field(
                &mut out,
                "content-length",
                itoa::Buffer::new().format(len).as_bytes(),
            );
            Framing::Length
        }
        None => {
            push_field(&mut out, "transfer-encoding", b"chunked");
            Framing::Chunked
        }
    };
    if !head.headers.contains_key(header::DATE) {
        push_date(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    (out, framing)
}

/// A [`Plain`] answer whole, head and body, into `out` (cleared first), as
/// [`encode_head`] writes its response (a test holds the two to the same
/// bytes): no header map is built to be read back, and the value is copied
/// from the store's entry once, into the buffer written to the socket.
pub fn encode_plain(plain: &Plain, keep_alive: bool, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(256 + plain.body_len());
    let status = plain.status();
    push_status(out, status);
    plain.fields(|name, value| push_field(out, name.as_str(), value));
    if !keep_alive {
        push_field(out, "connection", b"close");
    }
    if !bodiless(status) {
        let mut digits = itoa::Buffer::new();
        push_field(
            out,
            "content-length",
            digits.format(plain.body_len()).as_bytes(),
        );
    }
    push_date(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(plain.body());
}

/// Statuses whose answers have no body, nor a length for one.
fn bodiless(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

fn push_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the `Date` field of now. Formatted once a second per thread,
/// as hyper does: a date costs more to format than the rest of a head.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second {
            *cached = second;
            *date = httpdate::fmt_http_date(now);
        }
        push_field(out, "date", date.as_bytes());
    });
}

/// An answer ready to [`send`]: its head as hyper would write it, its
/// body and framing, and whether the connection closes after it (the
/// request or the answer says so).
pub struct Prepared<B> {
    pub head: Bytes,
    pub body: B,
    pub framing: Framing,
    pub closes: bool,
}

pub fn prepare<B: HttpBody>(response: http::Response<B>, keep_alive: bool) -> Prepared<B> {
    let (mut head, body) = response.into_parts();
    let size = body.size_hint().exact();
    let (bytes, framing) = encode_head(&mut head, size, keep_alive);
    let closes = !keep_alive || has_token(&head.headers, header::CONNECTION, "close");
    Prepared {
        head: Bytes::from(bytes),
        body,
        framing,
        closes,
    }
}

/// What becomes of the connection once [`send`] has ended with `sent`.
pub fn served(sent: Result<(), Cut>, closes: bool, peer: SocketAddr) -> Served {
    match sent {
        Ok(()) if !closes => Served::KeepAlive,
        Ok(()) | Err(Cut::Socket) => Served::Close,
        Err(Cut::Body(err)) => {
            tracing::debug!(%peer, error = %err, "an answer's body failed");
            Served::Close
        }
    }
}

/// Why an answer stopped before its end.
#[derive(Debug)]
pub enum Cut {
    /// The client closed its side (HTTP/1 has no half-close here, as in
    /// hyper by default) or the socket failed.
    Socket,
    /// The body failed.
    Body(io::Error),
}

/// Writes `head`, then `body` framed as `framing`, watching the socket
/// meanwhile: a client that leaves ends the answer at once, and bytes it
/// sends (a pipelined request) are kept in `read`.
pub async fn send<S, B>(
    io: &mut S,
    read: &mut BytesMut,
    head: Bytes,
    body: B,
    framing: Framing,
) -> Result<(), Cut>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: HttpBody<Data = Bytes, Error = io::Error> + Unpin,
{
    let mut out = Outgoing::default();
    out.push(head);
    let mut body = Some(body);
    // The client is read (for an end of stream, or a pipelined request)
    // only when the answer has to wait: a small answer goes out in one
    // write without a read beside it.
    poll_fn(|cx| {
        loop {
            while out.parts.len() < MAX_QUEUED
                && let Some(open) = body.as_mut()
            {
                match Pin::new(open).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            out.data(data, framing);
                        }
                    }
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(Cut::Body(err))),
                    Poll::Ready(None) => {
                        body = None;
                        if framing == Framing::Chunked {
                            out.push(Bytes::from_static(LAST_CHUNK));
                        }
                    }
                    Poll::Pending => break,
                }
            }
            if out.parts.is_empty() {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(|_| Cut::Socket)?;
                if body.is_none() {
                    return Poll::Ready(Ok(()));
                }
                poll_client(io, read, cx).map_err(|_| Cut::Socket)?;
                return Poll::Pending;
            }
            if out
                .poll_write(io, cx)
                .map_err(|_| Cut::Socket)?
                .is_pending()
            {
                poll_client(io, read, cx).map_err(|_| Cut::Socket)?;
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Writes `bytes` (a whole answer), watching the socket meanwhile as
/// [`send`] does.
pub async fn send_all<S>(io: &mut S, read: &mut BytesMut, bytes: &[u8]) -> Result<(), Cut>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut written = 0;
    poll_fn(|cx| {
        while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
            match Pin::new(&mut *io).poll_write(cx, rest) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(Cut::Socket)),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => {
                    poll_client(io, read, cx).map_err(|_| Cut::Socket)?;
                    return Poll::Pending;
                }
            }
        }
        Pin::new(&mut *io).poll_flush(cx).map_err(|_| Cut::Socket)
    })
    .await
}

/// Reads what the client sends while the answer goes out: an end of
/// stream is an error (the client left).
fn poll_client<S: AsyncRead + Unpin>(
    io: &mut S,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    while read.len() < MAX_PIPELINED {
        let mut scratch = [0u8; 512];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Poll::Ready(Ok(())) => read.extend_from_slice(buf.filled()),
            Poll::Ready(Err(err)) => return Err(err),
            Poll::Pending => return Ok(()),
        }
    }
    Ok(())
}

/// A chunk's size line: the length in hex, then CRLF (without `format!`,
/// which cost a watcher's delivery ~470 instructions of ~4 800).
fn chunk_size(len: usize) -> Bytes {
    let mut line = [0u8; 2 * size_of::<usize>() + 2];
    let mut start = line.len() - 2;
    let mut rest = len;
    loop {
        start -= 1;
        line[start] = b"0123456789ABCDEF"[rest & 0xF];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    let end = line.len();
    line[end - 2..].copy_from_slice(b"\r\n");
    Bytes::copy_from_slice(&line[start..])
}

/// The bytes queued for the socket, written with `writev` as they are.
#[derive(Default)]
struct Outgoing {
    parts: VecDeque<Bytes>,
}

impl Outgoing {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.parts.push_back(bytes);
        }
    }

    fn data(&mut self, data: Bytes, framing: Framing) {
        if data.is_empty() {
            return;
        }
        match framing {
            Framing::Length => self.push(data),
            Framing::Chunked => {
                self.push(chunk_size(data.len()));
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
        }
    }

    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut written = match (self.parts.front(), self.parts.get(1)) {
            (Some(only), None) => ready!(Pin::new(&mut *io).poll_write(cx, only))?,
            (Some(first), Some(second)) if first.len() + second.len() <= COALESCE => {
                let mut scratch = [0u8; COALESCE];
                let mut filled = 0;
                for part in &self.parts {
                    let end = filled + part.len();
                    if end > COALESCE {
                        break;
                    }
                    scratch[filled..end].copy_from_slice(part);
                    filled = end;
                }
                ready!(Pin::new(&mut *io).poll_write(cx, &scratch[..filled]))?
            }
            _ => {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.parts.len().min(MAX_SLICES);
                for (slice, part) in slices.iter_mut().zip(&self.parts) {
                    *slice = IoSlice::new(part);
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            }
        };
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        while let Some(front) = self.parts.front_mut() {
            if written < front.len() {
                front.advance(written);
                break;
            }
            written -= front.len();
            self.parts.pop_front();
        }
        if self.parts.is_empty() && self.parts.capacity() > 8 {
            // A snapshot's burst is over: an idle watcher holds no queue.
            self.parts = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_what_hyper_writes() {
        let response = http::Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(())
            .expect("response");
        let (mut head, ()) = response.into_parts();
        let (bytes, framing) = encode_head(&mut head, None, false);
        let text = String::from_utf8(bytes).expect("ascii");
        let (before_date, date) = text.split_once("date: ").expect("a date");
        assert_eq!(
            before_date,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
             connection: close\r\ntransfer-encoding: chunked\r\n"
        );
        assert!(date.ends_with(" GMT\r\n\r\n"), "{date}");
        assert_eq!(framing, Framing::Chunked);

        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = StatusCode::BAD_REQUEST;
        let (bytes, framing) = encode_head(&mut head, Some(12), true);
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\ndate: "),
            "{text}"
        );
        assert_eq!(framing, Framing::Length);
    }

    /// Without its `date` field, which may have turned a second.
    fn undated(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        text.split("\r\n")
            .filter(|line| !line.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[tokio::test]
    async fn a_plain_answer_is_written_as_its_response_would_be() {
        use crate::domain::{LeaseId, Meta, Value};
        use crate::server::answers::AnswerBody;
        use http_body_util::BodyExt;
        use poem::IntoResponse;
        let meta = |lease| Meta {
            create_revision: 3,
            mod_revision: 12,
            version: 4,
            lease,
        };
        let answers = || {
            [
                Plain::Value {
                    value: Value::from("v1"),
                    meta: meta(None),
                },
                Plain::Value {
                    value: Value::from(""),
                    meta: meta(LeaseId::new(0x2a)),
                },
                Plain::NotModified { revision: 12 },
                Plain::Written {
                    created: true,
                    revision: 13,
                },
                Plain::Written {
                    created: false,
                    revision: 14,
                },
                Plain::Deleted,
            ]
        };
        for keep_alive in [true, false] {
            for (plain, again) in answers().into_iter().zip(answers()) {
                let mut ours = Vec::new();
                encode_plain(&plain, keep_alive, &mut ours);
                let response: http::Response<AnswerBody> = again.into_response().into();
                let (mut head, body) = response.into_parts();
                let body = body.collect().await.expect("a body").to_bytes();
                let size = u64::try_from(body.len()).ok();
                let (mut theirs, _) = encode_head(&mut head, size, keep_alive);
                theirs.extend_from_slice(&body);
                assert_eq!(undated(&ours), undated(&theirs));
            }
        }
    }

    /// A socket that takes at most `limit` bytes per write and records
    /// each write.
    struct Narrow {
        limit: usize,
        writes: Vec<(Vec<u8>, bool)>,
    }

    impl AsyncWrite for Narrow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let taken = buf.len().min(self.limit);
            self.writes.push((buf[..taken].to_vec(), false));
            Poll::Ready(Ok(taken))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let taken = all.len().min(self.limit);
            self.writes.push((all[..taken].to_vec(), true));
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn drain(out: &mut Outgoing, limit: usize) -> Narrow {
        let mut io = Narrow {
            limit,
            writes: Vec::new(),
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !out.parts.is_empty() {
            assert!(out.poll_write(&mut io, &mut cx).is_ready());
        }
        io
    }

    #[test]
    fn a_small_chunk_goes_in_one_plain_write_and_survives_short_ones() {
        let mut out = Outgoing::default();
        out.data(Bytes::from_static(b"event one"), Framing::Chunked);
        let io = drain(&mut out, usize::MAX);
        assert_eq!(io.writes, vec![(b"9\r\nevent one\r\n".to_vec(), false)]);

        out.data(Bytes::from_static(b"event one"), Framing::Chunked);
        out.data(Bytes::from_static(b"event two"), Framing::Chunked);
        let io = drain(&mut out, 5);
        let sent: Vec<u8> = io
            .writes
            .iter()
            .flat_map(|(bytes, _)| bytes.clone())
            .collect();
        assert_eq!(sent, b"9\r\nevent one\r\n9\r\nevent two\r\n");
        assert!(io.writes.iter().all(|(_, vectored)| !vectored));
    }

    #[test]
    fn a_large_chunk_is_written_from_its_own_buffer() {
        let mut out = Outgoing::default();
        let value = Bytes::from(vec![b'x'; 3 * COALESCE]);
        out.data(value.clone(), Framing::Chunked);
        let io = drain(&mut out, usize::MAX);
        assert_eq!(io.writes.len(), 1);
        let (sent, vectored) = &io.writes[0];
        assert!(vectored);
        assert_eq!(sent.len(), "1800\r\n".len() + value.len() + 2);
        assert!(sent.ends_with(b"xx\r\n"));
    }

    #[test]
    fn a_size_line_is_the_length_in_hex() {
        for len in [0, 1, 9, 10, 255, 4096, usize::MAX] {
            assert_eq!(&chunk_size(len)[..], format!("{len:X}\r\n").as_bytes());
        }
    }

    #[test]
    fn chunks_are_sized_in_hex() {
        let mut out = Outgoing::default();
        out.data(Bytes::from(vec![b'x'; 255]), Framing::Chunked);
        let sent: Vec<u8> = out.parts.iter().flatten().copied().collect();
        assert!(sent.starts_with(b"FF\r\nxx"));
        assert!(sent.ends_with(b"xx\r\n"));
    }
}
