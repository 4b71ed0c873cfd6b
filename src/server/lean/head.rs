//! The next request of an HTTP/1.1 connection, read to see whether it is
//! one the lean path serves: a watch, or a hot request (GET, PUT, DELETE of
//! a plain key) whose body has arrived whole.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use poem::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::api::{HeaderFields, Hot, RequestHead, header_text, routes};

/// The most a head (and a `POST /watch` body with it) may take here;
/// a larger request is hyper's to read.
const MAX_REQUEST: usize = 8 * 1024;

/// The room each read of a request is given at least: a watch's or a hot
/// request's head is a few hundred bytes.
const FIRST_READ: usize = 1024;

/// The most header fields the lean path parses (hyper takes up to 100).
const MAX_HEADERS: usize = 48;

/// What the next request on a connection turned out to be.
pub enum Opening {
    /// A watch request, whole: served by the lean path.
    Watch(Box<LeanRequest>),
    /// A request the hot lane may take ([`Hot::may_take`]), whole: one it
    /// does not take is put back ([`unread`]) for hyper.
    Hot(Box<HotRequest>),
    /// Anything else, or a shape left to hyper (another version, a chunked
    /// or `Expect` body, a body that has not all arrived, a head larger
    /// than [`MAX_REQUEST`], bytes that do not parse): hyper reads it from
    /// the bytes read so far.
    Other,
    /// The client left before a byte of a request, or the socket failed
    /// or timed out (the 408 written by [`super::super::guarded_io`]).
    Gone,
}

/// A watch request's head and body, read whole.
pub struct LeanRequest {
    pub head: http::request::Parts,
    pub body: Bytes,
    /// HTTP/1.1 keeps the connection unless the client sent
    /// `Connection: close`.
    pub keep_alive: bool,
}

/// A hot request's head and body, read whole.
pub struct HotRequest {
    pub head: HeadView<Bytes>,
    pub body: Bytes,
    pub keep_alive: bool,
}

/// Reads until `read` holds a whole request head, then sorts it; the
/// request's bytes leave `read` only for a request the lean path serves.
/// `max_body` is the hot lane's bound on a PUT's body.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    read: &mut BytesMut,
    max_body: usize,
) -> Opening {
    loop {
        if !read.is_empty() {
            match parse(read, max_body) {
                Parsed::Partial if read.len() < MAX_REQUEST => {}
                Parsed::Partial | Parsed::Other => return Opening::Other,
                Parsed::Lean(opening) => return opening,
            }
        }
        // Room for a whole small request at each read: one cut by the
        // buffer's end rather than by the client would go to hyper if the
        // cut fell in its body.
        if read.capacity() - read.len() < FIRST_READ {
            let room = read.len().max(FIRST_READ);
            read.reserve(room.min(MAX_REQUEST - read.len()));
        }
        match io.read_buf(read).await {
            Ok(0) if read.is_empty() => return Opening::Gone,
            // A head cut short: hyper answers it as it did before.
            Ok(0) => return Opening::Other,
            Ok(_) => {}
            Err(_) => return Opening::Gone,
        }
    }
}

/// Puts a request the hot lane did not take back in front of what was read
/// after it, for hyper to read.
pub fn unread(head: HeadView<Bytes>, body: Bytes, read: &mut BytesMut) {
    let mut again = BytesMut::from(head.bytes);
    again.extend_from_slice(&body);
    again.extend_from_slice(read);
    *read = again;
}

enum Parsed {
    Partial,
    Other,
    /// [`Opening::Watch`] or [`Opening::Hot`].
    Lean(Opening),
}

