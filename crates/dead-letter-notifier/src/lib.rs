//! dead-letter-notifier: tells an operator about dead letters by e-mail.
//!
//! Its durable consumer `dead-letter-notifier` reads the dead-letter stream.
//! Letters are gathered for a short while (a storm arrives together), then
//! sent as one digest — at most one mail per `interval_secs` — listing each
//! letter's reason, handler and prospect details. The letters are acked only
//! after the SMTP server accepted the mail; a failing send is retried three
//! times with backoff, after which the letters stay unacknowledged for the
//! next try.
//!
//! # Layout
//! - [`Settings`]: `[notifier]` (addresses, interval, `[notifier.smtp]`: the
//!   SMTP server, over STARTTLS or TLS with its certificate checked; plain
//!   only to this machine — the digests hold personal data), `[nats]`, `[log]`.
//! - [`digest`]: the mail's text.
//! - [`run`]: the loop, beside a health/metrics server (`[notifier.http]`, port 8083).

pub mod digest;

use std::time::Duration;

use anyhow::Context as _;
use bus::async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull, message::AckKind};
use bus::async_nats::{self};
use bus::metrics;
use bus::ops::{OpsServer, OpsSettings, Readiness};
use bus::settings::NatsSettings;
use bus::telemetry::LogSettings;
use futures::StreamExt;
use lettre::message::header::ContentType;
use lettre::{AsyncTransport, Message};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "dead-letter-notifier";

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = 8083;

/// Everything the notifier reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the dead letters are.
    pub nats: NatsSettings,
    /// `[notifier]`: whom to tell, how, how often.
    pub notifier: NotifierSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: bus::settings::ShutdownSettings,
}

/// Whom to tell, how and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NotifierSettings {
    /// `[notifier.smtp]`: the server that takes the digests.
    pub smtp: smtp::SmtpSettings,
    /// Sender address.
    pub from: String,
    /// The operator's address.
    pub to: String,
    /// At most one mail per this many seconds.
    pub interval_secs: u64,
    /// After the first new letter, wait this long for more before sending.
    pub gather_secs: u64,
    /// Letters described one by one in a mail; the rest are counted.
    pub max_listed: usize,
    /// First retry delay of a failed send, in milliseconds (then doubled, 3 retries).
    pub retry_base_ms: u64,
    /// `[notifier.http]`: where `/healthz`, `/readyz` and `/metrics` are served.
    pub http: OpsSettings,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self {
            smtp: smtp::SmtpSettings::default(),
            from: "signup@localhost".to_owned(),
            to: "operator@localhost".to_owned(),
            interval_secs: 300,
            gather_secs: 10,
            max_listed: 50,
            retry_base_ms: 1_000,
            http: OpsSettings::default(),
        }
    }
}

/// Reads dead letters and mails digests until `shutdown`.
pub async fn run(settings: Settings, client: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let notifier = &settings.notifier;
    let mut readiness = Readiness::new(client.clone());
    let consumer_ready = readiness.part("consumer");
    let ops = OpsServer::start(&notifier.http, HTTP_PORT, readiness, &shutdown)?;
    let mailer = smtp::transport(&notifier.smtp, "notifier.smtp")?;
    let js = jetstream::new(client.clone());
    let consumer = loop {
        match ensure_consumer(&js, &settings.nats).await {
            Ok(consumer) => {
                consumer_ready.set(true);
                break consumer;
            }
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "dead-letter consumer not ready; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    tracing::info!(to = %notifier.to, "dead-letter notifier started");
    let interval = Duration::from_secs(notifier.interval_secs);
    let gather = Duration::from_secs(notifier.gather_secs);
    let mut held: Vec<jetstream::Message> = Vec::new();
    let mut first_held: Option<Instant> = None;
    let mut last_attempt: Option<Instant> = None;
    let mut last_progress = Instant::now();
    while !shutdown.is_cancelled() {
        let due = first_held.map(|t| {
            let gathered = t + gather;
            last_attempt.map_or(gathered, |last| gathered.max(last + interval))
        });
        if let Some(due) = due
            && Instant::now() >= due
        {
            let sent = send_with_retries(&mailer, notifier, &held, &shutdown).await;
            last_attempt = Some(Instant::now());
            if sent {
                for message in held.drain(..) {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(%error, "could not ack a mailed dead letter; it may be mailed again");
                    }
                }
                first_held = None;
            }
            continue;
        }
        let wait = due
            .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        match fetch(&consumer, wait).await {
            Ok(messages) if !messages.is_empty() => {
                metrics::counter!("signup_notifier_letters_total").increment(messages.len() as u64);
                first_held.get_or_insert_with(Instant::now);
                held.extend(messages);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "fetching dead letters failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Letters waiting for the next mail must not be redelivered meanwhile.
        if last_progress.elapsed() > Duration::from_secs(10) {
            for message in &held {
                let _ = message.ack_with(AckKind::Progress).await;
            }
            last_progress = Instant::now();
        }
    }
    // Unsent letters go back for the next start.
    for message in &held {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
    client.flush().await.ok();
    ops.stopped().await.context("stopping the health/metrics server")?;
    Ok(())
}

async fn ensure_consumer(js: &jetstream::Context, events: &NatsSettings) -> anyhow::Result<PullConsumer> {
    let stream = bus::stream::ensure_dlq_stream(js, &events.stream).await?;
    stream
        .get_or_create_consumer(
            CONSUMER_NAME,
            pull::Config {
                durable_name: Some(CONSUMER_NAME.to_owned()),
                description: Some("mails dead letters to an operator".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: -1,
                ..Default::default()
            },
        )
        .await
        .context("creating the dead-letter consumer")
}

async fn fetch(consumer: &PullConsumer, wait: Duration) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut batch = consumer.batch().max_messages(1_000).expires(wait).messages().await?;
    let mut out = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(wait + Duration::from_secs(2), batch.next()).await {
        out.push(message.map_err(|e| anyhow::anyhow!(e))?);
    }
    Ok(out)
}

/// Sends the digest of `held`, retrying three times with doubling delays.
async fn send_with_retries(
    mailer: &smtp::Transport,
    settings: &NotifierSettings,
    held: &[jetstream::Message],
    shutdown: &CancellationToken,
) -> bool {
    let letters: Vec<&async_nats::Message> = held.iter().map(|m| &m.message).collect();
    let (subject, body) = digest::compose(&letters, settings.max_listed);
    let message = match Message::builder()
        .from(settings.from.parse().unwrap_or_else(|_| "signup@localhost".parse().expect("valid address")))
        .to(match settings.to.parse() {
            Ok(to) => to,
            Err(error) => {
                tracing::error!(%error, to = %settings.to, "the operator address is invalid");
                return false;
            }
        })
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
    {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(%error, "could not build the digest mail");
            return false;
        }
    };
    let mut delay = Duration::from_millis(settings.retry_base_ms);
    for attempt in 1..=4 {
        match mailer.send(message.clone()).await {
            Ok(_) => {
                metrics::counter!("signup_notifier_mails_sent_total").increment(1);
                tracing::info!(letters = held.len(), to = %settings.to, "dead-letter digest sent");
                return true;
            }
            Err(error) if attempt < 4 => {
                metrics::counter!("signup_notifier_mail_failures_total").increment(1);
                tracing::warn!(%error, attempt, ?delay, "sending the digest failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
                delay *= 2;
            }
            Err(error) => {
                metrics::counter!("signup_notifier_mail_failures_total").increment(1);
                tracing::error!(%error, "sending the digest failed 4 times; the letters wait for the next try")
            }
        }
    }
    false
}
