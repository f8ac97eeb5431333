//! The operational surface every service shares: Prometheus metrics,
//! `/healthz` and `/readyz`, and a small HTTP server for services that have
//! no other (the handlers).
//!
//! Metrics go through the `metrics` crate's facade into one process-wide Prometheus
//! recorder ([`prometheus`]); `/metrics` renders it. HTTP services wrap their
//! app in [`observe_http`] for a span per request, request counts and latency
//! by route, and the access log, and answer
//! API errors with one body, [`Problem`] (RFC 9457); [`undeclared_methods`]
//! answers a method an OpenAPI document does not list with a 405.
//!
//! # Layout
//! - [`metrics`]: the recorder and `/metrics`.
//! - [`health`]: `/healthz`, `/readyz` and what readiness waits for.
//! - [`problem`]: the problem body every service answers and documents (its OpenAPI
//!   schema too), and the 405.
//! - [`middleware`]: security headers, HEAD as GET, the per-request span,
//!   metrics and access log.
//! - here: the small health/metrics server of a service with no other.

pub mod health;
pub mod metrics;
pub mod middleware;
pub mod problem;

pub use bus::ready::ReadyFlag;
pub use health::{Readiness, healthz, readyz};
pub use metrics::{metrics_endpoint, prometheus};
pub use middleware::{head_as_get, observe_http, security_headers};
pub use problem::{Problem, ProblemField, undeclared_methods};

use std::net::TcpListener;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

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
