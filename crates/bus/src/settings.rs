//! Layered configuration and the settings every NATS-speaking service shares.
//!
//! Layers, later ones winning: built-in defaults (each struct's `Default`) →
//! `config/default.toml` → `config/{SIGNUP_ENV}.toml` → environment variables
//! prefixed `SIGNUP__` with `__` between levels (`SIGNUP__NATS__URL`).
//! `SIGNUP_CONFIG_DIR` moves the folder; missing files are skipped.
//!
//! Secrets can come from files instead (container secrets): a variable
//! `SIGNUP_FILE__NATS__PASSWORD=/run/secrets/nats-password` sets
//! `nats.password` to that file's contents, without a trailing newline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads a service's settings from the layers described in the module docs.
pub fn load<T: DeserializeOwned>() -> Result<T, config::ConfigError> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let dir = vars.get("SIGNUP_CONFIG_DIR").map_or_else(|| PathBuf::from("config"), PathBuf::from);
    let profile = vars.get("SIGNUP_ENV").cloned().unwrap_or_else(|| "development".to_owned());
    load_from(&dir, &profile, vars)
}

/// [`load`] with the folder, profile and environment given explicitly.
pub fn load_from<T: DeserializeOwned>(
    dir: &Path,
    profile: &str,
    mut environment: HashMap<String, String>,
) -> Result<T, config::ConfigError> {
    let from_files: Vec<(String, String)> = environment
        .iter()
        .filter_map(|(key, path)| Some((key.strip_prefix("SIGNUP_FILE__")?, path)))
        .map(|(key, path)| {
            let value = std::fs::read_to_string(path)
                .map_err(|e| config::ConfigError::Message(format!("reading SIGNUP_FILE__{key} ({path}): {e}")))?;
            Ok((format!("SIGNUP__{key}"), value.trim_end_matches(['\r', '\n']).to_owned()))
        })
        .collect::<Result<_, config::ConfigError>>()?;
    environment.extend(from_files);
    config::Config::builder()
        .add_source(config::File::from(dir.join("default.toml")).required(false))
        .add_source(config::File::from(dir.join(format!("{profile}.toml"))).required(false))
        .add_source(
            config::Environment::with_prefix("SIGNUP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(environment)),
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
    /// `[nats.tls]`: TLS to the server.
    pub tls: NatsTlsSettings,
    /// Subject prefix of this client's reply inboxes. Unset: `_INBOX_<user>`
    /// when `user` is set (so a server can let each user read only its own
    /// replies), else `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// How long one connection attempt may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for a JetStream answer (API request or PubAck), in
    /// milliseconds. A publish without a PubAck in this time fails.
    pub request_timeout_ms: u64,
    /// How long a publish keeps trying (with the same de-duplication id, so
    /// an event is stored once) while JetStream cannot take it for a moment:
    /// a reconnect, a stream leader being elected, a PubAck lost. Past it the
    /// caller hears "not stored" (signup-web answers 503). 0: one attempt.
    pub publish_retry_ms: u64,
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
            tls: NatsTlsSettings::default(),
            inbox_prefix: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 2_000,
            publish_retry_ms: 5_000,
            stream: StreamSettings::default(),
        }
    }
}

impl NatsSettings {
    /// The inbox prefix in use (see `inbox_prefix`).
    pub fn inbox_prefix(&self) -> String {
        match (&self.inbox_prefix, &self.user) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(user)) => format!("_INBOX_{user}"),
            (None, None) => "_INBOX".to_owned(),
        }
    }

    /// How long a publish keeps trying (see `publish_retry_ms`).
    pub fn publish_retry(&self) -> Duration {
        Duration::from_millis(self.publish_retry_ms)
    }

    /// The JetStream request and PubAck timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// TLS to the NATS server. A `tls://` URL turns it on as well; the system's
/// root certificates are trusted unless `ca_file` names others.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NatsTlsSettings {
    /// Refuse to talk to the server without TLS.
    pub required: bool,
    /// PEM file of the certificate authorities to trust instead.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
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
    /// Largest size of the event stream, in MiB (-1: no limit). When it is
    /// full, new events are refused — a sign-up gets a 503 — rather than
    /// old ones dropped.
    pub max_bytes_mb: i64,
    /// How long a dead letter is kept, in days (0: forever).
    pub dead_letter_max_age_days: u64,
    /// Largest size of the dead-letter stream, in MiB (-1: no limit); when it
    /// is full, a failing event is retried instead of dead-lettered.
    pub dead_letter_max_bytes_mb: i64,
    /// Keep the stream in memory instead of on disk (tests only).
    pub memory: bool,
    /// Create the stream, or update it to these settings, at start-up. Turn
    /// it off where the service's NATS user may only look streams up (the
    /// deployments: `signup streams` sets them up once with an admin user);
    /// the service then waits until the stream exists.
    pub manage: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: messages::streams::PROSPECTS_STREAM.to_owned(),
            subjects: messages::streams::PROSPECTS_SUBJECTS.to_owned(),
            replicas: 1,
            max_age_days: 0,
            duplicate_window_secs: 120,
            max_bytes_mb: 4_096,
            dead_letter_max_age_days: 30,
            dead_letter_max_bytes_mb: 512,
            memory: false,
            manage: true,
        }
    }
}