fn parse(read: &mut BytesMut, max_body: usize) -> Parsed {
    // Uninitialised: the parser writes only the fields a request has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(read, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    // A view's spans are 16 bits: a longer head (only ever seen in a
    // buffer that pipelined requests filled) is hyper's.
    if head_len > MAX_REQUEST {
        return Parsed::Other;
    }
    let Some(framing) = Framing::of(&request) else {
        return Parsed::Other;
    };
    let view = HeadView::of(&read[..head_len], &request, framing.method);
    let path = view.target().0;
    let watch = routes::streams(&view.method, path);
    // The hot lane decides (and a request it does not take is put back
    // for hyper): asking `Hot::of` here too would cost every request it
    // takes a second pass over the head.
    let hot = Hot::may_take(&view.method, path) && framing.body_len <= max_body;
    if !watch && !hot {
        return Parsed::Other;
    }
    if read.len() - head_len < framing.body_len {
        // The body's read deadline is hyper's to keep.
        return Parsed::Other;
    }
    let watch_head = match watch {
        true => match parts(&request, view.method.clone()) {
            Some(head) => Some(head),
            None => return Parsed::Other,
        },
        false => None,
    };
    let view = view.rebind(());
    let mut whole = read.split_to(head_len + framing.body_len);
    let body = whole.split_off(head_len).freeze();
    let keep_alive = framing.keep_alive;
    let Some(head) = watch_head else {
        return Parsed::Lean(Opening::Hot(Box::new(HotRequest {
            head: view.rebind(whole.freeze()),
            body,
            keep_alive,
        })));
    };
    if read.is_empty() {
        // The connection may stream for hours: hold no buffer meanwhile.
        *read = BytesMut::new();
    }
    Parsed::Lean(Opening::Watch(Box::new(LeanRequest {
        head,
        body,
        keep_alive,
    })))
}

/// What a request head's fields say of its framing and its connection,
/// for a head in a shape the lean path reads: HTTP/1.1 `GET`, `POST`,
/// `PUT` or `DELETE`, at most one `Content-Length` (digits only), no
/// `Transfer-Encoding`, `Expect` or `Upgrade`. One pass over the fields.
struct Framing {
    method: Method,
    body_len: usize,
    /// HTTP/1.1 keeps the connection unless the client sent
    /// `Connection: close`.
    keep_alive: bool,
}

impl Framing {
    fn of(request: &httparse::Request<'_, '_>) -> Option<Self> {
        if request.version != Some(1) {
            return None;
        }
        let method = match request.method? {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            _ => return None,
        };
        let (mut body_len, mut keep_alive) = (None, true);
        for field in request.headers.iter() {
            let is = |name: &HeaderName| field.name.eq_ignore_ascii_case(name.as_str());
            if is(&header::TRANSFER_ENCODING) || is(&header::EXPECT) || is(&header::UPGRADE) {
                return None;
            }
            if is(&header::CONTENT_LENGTH) {
                if body_len.is_some() {
                    return None;
                }
                body_len = Some(digits(field.value)?);
            }
            if is(&header::CONNECTION) && names_token(field.value, "close") {
                keep_alive = false;
            }
        }
        Some(Self {
            method,
            body_len: body_len.unwrap_or(0),
            keep_alive,
        })
    }
}

/// The head of `request` as `http` parts (for a watch, which the poem
/// application serves); `None` if a part is not valid as `http` takes it.
fn parts(request: &httparse::Request<'_, '_>, method: Method) -> Option<http::request::Parts> {
    let uri: Uri = request.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        headers.append(name, value);
    }
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.version = Version::HTTP_11;
    head.headers = headers;
    Some(head)
}

// A span's 16 bits hold any offset in a head the lean path takes.
const _: () = assert!(MAX_REQUEST <= u16::MAX as usize);

/// Where a part of a head lies in its bytes.
#[derive(Clone, Copy, Default)]
struct Span {
    start: u16,
    end: u16,
}

impl Span {
    /// `part`'s place in `whole`, which holds it ([`MAX_REQUEST`] fits
    /// in 16 bits).
    fn of(whole: &[u8], part: &[u8]) -> Self {
        let start = part.as_ptr().addr().saturating_sub(whole.as_ptr().addr());
        let end = start + part.len();
        Self {
            start: u16::try_from(start).unwrap_or(u16::MAX),
            end: u16::try_from(end).unwrap_or(u16::MAX),
        }
    }

