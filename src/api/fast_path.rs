//! A shortcut to the two hottest operations, past poem's router.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use poem::http::{HeaderName, Method, Uri, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use std::sync::Arc;
use std::time::Duration;

use super::fence::IF_FENCE;
use super::keys::{KeysApi, WriteConditions};
use super::routes::{GET_KEY, PUT_KEY, Rules};
use super::{Context, MAX_TTL_SECONDS};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::domain::Lifetime;

/// Serves `GET` and `PUT /store/{key}` in their common shapes without going
/// through poem's router and poem-openapi's per-operation dispatch, and
/// passes every other request to `inner` (the full API).
///
/// Why: for a GET of a 100-byte value, routing a request through nested
/// `Route`s and boxed operation endpoints cost more CPU than everything
/// kv-store itself does (BENCHMARKS.md has the profile). This layer only
/// extracts the path, query and headers: the answer comes from the same
/// [`KeysApi`] methods the poem-openapi operations call, so the response is
/// the same either way, and the spec still comes from those operations. It
/// takes the shortcut only where extraction is trivial (a plain key segment
/// without percent-encoding, no query but `ttl`, each header at most once
/// and visible ASCII); anything else takes the long way, where poem-openapi
/// parses it or answers the error.
pub struct FastPath<E, B> {
    inner: E,
    keys: KeysApi<B>,
    gate: Gate,
}

/// The server layer's admission rule (token, 401, rate limit), which the
/// fast path applies to its requests itself: `inner` applies the same rule
/// to the rest. The caller then goes to the operation as an argument
/// rather than through the request's extensions (an allocation per
/// request).
pub type Gate = Arc<dyn Fn(&Request, Rules) -> Result<Option<Caller>, Box<Response>> + Send + Sync>;

impl<E, B> FastPath<E, B> {
    pub fn new(inner: E, context: Context<B>, gate: Gate) -> Self {
        Self {
            inner,
            keys: KeysApi(context),
            gate,
        }
    }
}

impl<E: Endpoint, B: Backend> Endpoint for FastPath<E, B> {
    type Output = Response;

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of the request (472 bytes) in its future"
    )]
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        async move {
            let (mut response, operation, caller) = match *req.method() {
                Method::GET => {
                    let Some(get) = Get::of(&req) else {
                        return self.long_way(req).await;
                    };
                    let caller = match (self.gate)(&req, GET_KEY.rules()) {
                        Ok(caller) => caller.unwrap_or(Caller::Anyone),
                        Err(answer) => return Ok(*answer),
                    };
                    let answer = self
                        .keys
                        .get(&caller, get.key, get.if_none_match, get.if_match)
                        .await;
                    (respond(answer), GET_KEY.operation, caller)
                }
                Method::PUT => {
                    let Some(put) = Put::of(&req) else {
                        return self.long_way(req).await;
                    };
                    let conditions = WriteConditions {
                        if_match: put.if_match.as_deref(),
                        if_none_match: put.if_none_match.as_deref(),
                        if_fence: put.if_fence.as_deref(),
                    };
                    let caller = match (self.gate)(&req, PUT_KEY.rules()) {
                        Ok(caller) => caller.unwrap_or(Caller::Anyone),
                        Err(answer) => return Ok(*answer),
                    };
                    let body = req.take_body();
                    let answer = self
                        .keys
                        .put(&caller, &put.key, put.lifetime(), conditions, body)
                        .await;
                    (respond(answer), PUT_KEY.operation, caller)
                }
                _ => return self.long_way(req).await,
            };
            // What poem-openapi sets on its operations' answers, for the metrics.
            response.set_data(OperationId(operation));
            // Who asked, for the access log (as the admission layer does).
            if let Caller::Token(_) = caller {
                response.set_data(caller);
            }
            Ok(response)
        }
    }
}

impl<E: Endpoint, B: Backend> FastPath<E, B> {
    /// Boxed: the full API's future (3 KB) would otherwise size the future
    /// of every request, fast ones too, and a request's future is moved
    /// whole into its task.
    fn long_way(&self, req: Request) -> BoxFuture<'_, poem::Result<Response>> {
        Box::pin(
            self.inner
                .call(req)
                .map(|result| result.map(IntoResponse::into_response)),
        )
    }
}

/// An operation's answer, success or problem, as a response.
fn respond<T: IntoResponse, E: IntoResponse>(answer: Result<T, E>) -> Response {
    answer.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// A GET the fast path takes, extracted.
struct Get<'a> {
    key: &'a str,
    if_none_match: Option<&'a str>,
    if_match: Option<&'a str>,
}

impl<'a> Get<'a> {
    fn of(req: &'a Request) -> Option<Self> {
        if req.uri().query().is_some() {
            return None;
        }
        Some(Self {
            key: plain_key(req.uri())?,
            if_none_match: single_header(req, &header::IF_NONE_MATCH)?,
            if_match: single_header(req, &header::IF_MATCH)?,
        })
    }
}

/// A PUT the fast path takes, extracted (owned: its body is taken next).
struct Put {
    key: String,
    ttl: Option<u64>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    if_fence: Option<String>,
}

impl Put {
    fn lifetime(&self) -> Lifetime {
        Lifetime::from_ttl(self.ttl.map(Duration::from_secs))
    }

    fn of(req: &Request) -> Option<Self> {
        let owned = |header: Option<&str>| header.map(str::to_owned);
        Some(Self {
            key: plain_key(req.uri())?.to_owned(),
            ttl: put_ttl(req.uri().query())?,
            if_match: owned(single_header(req, &header::IF_MATCH)?),
            if_none_match: owned(single_header(req, &header::IF_NONE_MATCH)?),
            if_fence: owned(single_header(req, &IF_FENCE)?),
        })
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

/// The header's value if it is absent or sent once as text; `None` when
/// poem-openapi should judge it.
fn single_header<'a>(req: &'a Request, name: &HeaderName) -> Option<Option<&'a str>> {
    let mut values = req.headers().get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Some(None),
        (Some(value), None) => Some(Some(value.to_str().ok()?)),
        (Some(_), Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
