//! `ProspectConfirmed`: a sign-up confirmed, or merged into the prospect
//! that holds its address.

use std::collections::{HashMap, HashSet};

use bus::Delivery;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::{ProspectConfirmed, ProspectEvent};
use uuid::Uuid;

use super::error::ApplyError;
use super::rows::{IdRow, RowState, lock_prospects, outcome, seq};

/// Confirms sign-ups, one at a time (confirmations are few). When another
/// confirmed prospect holds the address, that prospect takes the confirmed
/// sign-up's details and the sign-up becomes its alias; otherwise the
/// sign-up itself is confirmed. A confirmation whose sign-up is not saved yet
/// waits for it.
pub(super) async fn confirm(
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
        .get_result::<IdRow>(conn)
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
            Some(IdRow { id: holder }) => {
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

/// Applies a confirmed sign-up (`$1`) to the prospect holding its address
/// (`$2`) at `$3` (stream sequence `$4`): the holder takes its details and,
/// when it is newer than the holder's, its consent (the owner confirmed it),
/// the sign-up becomes the holder's alias, and the sign-up's own row goes.
/// The holder keeps its own confirmation, time and client together.
pub(super) const MERGE: &str = "\
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