    fn of_str(whole: &[u8], part: &str) -> Self {
        Self::of(whole, part.as_bytes())
    }

    fn in_bytes<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        bytes
            .get(usize::from(self.start)..usize::from(self.end))
            .unwrap_or_default()
    }

    fn in_text<'a>(&self, bytes: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.in_bytes(bytes)).unwrap_or_default()
    }
}

/// A request head as the hot lane reads it: the bytes read, and where the
/// target and each field lie in them. Building an `http` header map and
/// URI, copying each value, cost a GET ~1 500 of its ~13 000 instructions
/// (BENCHMARKS.md, issue 26); this view copies nothing. `B` is the bytes
/// still in the read buffer while a head is sorted, then the head's own.
pub struct HeadView<B> {
    bytes: B,
    method: Method,
    path: Span,
    query: Option<Span>,
    fields: [(Span, Span); MAX_HEADERS],
    count: usize,
}

impl<'a> HeadView<&'a [u8]> {
    fn of(bytes: &'a [u8], request: &httparse::Request<'_, '_>, method: Method) -> Self {
        let target = request.path.unwrap_or_default();
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut fields = [(Span::default(), Span::default()); MAX_HEADERS];
        for (slot, field) in fields.iter_mut().zip(request.headers.iter()) {
            *slot = (
                Span::of_str(bytes, field.name),
                Span::of(bytes, field.value),
            );
        }
        Self {
            bytes,
            method,
            path: Span::of_str(bytes, path),
            query: query.map(|query| Span::of_str(bytes, query)),
            fields,
            count: request.headers.len().min(MAX_HEADERS),
        }
    }
}

impl<B> HeadView<B> {
    /// The same view over `bytes`, which hold the same head.
    fn rebind<C>(self, bytes: C) -> HeadView<C> {
        HeadView {
            bytes,
            method: self.method,
            path: self.path,
            query: self.query,
            fields: self.fields,
            count: self.count,
        }
    }
}

impl<B: AsRef<[u8]>> HeaderFields for HeadView<B> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let bytes = self.bytes.as_ref();
        self.fields[..self.count]
            .iter()
            .map(move |(name, value)| (name.in_bytes(bytes), value.in_bytes(bytes)))
    }
}

impl<B: AsRef<[u8]>> RequestHead for HeadView<B> {
    fn method(&self) -> &Method {
        &self.method
    }

    fn target(&self) -> (&str, Option<&str>) {
        let bytes = self.bytes.as_ref();
        let query = self.query.map(|query| query.in_text(bytes));
        (self.path.in_text(bytes), query)
    }
}

/// A `Content-Length` as hyper reads it: one or more ASCII digits, nothing
/// else (Rust's `parse` would also take `+5`, which hyper refuses). What
/// this does not take, hyper judges.
fn digits(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0usize, |length, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        length.checked_mul(10)?.checked_add(digit as usize)
    })
}

/// Whether a comma-separated header such as `Connection` holds `token`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| names_token(value.as_bytes(), token))
}

