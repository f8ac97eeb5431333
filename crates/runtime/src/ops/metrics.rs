//! The process-wide Prometheus recorder every service's metrics go into,
//! and `GET /metrics`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
                    Matcher::Full(bus::consume::names::CRITICAL_TIME.to_owned()),
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
        // When this process started (the Prometheus convention's name): a
        // value that changes is a restart (the alert SignupServiceRestarting).
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64());
        metrics::gauge!("process_start_time_seconds").set(started);
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
