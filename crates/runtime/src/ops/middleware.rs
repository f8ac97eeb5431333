//! What every HTTP server wraps its app in: security headers, HEAD as GET,
//! and per request a span, counts and latency by route, and the access log
//! (link tokens redacted from paths).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next};

use bus::trace::TraceParent;

/// Security headers for every answer of a service that serves pages: the
/// given Content-Security-Policy, no MIME sniffing, no framing (also for
/// browsers that predate `frame-ancestors`), and no full URLs in referrers.
pub fn security_headers(content_security_policy: &'static str) -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, content_security_policy))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "strict-origin-when-cross-origin"))
}

/// `path` with every segment that looks like a signed token replaced.
pub fn redacted_path(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.len() > 40 && segment.contains('.') { "[redacted]" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Middleware for every HTTP server: a HEAD request is routed as the GET it
/// stands for (RFC 9110 §9.3.2), so every GET route answers HEAD with the
/// same status and headers; the HTTP codec sends no body for a HEAD request.
/// Wrap it inside [`observe_http`], which then logs and counts it as HEAD.
pub async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == actix_web::http::Method::HEAD {
        request.head_mut().method = actix_web::http::Method::GET;
    }
    next.call(request).await
}

/// Middleware for every HTTP server: one span per request, request metrics
/// and the access log line. Use with
/// `actix_web::middleware::from_fn(observe_http)`.
///
/// - The span (`HTTP request`, kind `server`, named `<method> <route>`)
///   continues the caller's `traceparent` or starts a trace; the request's
///   [`TraceParent`] is in its extensions, for the events it publishes, and
///   its `trace_id` is on every log line written while it is served.
/// - Requests are counted by method, matched route pattern (not the raw
///   path, which would make a series per prospect) and status, and timed.
/// - The access log line: status, method, path and time — never bodies
///   (they hold personal data), never the query string (the analytics token,
///   search words), and never a link's token: a path segment that looks like
///   a signed token (dotted and long) is replaced by `[redacted]`.
pub async fn observe_http(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage as _;
    use tracing::Instrument as _;

    let started = Instant::now();
    // Any token is a valid method: only the standard ones get their own series.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let exporting = crate::telemetry::exporting();
    // Without export the span only carries the trace id to the log lines.
    let span = if exporting {
        tracing::info_span!(
            "HTTP request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("HTTP request", trace_id = tracing::field::Empty)
    };
    let incoming = request
        .headers()
        .get(messages::cloudevents::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    request.extensions_mut().insert(TraceParent::for_request(&span, incoming));
    let path = redacted_path(request.path());
    let result = next.call(request).instrument(span.clone()).await;
    let (route, status) = match &result {
        Ok(response) => {
            (response.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned()), response.status().as_u16())
        }
        Err(error) => ("unmatched".to_owned(), error.as_response_error().status_code().as_u16()),
    };
    let elapsed = started.elapsed();
    if exporting {
        // The span has started (its context made the request's trace), so
        // a recorded `otel.name` would no longer reach it.
        TraceParent::rename(&span, format!("{method} {route}"));
        span.record("http.route", route.as_str());
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
    }
    span.in_scope(|| tracing::info!("{status} {method} {path} {:.3}ms", elapsed.as_secs_f64() * 1e3));
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_access_log_holds_no_link_token() {
        let token = "01a22dd3-6402-766d-a694-bba56ed6c187.1798657158.4ZNpzYkrUZvzd5neaI16yv7t9SFpYZBqIEt64ijIwfg";
        assert_eq!(super::redacted_path(&format!("/prospects/manage/{token}")), "/prospects/manage/[redacted]");
        assert_eq!(
            super::redacted_path(&format!("/prospects/manage/{token}/erase")),
            "/prospects/manage/[redacted]/erase"
        );
        let id = "01a22dd3-6402-766d-a694-bba56ed6c187";
        assert_eq!(super::redacted_path(&format!("/signup/thanks/{id}")), format!("/signup/thanks/{id}"));
        assert_eq!(super::redacted_path("/static/site.css"), "/static/site.css");
    }
}
