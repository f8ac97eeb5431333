//! The operational surface every service shares: Prometheus metrics,
//! `/healthz` and `/readyz`, and a small HTTP server for services that have
//! no other (the handlers).
//!
//! Metrics go through the [`metrics`] facade into one process-wide Prometheus
//! recorder ([`prometheus`]); `/metrics` renders it. HTTP services wrap their
//! app in [`observe_http`] for a span per request, request counts and latency
//! by route, and the access log, and answer
//! API errors with one body, [`Problem`] (RFC 9457); [`undeclared_methods`]
//! answers a method an OpenAPI document does not list with a 405.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use async_nats::Client;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use bus::connection::is_connected;
pub use bus::ready::ReadyFlag;
use bus::trace::TraceParent;

/// Latency buckets, in seconds: 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Critical-time buckets (event time to applied), in seconds: 5 ms to an
/// hour, since an outage holds events for minutes.
const CRITICAL_TIME_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Batch-size buckets: 1 to 5,000 events.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];

/// The process-wide Prometheus recorder, installed on first use. Histograms
/// are rendered with buckets (so they can be aggregated across instances);
/// a background thread keeps their memory bounded between scrapes.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".to_owned()), BATCH_BUCKETS))
            // A full name wins over a suffix.
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("signup_handler_critical_time_seconds".to_owned()),
                    CRITICAL_TIME_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder was installed first (an embedding program's):
            // render our own, unconnected one rather than fail.
            Err(error) => {
                tracing::warn!(%error, "a metrics recorder was already installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

/// `GET /metrics`: the Prometheus text format, for a scraper that reaches
/// the service directly. A request that came through a proxy or ingress
/// (it carries `X-Forwarded-For`) gets a 404, so the public routes that send
/// `/` to a service do not publish its metrics.
pub async fn metrics_endpoint(request: HttpRequest) -> HttpResponse {
    if request.headers().contains_key("x-forwarded-for") {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(prometheus().render())
}

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// An RFC 9457 problem body, `application/problem+json`: what every API
/// error answers. `F` is the type of the per-field errors (`()` when none).
#[derive(Debug, serde::Serialize)]
pub struct Problem<F: serde::Serialize = ()> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<F>,
}

impl<F: serde::Serialize> Problem<F> {
    /// A problem of `status` (its reason is the title), saying `detail`.
    pub fn new(status: actix_web::http::StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// With per-field errors (`errors` in the body, left out when empty).
    pub fn with_errors(mut self, errors: Vec<F>) -> Self {
        self.errors = errors;
        self
    }

    /// The response: this body, its status, and `headers` (such as
    /// `Retry-After`).
    pub fn response(&self, headers: &[(header::HeaderName, String)]) -> HttpResponse {
        let status = actix_web::http::StatusCode::from_u16(self.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        for (name, value) in headers {
            response.insert_header((name.clone(), value.as_str()));
        }
        response.json(self)
    }
}

/// Answers every method an OpenAPI document does not give a path with a
/// 405 problem naming the ones it does (`Allow`). Register it after the
/// documented routes: those match first (their method guards sit on their
/// resources, so without this an undeclared method would fall through to
/// the app's 404).
pub fn undeclared_methods(config: &mut web::ServiceConfig, openapi: &serde_json::Value) {
    let Some(paths) = openapi["paths"].as_object() else { return };
    for (path, operations) in paths {
        let mut allowed: Vec<String> =
            operations.as_object().into_iter().flat_map(|o| o.keys()).map(|m| m.to_ascii_uppercase()).collect();
        // A GET route answers HEAD too (head_as_get).
        if allowed.iter().any(|m| m == "GET") {
            allowed.push("HEAD".to_owned());
        }
        let allow = allowed.join(", ");
        config.service(web::resource(path.as_str()).to(move || {
            let allow = allow.clone();
            async move {
                Problem::<()>::new(
                    actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                    format!("this resource answers {allow} only"),
                )
                .response(&[(header::ALLOW, allow)])
            }
        }));
    }
}

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

/// What `/readyz` checks: the NATS connection and any named [`ReadyFlag`]s.
#[derive(Debug, Clone)]
pub struct Readiness {
    nats: Client,
    parts: BTreeMap<&'static str, ReadyFlag>,
}

impl Readiness {
    /// Readiness that needs NATS connected.
    pub fn new(nats: Client) -> Self {
        Self { nats, parts: BTreeMap::new() }
    }

    /// Adds a part that must be up too, and returns its flag (down until set).
    pub fn part(&mut self, name: &'static str) -> ReadyFlag {
        self.parts.entry(name).or_default().clone()
    }

    /// The parts that are not ready, `nats` included; empty when ready.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let nats = (!is_connected(&self.nats)).then_some("nats");
        nats.into_iter().chain(self.parts.iter().filter(|(_, flag)| !flag.is_set()).map(|(name, _)| *name)).collect()
    }
}

/// `GET /readyz` for an app that holds a [`Readiness`] as app data: 200 when
/// ready, else 503 naming what is missing.
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let waiting = readiness.waiting_for();
    if waiting.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "not ready", "waiting_for": waiting }))
    }
}

/// Where a handler serves `/healthz`, `/readyz` and `/metrics` (its
/// `[<service>.http]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OpsSettings {
    /// Address to listen on (`0.0.0.0` in a container).
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests). Unset: the service's
    /// own default port.
    pub port: Option<u16>,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self { host: "127.0.0.1".to_owned(), port: None }
    }
}

impl OpsSettings {
    /// Loopback on `port`.
    pub fn local(port: u16) -> Self {
        Self { port: Some(port), ..Self::default() }
    }
}

/// A bound, running operations server (health and metrics only).
pub struct OpsServer {
    port: u16,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl OpsServer {
    /// Binds the listener (`default_port` unless the settings name one) and
    /// starts serving on one worker. It stops when
    /// `shutdown` is cancelled.
    pub fn start(
        settings: &OpsSettings,
        default_port: u16,
        readiness: Readiness,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let port = settings.port.unwrap_or(default_port);
        let listener = TcpListener::bind((settings.host.as_str(), port))
            .with_context(|| format!("binding the health/metrics port {}:{port}", settings.host))?;
        let port = listener.local_addr()?.port();
        tracing::info!(port, "health and metrics served");
        prometheus();
        let readiness = web::Data::new(readiness);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(head_as_get))
                .app_data(readiness.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_endpoint))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            handle.stop(true).await;
        });
        Ok(Self { port, task: tokio::spawn(server) })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until the server has stopped.
    pub async fn stopped(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
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
