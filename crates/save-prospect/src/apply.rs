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

use std::collections::{HashMap, HashSet};

use bus::erasure::StreamEraser;
use bus::{Delivery, Handler, HandlerError, Publisher};
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use messages::{Consent, ProspectConfirmed, ProspectEvent, ProspectSignedUp};
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
        let merged: Vec<Written> =
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

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The database failed or refused a statement.
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// An event refers to a prospect whose sign-up is not saved yet (it
    /// overtook it, or the sign-up is being retried): try again later.
    #[error("{0}")]
    NotYet(String),
    /// The streams could not be purged of what the batch is done with.
    #[error("purging the streams: {0:#}")]
    Streams(anyhow::Error),
}

/// Applies every event of the batch that was not applied before, in stream
/// order, and records their ids — all inside the caller's transaction, with a
/// fixed number of statements per batch rather than per event.
///
/// Order tolerance: the batch first takes a transaction-scoped advisory lock
/// per prospect (in a fixed order, so two instances cannot deadlock on them),
/// so no other instance changes those prospects until this commits. Each event
/// then compares its stream sequence with the row's `last_event_seq`: older
/// events change nothing, and a deleted prospect stays deleted. (Sign-ups need
/// the lock too: without it, an erasure applied at the same time by another
/// instance could find no row yet, write its tombstone after the sign-up's
/// row, and leave the data.) A segment of sign-ups is one upsert, without
/// reading the rows first.
///
/// Set-based: the new events are cut into [`segments`] — runs of one event
/// kind in which no prospect and no e-mail address appears twice — and each
/// segment is applied with one statement per outcome over arrays of values
/// (`unnest`). Inside a segment no two events touch the same row, so one
/// statement gives the same result as applying them one by one; under load a
/// batch of sign-ups is a single segment.
///
/// Returns the e-mail change requests the batch is done with (replaced by a
/// newer one, or applied): `(prospect, before)`, every request of that
/// prospect stored before that stream sequence.
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    batch: &[Delivery<ProspectEvent>],
) -> Result<Vec<(Uuid, u64)>, ApplyError> {
    let mut done = Vec::new();
    lock_prospects(conn, batch.iter().map(|d| d.event.prospect_id())).await?;
    // Record the events as applied; those recorded before (by an earlier
    // delivery, or twice in this batch) come back as not new. Done after the
    // locks, so an instance that applied one of them has committed by now;
    // undone with everything else if the transaction fails.
    let fresh_ids: HashSet<Uuid> = diesel::sql_query(
        "INSERT INTO applied_events (event_id, prospect_id, stream_seq) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) ON CONFLICT DO NOTHING RETURNING event_id AS id",
    )
    .bind::<Array<SqlUuid>, _>(batch.iter().map(|d| d.meta.event_id).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(ids(&batch.iter().collect::<Vec<_>>()))
    .bind::<Array<BigInt>, _>(batch.iter().map(seq).collect::<Vec<_>>())
    .load::<Written>(conn)
    .await?
    .into_iter()
    .map(|w| w.id)
    .collect();
    let mut seen = HashSet::with_capacity(batch.len());
    let fresh: Vec<&Delivery<ProspectEvent>> =
        batch.iter().filter(|d| fresh_ids.contains(&d.meta.event_id) && seen.insert(d.meta.event_id)).collect();
    if fresh.len() < batch.len() {
        tracing::debug!(skipped = batch.len() - fresh.len(), "events already applied; skipping them");
    }
    // A sign-up merged into the prospect holding its address lives on under
    // that prospect's id; a later event of its own changes nothing.
    let mut merged = merged_sign_ups(conn, ids(&fresh)).await?;
    for segment in segments(&fresh) {
        let segment: Vec<&Delivery<ProspectEvent>> = segment
            .iter()
            .copied()
            .filter(|d| {
                let keep = !merged.contains(&d.event.prospect_id());
                if !keep {
                    outcome(d, "ignored: merged into the prospect holding its address");
                }
                keep
            })
            .collect();
        let segment = segment.as_slice();
        // (`<[_]>::first`: diesel's `first` is in scope too.)
        let Some(first) = <[_]>::first(segment) else { continue };
        // Sign-ups are one upsert, and a link request at most moves a time:
        // neither reads the rows.
        let states = match first.event {
            ProspectEvent::SignedUp(_) | ProspectEvent::ManageLinkRequested(_) => HashMap::new(),
            _ => RowState::load(conn, ids(segment)).await?,
        };
        match first.event {
            ProspectEvent::SignedUp(_) => sign_up(conn, segment).await?,
            ProspectEvent::Confirmed(_) => confirm(conn, segment, &states, &mut merged).await?,
            ProspectEvent::EmailChangeRequested(_) => done.extend(request_change(conn, segment, &states).await?),
            ProspectEvent::ManageLinkRequested(_) => done.extend(request_link(conn, segment).await?),
            // An address one prospect gives up and another takes in the same
            // segment: only the order of the events can say who gets it.
            ProspectEvent::Updated(_) if segment.len() > 1 && emails_move_within(segment, &states) => {
                for single in segment.chunks(1) {
                    let states = RowState::load(conn, ids(single)).await?;
                    done.extend(update(conn, single, &states).await?);
                }
            }
            ProspectEvent::Updated(_) => done.extend(update(conn, segment, &states).await?),
            ProspectEvent::Deleted(_) => delete(conn, segment, &states).await?,
        }
    }
    Ok(done)
}

/// Cuts the events, in order, into runs of one kind in which each prospect
/// and each e-mail address (case-insensitive) appears at most once.
fn segments<'a, 'b>(events: &'b [&'a Delivery<ProspectEvent>]) -> Vec<&'b [&'a Delivery<ProspectEvent>]> {
    let mut out = Vec::new();
    let (mut start, mut ids, mut emails) = (0, HashSet::new(), HashSet::new());
    for (index, delivery) in events.iter().enumerate() {
        let email = delivery.event.details().map(|d| d.email.to_lowercase());
        let same_kind =
            index == start || std::mem::discriminant(&events[start].event) == std::mem::discriminant(&delivery.event);
        let clash = ids.contains(&delivery.event.prospect_id()) || email.as_ref().is_some_and(|e| emails.contains(e));
        if !same_kind || clash {
            out.push(&events[start..index]);
            (start, ids, emails) = (index, HashSet::new(), HashSet::new());
        }
        ids.insert(delivery.event.prospect_id());
        emails.extend(email);
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// Whether an update of the segment takes an address that another prospect
/// of the segment holds now.
fn emails_move_within(segment: &[&Delivery<ProspectEvent>], states: &HashMap<Uuid, RowState>) -> bool {
    let holders: HashMap<String, Uuid> = segment
        .iter()
        .filter_map(|d| {
            let key = states.get(&d.event.prospect_id())?.email_key.as_ref()?;
            Some((key.to_lowercase(), d.event.prospect_id()))
        })
        .collect();
    segment.iter().any(|d| {
        d.event.details().is_some_and(|details| {
            holders.get(&details.email.to_lowercase()).is_some_and(|holder| *holder != d.event.prospect_id())
        })
    })
}

fn seq(delivery: &Delivery<ProspectEvent>) -> i64 {
    i64::try_from(delivery.meta.stream_sequence).unwrap_or(i64::MAX)
}

fn outcome(delivery: &Delivery<ProspectEvent>, outcome: &str) {
    tracing::debug!(event_id = %delivery.meta.event_id, prospect_id = %delivery.event.prospect_id(),
        ce_type = %delivery.meta.ce_type, stream_sequence = delivery.meta.stream_sequence, outcome, "event applied");
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
#[derive(Debug, Clone)]
struct RowState {
    deleted: bool,
    confirmed: bool,
    last_event_seq: i64,
    email_key: Option<String>,
}

impl RowState {
    /// The rows of these prospects, by id; a prospect without one is absent.
    async fn load(conn: &mut AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<HashMap<Uuid, Self>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
            #[diesel(sql_type = Nullable<Timestamptz>)]
            deleted_at: Option<DateTime<Utc>>,
            #[diesel(sql_type = BigInt)]
            last_event_seq: i64,
            #[diesel(sql_type = Nullable<Text>)]
            email_key: Option<String>,
            #[diesel(sql_type = Nullable<Timestamptz>)]
            confirmed_at: Option<DateTime<Utc>>,
        }
        // A join with the array, planned for each call: a cached generic
        // plan for `id = ANY($1)` can fall back to scanning the table.
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT p.id, p.deleted_at, p.last_event_seq, p.email_key, p.confirmed_at \
             FROM unnest($1::uuid[]) AS u(id) JOIN prospects p ON p.id = u.id",
        )
        .bind::<Array<SqlUuid>, _>(ids)
        .load(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    Self {
                        deleted: r.deleted_at.is_some(),
                        confirmed: r.confirmed_at.is_some(),
                        last_event_seq: r.last_event_seq,
                        email_key: r.email_key,
                    },
                )
            })
            .collect())
    }
}

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// The prospect ids of the events, in order.
fn ids(events: &[&Delivery<ProspectEvent>]) -> Vec<Uuid> {
    events.iter().map(|d| d.event.prospect_id()).collect()
}

