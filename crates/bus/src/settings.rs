//! Layered configuration and the settings every NATS-speaking service shares.
//!
//! Layers, later ones winning: built-in defaults (each struct's `Default`) →
//! `config/default.toml` → `config/{SIGNUP_ENV}.toml` → environment variables
//! prefixed `SIGNUP__` with `__` between levels (`SIGNUP__NATS__URL`).
//! `SIGNUP_CONFIG_DIR` moves the folder; missing files are skipped.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads a service's settings from the layers described in the module docs.
pub fn load<T: DeserializeOwned>() -> Result<T, config::ConfigError> {
    let dir = std::env::var_os("SIGNUP_CONFIG_DIR")
        .map_or_else(|| PathBuf::from("config"), PathBuf::from);
    let profile = std::env::var("SIGNUP_ENV").unwrap_or_else(|_| "development".to_owned());
    config::Config::builder()
        .add_source(config::File::from(dir.join("default.toml")).required(false))
        .add_source(config::File::from(dir.join(format!("{profile}.toml"))).required(false))
        .add_source(
            config::Environment::with_prefix("SIGNUP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
}

/// How to reach NATS and how long to wait for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsSettings {
    /// Server URL, or several separated by commas.
    pub url: String,
    /// User name, for user/password authentication.
    pub user: Option<String>,
    /// Password, for user/password authentication.
    pub password: Option<SecretString>,
    /// Token, for token authentication.
    pub token: Option<SecretString>,
    /// Path of a `.creds` file (JWT + NKey), for decentralised authentication.
    pub creds_file: Option<PathBuf>,
    /// How long one connection attempt may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for a JetStream answer (API request or PubAck), in
    /// milliseconds. A publish without a PubAck in this time fails.
    pub request_timeout_ms: u64,
    /// The event stream.
    pub stream: StreamSettings,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 2_000,
            stream: StreamSettings::default(),
        }
    }
}

impl NatsSettings {
    /// The JetStream request and PubAck timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The `PROSPECTS` stream's settings. Every service applies them, so they
/// must agree across services.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StreamSettings {
    /// Stream name; change it only to isolate test runs.
    pub name: String,
    /// Subjects the stream captures.
    pub subjects: String,
    /// Copies kept by a JetStream cluster (1 on a single server, 3 in production).
    pub replicas: usize,
    /// How long events are kept, in days; 0 keeps them forever so a new
    /// handler can replay the whole history.
    pub max_age_days: u64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped, in seconds (≥ 120).
    pub duplicate_window_secs: u64,
    /// Keep the stream in memory instead of on disk (tests only).
    pub memory: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: messages::streams::PROSPECTS_STREAM.to_owned(),
            subjects: messages::streams::PROSPECTS_SUBJECTS.to_owned(),
            replicas: 1,
            max_age_days: 0,
            duplicate_window_secs: 120,
            memory: false,
        }
    }
}

/// How a durable pull consumer fetches and retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsumerSettings {
    /// Most messages handed to the handler at once.
    pub batch_size: usize,
    /// How long an idle fetch waits for the first message, in milliseconds.
    pub idle_wait_ms: u64,
    /// How long the server waits for an ack before redelivering, in seconds.
    pub ack_wait_secs: u64,
    /// Delay before a failed message is redelivered, in milliseconds.
    pub retry_delay_ms: u64,
    /// Deliveries before the server gives up on a message; -1 never gives up.
    pub max_deliver: i64,
    /// A new consumer starts at the first message of the stream (replay
    /// history) rather than at new messages.
    pub from_start: bool,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_wait_ms: 5_000,
            ack_wait_secs: 30,
            retry_delay_ms: 1_000,
            max_deliver: -1,
            from_start: true,
        }
    }
}
