//! `ProspectEmailChangeRequested` (kept aside until the new address is
//! confirmed) and `ManageLinkRequested` (the owner's ends older links).

use std::collections::HashMap;

use bus::Delivery;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::ProspectEvent;
use uuid::Uuid;

use super::error::ApplyError;
use super::rows::{RowState, ids, outcome, seq};
use crate::db::Change;

/// Keeps each requested e-mail change aside (a newer request replaces an
/// older one) until the new address is confirmed. Returns, for each
/// prospect, the sequence of the request kept: those before it are replaced.
pub(super) async fn request_change(
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
                    .bind::<Text, _>(d.email.as_str())
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

/// Keeps a requested e-mail change (`$1` prospect, `$2` request id, `$3`–`$8`
/// details, `$9` time, `$10` sequence), unless a newer one is kept already.
pub(super) const KEEP_CHANGE: &str = "\
    INSERT INTO pending_changes (prospect_id, request_id, email, first_name, last_name, company_name, country_code, \
                                 role_code, requested_at, request_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (prospect_id) DO UPDATE SET request_id = excluded.request_id, email = excluded.email, \
        first_name = excluded.first_name, last_name = excluded.last_name, company_name = excluded.company_name, \
        country_code = excluded.country_code, role_code = excluded.role_code, \
        requested_at = excluded.requested_at, request_seq = excluded.request_seq \
    WHERE pending_changes.request_seq < excluded.request_seq";

#[derive(QueryableByName)]
pub(super) struct Sequence {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// A new link asked for by the owner ends every link issued before it, and
/// drops an address change requested before it (a leaked link may have asked
/// for it); one asked for on the lost-link page (by anyone who knows the
/// address) saves nothing. Returns the change requests dropped, as
/// [`apply_batch`] does.
pub(super) async fn request_link(
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

/// Ends every link of the prospects (`$1`, or the prospect a sign-up was
/// merged into) issued before `$2`. Times only move forward (`GREATEST`
/// skips NULL), so the order the requests arrive in does not matter.
pub(super) const END_OLDER_LINKS: &str = "\
    UPDATE prospects p SET links_not_before = GREATEST(p.links_not_before, u.at) \
    FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
    WHERE p.id = coalesce((SELECT a.prospect_id FROM prospect_aliases a WHERE a.alias_id = u.id), u.id) \
      AND p.deleted_at IS NULL";

/// Drops the pending e-mail changes of the prospects (`$1`, or the prospect
/// a sign-up was merged into) requested before `$2`; returns them.
pub(super) const DROP_OLDER_CHANGES: &str = "\
    DELETE FROM pending_changes c USING unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
    WHERE c.prospect_id = coalesce((SELECT a.prospect_id FROM prospect_aliases a WHERE a.alias_id = u.id), u.id) \
      AND c.requested_at < u.at \
    RETURNING c.prospect_id AS id, c.request_seq AS seq";
