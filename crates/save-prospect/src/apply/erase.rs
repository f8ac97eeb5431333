//! `ProspectDeleted`: the personal data erased, a tombstone kept, and the
//! other sign-ups holding the address noted for erasure.

use std::collections::HashMap;

use bus::Delivery;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::ProspectEvent;
use uuid::Uuid;

use super::rows::{RowState, ids, outcome, seq};

/// Erases the personal data and keeps a tombstone; a prospect with no row yet
/// gets the tombstone alone, so a late sign-up cannot bring it back.
pub(super) async fn delete(
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

/// Erases the personal data of prospects (`$1` ids, `$2` times, `$3`
/// sequences), their consent records with it.
pub(super) const ERASE: &str = "\
    UPDATE prospects p SET email = NULL, first_name = NULL, last_name = NULL, company_name = NULL, \
           country_code = NULL, role_code = NULL, consent_notice_version = NULL, consent_agreed_at = NULL, \
           consent_client_address = NULL, consent_user_agent = NULL, confirmed_client_address = NULL, \
           confirmed_user_agent = NULL, deleted_at = u.at, updated_at = u.at, \
           last_event_seq = GREATEST(p.last_event_seq, u.seq) \
    FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS u(id, at, seq) \
    WHERE p.id = u.id AND p.deleted_at IS NULL";

/// Tombstones for prospects deleted before their sign-up arrived.
pub(super) const TOMBSTONE: &str = "\
    INSERT INTO prospects (id, signed_up_at, updated_at, deleted_at, last_event_seq) \
    SELECT id, at, at, at, seq FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS u(id, at, seq) \
    ON CONFLICT DO NOTHING";
