//! Per-client rate limiting with governor.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::http::{StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::api::Problem;
use crate::config::Config;

/// How often the state of clients that went quiet is dropped, so it does not
/// grow with every client ever seen.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A poem middleware around a governor limiter keyed by client IP.
///
/// Written here because no maintained poem + governor middleware exists and
/// tower-governor does not fit poem's tower compatibility layer. A watch
/// stream passes through once, when it opens, so it counts as one request.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    trust_forwarded_for: bool,
    exempt: &'static [&'static str],
}

impl RateLimit {
    /// A limiter as `config` sets it (none for a rate of 0), letting the
    /// `exempt` paths through.
    pub fn new(config: &Config, exempt: &'static [&'static str]) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit).map(|rate| {
            let burst = config.rate_burst.unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self {
            limiter,
            trust_forwarded_for: config.trust_forwarded_for,
            exempt,
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

    fn client_ip(&self, req: &Request) -> IpAddr {
        if self.trust_forwarded_for {
            // The last address is the one our trusted proxy added; earlier
            // ones come from the client and can be forged.
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .filter_map(|addr| addr.trim().parse::<IpAddr>().ok())
                .next_back();
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        req.remote_addr()
            .as_socket_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimited<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimited {
            inner,
            config: self.clone(),
        }
    }
}

/// An endpoint behind [`RateLimit`].
pub struct RateLimited<E> {
    inner: E,
    config: RateLimit,
}

impl<E: Endpoint> Endpoint for RateLimited<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(limiter) = &self.config.limiter
            && !self.config.exempt.contains(&req.uri().path())
            && let Err(not_until) = limiter.check_key(&self.config.client_ip(&req))
        {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            let mut response = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("rate limit exceeded; retry in {seconds} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
            return Ok(response);
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}
