//! What every handler reads off a request: its media type, whether its
//! body was over the limit, and the trace context its events carry.

use actix_web::HttpMessage as _;
use actix_web::HttpRequest;

/// Whether the request's media type (ignoring parameters such as charset)
/// is `expected`.
pub fn media_type_is(request: &HttpRequest, expected: &str) -> bool {
    request.content_type().eq_ignore_ascii_case(expected)
}

/// Whether reading the body failed because it exceeds the size limit.
pub fn body_too_large(error: &actix_web::Error) -> bool {
    error.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
}

/// The trace context the request's events carry: the caller's trace
/// continued, or a new one (set by `runtime::ops::observe_http`).
pub fn traceparent(request: &HttpRequest) -> Option<String> {
    request.extensions().get::<bus::trace::TraceParent>().map(bus::trace::TraceParent::header)
}
