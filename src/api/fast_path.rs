//! The hottest operations in their plain shapes, for the server's hot lane.

use std::time::Duration;

use poem::http::request::Parts;
use poem::http::{HeaderMap, HeaderValue, Method, header};
use poem::{IntoResponse, Response};

use super::body::SentBody;
use super::fence::IF_FENCE;
use super::keys::{DeleteResponse, KeysApi, WriteConditions};
use super::plain::Plain;
use super::routes::{DELETE_KEY, GET_KEY, PUT_KEY, Route, Rules};
use super::{Context, MAX_TTL_SECONDS};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::domain::Lifetime;

/// Serves `GET`, `PUT` and `DELETE /store/{key}` in their common shapes
/// from a request's head, before any poem type is built: the server's hot
/// lane hands over what [`Hot::of`] takes, and everything else goes to the
/// poem application.
///
/// Why: for a GET of a 100-byte value, building poem's request and passing
/// it through the middleware and the router cost more CPU than everything
/// kv-store itself does (BENCHMARKS.md has the profile). The answer comes
/// from the same [`KeysApi`] methods the poem-openapi operations call, so
/// it is the same either way (a test sends the same requests both ways),
/// and the spec still comes from those operations. The shortcut is taken
/// only where extraction is trivial (a plain key segment without
/// percent-encoding, no query but a PUT's `ttl`, each header at most once
/// and visible ASCII, a PUT's body length given and within bounds);
/// anything else takes the long way, where poem-openapi parses it or
/// answers the error.
pub struct FastPath<B> {
    keys: KeysApi<B>,
}

impl<B: Backend> FastPath<B> {
    pub fn new(context: Context<B>) -> Self {
        Self {
            keys: KeysApi(context),
        }
    }

    /// The answer to `hot`, asked by `caller` (admitted by the server): a
    /// success in its fixed shape, or the problem as a response. `body` is
    /// a PUT's value.
    pub async fn answer(&self, hot: Hot<'_>, caller: &Caller, body: SentBody) -> Answered {
        match hot {
            Hot::Get {
                key,
                if_none_match,
                if_match,
            } => plain(self.keys.get(caller, key, if_none_match, if_match).await),
            Hot::Put {
                key,
                ttl,
                conditions,
            } => {
                let lifetime = Lifetime::from_ttl(ttl.map(Duration::from_secs));
                let put = self.keys.put(caller, key, lifetime, conditions, body);
                plain(Box::pin(put).await)
            }
            Hot::Delete {
                key,
                if_match,
                if_fence,
            } => {
                let deleted = Box::pin(self.keys.delete(caller, key, if_match, if_fence)).await;
                plain(deleted.map(|DeleteResponse::Deleted| Plain::Deleted))
            }
        }
    }
}

/// What the fast path answers: a success in its fixed shape (which the
/// server's lean path writes without building a response), or a problem.
pub enum Answered {
    Plain(Plain),
    Problem(Response),
}

impl IntoResponse for Answered {
    fn into_response(self) -> Response {
        match self {
            Self::Plain(plain) => plain.into_response(),
            Self::Problem(response) => response,
        }
    }
}

/// An operation's answer, success or problem.
fn plain<T: Into<Plain>, E: IntoResponse>(answer: Result<T, E>) -> Answered {
    match answer {
        Ok(success) => Answered::Plain(success.into()),
        Err(problem) => Answered::Problem(problem.into_response()),
    }
}

/// A request the fast path takes, extracted from its head.
pub enum Hot<'a> {
    Get {
        key: &'a str,
        if_none_match: Option<&'a str>,
        if_match: Option<&'a str>,
    },
    Put {
        key: &'a str,
        ttl: Option<u64>,
        conditions: WriteConditions<'a>,
    },
    Delete {
        key: &'a str,
        if_match: Option<&'a str>,
        if_fence: Option<&'a str>,
    },
}

impl<'a> Hot<'a> {
    /// `head` if the fast path takes it; `None`: the long way. A PUT is
    /// taken only with a Content-Length of at most `max_body` (the
    /// server's request body limit, which the long way answers).
    pub fn of<H: RequestHead>(head: &'a H, max_body: usize) -> Option<Self> {
        let (path, query) = head.target();
        // Every other request (a batch, a listing) is spared the pass over
        // its headers.
        if !Self::may_take(head.method(), path) {
            return None;
        }
        let seen = Seen::of(head.fields())?;
        match *head.method() {
            Method::GET if query.is_none() => Some(Self::Get {
                key: plain_key(path)?,
                if_none_match: seen.if_none_match,
                if_match: seen.if_match,
            }),
            Method::PUT => {
                let length: usize = seen.content_length?.parse().ok()?;
                if length > max_body || seen.transfer_encoding {
                    return None;
                }
                Some(Self::Put {
                    key: plain_key(path)?,
                    ttl: put_ttl(query)?,
                    conditions: WriteConditions {
                        if_match: seen.if_match,
                        if_none_match: seen.if_none_match,
                        if_fence: seen.if_fence,
                    },
                })
            }
            Method::DELETE if query.is_none() => Some(Self::Delete {
                key: plain_key(path)?,
                if_match: seen.if_match,
                if_fence: seen.if_fence,
            }),
            _ => None,
        }
    }

