//! __NAME__: a Signup event handler (scaffolded by `scripts/new-handler`).
//!
//! Its durable consumer `__NAME__` receives every `ProspectSignedUp` event;
//! [`__TYPE__`] is where the work goes. The runner acks a batch only after
//! [`__TYPE__::handle`] returned `Ok`, redelivers it with a growing delay on
//! an error, and dead-letters an event that keeps failing — so make the work
//! idempotent (the same event can arrive twice; `meta.event_id` is its key)
//! and durable before returning. See docs/adding-a-handler.md.
//!
//! # Layout
//! - [`Settings`]: `[nats]`, `[log]`, `[shutdown]` and `[__SECTION__]`.
//! - [`__TYPE__`]: the handler.
//! - its [`Service`]: the binary (`run [--from-start]`, `check`), run by
//!   the service runtime (`runtime`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runtime::ops::OpsSettings;
use runtime::{Context, NoCommands, Service};
use bus::settings::{ConsumerSettings, NatsSettings};
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use bus::{Delivery, Handler, HandlerError};
use messages::ProspectSignedUp;
use serde::Deserialize;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "__NAME__";

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = __PORT__;

/// Everything this handler reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[__SECTION__]`: this handler's own knobs.
    pub __SECTION__: HandlerSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
}
runtime::service_settings!(Settings);

/// This handler's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HandlerSettings {
    /// Batch size, waits, retries and where a new consumer starts: at new
    /// events unless `from_start` (or `run --from-start`) asks for the
    /// whole history.
    pub consumer: ConsumerSettings,
    /// `[__SECTION__.http]`: where `/healthz`, `/readyz` and `/metrics` are
    /// served (port [`HTTP_PORT`] unless set).
    pub http: OpsSettings,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        Self { consumer: ConsumerSettings { from_start: false, ..ConsumerSettings::default() }, http: OpsSettings::local(HTTP_PORT) }
    }
}

/// The handler. Replace the body of [`Handler::handle`] with the real work.
#[derive(Debug, Clone, Default)]
pub struct __TYPE__ {
    handled: Arc<AtomicU64>,
}

impl __TYPE__ {
    /// How many events it has handled since start.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}

impl Handler for __TYPE__ {
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

impl Service for __TYPE__ {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str = "A Signup event handler";
    const OFFERS_FROM_START: bool = true;
    type Settings = Settings;
    type Command = NoCommands;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let own = &settings.__SECTION__;
        context.consume(&settings.nats.stream, &own.consumer, &own.http, HTTP_PORT, __TYPE__::default()).await
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
