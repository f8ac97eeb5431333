//! analytics-indexer's settings (see `runtime::settings` for how they are layered).

use std::path::PathBuf;

use bus::settings::{ConsumerSettings, NatsSettings};
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use secrecy::SecretString;
use serde::Deserialize;

/// Everything analytics-indexer reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[analytics]`: the index and the dashboard.
    pub analytics: AnalyticsSettings,
    /// `[log]`: log format and filter.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
    /// `[links]`: only `base_url`, the public address: when it is HTTPS the
    /// dashboard's session cookie is `Secure`.
    pub links: links::LinkSettings,
}
runtime::service_settings!(Settings);

/// The index and the dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AnalyticsSettings {
    /// Address to listen on (`0.0.0.0` in a container).
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Folder of the Tantivy index.
    pub index_dir: PathBuf,
    /// Bearer token for personal data (`SIGNUP__ANALYTICS__TOKEN`), at least
    /// 16 characters: the indexer refuses to start without one.
    pub token: Option<SecretString>,
    /// Indexing memory, in megabytes.
    pub writer_memory_mb: usize,
    /// How long a browser's login session lasts, in seconds (then the token
    /// is asked for again).
    pub session_secs: u64,
    /// Batch size, waits and retries of the durable consumer.
    pub consumer: ConsumerSettings,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8081,
            index_dir: PathBuf::from("data/analytics-index"),
            token: None,
            writer_memory_mb: 64,
            session_secs: 8 * 3600,
            // Each batch is an index commit, and each commit a segment that
            // is merged later: under load, gather for half a second.
            consumer: ConsumerSettings { batch_size: 8_000, linger_ms: 500, ..ConsumerSettings::default() },
        }
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