/// How long a service may take to stop (`[shutdown]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// Seconds to finish the work in hand after SIGTERM or Ctrl-C.
    pub timeout_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { timeout_secs: 20 }
    }
}

impl ShutdownSettings {
    /// The bound as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// How a durable pull consumer fetches and retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsumerSettings {
    /// Most messages handed to the handler at once.
    pub batch_size: usize,
    /// Batches applied at the same time by one instance (each fetches and
    /// settles its own, as separate instances would). 1 keeps one batch in
    /// flight; more lets a database overlap one batch's commit with the next.
    pub concurrency: usize,
    /// How long an idle fetch waits for the first message, in milliseconds.
    pub idle_wait_ms: u64,
    /// Under load (a fetch found messages waiting but not a full batch), how
    /// long to keep collecting before applying, in milliseconds: fewer,
    /// larger batches instead of many tiny ones. An event arriving at an idle
    /// consumer is applied at once. 0 turns it off.
    pub linger_ms: u64,
    /// How long the server waits for an ack before redelivering, in seconds.
    pub ack_wait_secs: u64,
    /// First retry delay after a failure, in milliseconds; it doubles with
    /// every delivery (with ±20% jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Deliveries before a failing message is dead-lettered; 0 or less
    /// retries forever.
    pub max_deliver: i64,
    /// Longest pause between retries while a dependency (the database) is
    /// down, in milliseconds. Such waits do not use up deliveries.
    pub outage_backoff_max_ms: u64,
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
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            max_deliver: 5,
            outage_backoff_max_ms: 30_000,
            from_start: true,
            concurrency: 1,
            linger_ms: 20,
        }
    }
}

impl ConsumerSettings {
    /// The delay before redelivering a message that failed on its
    /// `delivered`-th delivery: doubling from `retry_base_ms`, capped, ±20%.
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let millis = self.retry_base_ms.saturating_mul(1u64 << exponent).min(self.retry_max_ms.max(self.retry_base_ms));
        jitter(Duration::from_millis(millis))
    }
}

/// `delay` ±20%, so that many consumers failing together do not retry in step.
pub fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + fastrand::f64() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Sample {
        nats: NatsSettings,
    }

    #[test]
    fn retry_delays_grow_with_jitter_up_to_the_cap() {
        let settings = ConsumerSettings { retry_base_ms: 100, retry_max_ms: 1_000, ..ConsumerSettings::default() };
        for (delivered, nominal) in [(1, 100u64), (2, 200), (3, 400), (4, 800), (5, 1_000), (50, 1_000)] {
            let delay = settings.retry_delay(delivered).as_millis() as u64;
            assert!((nominal * 8 / 10..=nominal * 12 / 10).contains(&delay), "delivery {delivered}: {delay} ms");
        }
    }

    #[test]
    fn defaults_then_files_then_environment() {
        let dir = std::env::temp_dir().join(format!("signup-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("default.toml"),
            "[nats]\nurl = \"nats://from-default:4222\"\nrequest_timeout_ms = 7\n",
        )
        .expect("default.toml");
        std::fs::write(dir.join("staging.toml"), "[nats.stream]\nreplicas = 3\n").expect("staging.toml");

        let none: Sample = load_from(&dir, "absent", HashMap::new()).expect("load");
        assert_eq!(none.nats.url, "nats://from-default:4222");
        assert_eq!(none.nats.request_timeout_ms, 7);
        assert_eq!(none.nats.connect_timeout_ms, 2_000, "built-in default");
        assert_eq!(none.nats.stream.replicas, 1);

        let env = HashMap::from([
            ("SIGNUP__NATS__URL".to_owned(), "nats://from-env:4222".to_owned()),
            ("SIGNUP__NATS__PASSWORD".to_owned(), "1234".to_owned()),
            ("SIGNUP__NATS__STREAM__DUPLICATE_WINDOW_SECS".to_owned(), "300".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ]);
        let layered: Sample = load_from(&dir, "staging", env).expect("load");
        assert_eq!(layered.nats.url, "nats://from-env:4222");
        assert_eq!(layered.nats.stream.replicas, 3, "profile file");
        assert_eq!(layered.nats.stream.duplicate_window_secs, 300);
        let password = layered.nats.password.as_ref().expect("password");
        assert_eq!(password.expose_secret(), "1234", "numeric-looking secrets stay strings");
        assert!(!format!("{:?}", layered.nats).contains("1234"), "secrets are never printed");

        let secret = dir.join("nats-password");
        std::fs::write(&secret, "from-a-file\n").expect("secret file");
        let env = HashMap::from([("SIGNUP_FILE__NATS__PASSWORD".to_owned(), secret.display().to_string())]);
        let from_file: Sample = load_from(&dir, "absent", env).expect("load");
        assert_eq!(from_file.nats.password.expect("password").expose_secret(), "from-a-file");
        let missing = HashMap::from([("SIGNUP_FILE__NATS__TOKEN".to_owned(), "/nonexistent/token".to_owned())]);
        let error = load_from::<Sample>(&dir, "absent", missing).expect_err("a missing secret file is an error");
        assert!(error.to_string().contains("SIGNUP_FILE__NATS__TOKEN"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
