//! Applying prospect events to Postgres: one transaction per batch,
//! idempotent by event id, order-tolerant by stream sequence.

use std::collections::HashSet;

use bus::{Delivery, Handler, HandlerError};
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use messages::{ProspectDeleted, ProspectDetails, ProspectEvent, ProspectSignedUp, ProspectUpdated};
use uuid::Uuid;

use crate::db::Pool;
use crate::schema::{applied_events, prospect_aliases, prospects};

/// The handler behind the `save-prospect` durable consumer.
#[derive(Clone)]
pub struct SaveProspect {
    pool: Pool,
}

impl SaveProspect {
    /// A handler writing through `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
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
        match conn.transaction(async |conn| apply_batch(conn, batch).await).await {
            Ok(()) => Ok(()),
            Err(error) => {
                drop(conn);
                let error = anyhow::Error::new(error).context("applying the batch");
                // A failure because the database went away is not the events'
                // fault: the runner then waits instead of using up retries.
                Err(if self.database_reachable().await {
                    HandlerError::Transient(error)
                } else {
                    HandlerError::Unavailable(error)
                })
            }
        }
    }
}

impl SaveProspect {
    /// Whether a fresh connection can run a query within two seconds.
    async fn database_reachable(&self) -> bool {
        let probe = async {
            let mut conn = self.pool.get().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        };
        matches!(tokio::time::timeout(std::time::Duration::from_secs(2), probe).await, Ok(Some(_)))
    }
}

#[derive(Insertable)]
#[diesel(table_name = applied_events)]
struct AppliedEvent {
    event_id: Uuid,
    prospect_id: Uuid,
    stream_seq: i64,
}

/// Applies every event of the batch that was not applied before, in stream
/// order, and records their ids — all inside the caller's transaction.
///
/// Order tolerance: the batch first takes a transaction-scoped advisory lock
/// per prospect (in a fixed order, so two instances cannot deadlock on them),
/// so no other instance changes those prospects until this commits. Each event
/// then compares its stream sequence with the row's `last_event_seq`: older
/// events change nothing, and a deleted prospect stays deleted.
async fn apply_batch(conn: &mut AsyncPgConnection, batch: &[Delivery<ProspectEvent>]) -> QueryResult<()> {
    lock_prospects(conn, batch.iter().map(|d| d.event.prospect_id())).await?;
    // Read after the locks: an instance that applied one of these events
    // has committed by now.
    let event_ids: Vec<Uuid> = batch.iter().map(|d| d.meta.event_id).collect();
    let mut done: HashSet<Uuid> = applied_events::table
        .filter(applied_events::event_id.eq_any(&event_ids))
        .select(applied_events::event_id)
        .load(conn)
        .await?
        .into_iter()
        .collect();

    let mut applied = Vec::with_capacity(batch.len());
    for delivery in batch {
        let meta = &delivery.meta;
        if !done.insert(meta.event_id) {
            tracing::debug!(event_id = %meta.event_id, "already applied; skipping");
            continue;
        }
        let seq = i64::try_from(meta.stream_sequence).unwrap_or(i64::MAX);
        let prospect_id = delivery.event.prospect_id();
        let state = RowState::load(conn, prospect_id).await?;
        let outcome = match &delivery.event {
            ProspectEvent::SignedUp(event) => sign_up(conn, event, seq, state).await?,
            ProspectEvent::Updated(event) => update(conn, event, seq, state).await?,
            ProspectEvent::Deleted(event) => delete(conn, event, seq, state).await?,
        };
        tracing::info!(event_id = %meta.event_id, %prospect_id, ce_type = %meta.ce_type,
            stream_sequence = meta.stream_sequence, outcome, "event applied");
        applied.push(AppliedEvent { event_id: meta.event_id, prospect_id, stream_seq: seq });
    }
    // Three binds per row; Postgres allows 65,535 per statement.
    for chunk in applied.chunks(10_000) {
        diesel::insert_into(applied_events::table).values(chunk).execute(conn).await?;
    }
    Ok(())
}

