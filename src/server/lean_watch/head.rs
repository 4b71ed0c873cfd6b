//! The first request of an HTTP/1.1 connection, read to see whether it
//! opens a watch in a shape the lean path serves.

use bytes::{Bytes, BytesMut};
use poem::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::api::routes;

/// The most a head (and a `POST /watch` body with it) may take here;
/// a larger request is hyper's to read.
const MAX_REQUEST: usize = 8 * 1024;

/// What the first read of a request is first given: a watch request's
/// head is a few hundred bytes.
const FIRST_READ: usize = 1024;

/// The most header fields the lean path parses (hyper takes up to 100).
const MAX_HEADERS: usize = 48;

/// What the next request on a connection turned out to be.
pub enum Opening {
    /// A watch request, whole: served by the lean path.
    Watch(Box<WatchRequest>),
    /// Anything else, or a shape left to hyper (another version, a chunked
    /// or `Expect` body, a body that has not all arrived, a head larger
    /// than [`MAX_REQUEST`], bytes that do not parse): hyper reads it from
    /// the bytes read so far.
    Other,
    /// The client left before a byte of a request, or the socket failed
    /// or timed out (the 408 written by [`super::super::guarded_io`]).
    Gone,
}

/// A watch request's head and body.
pub struct WatchRequest {
    pub head: http::request::Parts,
    pub body: Bytes,
    /// HTTP/1.1 keeps the connection unless the client sent
    /// `Connection: close`.
    pub keep_alive: bool,
}

/// Reads until `read` holds a whole request head, then sorts it; the
/// request's bytes leave `read` only for [`Opening::Watch`].
pub async fn read<S: AsyncRead + Unpin>(io: &mut S, read: &mut BytesMut) -> Opening {
    loop {
        if !read.is_empty() {
            match parse(read) {
                Parsed::Partial if read.len() < MAX_REQUEST => {}
                Parsed::Partial | Parsed::Other => return Opening::Other,
                Parsed::Watch(request) => return Opening::Watch(request),
            }
        }
        if read.capacity() == read.len() {
            let room = if read.is_empty() {
                FIRST_READ
            } else {
                read.len()
            };
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
    Watch(Box<WatchRequest>),
}

fn parse(read: &mut BytesMut) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(read) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let Some(head) = watch_head(&request) else {
        return Parsed::Other;
    };
    let body_len = match head.headers.get(header::CONTENT_LENGTH) {
        None => 0,
        Some(length) => match digits(length.as_bytes()) {
            Some(length) => length,
            None => return Parsed::Other,
        },
    };
    if read.len() - head_len < body_len {
        // The body's read deadline is hyper's to keep.
        return Parsed::Other;
    }
    let keep_alive = !has_token(&head.headers, header::CONNECTION, "close");
    let mut whole = read.split_to(head_len + body_len);
    let body = whole.split_off(head_len).freeze();
    if read.is_empty() {
        // The connection may stream for hours: hold no buffer meanwhile.
        *read = BytesMut::new();
    }
    Parsed::Watch(Box::new(WatchRequest {
        head,
        body,
        keep_alive,
    }))
}

/// The head of `request` as `http` parts if it is a watch the lean path
/// takes: HTTP/1.1 `GET` or `POST` to a watch path, each header valid, at
/// most one `Content-Length`, no `Transfer-Encoding`, `Expect` or
/// `Upgrade`.
fn watch_head(request: &httparse::Request<'_, '_>) -> Option<http::request::Parts> {
    if request.version != Some(1) {
        return None;
    }
    let method = match request.method? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        _ => return None,
    };
    let uri: Uri = request.path?.parse().ok()?;
    if !routes::streams(&method, uri.path()) {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        headers.append(name, value);
    }
    let refused = [header::TRANSFER_ENCODING, header::EXPECT, header::UPGRADE];
    if refused.iter().any(|name| headers.contains_key(name))
        || headers.get_all(header::CONTENT_LENGTH).iter().count() > 1
    {
        return None;
    }
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.version = Version::HTTP_11;
    head.headers = headers;
    Some(head)
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
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(bytes: &[u8]) -> (&'static str, BytesMut) {
        let mut read = BytesMut::from(bytes);
        let kind = match parse(&mut read) {
            Parsed::Partial => "partial",
            Parsed::Other => "other",
            Parsed::Watch(_) => "watch",
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
    fn anything_else_is_left_to_hyper_untouched() {
        for request in [
            &b"GET /store/k HTTP/1.1\r\n\r\n"[..],
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
