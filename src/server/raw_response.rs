//! Answers written straight to a socket, where no request reached the
//! application: a stalled head, a connection over the limit, a head hyper
//! could not parse.

use bytes::Bytes;
use poem_openapi::types::ToJSON;

use crate::api::{ErrorStatus, Problem};

/// The answers the connection layer writes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawProblem {
    /// The head did not arrive within `--header-timeout`.
    HeaderTimeout,
    /// `--max-connections` are open; `Retry-After: 1`.
    TooManyConnections,
    /// hyper could not parse the request line or a header.
    Malformed,
    /// The request target is longer than hyper accepts.
    UriTooLong,
    /// The head is larger than hyper accepts.
    HeadTooLarge,
}

impl RawProblem {
    fn problem(self) -> Problem {
        match self {
            Self::HeaderTimeout => Problem::new(
                ErrorStatus::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
                "the request head did not arrive within --header-timeout",
            ),
            Self::TooManyConnections => Problem::new(
                ErrorStatus::SERVICE_UNAVAILABLE,
                "too-many-connections",
                "Too many connections",
                "the server holds --max-connections connections; retry shortly",
            ),
            Self::Malformed => Problem::invalid_request(
                "the request line or a header is malformed: a method that is not a token, or \
                 bytes that a path or header may not hold (such as spaces, control bytes, \
                 or <>\"{}|^ unencoded); percent-encode them",
            ),
            Self::UriTooLong => Problem::new(
                ErrorStatus::URI_TOO_LONG,
                "uri-too-long",
                "URI too long",
                "the request target is longer than the server accepts",
            ),
            Self::HeadTooLarge => Problem::new(
                ErrorStatus::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request header fields too large",
                "the request headers are larger than the server accepts",
            ),
        }
    }
}

/// A whole HTTP/1.1 response carrying `which` as problem+json; the
/// connection closes after it.
pub fn problem(which: RawProblem) -> Bytes {
    let problem = which.problem();
    let body = problem.to_json_string();
    let status = problem.status.code();
    let retry = if which == RawProblem::TooManyConnections {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    Bytes::from(format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         {retry}connection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    ))
}

/// If `head` is one of hyper's own answers to an unparsable request (a
/// 400, 414 or 431 with `content-length: 0`: every answer the application
/// makes has a problem+json body), the problem+json answer to send instead.
pub fn replace_parse_error(head: &[u8]) -> Option<Bytes> {
    let which = match head.get(..13)? {
        b"HTTP/1.1 400 " => RawProblem::Malformed,
        b"HTTP/1.1 414 " => RawProblem::UriTooLong,
        b"HTTP/1.1 431 " => RawProblem::HeadTooLarge,
        _ => return None,
    };
    let empty = head
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    empty.then(|| problem(which))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_hypers_empty_error_answers() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = replace_parse_error(hyper).expect("replaced");
        assert!(replaced.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(
            replaced
                .windows(24)
                .any(|w| w == b"application/problem+json")
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(replace_parse_error(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(replace_parse_error(ok), None);
    }
}
