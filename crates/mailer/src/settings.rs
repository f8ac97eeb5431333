//! The mailer's settings (see `runtime::settings` for how they are layered).

use bus::settings::{ConsumerSettings, NatsSettings};
use links::LinkSettings;
use runtime::ops::OpsSettings;
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use serde::Deserialize;

/// Everything the mailer reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[mailer]`: the SMTP server, the sender and the limits.
    pub mailer: MailerSettings,
    /// `[links]`: the secret the links are signed with (the web's), the public
    /// address of the web, and how long links last.
    pub links: LinkSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
}
runtime::service_settings!(Settings);

/// `[mailer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MailerSettings {
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    /// `[mailer.smtp]`: the server that takes the mail.
    pub smtp: smtp::SmtpSettings,
    /// Most mails anyone's actions (a sign-up, a lost-link request) send one
    /// address per `per_address_window_secs`, so nobody can use the forms to
    /// flood an inbox; the rest wait for the window (deferred, never
    /// dropped).
    pub per_address_limit: u32,
    /// Most mails the owner's own actions on the manage page send the
    /// address per window, counted apart: a stranger who uses up
    /// `per_address_limit` cannot keep the owner's mail from going.
    pub per_address_owner_limit: u32,
    /// The window of `per_address_limit`, in seconds.
    pub per_address_window_secs: u64,
    /// `[mailer.budget]`: mails to addresses nobody has confirmed (a
    /// sign-up's confirmation, a new address's, a claim or lost link of a
    /// pending sign-up), per recipient domain and in all per window; over
    /// it they wait their turn (deferred, in order, never dropped).
    pub budget: crate::budget::BudgetSettings,
    /// How long an address stays suppressed after its owner said "it wasn't
    /// me", in days: no mail about a sign-up goes to it meanwhile (`signup
    /// suppression remove <address>` ends it sooner).
    pub suppress_days: u64,
    /// Each key-value bucket's size limit (`MAILER_SENT`, `MAILER_RATE`,
    /// `MAILER_SUPPRESSED`), in
    /// MiB: JetStream reserves it, so the buckets never take the event
    /// stream's room.
    pub bucket_max_mb: i64,
    /// How long to wait for the `prospects` service (who holds an address),
    /// in milliseconds.
    pub service_timeout_ms: u64,
    /// Batch size, waits, the retry schedule and the retry budget; a new
    /// consumer starts at new events unless `from_start` (or
    /// `run --from-start`) asks for the history — which would mail it.
    pub consumer: ConsumerSettings,
    /// `[mailer.http]`: where `/healthz`, `/readyz` and `/metrics` are
    /// served (port [`crate::HTTP_PORT`] unless set).
    pub http: OpsSettings,
}

impl Default for MailerSettings {
    fn default() -> Self {
        Self {
            from: "Signup <signup@localhost>".to_owned(),
            smtp: smtp::SmtpSettings::default(),
            per_address_limit: 5,
            per_address_owner_limit: 5,
            per_address_window_secs: 3_600,
            suppress_days: 365,
            budget: crate::budget::BudgetSettings::default(),
            bucket_max_mb: 256,
            service_timeout_ms: 2_000,
            consumer: ConsumerSettings {
                // Mails go out `smtp.pool_size` at a time; a batch slower
                // than the ack wait (a very slow relay) is kept with
                // progress acks.
                batch_size: 20,
                ack_wait_secs: 60,
                // A mail server that refuses for now (4xx) usually takes the
                // mail minutes later: 5 s doubling to 10 min, ten attempts
                // (about 40 minutes) before dead-lettering.
                retry_base_ms: 5_000,
                retry_max_ms: 600_000,
                max_deliver: 10,
                from_start: false,
                ..ConsumerSettings::default()
            },
            http: OpsSettings::local(crate::HTTP_PORT),
        }
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
