//! Who may come in: the caller's token (with `--auth-file`) and per-client
//! rate limits (governor).
//!
//! One middleware for both because each needs the other: the rate limit
//! is per token once a request has one, and per IP before (so guessing
//! tokens is throttled like anything else), and the token is looked up once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::http::header;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::api::routes::{self, Access, Rules};
use crate::api::{ErrorStatus, HeaderFields, Problem, header_text};
use crate::auth::{Auth, Caller};
use crate::config::Config;

/// How often the state of clients that went quiet is dropped, so it does not
/// grow with every client ever seen.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Whom a rate limit counts: a token, or the address of a caller without
/// one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Client {
    Ip(IpAddr),
    Token(Arc<str>),
}

/// A poem middleware that identifies the caller and applies a governor
/// limiter keyed by token or client IP.
///
/// Written here because no maintained poem + governor middleware exists and
/// tower-governor does not fit poem's tower compatibility layer. A watch
/// stream passes through once, when it opens, so it counts as one request.
#[derive(Clone)]
pub struct Admission {
    limiter: Option<Arc<DefaultKeyedRateLimiter<Client>>>,
    trust_forwarded_for: bool,
    auth: Option<Arc<Auth>>,
}

impl Admission {
    /// Admission as `config` sets it: a limiter (none for a rate of 0),
    /// and `auth`'s tokens if any.
    pub fn new(config: &Config, auth: Option<Arc<Auth>>) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit).map(|rate| {
            let burst = config.rate_burst.unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self {
            limiter,
            trust_forwarded_for: config.trust_forwarded_for,
            auth,
        }
    }

    /// Drops the state of idle clients now and then; runs forever.
    pub async fn forget_idle_clients(self) {
        let Some(limiter) = self.limiter else {
            return;
        };
        let mut ticks = tokio::time::interval(FORGET_EVERY);
        loop {
            ticks.tick().await;
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn client_ip(&self, headers: &impl HeaderFields, peer: Option<SocketAddr>) -> IpAddr {
        if self.trust_forwarded_for {
            // The last address is the one our trusted proxy added; earlier
            // ones come from the client and can be forged.
            let forwarded = headers
                .values("x-forwarded-for")
                .filter_map(header_text)
                .flat_map(|value| value.split(','))
                .filter_map(|addr| addr.trim().parse::<IpAddr>().ok())
                .last();
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
    }
}

/// Why a request that needs a token has none that counts.
enum Refused {
    Missing,
    Unknown,
    /// More than one `Authorization` header: which one counts would be a
    /// guess, and a proxy and the server could guess differently.
    Several,
}

impl Refused {
    fn response(self) -> Response {
        let (detail, challenge) = match self {
            Self::Several => {
                return Problem::invalid_request(
                    "the request has several Authorization headers; send exactly one",
                )
                .into_response();
            }
            Self::Missing => (
                "this server needs `Authorization: Bearer <token>`",
                "Bearer realm=\"kv-store\"",
            ),
            Self::Unknown => (
                "the bearer token is not one this server knows (mistyped, or removed)",
                "Bearer realm=\"kv-store\", error=\"invalid_token\"",
            ),
        };
        let mut response = Problem::new(
            ErrorStatus::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
        response
    }
}

impl Admission {
    /// The caller of a request with `headers`: its token's, if it shows a
    /// known one.
    fn identify(&self, headers: &impl HeaderFields) -> Result<Option<Caller>, Refused> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let mut given = headers.values(header::AUTHORIZATION.as_str());
        let (first, second) = (given.next(), given.next());
        if second.is_some() {
            return Err(Refused::Several);
        }
        let bearer = first.and_then(header_text).and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match bearer {
            None => Err(Refused::Missing),
            Some(secret) => auth
                .identify(secret)
                .map(|token| Some(Caller::Token(token)))
                .ok_or(Refused::Unknown),
        }
    }
}

impl<E: Endpoint> Middleware<E> for Admission {
    type Output = Admitted<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Admitted {
            inner,
            config: self.clone(),
        }
    }
}

/// An endpoint behind [`Admission`].
pub struct Admitted<E> {
    inner: E,
    config: Admission,
}

impl Admission {
    /// The whole rule for one request, under the route table's `rules`
    /// for it: the caller it comes from (`None`: a server without tokens,
    /// or a public route), or the answer that turns it away (400, 401,
    /// 429). The middleware and the server's hot lane both ask this, of a
    /// request's headers and the address it came from.
    pub fn admit(
        &self,
        headers: &impl HeaderFields,
        peer: Option<SocketAddr>,
        rules: Rules,
    ) -> Result<Option<Caller>, Box<Response>> {
        let identified = match rules.access {
            Access::Public => Ok(None),
            Access::Token => self.identify(headers),
        };
        if let Some(limiter) = &self.limiter
            && rules.rate_limited
        {
            let client = match &identified {
                Ok(Some(Caller::Token(token))) => Client::Token(token.name.clone()),
                _ => Client::Ip(self.client_ip(headers, peer)),
            };
            if let Err(not_until) = limiter.check_key(&client) {
                let wait = not_until.wait_time_from(limiter.clock().now());
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                let mut response = Problem::new(
                    ErrorStatus::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    format!("rate limit exceeded; retry in {seconds} s"),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
                return Err(Box::new(response));
            }
        }
        identified.map_err(|refused| Box::new(refused.response()))
    }
}

impl<E: Endpoint> Endpoint for Admitted<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let rules = routes::rules(req.method(), req.uri().path());
        let peer = req.remote_addr().as_socket_addr().copied();
        let caller = match self.config.admit(req.headers(), peer, rules) {
            Err(answer) => return Ok(*answer),
            Ok(Some(caller)) => {
                req.extensions_mut().insert(caller.clone());
                Some(caller)
            }
            Ok(None) => None,
        };
        // Who asked, for the access log, on an answer or an error alike.
        match self.inner.call(req).await {
            Ok(answer) => {
                let mut response = answer.into_response();
                if let Some(caller) = caller {
                    response.set_data(caller);
                }
                Ok(response)
            }
            Err(mut err) => {
                if let Some(caller) = caller {
                    err.set_data(caller);
                }
                Err(err)
            }
        }
    }
}