/// Whether one value of a comma-separated header holds `token`.
fn names_token(value: &[u8], token: &str) -> bool {
    header_text(value).is_some_and(|value| {
        value
            .split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(bytes: &[u8]) -> (&'static str, BytesMut) {
        let mut read = BytesMut::from(bytes);
        let kind = match parse(&mut read, 16) {
            Parsed::Partial => "partial",
            Parsed::Other => "other",
            Parsed::Lean(Opening::Watch(_)) => "watch",
            Parsed::Lean(Opening::Hot(_)) => "hot",
            Parsed::Lean(_) => "neither",
        };
        (kind, read)
    }

    #[test]
    fn a_watch_in_the_common_shape_is_taken_whole() {
        let (kind, left) = sort(b"GET /watch_key/k HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((kind, left.len()), ("watch", 0));
        let post = b"POST /watch HTTP/1.1\r\ncontent-length: 5\r\n\r\n[\"k\"]GET /";
        let (kind, left) = sort(post);
        assert_eq!((kind, &left[..]), ("watch", &b"GET /"[..]));
    }

    #[test]
    fn a_hot_request_is_taken_whole_and_the_next_one_left() {
        let (kind, left) = sort(b"GET /store/k HTTP/1.1\r\nHost: x\r\n\r\nGET /");
        assert_eq!((kind, &left[..]), ("hot", &b"GET /"[..]));
        let put = b"PUT /store/k HTTP/1.1\r\ncontent-length: 2\r\n\r\nv1";
        assert_eq!(sort(put).0, "hot");
        let (kind, left) = sort(b"DELETE /store/k HTTP/1.1\r\n\r\n");
        assert_eq!((kind, left.len()), ("hot", 0));
    }

    /// A read is given room for a whole small request: one the buffer's
    /// end would cut in its body would otherwise go to hyper.
    #[tokio::test]
    async fn a_request_is_not_cut_by_the_buffer() {
        let put = b"PUT /store/k HTTP/1.1\r\ncontent-length: 10\r\n\r\n0123456789";
        // Room for the head and part of the body only.
        let mut buffer = BytesMut::with_capacity(put.len() - 5);
        let opening = read(&mut &put[..], &mut buffer, 16).await;
        assert!(matches!(opening, Opening::Hot(_)));
    }

    /// A request the hot lane does not take goes back whole, before what
    /// followed it, for hyper.
    #[test]
    fn a_request_the_lane_refuses_is_put_back() {
        let sent = b"PUT /store/a%2Fb HTTP/1.1\r\ncontent-length: 2\r\n\r\nv1GET /";
        let mut read = BytesMut::from(&sent[..]);
        let Parsed::Lean(Opening::Hot(request)) = parse(&mut read, 16) else {
            panic!("taken as hot");
        };
        assert_eq!(&read[..], b"GET /");
        assert!(Hot::of(&request.head, 16).is_none());
        unread(request.head, request.body, &mut read);
        assert_eq!(&read[..], sent);
    }

    #[test]
    fn a_head_longer_than_the_lean_path_reads_is_left_to_hyper() {
        let long = format!(
            "GET /store/k HTTP/1.1\r\nx: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        let (kind, left) = sort(long.as_bytes());
        assert_eq!((kind, left.len()), ("other", long.len()));
    }

    #[test]
    fn anything_else_is_left_to_hyper_untouched() {
        for request in [
            &b"GET /store HTTP/1.1\r\n\r\n"[..],
            b"HEAD /store/k HTTP/1.1\r\n\r\n",
            b"PUT /store/k HTTP/1.1\r\ncontent-length: 17\r\n\r\n",
            b"PUT /store/k HTTP/1.1\r\ncontent-length: 2\r\n\r\nv",
            b"PUT /store/k HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"DELETE /store/k HTTP/1.0\r\n\r\n",
            b"GET /watch_key/k HTTP/1.0\r\n\r\n",
            b"PUT /watch HTTP/1.1\r\n\r\n",
            b"POST /watch HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /watch HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            b"POST /watch HTTP/1.1\r\ncontent-length: 9\r\n\r\n[\"k\"]",
            b"POST /watch HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n[]",
            b"POST /watch HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"POST /watch HTTP/1.1\r\ncontent-length: +2\r\n\r\n[]",
            b"POST /watch HTTP/1.1\r\ncontent-length: 2 2\r\n\r\n[]",
            b"POST /watch HTTP/1.1\r\ncontent-length: \r\n\r\n",
            b"GET /watch_key/k HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /watch key HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (kind, left) = sort(request);
            assert_eq!(kind, "other", "{}", String::from_utf8_lossy(request));
            assert_eq!(&left[..], request, "nothing consumed");
        }
        assert_eq!(sort(b"GET /watch_key/k HTTP/1.1\r\nHo").0, "partial");
    }

    #[test]
    fn connection_close_is_found_among_tokens() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!has_token(&headers, header::CONNECTION, "close"));
        headers.append(header::CONNECTION, HeaderValue::from_static("foo, Close"));
        assert!(has_token(&headers, header::CONNECTION, "close"));
    }
}
