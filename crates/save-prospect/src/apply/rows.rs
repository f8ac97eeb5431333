//! What the kinds' modules share: the rows' state before a batch, the
//! prospect ids and sequences of events, the advisory locks, and sign-ups'
//! and updates' details as arrays.

use std::collections::HashMap;

use bus::Delivery;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messages::{Consent, ProspectEvent, ProspectSignedUp};
use uuid::Uuid;

pub(super) fn seq(delivery: &Delivery<ProspectEvent>) -> i64 {
    i64::try_from(delivery.meta.stream_sequence).unwrap_or(i64::MAX)
}

pub(super) fn outcome(delivery: &Delivery<ProspectEvent>, outcome: &str) {
    tracing::debug!(event_id = %delivery.meta.event_id, prospect_id = %delivery.event.prospect_id(),
        ce_type = %delivery.meta.ce_type, stream_sequence = delivery.meta.stream_sequence, outcome, "event applied");
}

/// Takes a transaction-scoped advisory lock for each prospect, in ascending
/// key order.
pub(super) async fn lock_prospects(conn: &mut AsyncPgConnection, ids: impl Iterator<Item = Uuid>) -> QueryResult<()> {
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
pub(super) struct RowState {
    pub(super) deleted: bool,
    pub(super) confirmed: bool,
    pub(super) last_event_seq: i64,
    pub(super) email_key: Option<String>,
}

impl RowState {
    /// The rows of these prospects, by id; a prospect without one is absent.
    pub(super) async fn load(conn: &mut AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<HashMap<Uuid, Self>> {
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
pub(super) struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    pub(super) id: Uuid,
}

/// The prospect ids of the events, in order.
pub(super) fn ids(events: &[&Delivery<ProspectEvent>]) -> Vec<Uuid> {
    events.iter().map(|d| d.event.prospect_id()).collect()
}

/// The rows of `UPDATE`, `SIGN_UP` and `INSERT_UPDATED` as arrays: `$1` the
/// prospect ids, `$2`–`$7` the details, `$8` the event times, `$9` the stream
/// sequences, `$10`–`$13` a sign-up's consent (notice version, time, client
/// address, user agent; NULL when not recorded, and for updates).
pub(super) const ROWS: &str = "unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
    $8::timestamptz[], $9::bigint[], $10::text[], $11::timestamptz[], $12::text[], $13::text[]) \
    AS u(id, email, first_name, last_name, company_name, country_code, role_code, at, seq, \
    notice_version, agreed_at, client_address, user_agent)";

/// `sql` (one of the statements above, `{rows}` standing for [`ROWS`]) bound
/// to the details of `events`.
pub(super) fn write_details(
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
        emails.push(d.email.to_string());
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
