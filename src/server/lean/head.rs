//! The next request of an HTTP/1.1 connection, read to see whether it is
//! one the lean path serves: a watch, or a hot request (GET, PUT, DELETE of
//! a plain key) whose body has arrived whole.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use poem::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::api::{Hot, routes};

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
    /// A request the hot lane takes ([`Hot::of`]), whole.
    Hot(Box<LeanRequest>),
    /// Anything else, or a shape left to hyper (another version, a chunked
    /// or `Expect` body, a body that has not all arrived, a head larger
    /// than [`MAX_REQUEST`], bytes that do not parse): hyper reads it from
    /// the bytes read so far.
    Other,
    /// The client left before a byte of a request, or the socket failed
    /// or timed out (the 408 written by [`super::super::guarded_io`]).
    Gone,
}

/// A request's head and body, read whole.
pub struct LeanRequest {
    pub head: http::request::Parts,
    pub body: Bytes,
    /// HTTP/1.1 keeps the connection unless the client sent
    /// `Connection: close`.
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
    let Some(LeanHead {
        head,
        body_len,
        keep_alive,
    }) = lean_head(&request)
    else {
        return Parsed::Other;
    };
    let watch = routes::streams(&head.method, head.uri.path());
    if !watch && Hot::of(&head, max_body).is_none() {
        return Parsed::Other;
    }
    if read.len() - head_len < body_len {
        // The body's read deadline is hyper's to keep.
        return Parsed::Other;
    }
    let mut whole = read.split_to(head_len + body_len);
    let body = whole.split_off(head_len).freeze();
    let request = Box::new(LeanRequest {
        head,
        body,
        keep_alive,
    });
    if !watch {
        return Parsed::Lean(Opening::Hot(request));
    }
    if read.is_empty() {
        // The connection may stream for hours: hold no buffer meanwhile.
        *read = BytesMut::new();
    }
    Parsed::Lean(Opening::Watch(request))
}

/// A request head the lean path reads, and what its fields say of the
/// connection.
struct LeanHead {
    head: http::request::Parts,
    body_len: usize,
    keep_alive: bool,
}

/// The head of `request` as `http` parts if it is in a shape the lean
/// path reads: HTTP/1.1 `GET`, `POST`, `PUT` or `DELETE`, each header
/// valid, at most one `Content-Length` (digits only), no
/// `Transfer-Encoding`, `Expect` or `Upgrade`. One pass over the fields.
fn lean_head(request: &httparse::Request<'_, '_>) -> Option<LeanHead> {
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
    let uri: Uri = request.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    let (mut body_len, mut keep_alive) = (None, true);
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            if body_len.is_some() {
                return None;
            }
            body_len = Some(digits(field.value)?);
        }
        if name == header::CONNECTION && names_token(&value, "close") {
            keep_alive = false;
        }
        headers.append(name, value);
    }
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.version = Version::HTTP_11;
    head.headers = headers;
    Some(LeanHead {
        head,
        body_len: body_len.unwrap_or(0),
        keep_alive,
    })
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
        .any(|value| names_token(value, token))
}

/// Whether one value of a comma-separated header holds `token`.
fn names_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|value| {
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

    #[test]
    fn anything_else_is_left_to_hyper_untouched() {
        for request in [
            &b"GET /store/a%2Fb HTTP/1.1\r\n\r\n"[..],
            b"GET /store HTTP/1.1\r\n\r\n",
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
