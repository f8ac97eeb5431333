//! What every request handler shares.

use bus::Publisher;
use bus::async_nats::jetstream;
use bus::settings::StreamSettings;

use crate::catalog::Catalog;

/// Shared by all workers: one NATS connection, the reference data.
pub struct AppState {
    /// Publishes events over the one shared NATS connection.
    pub publisher: Publisher,
    /// Countries and roles offered and accepted.
    pub catalog: Catalog,
    /// JetStream API access for readiness checks.
    pub jetstream: jetstream::Context,
    /// The stream that must exist for sign-ups to be accepted.
    pub stream: StreamSettings,
}
