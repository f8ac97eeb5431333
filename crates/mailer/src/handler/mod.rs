//! The handler: which mails an event sends, each at most once.
//!
//! # Layout
//! - `mails`: which mails an event sends, with their links and budgets.
//! - `admit`: whether a mail may go now, and sending it.
//! - here: [`Mailer`] and its batch, from events to mails sent.

mod admit;
mod mails;

use std::time::Duration;

use anyhow::Context as _;
use bus::{Delivery, Handler, HandlerError, async_nats};
use chrono::Utc;
use futures::StreamExt as _;
use lettre::message::Mailbox;
use links::Links;
use messages::ProspectEvent;
use smtp::Transport;

use self::admit::Admitted;
use self::mails::Mail;
use crate::Settings;
use crate::budget::{BudgetSettings, Waiting};
use crate::email::Kind;
use crate::records::Records;

/// The handler behind the `mailer` durable consumer.
pub struct Mailer {
    transport: Transport,
    sender: smtp::Sender,
    links: Links,
    records: Records,
    client: async_nats::Client,
    service_timeout: Duration,
    per_address_limit: u32,
    per_address_owner_limit: u32,
    max_age: chrono::Duration,
    confirm_days: i64,
    unconfirmed_budget: BudgetSettings,
    waiting: std::sync::Arc<Waiting>,
    /// Mails under way at once: the SMTP connections (`mailer.smtp.pool_size`).
    under_way: usize,
}

fn store_unavailable(error: anyhow::Error) -> HandlerError {
    HandlerError::Unavailable(error.context("the mailer's key-value store"))
}

impl Mailer {
    /// A mailer for `settings`, asking the `prospects` service over `client`.
    /// Checks the SMTP settings, the sender and the link secret; the SMTP
    /// server itself is first contacted with the first mail.
    pub fn new(settings: &Settings, client: async_nats::Client) -> anyhow::Result<Self> {
        let mailer = &settings.mailer;
        let links = Links::new(&settings.links)?;
        let from: Mailbox =
            mailer.from.parse().with_context(|| format!("mailer.from {:?} is not an e-mail address", mailer.from))?;
        let max_age = settings.links.confirm_within();
        let records =
            Records::new(bus::async_nats::jetstream::new(client.clone()), crate::buckets(settings), links.clone());
        Ok(Self {
            transport: smtp::transport(&mailer.smtp, "mailer.smtp")?,
            sender: smtp::Sender::new(from, &mailer.smtp, "mailer.smtp")?,
            links,
            records,
            service_timeout: Duration::from_millis(mailer.service_timeout_ms),
            per_address_limit: mailer.per_address_limit,
            per_address_owner_limit: mailer.per_address_owner_limit,
            max_age,
            client,
            confirm_days: settings.links.confirm_within_days(),
            unconfirmed_budget: mailer.budget.clone(),
            waiting: std::sync::Arc::default(),
            under_way: usize::try_from(mailer.smtp.pool_size).unwrap_or(1).max(1),
        })
    }

    /// The mails this instance holds back for the budget (the gauges).
    pub fn waiting(&self) -> std::sync::Arc<Waiting> {
        std::sync::Arc::clone(&self.waiting)
    }

    /// Whether the SMTP server answers (for `check`).
    pub async fn smtp_reachable(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.transport.test_connection().await?, "the SMTP server did not accept a NOOP");
        Ok(())
    }
}

fn count(kind: Kind, outcome: &'static str) {
    bus::metrics::counter!("signup_mails_total", "kind" => kind.name(), "outcome" => outcome).increment(1);
}

impl Handler for Mailer {
    type Event = ProspectEvent;

    /// The mails of a batch go through three steps: which mails each event
    /// sends (several events asked about at once), admitted one at a time in
    /// stream order (`admit`: records, suppression, budgets), then
    /// sent up to `mailer.smtp.pool_size` at once. The batch is `Ok` only
    /// once the server took every mail (so the runner acks it, in stream
    /// order); a mail that fails does not stop the others, and each of
    /// them is recorded as it goes, so the runner's retry of the batch one
    /// event at a time sends nothing twice. When any mail met an outage
    /// (the SMTP server or the key-value store away), the batch fails as
    /// unavailable, so the runner holds it whole.
    #[tracing::instrument(name = "mail_batch", skip_all, fields(size = batch.len()))]
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let under_way = self.under_way;
        // The mails admitted in this batch: the same event twice in one
        // batch (published again after the duplicate window) mails once.
        let admitted = std::sync::Mutex::new(std::collections::HashSet::new());
        let admitted = &admitted;
        // Events by their place in the batch, mails owned: the steps'
        // closures take no borrowed arguments.
        let fresh: Vec<usize> = (0..batch.len())
            .filter(|&i| {
                // Its links would not work any more: a replay of old history
                // mails nothing.
                let fresh = (Utc::now() - batch[i].event.occurred_at()) <= self.max_age;
                if !fresh {
                    tracing::debug!(event_id = %batch[i].meta.event_id, "too old to mail");
                }
                fresh
            })
            .collect();
        // Who holds each address, asked once for the batch.
        let holders = self.holders(&fresh.iter().map(|&i| &batch[i]).collect::<Vec<_>>()).await;
        let holders = &holders;
        let outcomes: Vec<Result<(), HandlerError>> = futures::stream::iter(fresh)
            .map(|i| async move {
                let mails = match self.mails(&batch[i], holders).await {
                    Ok(mails) => mails.into_iter().map(|mail| Ok((i, mail))).collect(),
                    Err(error) => vec![Err(error)],
                };
                futures::stream::iter(mails)
            })
            .buffered(under_way)
            .flatten()
            // One at a time, in stream order.
            .map(|mail: Result<(usize, Mail), HandlerError>| async move {
                let (i, mail) = mail?;
                let key = mail.slot.key(batch[i].meta.event_id);
                if !admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key) {
                    count(mail.email.kind, "already_sent");
                    return Ok(None);
                }
                self.admit(&batch[i], mail).await
            })
            .buffered(1)
            .map(|admitted: Result<Option<Admitted>, HandlerError>| async move {
                match admitted? {
                    Some(admitted) => self.deliver(admitted).await,
                    None => Ok(()),
                }
            })
            .buffer_unordered(under_way)
            .collect()
            .await;
        // An outage holds the whole batch (nothing is wrong with its
        // mails); any other failure has the runner try its events one by
        // one.
        let mut failures = outcomes.into_iter().filter_map(Result::err);
        let first = failures.next();
        match first {
            None => Ok(()),
            Some(error @ HandlerError::Unavailable(_)) => Err(error),
            Some(error) => Err(failures.find(|e| matches!(e, HandlerError::Unavailable(_))).unwrap_or(error)),
        }
    }
}
