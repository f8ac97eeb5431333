//! mailer: the Signup handler that sends e-mail (made with
//! `scripts/new-handler mailer`).
//!
//! Proof of owning an address is a link mailed to it, so this is the piece
//! that makes double opt-in work. Its durable consumer `mailer` receives
//! every prospect event and sends:
//!
//! | event | mail |
//! |---|---|
//! | `ProspectSignedUp`, a new address | "please confirm your sign-up": the confirmation link, the manage link and "it wasn't me" |
//! | `ProspectSignedUp`, an address a prospect holds | to that address: "someone signed up with your address; if it was you, confirm these details", and "it wasn't me" |
//! | `ProspectEmailChangeRequested` | to the new address: its confirmation link; to the address in use: a notice with the manage link |
//! | `ManageLinkRequested` | a new manage link, to the prospect's own address (only if the prospect holds it) |
//!
//! The links are signed with the web's secret (`[links]`, the `links`
//! crate), so only signup-web honours them and nothing else grants access to
//! a record. Each is issued at the time of the event that mails it, so it
//! dies when the record moves to another address (`links::Claims::current`).
//!
//! One mail per event, even when the event is redelivered or replayed: what
//! was sent is recorded by event id in a NATS key-value bucket of the
//! mailer's own ([`records`]), and an event older than its links is never
//! mailed. A mail's `Message-ID` is made from that record's key, so the copy
//! a crash can send again (after the server took the mail, before the
//! record) is the same message to the receiver. The mails of a batch are
//! sent as many at a time as there are SMTP connections
//! (`mailer.smtp.pool_size`), after their budgets were taken one at a time
//! in stream order; the batch is acked once the server took every mail. Per address, a budget of what anyone's actions send (5 an hour by
//! default) keeps anyone from using the forms to flood an inbox, and one of
//! what the owner's own actions send keeps a stranger from using that up; a
//! mail over its budget waits (`HandlerError::Deferred`), never dropped.
//! An address whose owner pressed "it wasn't me" (the suppression list,
//! [`records`]) gets no mail about a sign-up (confirmation, claim, new
//! address) until the suppression ends; its owner's own mail still goes.
//! SMTP failures follow the consumer runner's
//! policy (`smtp::classify`): a refused address (5xx) is dead-lettered with
//! the server's reply codes, a "try later" (4xx) is retried with growing delays,
//! and an unreachable or misconfigured server holds the mails until it is
//! back. The connection is STARTTLS or TLS with certificate checks; plain
//! SMTP only to a relay on this machine.
//!
//! # Layout
//! - [`settings`]: `[mailer]` (sender, `[mailer.smtp]`, limits), `[links]`,
//!   `[nats]`, `[log]`, `[shutdown]`.
//! - [`email`]: an e-mail ([`email::Email`]) of each [`email::Kind`], written from `templates/` (text and HTML).
//! - [`records`]: the sent records, the per-address counts, the suppression
//!   list, the turns of mails held back.
//! - [`budget`]: `[mailer.budget]`, the budget of mails to unconfirmed
//!   addresses (per domain, in all), and the gauges of what waits for it.
//! - [`handler`]: [`Mailer`], which mails each event once.
//! - the [`Service`] of [`Mailer`]: the binary (`run [--from-start]`, `check`,
//!   and `buckets`, the deployment's set-up step for its key-value buckets).

pub mod budget;
pub mod email;
pub mod handler;
pub mod records;
pub mod settings;

use std::time::Duration;

use runtime::{Context, Service, Then};

pub use handler::Mailer;
pub use settings::Settings;

/// The subcommands beside `run` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Create the mailer's key-value buckets, or update them to the
    /// settings, then exit: a deployment's set-up step, run with a NATS user
    /// that may manage streams (the mailer's own may not).
    Buckets,
}

/// The mailer's buckets as `settings` describe them.
pub fn buckets(settings: &Settings) -> records::Buckets {
    let keep_sent = (settings.links.confirm_within() + chrono::Duration::days(1))
        .to_std()
        .unwrap_or(Duration::from_secs(8 * 86_400));
    records::Buckets {
        replicas: settings.nats.stream.replicas,
        keep_sent,
        window: Duration::from_secs(settings.mailer.per_address_window_secs.max(1)),
        keep_suppressed: Duration::from_secs(settings.mailer.suppress_days.max(1).saturating_mul(86_400)),
        max_bytes: settings.mailer.bucket_max_mb.saturating_mul(1024 * 1024),
        manage: settings.nats.stream.manage,
    }
}

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "mailer";

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = 8085;

impl Service for Mailer {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str = "Mails confirmation and manage links for Signup (double opt-in)";
    const OFFERS_FROM_START: bool = true;
    type Settings = Settings;
    type Command = Command;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let handler = Mailer::new(&settings, context.client.clone())?;
        let waiting = handler.waiting();
        let shutdown = context.shutdown.clone();
        tokio::spawn(async move { waiting.keep_shown(shutdown).await });
        let mailer = &settings.mailer;
        context.consume(&settings.nats.stream, &mailer.consumer, &mailer.http, HTTP_PORT, handler).await
    }

    /// The settings are valid and the SMTP server answers.
    async fn check(settings: &Settings) -> anyhow::Result<()> {
        let client = bus::connect(&settings.nats, CONSUMER_NAME).await?;
        Mailer::new(settings, client)?.smtp_reachable().await
    }

    async fn command(settings: &Settings, Command::Buckets: Command) -> anyhow::Result<Then> {
        bus::connection::check(&settings.nats).await?;
        let client = bus::connect(&settings.nats, CONSUMER_NAME).await?;
        buckets(settings).ensure(&bus::async_nats::jetstream::new(client.clone())).await?;
        client.flush().await?;
        tracing::info!(
            buckets = ?[records::SENT_BUCKET, records::RATE_BUCKET, records::SUPPRESSED_BUCKET],
            "the mailer's buckets are ready"
        );
        Ok(Then::Exit)
    }
}
