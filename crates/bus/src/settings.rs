//! The settings of the NATS plumbing, each beside what it configures: the
//! connection ([`NatsSettings`], [`NatsTlsSettings`]), the event stream
//! ([`StreamSettings`]) and a durable consumer ([`ConsumerSettings`]). Their
//! defaults are the structs' `Default`s; the service runtime (`runtime`)
//! loads them from configuration.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::backoff::Backoff;

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
    /// After the first event reaches an idle consumer, how long to keep
    /// collecting before applying, in milliseconds: for handlers that
    /// summarise what arrives together (the dead-letter digest). 0 (the
    /// default) applies it at once.
    pub gather_ms: u64,
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
    /// Most dead letters this handler keeps in full (with their payload) in
    /// the dead-letter stream at once: past it, a letter keeps its headers
    /// only (replay needs no payload), so that one handler failing
    /// everything cannot fill the stream the others need. 0: no cap.
    pub dead_letter_cap: u64,
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
            gather_ms: 0,
            dead_letter_cap: 10_000,
        }
    }
}

impl ConsumerSettings {
    /// The delay before redelivering a message that failed on its
    /// `delivered`-th delivery: doubling from `retry_base_ms`, capped, ±20%.
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let attempt = u32::try_from(delivered.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
        let (first, max) = (self.retry_base_ms, self.retry_max_ms.max(self.retry_base_ms));
        Backoff::new(Duration::from_millis(first), Duration::from_millis(max)).with_jitter().delay_after(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_jitter_up_to_the_cap() {
        let settings = ConsumerSettings { retry_base_ms: 100, retry_max_ms: 1_000, ..ConsumerSettings::default() };
        for (delivered, nominal) in [(1, 100u64), (2, 200), (3, 400), (4, 800), (5, 1_000), (50, 1_000)] {
            let delay = settings.retry_delay(delivered).as_millis() as u64;
            assert!((nominal * 8 / 10..=nominal * 12 / 10).contains(&delay), "delivery {delivered}: {delay} ms");
        }
    }
}
