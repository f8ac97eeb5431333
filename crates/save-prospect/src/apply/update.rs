//! `ProspectUpdated`: new details, unless the address is another's.

use std::collections::{HashMap, HashSet};

use bus::Delivery;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::ProspectEvent;
use uuid::Uuid;

use super::rows::{IdRow, RowState, ids, outcome, seq, write_details};
use crate::db::Change;

/// Replaces the details, unless the prospect was deleted, a later event was
/// applied already, or the new e-mail belongs to another prospect. An update
/// that overtook its sign-up creates the row. Returns the e-mail changes the
/// updates applied: `(prospect, before)`, the requests up to the applied one.
pub(super) async fn update(
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
            changed.extend(write_details(sql, events).load::<IdRow>(conn).await?.into_iter().map(|w| w.id));
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
            applied.iter().map(|d| d.event.details().map(|d| d.email.to_string()).unwrap_or_default()).collect();
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

/// Replaces prospects' details unless, for a confirmed prospect, the new
/// e-mail belongs to another confirmed prospect. Taking another address
/// ends every link issued before (those mailed to the old address).
pub(super) const UPDATE: &str = "\
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
pub(super) const INSERT_UPDATED: &str = "\
    INSERT INTO prospects AS p (id, email, first_name, last_name, company_name, country_code, role_code, \
                                signed_up_at, updated_at, last_event_seq) \
    SELECT id, email, first_name, last_name, company_name, country_code, role_code, at, at, seq FROM {rows} \
    ON CONFLICT DO NOTHING \
    RETURNING p.id";