    /// Whether a request of `method` for `path` may be one [`Self::of`]
    /// takes: a test that costs nothing beside it, for a reader that must
    /// decide before it has a head to ask [`Self::of`] (a unit test holds
    /// it to be true of every request [`Self::of`] takes).
    pub fn may_take(method: &Method, path: &str) -> bool {
        matches!(*method, Method::GET | Method::PUT | Method::DELETE)
            && path.starts_with(KEY_PREFIX)
    }

    fn route(&self) -> Route {
        match self {
            Self::Get { .. } => GET_KEY,
            Self::Put { .. } => PUT_KEY,
            Self::Delete { .. } => DELETE_KEY,
        }
    }

    /// The operation's id, as the metrics and the access log name it.
    pub fn operation(&self) -> &'static str {
        self.route().operation
    }

    /// What admission applies to it, from the route table.
    pub fn rules(&self) -> Rules {
        self.route().rules()
    }
}

/// The key of `GET_KEY`'s (and `PUT_KEY`'s) path if it is one segment of
/// plain characters: RFC 3986's unreserved ones, sub-delims, `:` and `@`.
/// No percent-encoding (poem decodes it), and nothing a URI parser may
/// refuse: a head read by the lean path was not parsed as a URI.
fn plain_key(path: &str) -> Option<&str> {
    let key = path.strip_prefix(KEY_PREFIX)?;
    let plain = |byte: &u8| {
        matches!(byte, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\''..=b',' | b';' | b'=' | b':' | b'@')
    };
    (!key.is_empty() && key.as_bytes().iter().all(plain)).then_some(key)
}

/// What precedes `{key}` in `GET_KEY`'s (and `PUT_KEY`'s, `DELETE_KEY`'s)
/// path; a unit test holds it to the route table.
const KEY_PREFIX: &str = "/store/";

/// A PUT's query: none, or a valid `ttl` alone. `None`: the long way.
fn put_ttl(query: Option<&str>) -> Option<Option<u64>> {
    let Some(query) = query else {
        return Some(None);
    };
    let seconds: u64 = query.strip_prefix("ttl=")?.parse().ok()?;
    (1..=MAX_TTL_SECONDS)
        .contains(&seconds)
        .then_some(Some(seconds))
}

/// The headers the fast path reads, each absent or sent once as text.
#[derive(Default)]
struct Seen<'a> {
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_fence: Option<&'a str>,
    content_length: Option<&'a str>,
    transfer_encoding: bool,
}

impl<'a> Seen<'a> {
    /// One pass over the few headers a request carries (cheaper than a
    /// hashed lookup per header read). `None` if one it reads is sent
    /// twice or is not visible ASCII: poem-openapi should judge that.
    fn of(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<Self> {
        let mut seen = Self::default();
        for (name, value) in fields {
            let slot = if name.eq_ignore_ascii_case(header::IF_MATCH.as_str().as_bytes()) {
                &mut seen.if_match
            } else if name.eq_ignore_ascii_case(header::IF_NONE_MATCH.as_str().as_bytes()) {
                &mut seen.if_none_match
            } else if name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str().as_bytes()) {
                &mut seen.content_length
            } else if name.eq_ignore_ascii_case(IF_FENCE.as_str().as_bytes()) {
                &mut seen.if_fence
            } else {
                seen.transfer_encoding |=
                    name.eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str().as_bytes());
                continue;
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(text(value)?);
        }
        Some(seen)
    }
}

/// A header `value` as text if it is visible ASCII (and spaces, tabs), as
/// `HeaderValue::to_str` takes it.
pub fn text(value: &[u8]) -> Option<&str> {
    let visible = |byte: &u8| *byte == b'\t' || (b' '..=b'~').contains(byte);
    if !value.iter().all(visible) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// A request's head as the fast path and admission read it: hyper's
/// parsed head, or the server's view over the bytes it read (which builds
/// no header map).
pub trait RequestHead: HeaderFields {
    fn method(&self) -> &Method;
    /// The request target's path and query.
    fn target(&self) -> (&str, Option<&str>);
}

/// A request's header fields, in the order sent.
pub trait HeaderFields {
    /// Each field's name (in any case) and value.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// Each value of the field `name` (lowercase), in the order sent.
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.fields()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }
}

