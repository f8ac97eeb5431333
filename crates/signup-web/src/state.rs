//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use bus::Publisher;
use bus::async_nats::{Client, jetstream};
use bus::request::{RequestError, ask};
use bus::settings::StreamSettings;
use links::Links;
use messages::service::{
    self as contract, AddressRef, FindByAddress, FoundProspect, GetProspect, ProspectRef, ProspectView, Status,
    StatusOf,
};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::reference::ReferenceData;

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

    /// The live prospect holding `email`, if any (`None` for "not found").
    pub async fn holder(&self, email: &str) -> Result<Option<FoundProspect>, RequestError> {
        match ask::<FindByAddress>(self.client(), &AddressRef { email: email.to_owned() }, self.service_timeout).await {
            Ok(found) => Ok(Some(found)),
            Err(RequestError::Service { code: contract::NOT_FOUND, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
