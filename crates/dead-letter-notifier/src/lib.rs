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
//! - [`Notifier`]: the handler of the dead-letter stream (one digest per
//!   batch), and its `Service`: the binary (`run`, `check`), with a
//!   health/metrics server (`[notifier.http]`, port 8083).

pub mod digest;

use std::time::Duration;

use bus::metrics;
use bus::settings::{ConsumerSettings, NatsSettings};
use bus::{Delivery, Handler, HandlerError};
use lettre::message::header::ContentType;
use messages::dlq::DeadLetter;
use runtime::ops::OpsSettings;
use runtime::telemetry::LogSettings;
use runtime::{Backoff, Context, NoCommands, Service};
use serde::Deserialize;
use tokio::time::Instant;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "dead-letter-notifier";

/// Dead letters read (a counter, started at zero, as are the two below).
const LETTERS: &str = "signup_notifier_letters_total";
/// Digests sent.
const MAILS_SENT: &str = "signup_notifier_mails_sent_total";
/// Digests that could not be sent.
const MAIL_FAILURES: &str = "signup_notifier_mail_failures_total";

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
    pub shutdown: runtime::settings::ShutdownSettings,
}
runtime::service_settings!(Settings);

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
            http: OpsSettings::local(HTTP_PORT),
        }
    }
}

/// The handler: one digest mail per batch of letters, at most one per
/// `interval_secs`.
pub struct Notifier {
    transport: smtp::Transport,
    /// Writes (and signs, with a DKIM key) the digests.
    sender: smtp::Sender,
    settings: NotifierSettings,
    /// When a digest was last tried.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Notifier {
    /// Checks the SMTP settings (a DKIM key too) and makes the transport.
    pub fn new(settings: &NotifierSettings) -> anyhow::Result<Self> {
        let transport = smtp::transport(&settings.smtp, "notifier.smtp")?;
        let from = settings.from.parse().unwrap_or_else(|_| "signup@localhost".parse().expect("valid address"));
        let sender = smtp::Sender::new(from, &settings.smtp, "notifier.smtp")?;
        Ok(Self { transport, sender, settings: settings.clone(), last_attempt: tokio::sync::Mutex::new(None) })
    }

    /// How the durable consumer fetches: everything waiting at once, up to
    /// a storm's worth; `gather_secs` after a first letter; never giving up
    /// on a letter (a digest that cannot be sent is held, as in an outage).
    pub fn consumer_settings(settings: &NotifierSettings) -> ConsumerSettings {
        ConsumerSettings {
            batch_size: 10_000,
            gather_ms: settings.gather_secs.saturating_mul(1_000),
            ack_wait_secs: 60,
            retry_base_ms: settings.retry_base_ms,
            max_deliver: 0,
            from_start: true,
            ..ConsumerSettings::default()
        }
    }
}

impl Handler for Notifier {
    type Event = DeadLetter;

    /// Mails the batch as one digest once `interval_secs` have passed since
    /// the last try; acked only once the SMTP server took it, held (and
    /// tried again) while it does not.
    async fn handle(&self, batch: &[Delivery<DeadLetter>]) -> Result<(), HandlerError> {
        let mut last = self.last_attempt.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + Duration::from_secs(self.settings.interval_secs)).await;
        }
        let letters: Vec<&DeadLetter> = batch.iter().map(|delivery| &delivery.event).collect();
        let sent = send_with_retries(&self.transport, &self.sender, &self.settings, &letters).await;
        *last = Some(Instant::now());
        if sent {
            metrics::counter!(LETTERS).increment(letters.len() as u64);
            Ok(())
        } else {
            Err(HandlerError::Unavailable(anyhow::anyhow!("the digest could not be sent; the letters wait")))
        }
    }
}

impl Service for Notifier {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str = "E-mails an operator a digest of new dead letters";
    type Settings = Settings;
    type Command = NoCommands;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let notifier = &settings.notifier;
        let handler = Notifier::new(notifier)?;
        tracing::info!(to = %notifier.to, "dead-letter notifier started");
        // From zero, so the first letter is an increase Prometheus can see.
        for counter in [LETTERS, MAILS_SENT, MAIL_FAILURES] {
            metrics::counter!(counter).absolute(0);
        }
        let consumer = Notifier::consumer_settings(notifier);
        context.consume(&settings.nats.stream, &consumer, &notifier.http, HTTP_PORT, handler).await
    }

    /// The SMTP settings can work.
    async fn check(settings: &Settings) -> anyhow::Result<()> {
        Notifier::new(&settings.notifier).map(drop)
    }
}

/// Sends the digest of `letters`, retrying three times with doubling delays.
async fn send_with_retries(
    mailer: &smtp::Transport,
    sender: &smtp::Sender,
    settings: &NotifierSettings,
    letters: &[&DeadLetter],
) -> bool {
    let (subject, body) = digest::compose(letters, settings.max_listed);
    let message = match sender
        .message()
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
        Ok(message) => sender.seal(message),
        Err(error) => {
            tracing::error!(%error, "could not build the digest mail");
            return false;
        }
    };
    let mut pause = Backoff::new(Duration::from_millis(settings.retry_base_ms), Duration::from_secs(60));
    for attempt in 1..=4 {
        match mailer.send(&message).await {
            Ok(_) => {
                metrics::counter!(MAILS_SENT).increment(1);
                tracing::info!(letters = letters.len(), "dead-letter digest sent");
                return true;
            }
            Err(error) if attempt < 4 => {
                metrics::counter!(MAIL_FAILURES).increment(1);
                let delay = pause.next_delay();
                let error = bus::redact::addresses(&error.to_string()).into_owned();
                tracing::warn!(%error, attempt, ?delay, "sending the digest failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                metrics::counter!(MAIL_FAILURES).increment(1);
                let error = bus::redact::addresses(&error.to_string()).into_owned();
                tracing::error!(%error, "sending the digest failed 4 times; the letters wait for the next try")
            }
        }
    }
    false
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
