//! mailer: a Signup event handler (scaffolded by `scripts/new-handler`).
//!
//! Its durable consumer `mailer` receives every `ProspectSignedUp` event;
//! [`Mailer`] is where the work goes. The runner acks a batch only after
//! [`Mailer::handle`] returned `Ok`, redelivers it with a growing delay on
//! an error, and dead-letters an event that keeps failing — so make the work
//! idempotent (the same event can arrive twice; `meta.event_id` is its key)
//! and durable before returning. See docs/adding-a-handler.md.
//!
//! # Layout
//! - [`Settings`]: `[nats]`, `[log]`, `[shutdown]` and `[mailer]`.
//! - [`Mailer`]: the handler.
//! - [`run`]: health/metrics server and consumer, until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bus::ops::{OpsServer, OpsSettings, Readiness};
use bus::settings::{ConsumerSettings, NatsSettings, ShutdownSettings};
use bus::telemetry::LogSettings;
use bus::{ConsumerRunner, Delivery, Handler, HandlerError};
use messages::ProspectSignedUp;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "mailer";

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = 8085;

/// Everything this handler reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[mailer]`: this handler's own knobs.
    pub mailer: HandlerSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
}

/// This handler's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HandlerSettings {
    /// Batch size, waits, retries and where a new consumer starts: at new
    /// events unless `from_start` (or `run --from-start`) asks for the
    /// whole history.
    pub consumer: ConsumerSettings,
    /// `[mailer.http]`: where `/healthz`, `/readyz` and `/metrics` are
    /// served (port [`HTTP_PORT`] unless set).
    pub http: OpsSettings,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings { from_start: false, ..ConsumerSettings::default() },
            http: OpsSettings::default(),
        }
    }
}

/// The handler. Replace the body of [`Handler::handle`] with the real work.
#[derive(Debug, Clone, Default)]
pub struct Mailer {
    handled: Arc<AtomicU64>,
}

impl Mailer {
    /// How many events it has handled since start.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}

impl Handler for Mailer {
    type Event = ProspectSignedUp;

    async fn handle(&self, batch: &[Delivery<ProspectSignedUp>]) -> Result<(), HandlerError> {
        for delivery in batch {
            // Placeholder: log it. Return HandlerError::Transient for a failure
            // worth retrying, ::Unavailable while a dependency is down, and
            // ::Permanent for an event that can never succeed.
            tracing::info!(event_id = %delivery.meta.event_id, prospect_id = %delivery.event.prospect_id,
                "prospect signed up");
            self.handled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Serves health and metrics and consumes events with `handler` until
/// `shutdown`. The caller owns the NATS client and drains it afterwards.
pub async fn run(
    settings: Settings,
    client: bus::async_nats::Client,
    handler: Mailer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut readiness = Readiness::new(client.clone());
    let consumer_ready = readiness.part("consumer");
    let ops = OpsServer::start(&settings.mailer.http, HTTP_PORT, readiness, &shutdown)?;
    let consumed = ConsumerRunner::new(client, settings.nats.stream.clone(), CONSUMER_NAME, settings.mailer.consumer)
        .with_ready_flag(consumer_ready)
        .run(handler, shutdown)
        .await;
    ops.stopped().await?;
    consumed
}