/// New prospects are inserted, pending confirmation — also when another
/// prospect holds their address: that prospect is not touched. A prospect
/// that already has a row (an update or a delete got there first, or this is
/// a replay) keeps it: only its sign-up time is corrected.
async fn sign_up(conn: &mut AsyncPgConnection, segment: &[&Delivery<ProspectEvent>]) -> QueryResult<()> {
    // One upsert may not touch a row twice: `segments` never puts a prospect
    // twice in one segment.
    debug_assert!(
        segment.iter().map(|d| d.event.prospect_id()).collect::<HashSet<_>>().len() == segment.len(),
        "a segment holds each prospect once"
    );
    write_details(SIGN_UP, segment).execute(conn).await?;
    segment.iter().for_each(|d| outcome(d, "inserted pending confirmation, or sign-up time corrected"));
    Ok(())
}

/// The ids among `ids` of sign-ups merged into the prospect that held their
/// address.
async fn merged_sign_ups(conn: &mut AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<HashSet<Uuid>> {
    Ok(diesel::sql_query(
        "SELECT a.alias_id AS id FROM unnest($1::uuid[]) AS u(id) JOIN prospect_aliases a ON a.alias_id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load::<Written>(conn)
    .await?
    .into_iter()
    .map(|w| w.id)
    .collect())
}

/// Confirms sign-ups, one at a time (confirmations are few). When another
/// confirmed prospect holds the address, that prospect takes the confirmed
/// sign-up's details and the sign-up becomes its alias; otherwise the
/// sign-up itself is confirmed. A confirmation whose sign-up is not saved yet
/// waits for it.
async fn confirm(
    conn: &mut AsyncPgConnection,
    segment: &[&Delivery<ProspectEvent>],
    states: &HashMap<Uuid, RowState>,
    merged: &mut HashSet<Uuid>,
) -> Result<(), ApplyError> {
    for delivery in segment {
        let (id, at) = (delivery.event.prospect_id(), delivery.event.occurred_at());
        let ProspectEvent::Confirmed(ProspectConfirmed { client, .. }) = &delivery.event else { continue };
        let state = match states.get(&id) {
            None => return Err(ApplyError::NotYet(format!("confirmation of {id} waits for its sign-up to be saved"))),
            Some(state) if state.deleted => {
                outcome(delivery, "ignored: prospect deleted");
                continue;
            }
            Some(state) if state.confirmed => {
                outcome(delivery, "ignored: already confirmed");
                continue;
            }
            Some(state) => state,
        };
        let holder = diesel::sql_query(
            "SELECT id FROM prospects WHERE email_key = $1 AND id <> $2 \
               AND confirmed_at IS NOT NULL AND deleted_at IS NULL",
        )
        .bind::<Nullable<Text>, _>(state.email_key.clone())
        .bind::<SqlUuid, _>(id)
        .get_result::<Written>(conn)
        .await
        .optional()?;
        match holder {
            None => {
                diesel::sql_query(
                    "UPDATE prospects SET confirmed_at = $2, confirmed_client_address = $3, confirmed_user_agent = $4 \
                     WHERE id = $1 AND confirmed_at IS NULL",
                )
                .bind::<SqlUuid, _>(id)
                .bind::<Timestamptz, _>(at)
                .bind::<Nullable<Text>, _>(client.client_address.as_deref())
                .bind::<Nullable<Text>, _>(client.user_agent.as_deref())
                .execute(conn)
                .await?;
                outcome(delivery, "confirmed");
            }
            Some(Written { id: holder }) => {
                lock_prospects(conn, std::iter::once(holder)).await?;
                diesel::sql_query(MERGE)
                    .bind::<SqlUuid, _>(id)
                    .bind::<SqlUuid, _>(holder)
                    .bind::<Timestamptz, _>(at)
                    .bind::<BigInt, _>(seq(delivery))
                    .execute(conn)
                    .await?;
                merged.insert(id);
                outcome(delivery, "confirmed: its details applied to the prospect holding the address");
            }
        }
    }
    Ok(())
}

/// Keeps each requested e-mail change aside (a newer request replaces an
/// older one) until the new address is confirmed. Returns, for each
/// prospect, the sequence of the request kept: those before it are replaced.
async fn request_change(
    conn: &mut AsyncPgConnection,
    segment: &[&Delivery<ProspectEvent>],
    states: &HashMap<Uuid, RowState>,
) -> Result<Vec<(Uuid, u64)>, ApplyError> {
    let mut kept = Vec::new();
    for delivery in segment {
        let ProspectEvent::EmailChangeRequested(request) = &delivery.event else { continue };
        match states.get(&request.prospect_id) {
            None => {
                let id = request.prospect_id;
                return Err(ApplyError::NotYet(format!("e-mail change of {id} waits for its sign-up to be saved")));
            }
            Some(state) if state.deleted => outcome(delivery, "ignored: prospect deleted"),
            Some(_) => {
                let d = &request.details;
                diesel::sql_query(KEEP_CHANGE)
                    .bind::<SqlUuid, _>(request.prospect_id)
                    .bind::<SqlUuid, _>(delivery.meta.event_id)
                    .bind::<Text, _>(&d.email)
                    .bind::<Text, _>(&d.first_name)
                    .bind::<Text, _>(&d.last_name)
                    .bind::<Nullable<Text>, _>(d.company_name.as_deref())
                    .bind::<Text, _>(&d.country.code)
                    .bind::<Text, _>(&d.role.code)
                    .bind::<Timestamptz, _>(request.requested_at)
                    .bind::<BigInt, _>(seq(delivery))
                    .execute(conn)
                    .await?;
                outcome(delivery, "kept until the new address is confirmed");
                let newest: Sequence =
                    diesel::sql_query("SELECT request_seq AS seq FROM pending_changes WHERE prospect_id = $1")
                        .bind::<SqlUuid, _>(request.prospect_id)
                        .get_result(conn)
                        .await?;
                kept.push((request.prospect_id, u64::try_from(newest.seq).unwrap_or_default()));
            }
        }
    }
    Ok(kept)
}

#[derive(QueryableByName)]
struct Sequence {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// A new link asked for by the owner ends every link issued before it, and
/// drops an address change requested before it (a leaked link may have asked
/// for it); one asked for on the lost-link page (by anyone who knows the
/// address) saves nothing. Returns the change requests dropped, as
/// [`apply_batch`] does.
async fn request_link(
    conn: &mut AsyncPgConnection,
    segment: &[&Delivery<ProspectEvent>],
) -> QueryResult<Vec<(Uuid, u64)>> {
    let mut revoking = Vec::new();
    for delivery in segment {
        match &delivery.event {
            ProspectEvent::ManageLinkRequested(request) if request.by_owner => revoking.push(*delivery),
            _ => outcome(delivery, "nothing to save"),
        }
    }
    if revoking.is_empty() {
        return Ok(Vec::new());
    }
    let times: Vec<DateTime<Utc>> = revoking.iter().map(|d| d.event.occurred_at()).collect();
    diesel::sql_query(END_OLDER_LINKS)
        .bind::<Array<SqlUuid>, _>(ids(&revoking))
        .bind::<Array<Timestamptz>, _>(times.clone())
        .execute(conn)
        .await?;
    let dropped: Vec<Change> = diesel::sql_query(DROP_OLDER_CHANGES)
        .bind::<Array<SqlUuid>, _>(ids(&revoking))
        .bind::<Array<Timestamptz>, _>(times)
        .load(conn)
        .await?;
    revoking.iter().for_each(|d| outcome(d, "older links ended"));
    Ok(dropped.into_iter().map(|c| (c.id, u64::try_from(c.seq).unwrap_or_default() + 1)).collect())
}

/// A pending e-mail change: its prospect and the request's sequence.
#[derive(QueryableByName)]
pub(crate) struct Change {
    #[diesel(sql_type = SqlUuid)]
    pub(crate) id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub(crate) seq: i64,
}

/// Replaces the details, unless the prospect was deleted, a later event was
/// applied already, or the new e-mail belongs to another prospect. An update
/// that overtook its sign-up creates the row. Returns the e-mail changes the
/// updates applied: `(prospect, before)`, the requests up to the applied one.
async fn update(
    conn: &mut AsyncPgConnection,
    segment: &[&Delivery<ProspectEvent>],
    states: &HashMap<Uuid, RowState>,
) -> QueryResult<Vec<(Uuid, u64)>> {
    let (mut existing, mut missing) = (Vec::new(), Vec::new());
    for delivery in segment {
        match states.get(&delivery.event.prospect_id()) {
            Some(RowState { deleted: true, .. }) => outcome(delivery, "ignored: prospect deleted"),
            Some(state) if state.last_event_seq >= seq(delivery) => {
                outcome(delivery, "ignored: a later event was applied");
            }
            Some(_) => existing.push(*delivery),
            None => missing.push(*delivery),
        }
    }
    let mut changed = HashSet::new();
    for (sql, events) in [(UPDATE, &existing), (INSERT_UPDATED, &missing)] {
        if !events.is_empty() {
            changed.extend(write_details(sql, events).load::<Written>(conn).await?.into_iter().map(|w| w.id));
        }
    }
    for delivery in existing.iter().chain(&missing) {
        if changed.contains(&delivery.event.prospect_id()) {
            outcome(delivery, "updated");
        } else {
            tracing::warn!(prospect_id = %delivery.event.prospect_id(),
                "update not applied: its e-mail belongs to another prospect");
        }
    }
    // A confirmed e-mail change arrives as an update to the new address: the
    // request it came from is done.
    let applied: Vec<&Delivery<ProspectEvent>> =
        existing.iter().chain(&missing).copied().filter(|d| changed.contains(&d.event.prospect_id())).collect();
    if !applied.is_empty() {
        let emails: Vec<String> =
            applied.iter().map(|d| d.event.details().map(|d| d.email.clone()).unwrap_or_default()).collect();
        let done: Vec<Change> = diesel::sql_query(
            "DELETE FROM pending_changes c USING unnest($1::uuid[], $2::text[], $3::bigint[]) AS u(id, email, seq) \
             WHERE c.prospect_id = u.id AND lower(c.email) = lower(u.email) AND c.request_seq < u.seq \
             RETURNING c.prospect_id AS id, c.request_seq AS seq",
        )
        .bind::<Array<SqlUuid>, _>(ids(&applied))
        .bind::<Array<Text>, _>(emails)
        .bind::<Array<BigInt>, _>(applied.iter().map(|d| seq(d)).collect::<Vec<_>>())
        .load(conn)
        .await?;
        return Ok(done.into_iter().map(|d| (d.id, u64::try_from(d.seq).unwrap_or_default() + 1)).collect());
    }
    Ok(Vec::new())
}

/// Erases the personal data and keeps a tombstone; a prospect with no row yet
/// gets the tombstone alone, so a late sign-up cannot bring it back.
async fn delete(
    conn: &mut AsyncPgConnection,
    segment: &[&Delivery<ProspectEvent>],
    states: &HashMap<Uuid, RowState>,
) -> QueryResult<()> {
    let (mut existing, mut missing) = (Vec::new(), Vec::new());
    for delivery in segment {
        match states.get(&delivery.event.prospect_id()) {
            Some(RowState { deleted: true, .. }) => outcome(delivery, "ignored: already deleted"),
            Some(_) => existing.push(*delivery),
            None => missing.push(*delivery),
        }
    }
    diesel::sql_query("DELETE FROM pending_changes WHERE prospect_id = ANY($1)")
        .bind::<Array<SqlUuid>, _>(ids(&existing))
        .execute(conn)
        .await?;
    // The owner's erasure erases every sign-up that holds the address (a
    // pending duplicate, a stranger's claim); "it wasn't me" (`disowned`)
    // every other one still pending on it, never a confirmed holder. They
    // are noted here, before the address is gone, and erased by erasures of
    // their own, published once this commits. An expiry, or such an erasure
    // itself, erases no other.
    let cascading = |disowned: bool| -> Vec<&Delivery<ProspectEvent>> {
        existing
            .iter()
            .copied()
            .filter(|d| {
                let id = d.event.prospect_id();
                d.meta.event_id != crate::expiry::expiry_event_id(id)
                    && d.meta.event_id != crate::expiry::address_erasure_event_id(id)
                    && matches!(&d.event, ProspectEvent::Deleted(e) if e.disowned == disowned)
            })
            .collect()
    };
    for (erasures, others) in [(cascading(false), ""), (cascading(true), " AND o.confirmed_at IS NULL")] {
        if erasures.is_empty() {
            continue;
        }
        diesel::sql_query(format!(
            "INSERT INTO erasures_due (prospect_id, because_of) \
             SELECT o.id, p.id FROM prospects p \
             JOIN prospects o ON o.email_key = p.email_key AND o.id <> p.id AND o.deleted_at IS NULL{others} \
             WHERE p.id = ANY($1) AND p.deleted_at IS NULL ON CONFLICT DO NOTHING"
        ))
        .bind::<Array<SqlUuid>, _>(ids(&erasures))
        .execute(conn)
        .await?;
    }
    for (sql, events, done) in [(ERASE, &existing, "erased"), (TOMBSTONE, &missing, "tombstone created")] {
        if events.is_empty() {
            continue;
        }
        let times: Vec<DateTime<Utc>> = events.iter().map(|d| d.event.occurred_at()).collect();
        let seqs: Vec<i64> = events.iter().map(|d| seq(d)).collect();
        diesel::sql_query(sql)
            .bind::<Array<SqlUuid>, _>(ids(events))
            .bind::<Array<Timestamptz>, _>(times)
            .bind::<Array<BigInt>, _>(seqs)
            .execute(conn)
            .await?;
        events.iter().for_each(|d| outcome(d, done));
    }
    Ok(())
}

/// The rows of `UPDATE`, `SIGN_UP` and `INSERT_UPDATED` as arrays: `$1` the
/// prospect ids, `$2`–`$7` the details, `$8` the event times, `$9` the stream
/// sequences, `$10`–`$13` a sign-up's consent (notice version, time, client
/// address, user agent; NULL when not recorded, and for updates).
const ROWS: &str = "unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
    $8::timestamptz[], $9::bigint[], $10::text[], $11::timestamptz[], $12::text[], $13::text[]) \
    AS u(id, email, first_name, last_name, company_name, country_code, role_code, at, seq, \
    notice_version, agreed_at, client_address, user_agent)";

/// Inserts new prospects, pending confirmation, with their consent; of a
/// prospect that has a row already, only the sign-up time is corrected (the
/// earlier one stands), and a live row without a consent takes the
/// sign-up's (an update overtook the sign-up). An erased row takes nothing.
const SIGN_UP: &str = "\
    INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                           signed_up_at, updated_at, last_event_seq, consent_notice_version, consent_agreed_at, \
                           consent_client_address, consent_user_agent) \
    SELECT id, email, first_name, last_name, company_name, country_code, role_code, at, at, seq, \
           notice_version, agreed_at, client_address, user_agent FROM {rows} \
    ON CONFLICT (id) DO UPDATE SET signed_up_at = LEAST(prospects.signed_up_at, excluded.signed_up_at), \
        consent_notice_version = CASE WHEN prospects.deleted_at IS NULL AND prospects.consent_agreed_at IS NULL \
            THEN excluded.consent_notice_version ELSE prospects.consent_notice_version END, \
        consent_agreed_at = CASE WHEN prospects.deleted_at IS NULL AND prospects.consent_agreed_at IS NULL \
            THEN excluded.consent_agreed_at ELSE prospects.consent_agreed_at END, \
        consent_client_address = CASE WHEN prospects.deleted_at IS NULL AND prospects.consent_agreed_at IS NULL \
            THEN excluded.consent_client_address ELSE prospects.consent_client_address END, \
        consent_user_agent = CASE WHEN prospects.deleted_at IS NULL AND prospects.consent_agreed_at IS NULL \
            THEN excluded.consent_user_agent ELSE prospects.consent_user_agent END";

/// Applies a confirmed sign-up (`$1`) to the prospect holding its address
/// (`$2`) at `$3` (stream sequence `$4`): the holder takes its details and,
/// when it is newer than the holder's, its consent (the owner confirmed it),
/// the sign-up becomes the holder's alias, and the sign-up's own row goes.
/// The holder keeps its own confirmation, time and client together.
const MERGE: &str = "\
    WITH applied AS ( \
        UPDATE prospects h SET email = p.email, first_name = p.first_name, last_name = p.last_name, \
               company_name = p.company_name, country_code = p.country_code, role_code = p.role_code, \
               updated_at = $3, last_event_seq = GREATEST(h.last_event_seq, $4), \
               consent_notice_version = CASE WHEN p.consent_agreed_at > coalesce(h.consent_agreed_at, '-infinity') \
                   THEN p.consent_notice_version ELSE h.consent_notice_version END, \
               consent_agreed_at = CASE WHEN p.consent_agreed_at > coalesce(h.consent_agreed_at, '-infinity') \
                   THEN p.consent_agreed_at ELSE h.consent_agreed_at END, \
               consent_client_address = CASE WHEN p.consent_agreed_at > coalesce(h.consent_agreed_at, '-infinity') \
                   THEN p.consent_client_address ELSE h.consent_client_address END, \
               consent_user_agent = CASE WHEN p.consent_agreed_at > coalesce(h.consent_agreed_at, '-infinity') \
                   THEN p.consent_user_agent ELSE h.consent_user_agent END \
        FROM prospects p WHERE h.id = $2 AND p.id = $1 RETURNING h.id), \
    aliased AS ( \
        INSERT INTO prospect_aliases (alias_id, prospect_id) SELECT $1, id FROM applied ON CONFLICT DO NOTHING) \
    DELETE FROM prospects WHERE id = $1 AND EXISTS (SELECT 1 FROM applied)";

/// Keeps a requested e-mail change (`$1` prospect, `$2` request id, `$3`–`$8`
/// details, `$9` time, `$10` sequence), unless a newer one is kept already.
const KEEP_CHANGE: &str = "\
    INSERT INTO pending_changes (prospect_id, request_id, email, first_name, last_name, company_name, country_code, \
                                 role_code, requested_at, request_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (prospect_id) DO UPDATE SET request_id = excluded.request_id, email = excluded.email, \
        first_name = excluded.first_name, last_name = excluded.last_name, company_name = excluded.company_name, \
        country_code = excluded.country_code, role_code = excluded.role_code, \
        requested_at = excluded.requested_at, request_seq = excluded.request_seq \
    WHERE pending_changes.request_seq < excluded.request_seq";

/// Ends every link of the prospects (`$1`, or the prospect a sign-up was
/// merged into) issued before `$2`. Times only move forward (`GREATEST`
/// skips NULL), so the order the requests arrive in does not matter.
const END_OLDER_LINKS: &str = "\
    UPDATE prospects p SET links_not_before = GREATEST(p.links_not_before, u.at) \
    FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
    WHERE p.id = coalesce((SELECT a.prospect_id FROM prospect_aliases a WHERE a.alias_id = u.id), u.id) \
      AND p.deleted_at IS NULL";

/// Drops the pending e-mail changes of the prospects (`$1`, or the prospect
/// a sign-up was merged into) requested before `$2`; returns them.
const DROP_OLDER_CHANGES: &str = "\
    DELETE FROM pending_changes c USING unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
    WHERE c.prospect_id = coalesce((SELECT a.prospect_id FROM prospect_aliases a WHERE a.alias_id = u.id), u.id) \
      AND c.requested_at < u.at \
    RETURNING c.prospect_id AS id, c.request_seq AS seq";

/// Replaces prospects' details unless, for a confirmed prospect, the new
/// e-mail belongs to another confirmed prospect. Taking another address
/// ends every link issued before (those mailed to the old address).
const UPDATE: &str = "\
    UPDATE prospects p SET email = u.email, first_name = u.first_name, last_name = u.last_name, \
           company_name = u.company_name, country_code = u.country_code, role_code = u.role_code, \
           updated_at = u.at, last_event_seq = u.seq, \
           links_not_before = CASE WHEN p.email_key IS DISTINCT FROM lower(u.email) \
                                   THEN GREATEST(p.links_not_before, u.at) ELSE p.links_not_before END \
    FROM {rows} \
    WHERE p.id = u.id AND p.deleted_at IS NULL AND p.last_event_seq < u.seq \
      AND (p.confirmed_at IS NULL OR NOT EXISTS ( \
          SELECT 1 FROM prospects other WHERE other.email_key = lower(u.email) AND other.id <> u.id \
            AND other.confirmed_at IS NOT NULL AND other.deleted_at IS NULL)) \
    RETURNING p.id";

/// Creates the rows of prospects whose update arrived before their sign-up
/// (pending confirmation, like the sign-up).
const INSERT_UPDATED: &str = "\
    INSERT INTO prospects AS p (id, email, first_name, last_name, company_name, country_code, role_code, \
                                signed_up_at, updated_at, last_event_seq) \
    SELECT id, email, first_name, last_name, company_name, country_code, role_code, at, at, seq FROM {rows} \
    ON CONFLICT DO NOTHING \
    RETURNING p.id";

/// Erases the personal data of prospects (`$1` ids, `$2` times, `$3`
/// sequences), their consent records with it.
const ERASE: &str = "\
    UPDATE prospects p SET email = NULL, first_name = NULL, last_name = NULL, company_name = NULL, \
           country_code = NULL, role_code = NULL, consent_notice_version = NULL, consent_agreed_at = NULL, \
           consent_client_address = NULL, consent_user_agent = NULL, confirmed_client_address = NULL, \
           confirmed_user_agent = NULL, deleted_at = u.at, updated_at = u.at, \
           last_event_seq = GREATEST(p.last_event_seq, u.seq) \
    FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS u(id, at, seq) \
    WHERE p.id = u.id AND p.deleted_at IS NULL";

/// Tombstones for prospects deleted before their sign-up arrived.
const TOMBSTONE: &str = "\
    INSERT INTO prospects (id, signed_up_at, updated_at, deleted_at, last_event_seq) \
    SELECT id, at, at, at, seq FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS u(id, at, seq) \
    ON CONFLICT DO NOTHING";

/// `sql` (one of the statements above, `{rows}` standing for [`ROWS`]) bound
/// to the details of `events`.
fn write_details(
    sql: &str,
    events: &[&Delivery<ProspectEvent>],
) -> diesel::query_builder::BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
    let n = events.len();
    let (mut emails, mut first, mut last, mut company, mut country, mut role, mut at, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<Option<String>>::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut consent: [Vec<Option<String>>; 3] = Default::default();
    let mut agreed = Vec::<Option<DateTime<Utc>>>::with_capacity(n);
    for delivery in events {
        let record = match &delivery.event {
            ProspectEvent::SignedUp(ProspectSignedUp { consent: Consent::Recorded(record), .. }) => Some(record),
            _ => None,
        };
        let client = record.and_then(|r| r.client.as_ref());
        consent[0].push(record.map(|r| r.notice_version.clone()));
        consent[1].push(client.and_then(|c| c.client_address.clone()));
        consent[2].push(client.and_then(|c| c.user_agent.clone()));
        agreed.push(record.map(|r| r.agreed_at));
        let d = delivery.event.details().expect("only sign-ups and updates carry details");
        emails.push(d.email.clone());
        first.push(d.first_name.clone());
        last.push(d.last_name.clone());
        company.push(d.company_name.clone());
        country.push(d.country.code.clone());
        role.push(d.role.code.clone());
        at.push(delivery.event.occurred_at());
        seqs.push(seq(delivery));
    }
    let [notice_version, client_address, user_agent] = consent;
    diesel::sql_query(sql.replace("{rows}", ROWS))
        .into_boxed()
        .bind::<Array<SqlUuid>, _>(ids(events))
        .bind::<Array<Text>, _>(emails)
        .bind::<Array<Text>, _>(first)
        .bind::<Array<Text>, _>(last)
        .bind::<Array<Nullable<Text>>, _>(company)
        .bind::<Array<Text>, _>(country)
        .bind::<Array<Text>, _>(role)
        .bind::<Array<Timestamptz>, _>(at)
        .bind::<Array<BigInt>, _>(seqs)
        .bind::<Array<Nullable<Text>>, _>(notice_version)
        .bind::<Array<Nullable<Timestamptz>>, _>(agreed)
        .bind::<Array<Nullable<Text>>, _>(client_address)
        .bind::<Array<Nullable<Text>>, _>(user_agent)
}
