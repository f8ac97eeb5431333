//! What every answer carries and what every client may send: security
//! headers on all responses, and per-client rate limits (429 with
//! `Retry-After`) on POST requests and, apart, on status look-ups (each asks
//! the `prospects` service, so a flood of them must not reach it).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;

/// The pages load nothing from elsewhere, run only `/static/*.js`, use only
/// `/static/site.css`, talk only to this origin, and may not be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Security headers added to every response.
pub fn security_headers() -> DefaultHeaders {
    runtime::ops::security_headers(CONTENT_SECURITY_POLICY)
}

/// `Cache-Control: no-store` on every page under `/prospects/`: the pages
/// mailed links open show a person's details and carry the link's token in
/// their address and forms, so neither a browser nor a proxy may keep them.
pub async fn no_store_for_prospects(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // As the router matches it: `/%70rospects/…` is the same page.
    let private = request.match_info().as_str().starts_with("/prospects/");
    let mut response = next.call(request).await?;
    if private {
        response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// POSTs answered 429 (a counter, started at zero).
pub const RATE_LIMITED: &str = "signup_rate_limited_total";

/// `[web.rate_limit]`: how many requests one client may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Sustained POST requests per minute per client address; 0 turns the
    /// limit off.
    pub per_minute: u32,
    /// Requests a client may send at once before the sustained rate applies.
    pub burst: u32,
    /// Sustained status look-ups (`GET /api/prospects/{id}`, the thank-you
    /// page) and challenges (`GET /api/challenge`: each costs a key
    /// derivation) per minute per client address; 0 turns the limit off.
    pub lookups_per_minute: u32,
    /// Look-ups at once before the sustained rate applies.
    pub lookups_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        // A person signs up once and edits a few times; an office behind one
        // address still fits. The thank-you page asks for the status once a
        // second for a minute, then every five.
        Self { per_minute: 60, burst: 20, lookups_per_minute: 120, lookups_burst: 30 }
    }
}

/// The per-client limiters, shared by all workers.
#[derive(Clone)]
pub struct RateLimiter {
    posts: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    lookups: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    trust_forwarded_for: bool,
}

fn keyed(per_minute: u32, burst: u32) -> Option<Arc<DefaultKeyedRateLimiter<IpAddr>>> {
    NonZeroU32::new(per_minute).map(|per_minute| {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)))
    })
}

impl RateLimiter {
    /// A limiter from settings. With `trust_forwarded_for` the client is the
    /// last address in `X-Forwarded-For`, the one the proxy added (only
    /// behind a proxy that sets it: anyone else could pick their own address).
    pub fn new(settings: &RateLimitSettings, trust_forwarded_for: bool) -> Self {
        Self {
            posts: keyed(settings.per_minute, settings.burst),
            lookups: keyed(settings.lookups_per_minute, settings.lookups_burst),
            trust_forwarded_for,
        }
    }

    /// Forgets clients whose allowance is full again, every minute until
    /// `shutdown`, so the table does not grow with every address ever seen.
    pub async fn keep_small(self, shutdown: CancellationToken) {
        let limiters: Vec<_> = [self.posts, self.lookups].into_iter().flatten().collect();
        if limiters.is_empty() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    for limiter in &limiters {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                }
            }
        }
    }

    /// How long the client of `request` must wait, if it is over its limit.
    fn wait(&self, request: &ServiceRequest) -> Option<Duration> {
        // The path as the router matches it (percent-escapes of plain
        // characters decoded: `/api/%63hallenge` is `/api/challenge`), and
        // HEAD as the GET it is answered as: a request spelled another way
        // is the same request.
        let path = request.match_info().as_str();
        let limiter = if request.method() == Method::POST {
            self.posts.as_ref()?
        } else if (request.method() == Method::GET || request.method() == Method::HEAD)
            && (path.starts_with("/api/prospects/")
                || path.starts_with("/signup/thanks/")
                || path == "/api/challenge"
                || (path.starts_with("/prospects/manage/")
                    && (path.ends_with("/data") || path.ends_with("/data.json"))))
        {
            self.lookups.as_ref()?
        } else {
            return None;
        };
        let client = client_key(client_ip(request.request(), self.trust_forwarded_for)?);
        limiter.check_key(&client).err().map(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// The client's address: the connection's peer, or behind a trusted proxy
/// (`web.trust_forwarded_for`) the address that proxy saw.
pub fn client_ip(request: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    let forwarded = if trust_forwarded_for { last_forwarded_for(request) } else { None };
    forwarded.or_else(|| request.peer_addr().map(|addr| addr.ip()))
}

/// The address the nearest proxy saw: the last `X-Forwarded-For` entry (a
/// client can put anything before it, but not after). `Forwarded` is not
/// read, since proxies that set `X-Forwarded-For` pass it through untouched.
fn last_forwarded_for(request: &HttpRequest) -> Option<IpAddr> {
    let header = request.headers().get_all("x-forwarded-for").last()?.to_str().ok()?;
    header.rsplit(',').next()?.trim().parse().ok()
}

/// One allowance per IPv4 address, and per /64 for IPv6 (a single host
/// usually holds a whole /64, and could otherwise use a new address per request).
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Middleware: answers 429 with `Retry-After` (whole seconds, rounded up)
/// when the client is over its limit; `application/problem+json` for the API.
pub async fn limit_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let wait = request.app_data::<web::Data<RateLimiter>>().and_then(|limiter| limiter.wait(&request));
    let Some(wait) = wait else {
        return next.call(request).await.map(ServiceResponse::map_into_left_body);
    };
    bus::metrics::counter!(RATE_LIMITED).increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let response = if request.path().starts_with("/api/") {
        ApiError::TooManyRequests(seconds).error_response()
    } else {
        HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .content_type("text/plain; charset=utf-8")
            .body(format!("Too many requests from your address; please try again in {seconds} s."))
    };
    Ok(request.into_response(response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_an_allowance_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        assert_eq!(client_key("::ffff:203.0.113.7".parse().expect("ip")), "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(client_key("203.0.113.7".parse().expect("ip")), "203.0.113.7".parse::<IpAddr>().expect("ip"));
    }
}
