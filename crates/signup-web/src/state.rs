//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use bus::async_nats::Client;
use bus::async_nats::jetstream::{self, kv};
use bus::request::{RequestError, ask};
use bus::settings::StreamSettings;
use bus::{EventContext, Publisher};
use links::Links;
use messages::EmailAddress;
use messages::service::{
    self as contract, AddressRef, ExportProspect, FindByAddress, FoundProspect, GetProspect, ProspectExport,
    ProspectRef, ProspectView, Status, StatusOf,
};
use messages::streams::SUPPRESSED_BUCKET;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::reference_data::ReferenceData;

/// Shared by all workers: one NATS connection, the reference data, the link
/// key.
pub struct AppState {
    /// Publishes events over the one shared NATS connection.
    pub publisher: Publisher,
    /// Countries and roles offered and accepted.
    pub reference: Arc<ReferenceData>,
    /// Checks (and, for the manage page itself, makes) the links mailed to
    /// prospects.
    pub links: Links,
    /// How many days a sign-up waits for confirmation, for the pages.
    pub confirm_days: i64,
    /// JetStream API access for readiness checks.
    pub jetstream: jetstream::Context,
    /// The stream that must exist for sign-ups to be accepted.
    pub stream: StreamSettings,
    /// Longest wait for the `prospects` service.
    pub service_timeout: Duration,
    /// Publishes that answer before they are done (a lost link's request),
    /// waited for when the server stops.
    pub background: TaskTracker,
    /// Cancelled when the server stops: background publishes try once more,
    /// then give up.
    pub shutdown: CancellationToken,
    /// The suppression list (the mailer's bucket, which a deployment makes
    /// with `mailer buckets`), opened on first use.
    pub suppressed: OnceCell<kv::Store>,
    /// The bot check's keys and settings.
    pub bot_check: crate::bot_check::BotCheck,
    /// The proofs used already.
    pub used_proofs: crate::bot_check::UsedProofs,
    /// The privacy notice the form shows and sign-ups agree to.
    pub privacy: crate::privacy::PrivacyNotice,
}

impl AppState {
    /// The reference lists to use now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.reference.current()
    }

    fn client(&self) -> &Client {
        self.publisher.client()
    }

    /// Where a sign-up is, from the `prospects` service.
    pub async fn status(&self, prospect_id: Uuid) -> Result<Status, RequestError> {
        let reply = ask::<StatusOf>(self.client(), &ProspectRef { prospect_id }, self.service_timeout).await?;
        Ok(reply.status)
    }

    /// A live prospect's details, from the `prospects` service.
    pub async fn prospect(&self, prospect_id: Uuid) -> Result<ProspectView, RequestError> {
        ask::<GetProspect>(self.client(), &ProspectRef { prospect_id }, self.service_timeout).await
    }

    /// Everything held about a live prospect (`prospects.export`).
    pub async fn export(&self, prospect_id: Uuid) -> Result<ProspectExport, RequestError> {
        ask::<ExportProspect>(self.client(), &ProspectRef { prospect_id }, self.service_timeout).await
    }

    /// Publishes a lost link's `ManageLinkRequested` in the background, with
    /// one event id however often it is retried (stored once): retried, with
    /// pauses, until JetStream takes it, for at most ten minutes, or until
    /// the server stops (one last try then). The visitor has their answer
    /// already, the same as for an unknown address.
    pub fn request_link_later(&self, prospect_id: Uuid, email: EmailAddress, traceparent: Option<String>) {
        let publisher = self.publisher.clone();
        let shutdown = self.shutdown.clone();
        self.background.spawn(async move {
            let event = crate::submit::link_request(prospect_id, email);
            let context = EventContext::new().with_traceparent(traceparent);
            let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
            let mut backoff = bus::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                let stopping = shutdown.is_cancelled();
                match crate::submit::publish_in(&publisher, &event, context.clone()).await {
                    Ok(()) => return,
                    Err(_) if stopping || tokio::time::Instant::now() >= give_up => {
                        tracing::error!(%prospect_id, event_id = %context.id,
                            "a lost link's request could not be stored: no mail goes out for it");
                        bus::metrics::counter!("signup_link_requests_lost_total").increment(1);
                        return;
                    }
                    // Cut short by a shutdown: the next turn is the last try.
                    Err(_) => drop(backoff.wait(&shutdown).await),
                }
            }
        });
    }

    /// Puts `address` on the suppression list, as its digest
    /// (`links::Links::suppression_key`) with the time: the mailer sends it
    /// nothing more about a sign-up until the entry ends.
    pub async fn suppress(&self, address: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let bucket =
            self.suppressed.get_or_try_init(|| self.jetstream.get_key_value(SUPPRESSED_BUCKET)).await.with_context(
                || format!("opening the key-value bucket {SUPPRESSED_BUCKET} (mailer buckets makes it)"),
            )?;
        let now = chrono::Utc::now().timestamp_millis().to_string();
        bucket.put(self.links.suppression_key(address), now.into()).await.context("writing the suppression")?;
        Ok(())
    }

    /// The live prospect holding `email`, if any (`None` for "not found").
    pub async fn holder(&self, email: &EmailAddress) -> Result<Option<FoundProspect>, RequestError> {
        match ask::<FindByAddress>(self.client(), &AddressRef { email: email.clone() }, self.service_timeout).await {
            Ok(found) => Ok(Some(found)),
            Err(RequestError::Service { code: contract::NOT_FOUND, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
