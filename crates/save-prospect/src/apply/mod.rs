//! Applying prospect events to Postgres: one transaction per batch, a few
//! set-based statements per batch, idempotent by event id, order-tolerant by
//! stream sequence.
//!
//! Ownership rules (double opt-in): a sign-up is saved as its own, pending
//! prospect, even when another prospect holds its address — nothing of that
//! prospect changes. `ProspectConfirmed` confirms it; when a confirmed
//! prospect already holds the address, the confirmed sign-up's details are
//! applied to that prospect instead and the sign-up becomes its alias. Only
//! one confirmed, live prospect holds an address. A requested e-mail change
//! is kept aside until its new address is confirmed (then it arrives as a
//! `ProspectUpdated`).
//!
//! # Layout
//! - here: [`SaveProspect`], the handler: one transaction per batch, then
//!   the streams purged of what an erasure erased.
//! - `batch`: the batch algorithm (locks, applied ids, segments); `rows`:
//!   what the kinds share; `error`: why a batch was not applied.
//! - one module per event kind, each with its SQL: `sign_up`, `confirm`,
//!   `change` (e-mail change requests and link requests), `update`, `erase`.

mod batch;
mod change;
mod confirm;
mod erase;
mod error;
mod rows;
mod sign_up;
mod update;

use batch::apply_batch;
use error::ApplyError;
use rows::IdRow;

use bus::erasure::StreamEraser;
use bus::{Delivery, Handler, HandlerError, Publisher};
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use messages::ProspectEvent;
use uuid::Uuid;

use crate::db::Pool;

/// The handler behind the `save-prospect` durable consumer.
#[derive(Clone)]
pub struct SaveProspect {
    pool: Pool,
    eraser: Option<StreamEraser>,
    publisher: Option<Publisher>,
}

impl SaveProspect {
    /// A handler writing through `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool, eraser: None, publisher: None }
    }

    /// Also publishes the erasures an owner's erasure calls for: of every
    /// other sign-up that holds the erased prospect's address (the service
    /// does; tests of the database alone need not).
    #[must_use]
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Also purges an erased prospect's history from the streams, after the
    /// erasure is committed (the service does; tests of the database alone
    /// need not).
    #[must_use]
    pub fn with_stream_eraser(mut self, eraser: StreamEraser) -> Self {
        self.eraser = Some(eraser);
        self
    }
}

impl Handler for SaveProspect {
    type Event = ProspectEvent;

    #[tracing::instrument(name = "save_batch", skip_all, fields(size = batch.len()))]
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| HandlerError::Unavailable(anyhow::anyhow!(e).context("getting a database connection")))?;
        let applied = conn
            .transaction(async |conn| {
                let done = apply_batch(conn, batch).await?;
                // Before the commit: a purge that fails rolls the batch back,
                // so its redelivery purges again.
                self.purge_change_requests(&done).await.map_err(ApplyError::Streams)
            })
            .await;
        match applied {
            Ok(()) => {
                self.erase_from_streams(&mut conn, batch).await?;
                if batch.iter().any(|d| matches!(d.event, ProspectEvent::Deleted(_))) {
                    self.publish_due_erasures().await;
                }
                Ok(())
            }
            Err(ApplyError::NotYet(reason)) => Err(HandlerError::Transient(anyhow::anyhow!(reason))),
            Err(ApplyError::Streams(error)) => Err(HandlerError::Transient(error)),
            Err(ApplyError::Database(error)) => {
                drop(conn);
                let timed_out = is_statement_timeout(&error);
                let error = anyhow::Error::new(error).context("applying the batch");
                // A failure because the database went away, or did not answer
                // in time (a lock, an overload), is not the events' fault: the
                // runner then waits instead of using up retries.
                Err(if !timed_out && self.database_reachable().await {
                    HandlerError::Transient(error)
                } else {
                    HandlerError::Unavailable(error)
                })
            }
        }
    }
}

impl SaveProspect {
    /// After the batch is committed: for each erasure in it (applied now or
    /// before, so a redelivery finishes an interrupted purge), purges the
    /// events and dead letters holding the prospect's personal data from the
    /// streams, and those of the sign-ups merged into it.
    async fn erase_from_streams(
        &self,
        conn: &mut AsyncPgConnection,
        batch: &[Delivery<ProspectEvent>],
    ) -> Result<(), HandlerError> {
        let Some(eraser) = &self.eraser else { return Ok(()) };
        let erasures: Vec<Uuid> = batch
            .iter()
            .filter(|d| matches!(d.event, ProspectEvent::Deleted(_)))
            .map(|d| d.event.prospect_id())
            .collect();
        if erasures.is_empty() {
            return Ok(());
        }
        let failed =
            |e: anyhow::Error| HandlerError::Transient(e.context("purging an erased prospect from the streams"));
        let merged: Vec<IdRow> =
            diesel::sql_query("SELECT alias_id AS id FROM prospect_aliases WHERE prospect_id = ANY($1)")
                .bind::<Array<SqlUuid>, _>(&erasures)
                .load(conn)
                .await
                .map_err(|e| failed(e.into()))?;
        for prospect in erasures.iter().copied().chain(merged.iter().map(|w| w.id)) {
            let purged = eraser.erase(prospect).await.map_err(failed)?;
            tracing::debug!(%prospect, purged, "erased prospect's history purged from the streams");
        }
        Ok(())
    }

    /// Purges each prospect's e-mail change requests that are done with
    /// (`(prospect, before)`: those stored before that stream sequence).
    async fn purge_change_requests(&self, done: &[(Uuid, u64)]) -> anyhow::Result<()> {
        let Some(eraser) = &self.eraser else { return Ok(()) };
        for (prospect, before) in done {
            let purged = eraser.purge_change_requests(*prospect, *before).await?;
            tracing::debug!(%prospect, purged, "e-mail change requests done with purged from the streams");
        }
        Ok(())
    }

    /// Publishes the erasures that owners' erasures called for; what fails
    /// now is published by the next expiry sweep.
    async fn publish_due_erasures(&self) {
        let Some(publisher) = &self.publisher else { return };
        if let Err(error) = crate::expiry::publish_due_erasures(&self.pool, publisher).await {
            tracing::warn!(error = %format!("{error:#}"), "erasures by address not published yet; the next sweep does");
        }
    }

    /// Whether a fresh connection can run a query within two seconds.
    async fn database_reachable(&self) -> bool {
        let probe = async {
            let mut conn = self.pool.get().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        };
        matches!(tokio::time::timeout(std::time::Duration::from_secs(2), probe).await, Ok(Some(_)))
    }
}

/// Whether Postgres cancelled a statement because it ran past the
/// connection's `statement_timeout`. diesel-async keeps the SQLSTATE (57014)
/// to itself, so this reads Postgres' message (the server's `lc_messages`
/// must be English, the default).
fn is_statement_timeout(error: &diesel::result::Error) -> bool {
    matches!(error, diesel::result::Error::DatabaseError(_, info) if info.message().contains("statement timeout"))
}
