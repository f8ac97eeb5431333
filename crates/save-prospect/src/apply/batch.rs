//! The batch algorithm: locks, applied event ids, and segments of one kind,
//! each applied by its kind's module.

use std::collections::{HashMap, HashSet};

use bus::Delivery;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::{EmailAddress, ProspectEvent};
use uuid::Uuid;

use super::change::{request_change, request_link};
use super::confirm::confirm;
use super::erase::delete;
use super::error::ApplyError;
use super::rows::{IdRow, RowState, ids, lock_prospects, outcome, seq};
use super::sign_up::sign_up;
use super::update::update;

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
pub(super) async fn apply_batch(
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
    .load::<IdRow>(conn)
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
pub(super) fn segments<'a, 'b>(events: &'b [&'a Delivery<ProspectEvent>]) -> Vec<&'b [&'a Delivery<ProspectEvent>]> {
    let mut out = Vec::new();
    let (mut start, mut ids, mut emails) = (0, HashSet::new(), HashSet::new());
    for (index, delivery) in events.iter().enumerate() {
        let email = delivery.event.details().map(|d| &d.email);
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
pub(super) fn emails_move_within(segment: &[&Delivery<ProspectEvent>], states: &HashMap<Uuid, RowState>) -> bool {
    // The column's key is `lower(email)`: an address of its own.
    let holders: HashMap<EmailAddress, Uuid> = segment
        .iter()
        .filter_map(|d| {
            let key = states.get(&d.event.prospect_id())?.email_key.as_deref()?;
            Some((EmailAddress::new(key), d.event.prospect_id()))
        })
        .collect();
    segment.iter().any(|d| {
        d.event
            .details()
            .is_some_and(|details| holders.get(&details.email).is_some_and(|holder| *holder != d.event.prospect_id()))
    })
}

/// The ids among `ids` of sign-ups merged into the prospect that held their
/// address.
pub(super) async fn merged_sign_ups(conn: &mut AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<HashSet<Uuid>> {
    Ok(diesel::sql_query(
        "SELECT a.alias_id AS id FROM unnest($1::uuid[]) AS u(id) JOIN prospect_aliases a ON a.alias_id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load::<IdRow>(conn)
    .await?
    .into_iter()
    .map(|w| w.id)
    .collect())
}
