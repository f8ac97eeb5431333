//! `ProspectSignedUp`: a new prospect, pending, with its consent.

use std::collections::HashSet;

use bus::Delivery;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::ProspectEvent;

use super::rows::{outcome, write_details};

/// New prospects are inserted, pending confirmation — also when another
/// prospect holds their address: that prospect is not touched. A prospect
/// that already has a row (an update or a delete got there first, or this is
/// a replay) keeps it: only its sign-up time is corrected.
pub(super) async fn sign_up(conn: &mut AsyncPgConnection, segment: &[&Delivery<ProspectEvent>]) -> QueryResult<()> {
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

/// Inserts new prospects, pending confirmation, with their consent; of a
/// prospect that has a row already, only the sign-up time is corrected (the
/// earlier one stands), and a live row without a consent takes the
/// sign-up's (an update overtook the sign-up). An erased row takes nothing.
pub(super) const SIGN_UP: &str = "\
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
