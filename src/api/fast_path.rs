//! The hottest operations in their plain shapes, for the server's hot lane.

use std::time::Duration;

use poem::http::request::Parts;
use poem::http::{HeaderMap, Method, Uri, header};
use poem::{Body, IntoResponse, Response};

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
    pub async fn answer(&self, hot: Hot<'_>, caller: &Caller, body: Body) -> Answered {
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
    pub fn of(head: &'a Parts, max_body: usize) -> Option<Self> {
        let seen = Seen::of(&head.headers)?;
        match head.method {
            Method::GET if head.uri.query().is_none() => Some(Self::Get {
                key: plain_key(&head.uri)?,
                if_none_match: seen.if_none_match,
                if_match: seen.if_match,
            }),
            Method::PUT => {
                let length: usize = seen.content_length?.parse().ok()?;
                if length > max_body || seen.transfer_encoding {
                    return None;
                }
                Some(Self::Put {
                    key: plain_key(&head.uri)?,
                    ttl: put_ttl(head.uri.query())?,
                    conditions: WriteConditions {
                        if_match: seen.if_match,
                        if_none_match: seen.if_none_match,
                        if_fence: seen.if_fence,
                    },
                })
            }
            Method::DELETE if head.uri.query().is_none() => Some(Self::Delete {
                key: plain_key(&head.uri)?,
                if_match: seen.if_match,
                if_fence: seen.if_fence,
            }),
            _ => None,
        }
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

/// The key of `GET_KEY`'s (and `PUT_KEY`'s) path if it is one segment
/// without percent-encoding (poem decodes the rest).
fn plain_key(uri: &Uri) -> Option<&str> {
    let prefix = GET_KEY.template.strip_suffix("{key}")?;
    let key = uri.path().strip_prefix(prefix)?;
    (!key.is_empty() && !key.contains(['/', '%'])).then_some(key)
}

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
    /// twice or is not text: poem-openapi should judge that.
    fn of(headers: &'a HeaderMap) -> Option<Self> {
        let mut seen = Self::default();
        for (name, value) in headers {
            let slot = if *name == header::IF_MATCH {
                &mut seen.if_match
            } else if *name == header::IF_NONE_MATCH {
                &mut seen.if_none_match
            } else if *name == header::CONTENT_LENGTH {
                &mut seen.content_length
            } else if *name == IF_FENCE {
                &mut seen.if_fence
            } else {
                seen.transfer_encoding |= *name == header::TRANSFER_ENCODING;
                continue;
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(value.to_str().ok()?);
        }
        Some(seen)
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
        }
    }

    #[test]
    fn takes_only_plain_keys() {
        let key = |uri: &'static str| plain_key(&Uri::from_static(uri)).map(str::to_owned);
        assert_eq!(key("/store/k1").as_deref(), Some("k1"));
        assert_eq!(key("/store/a%2Fb"), None);
        assert_eq!(key("/store/"), None);
        assert_eq!(key("/store/cas/k"), None);
        assert_eq!(key("/status"), None);
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