/// Takes a transaction-scoped advisory lock for each prospect, in ascending
/// key order.
async fn lock_prospects(conn: &mut AsyncPgConnection, ids: impl Iterator<Item = Uuid>) -> QueryResult<()> {
    // The random tail of a UUIDv7; a collision only serialises two prospects.
    let mut keys: Vec<i64> = ids
        .map(|id| {
            let bytes = id.as_bytes();
            i64::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]])
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    diesel::sql_query(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY 1) AS ordered",
    )
    .bind::<Array<BigInt>, _>(keys)
    .execute(conn)
    .await
    .map(drop)
}

/// What the database holds about a prospect before an event is applied.
#[derive(Debug, Clone, Copy)]
struct RowState {
    deleted: bool,
    last_event_seq: i64,
}

impl RowState {
    async fn load(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Self>> {
        let row: Option<(Option<DateTime<Utc>>, i64)> = prospects::table
            .find(id)
            .select((prospects::deleted_at, prospects::last_event_seq))
            .first(conn)
            .await
            .optional()?;
        Ok(row.map(|(deleted_at, last_event_seq)| Self { deleted: deleted_at.is_some(), last_event_seq }))
    }
}

diesel::define_sql_function! {
    /// Postgres `lower()`, the same folding as the generated `email_key`.
    fn lower(text: Text) -> Text;
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// A new prospect is inserted; one whose e-mail (in any case) is taken
/// updates that prospect instead, and its id becomes an alias of it. A
/// prospect that already has a row (an update or a delete got there first,
/// or this is a replay) keeps it: only its sign-up time is corrected.
async fn sign_up(
    conn: &mut AsyncPgConnection,
    event: &ProspectSignedUp,
    seq: i64,
    state: Option<RowState>,
) -> QueryResult<&'static str> {
    if state.is_some() {
        diesel::update(prospects::table.find(event.prospect_id))
            .set(
                prospects::signed_up_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>("LEAST(signed_up_at, ")
                    .bind::<Timestamptz, _>(event.signed_up_at)
                    .sql(")")),
            )
            .execute(conn)
            .await?;
        return Ok("prospect already known");
    }
    let upserted = write_details(SIGN_UP, event.prospect_id, &event.details, event.signed_up_at, seq)
        .get_result::<Id>(conn)
        .await
        .optional()?;
    let target = match upserted {
        Some(Id { id }) => id,
        // The e-mail belongs to a prospect that has seen a later event.
        None => {
            prospects::table
                .filter(prospects::email_key.eq(event.details.email.to_lowercase()))
                .select(prospects::id)
                .first(conn)
                .await?
        }
    };
    if target == event.prospect_id {
        return Ok("inserted");
    }
    diesel::insert_into(prospect_aliases::table)
        .values((prospect_aliases::alias_id.eq(event.prospect_id), prospect_aliases::prospect_id.eq(target)))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok("merged into the prospect with the same e-mail")
}

/// Replaces the details, unless the prospect was deleted, a later event was
/// applied already, or the new e-mail belongs to another prospect. An update
/// that overtook its sign-up creates the row.
async fn update(
    conn: &mut AsyncPgConnection,
    event: &ProspectUpdated,
    seq: i64,
    state: Option<RowState>,
) -> QueryResult<&'static str> {
    let sql = match state {
        Some(RowState { deleted: true, .. }) => return Ok("ignored: prospect deleted"),
        Some(RowState { last_event_seq, .. }) if last_event_seq >= seq => {
            return Ok("ignored: a later event was applied");
        }
        Some(_) => UPDATE,
        None => INSERT_UPDATED,
    };
    let changed = write_details(sql, event.prospect_id, &event.details, event.updated_at, seq).execute(conn).await?;
    if changed == 0 {
        tracing::warn!(prospect_id = %event.prospect_id, "update not applied: its e-mail belongs to another prospect");
        return Ok("ignored: e-mail taken");
    }
    Ok("updated")
}

