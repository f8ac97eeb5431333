//! Applying prospect events to Postgres: one transaction per batch,
//! idempotent by event id, order-tolerant by stream sequence.

use std::collections::HashSet;

use bus::{Delivery, Handler, HandlerError};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use messages::{
    ProspectDeleted, ProspectDetails, ProspectEvent, ProspectSignedUp, ProspectUpdated,
};
use uuid::Uuid;

use crate::db::Pool;
use crate::schema::{applied_events, prospects};

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
        let mut conn = self.pool.get().await.map_err(|e| {
            HandlerError::Transient(anyhow::anyhow!(e).context("getting a database connection"))
        })?;
        conn.transaction(async |conn| apply_batch(conn, batch).await)
            .await
            .map_err(|e| {
                HandlerError::Transient(anyhow::Error::new(e).context("applying the batch"))
            })
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
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    batch: &[Delivery<ProspectEvent>],
) -> QueryResult<()> {
    let event_ids: Vec<Uuid> = batch.iter().map(|d| d.meta.event_id).collect();
    let mut done: HashSet<Uuid> = applied_events::table
        .filter(applied_events::event_id.eq_any(&event_ids))
        .select(applied_events::event_id)
        .load(conn)
        .await?
        .into_iter()
        .collect();
    let prospect_ids: Vec<Uuid> = batch.iter().map(|d| d.event.prospect_id()).collect();
    // Prospects that have a row (live or tombstone): a sign-up for one of
    // them is a replay and changes nothing.
    let mut known: HashSet<Uuid> = prospects::table
        .filter(prospects::id.eq_any(&prospect_ids))
        .select(prospects::id)
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
        match &delivery.event {
            ProspectEvent::SignedUp(event) if !known.contains(&prospect_id) => {
                sign_up(conn, event, seq).await?;
                known.insert(prospect_id);
            }
            ProspectEvent::SignedUp(_) => {}
            ProspectEvent::Updated(event) => update(conn, event, seq).await?,
            ProspectEvent::Deleted(event) => {
                delete(conn, event, seq).await?;
                known.insert(prospect_id);
            }
        }
        tracing::info!(event_id = %meta.event_id, %prospect_id, ce_type = %meta.ce_type, stream_sequence = meta.stream_sequence, "event applied");
        applied.push(AppliedEvent {
            event_id: meta.event_id,
            prospect_id,
            stream_seq: seq,
        });
    }
    // Three binds per row; Postgres allows 65,535 per statement.
    for chunk in applied.chunks(10_000) {
        diesel::insert_into(applied_events::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Inserts the prospect; a prospect with the same e-mail (any case) is
/// updated instead, unless it has seen a later event or was deleted.
const SIGN_UP: &str = "\
    INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                           signed_up_at, updated_at, last_event_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
    ON CONFLICT (email_key) DO UPDATE SET \
        email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name, \
        company_name = excluded.company_name, country_code = excluded.country_code, \
        role_code = excluded.role_code, updated_at = excluded.updated_at, \
        last_event_seq = excluded.last_event_seq \
    WHERE prospects.last_event_seq < excluded.last_event_seq AND prospects.deleted_at IS NULL";

/// Replaces the details of a live prospect, unless a later event already
/// touched it or the new e-mail belongs to another prospect.
const UPDATE: &str = "\
    UPDATE prospects SET email = $2, first_name = $3, last_name = $4, company_name = $5, \
           country_code = $6, role_code = $7, updated_at = $8, last_event_seq = $9 \
    WHERE id = $1 AND deleted_at IS NULL AND last_event_seq < $9 \
      AND NOT EXISTS (SELECT 1 FROM prospects other WHERE other.email_key = lower($2) AND other.id <> $1)";

async fn sign_up(
    conn: &mut AsyncPgConnection,
    event: &ProspectSignedUp,
    seq: i64,
) -> QueryResult<()> {
    write_details(
        conn,
        SIGN_UP,
        event.prospect_id,
        &event.details,
        event.signed_up_at,
        seq,
    )
    .await
    .map(drop)
}

async fn update(
    conn: &mut AsyncPgConnection,
    event: &ProspectUpdated,
    seq: i64,
) -> QueryResult<()> {
    let changed = write_details(
        conn,
        UPDATE,
        event.prospect_id,
        &event.details,
        event.updated_at,
        seq,
    )
    .await?;
    if changed == 0 {
        tracing::warn!(prospect_id = %event.prospect_id, "update not applied: prospect unknown, deleted, newer, or e-mail taken");
    }
    Ok(())
}

/// Runs `sql` with the binds [`SIGN_UP`] and [`UPDATE`] share: `$1` the
/// prospect id, `$2`–`$7` the details, `$8` the event time, `$9` its stream
/// sequence. Returns the rows changed.
async fn write_details(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
    prospect_id: Uuid,
    d: &ProspectDetails,
    at: DateTime<Utc>,
    seq: i64,
) -> QueryResult<usize> {
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(prospect_id)
        .bind::<Text, _>(&d.email)
        .bind::<Text, _>(&d.first_name)
        .bind::<Text, _>(&d.last_name)
        .bind::<Nullable<Text>, _>(d.company_name.as_deref())
        .bind::<Text, _>(&d.country.code)
        .bind::<Text, _>(&d.role.code)
        .bind::<Timestamptz, _>(at)
        .bind::<BigInt, _>(seq)
        .execute(conn)
        .await
}

/// Erases the personal data and keeps a tombstone; when the prospect has no
/// row yet, the tombstone is created so a late sign-up cannot revive it.
async fn delete(
    conn: &mut AsyncPgConnection,
    event: &ProspectDeleted,
    seq: i64,
) -> QueryResult<()> {
    let erased = diesel::update(
        prospects::table
            .find(event.prospect_id)
            .filter(prospects::deleted_at.is_null()),
    )
    .set((
        prospects::email.eq(None::<String>),
        prospects::first_name.eq(None::<String>),
        prospects::last_name.eq(None::<String>),
        prospects::company_name.eq(None::<String>),
        prospects::country_code.eq(None::<String>),
        prospects::role_code.eq(None::<String>),
        prospects::deleted_at.eq(Some(event.deleted_at)),
        prospects::updated_at.eq(event.deleted_at),
        prospects::last_event_seq.eq(seq),
    ))
    .execute(conn)
    .await?;
    if erased == 0 {
        insert_tombstone(conn, event.prospect_id, event.deleted_at, seq).await?;
    }
    Ok(())
}

async fn insert_tombstone(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    at: DateTime<Utc>,
    seq: i64,
) -> QueryResult<()> {
    diesel::insert_into(prospects::table)
        .values((
            prospects::id.eq(id),
            prospects::signed_up_at.eq(at),
            prospects::updated_at.eq(at),
            prospects::deleted_at.eq(Some(at)),
            prospects::last_event_seq.eq(seq),
        ))
        .on_conflict(prospects::id)
        .do_nothing()
        .execute(conn)
        .await
        .map(drop)
}