impl HeaderFields for HeaderMap {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }

    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl HeaderFields for Parts {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.fields()
    }
}

impl RequestHead for Parts {
    fn method(&self) -> &Method {
        &self.method
    }

    fn target(&self) -> (&str, Option<&str>) {
        (self.uri.path(), self.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::Request;

    fn taken(method: Method, uri: &'static str, headers: &[(&'static str, &'static str)]) -> bool {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let Ok(request) = request.body(()) else {
            panic!("a valid request");
        };
        let (head, ()) = request.into_parts();
        Hot::of(&head, 100).is_some()
    }

    /// The route table says which operations the fast path serves; it
    /// serves exactly those, under their operation ids.
    #[test]
    fn serves_what_the_route_table_marks_fast() {
        use super::super::routes::{Path, ROUTES};
        for route in ROUTES {
            let uri = route
                .template
                .replace("{key}", "k")
                .replace("{name}", "n")
                .replace("{id}", "1");
            let mut request = Request::builder()
                .method(route.method.clone())
                .uri(&uri)
                .header("content-length", "1");
            if route.method == Method::GET {
                request = request.header("if-none-match", "\"1\"");
            }
            let Ok(request) = request.body(()) else {
                panic!("a valid request for {uri}");
            };
            let (head, ()) = request.into_parts();
            let taken = Hot::of(&head, 100).map(|hot| hot.operation());
            let marked = (route.path == Path::Fast).then_some(route.operation);
            assert_eq!(taken, marked, "{} {}", route.method, route.template);
            if taken.is_some() {
                assert!(Hot::may_take(&head.method, head.uri.path()), "{uri}");
            }
        }
    }

    #[test]
    fn takes_only_plain_keys() {
        assert_eq!(plain_key("/store/k1"), Some("k1"));
        let plain = "a-b.c_d~e:f@g!$&'()*+,;=Z9";
        assert_eq!(plain_key(&format!("/store/{plain}")), Some(plain));
        for refused in "%/?#[]\"<>\\^`{|} \u{7f}é".chars() {
            assert_eq!(plain_key(&format!("/store/a{refused}")), None, "{refused}");
        }
        assert_eq!(plain_key("/store/a%2Fb"), None);
        assert_eq!(plain_key("/store/a\"b"), None);
        assert_eq!(plain_key("/store/a{b}"), None);
        assert_eq!(plain_key("/store/"), None);
        assert_eq!(plain_key("/store/cas/k"), None);
        assert_eq!(plain_key("/status"), None);
        assert_eq!(GET_KEY.template, format!("{KEY_PREFIX}{{key}}"));
    }

    #[test]
    fn reads_header_values_as_http_takes_them_as_text() {
        for value in [
            &b"\"3\""[..],
            b"a b\tc",
            b"",
            b"\x7f",
            b"caf\xc3\xa9",
            b"\x01",
        ] {
            let http = HeaderValue::from_bytes(value)
                .ok()
                .and_then(|value| value.to_str().ok().map(str::to_owned));
            assert_eq!(text(value).map(str::to_owned), http, "{value:?}");
        }
    }

    #[test]
    fn takes_only_a_valid_ttl() {
        assert_eq!(put_ttl(None), Some(None));
        assert_eq!(put_ttl(Some("ttl=60")), Some(Some(60)));
        assert_eq!(put_ttl(Some("ttl=0")), None);
        assert_eq!(put_ttl(Some("ttl=x")), None);
        assert_eq!(put_ttl(Some("ttl=60&x=1")), None);
        assert_eq!(put_ttl(Some("x=1")), None);
    }

    #[test]
    fn takes_a_put_only_with_a_body_length_within_bounds() {
        let length = |value| [("content-length", value)];
        assert!(taken(Method::PUT, "/store/k", &length("100")));
        assert!(!taken(Method::PUT, "/store/k", &length("101")));
        assert!(!taken(Method::PUT, "/store/k", &length("x")));
        assert!(!taken(Method::PUT, "/store/k", &[]));
        assert!(taken(Method::GET, "/store/k", &[]));
        assert!(!taken(Method::GET, "/store/k?x=1", &[]));
        assert!(taken(Method::DELETE, "/store/k", &[("if-match", "\"3\"")]));
        assert!(!taken(
            Method::DELETE,
            "/store/k",
            &[("if-fence", "a=1"), ("if-fence", "a=2")]
        ));
        assert!(!taken(Method::HEAD, "/store/k", &[]));
    }
}