/// Erases the personal data and keeps a tombstone; a prospect with no row yet
/// gets the tombstone alone, so a late sign-up cannot bring it back.
async fn delete(
    conn: &mut AsyncPgConnection,
    event: &ProspectDeleted,
    seq: i64,
    state: Option<RowState>,
) -> QueryResult<&'static str> {
    match state {
        Some(RowState { deleted: true, .. }) => Ok("ignored: already deleted"),
        Some(_) => {
            diesel::update(prospects::table.find(event.prospect_id))
                .set((
                    prospects::email.eq(None::<String>),
                    prospects::first_name.eq(None::<String>),
                    prospects::last_name.eq(None::<String>),
                    prospects::company_name.eq(None::<String>),
                    prospects::country_code.eq(None::<String>),
                    prospects::role_code.eq(None::<String>),
                    prospects::deleted_at.eq(Some(event.deleted_at)),
                    prospects::updated_at.eq(event.deleted_at),
                    prospects::last_event_seq
                        .eq(diesel::dsl::sql::<BigInt>("GREATEST(last_event_seq, ").bind::<BigInt, _>(seq).sql(")")),
                ))
                .execute(conn)
                .await?;
            Ok("erased")
        }
        None => {
            diesel::insert_into(prospects::table)
                .values((
                    prospects::id.eq(event.prospect_id),
                    prospects::signed_up_at.eq(event.deleted_at),
                    prospects::updated_at.eq(event.deleted_at),
                    prospects::deleted_at.eq(Some(event.deleted_at)),
                    prospects::last_event_seq.eq(seq),
                ))
                .execute(conn)
                .await?;
            Ok("tombstone created")
        }
    }
}

/// Inserts a prospect; when its e-mail (any case) is taken, updates that
/// prospect instead unless it has seen a later event or was deleted. Returns
/// the id of the row written.
const SIGN_UP: &str = "\
    INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                           signed_up_at, updated_at, last_event_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
    ON CONFLICT (email_key) DO UPDATE SET \
        email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name, \
        company_name = excluded.company_name, country_code = excluded.country_code, \
        role_code = excluded.role_code, updated_at = excluded.updated_at, \
        last_event_seq = excluded.last_event_seq \
    WHERE prospects.last_event_seq < excluded.last_event_seq AND prospects.deleted_at IS NULL \
    RETURNING id";

/// Replaces a prospect's details unless the new e-mail belongs to another
/// prospect.
const UPDATE: &str = "\
    UPDATE prospects SET email = $2, first_name = $3, last_name = $4, company_name = $5, \
           country_code = $6, role_code = $7, updated_at = $8, last_event_seq = $9 \
    WHERE id = $1 AND deleted_at IS NULL AND last_event_seq < $9 \
      AND NOT EXISTS (SELECT 1 FROM prospects other WHERE other.email_key = lower($2) AND other.id <> $1)";

/// Creates the row of a prospect whose update arrived before its sign-up
/// (nothing when the e-mail belongs to another prospect).
const INSERT_UPDATED: &str = "\
    INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                           signed_up_at, updated_at, last_event_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
    ON CONFLICT DO NOTHING";

/// `sql` with the binds the statements above share: `$1` the prospect id,
/// `$2`–`$7` the details, `$8` the event time, `$9` its stream sequence.
fn write_details<'a>(
    sql: &'static str,
    prospect_id: Uuid,
    d: &'a ProspectDetails,
    at: DateTime<Utc>,
    seq: i64,
) -> diesel::query_builder::BoxedSqlQuery<'a, Pg, diesel::query_builder::SqlQuery> {
    diesel::sql_query(sql)
        .into_boxed()
        .bind::<SqlUuid, _>(prospect_id)
        .bind::<Text, _>(&d.email)
        .bind::<Text, _>(&d.first_name)
        .bind::<Text, _>(&d.last_name)
        .bind::<Nullable<Text>, _>(d.company_name.as_deref())
        .bind::<Text, _>(&d.country.code)
        .bind::<Text, _>(&d.role.code)
        .bind::<Timestamptz, _>(at)
        .bind::<BigInt, _>(seq)
}
