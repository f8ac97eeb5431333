//! Erasing sign-ups that were never confirmed.
//!
//! A sign-up that its address's owner has not confirmed within
//! `[links] confirm_within_secs` (7 days by default) is erased as if its
//! owner had asked: save-prospect publishes `ProspectDeleted` for it, so every
//! handler erases it, not just this database. The event's id is derived from
//! the prospect id, so instances sweeping at the same time store it once, and
//! a sweep repeated before the erasure is applied changes nothing.
//! E-mail changes whose new address was never confirmed are dropped, and
//! their requests purged from the streams (the address in them was typed by
//! someone who never proved it). Erasures that owners' erasures called for
//! ([`publish_due_erasures`]) are published here too when they could not be
//! at once.

use std::time::Duration;

use bus::erasure::StreamEraser;
use bus::{EventContext, Publisher};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use messages::ProspectDeleted;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{Change, Pool};

/// Most sign-ups erased per sweep; the next sweep takes the rest.
const PER_SWEEP: i64 = 500;

/// Namespace of the erasure events' ids (UUIDv5 of the prospect id).
const EXPIRY_IDS: Uuid = Uuid::from_u128(0x5f0c_2a3e_8d4b_4c61_9e7a_1b2c_3d4e_5f60);

/// Namespace of the ids of erasures by address (UUIDv5 of the prospect id).
const ADDRESS_ERASURE_IDS: Uuid = Uuid::from_u128(0x7a1d_5c2e_3b4f_4a60_8e9d_0c1b_2a3f_4e5d);

/// The `ce-id` of the erasure of an expired sign-up.
pub fn expiry_event_id(prospect_id: Uuid) -> Uuid {
    Uuid::new_v5(&EXPIRY_IDS, prospect_id.as_bytes())
}

/// The `ce-id` of the erasure of a sign-up that held the address of a
/// prospect its owner erased.
pub fn address_erasure_event_id(prospect_id: Uuid) -> Uuid {
    Uuid::new_v5(&ADDRESS_ERASURE_IDS, prospect_id.as_bytes())
}

/// Publishes the erasure of every sign-up noted in `erasures_due` (by an
/// owner's erasure of another sign-up with the same address), then forgets
/// the note. Ids are the prospects' own, so a repeat is stored once.
pub async fn publish_due_erasures(pool: &Pool, publisher: &Publisher) -> anyhow::Result<usize> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let mut conn = pool.get().await?;
    let due: Vec<Due> =
        sql_query(format!("SELECT prospect_id AS id FROM erasures_due LIMIT {PER_SWEEP}")).load(&mut conn).await?;
    for Due { id } in &due {
        let now = Utc::now();
        let context = EventContext { id: address_erasure_event_id(*id), time: now, traceparent: None };
        publisher.publish(&ProspectDeleted { prospect_id: *id, deleted_at: now, disowned: false }, &context).await?;
        sql_query("DELETE FROM erasures_due WHERE prospect_id = $1").bind::<SqlUuid, _>(*id).execute(&mut conn).await?;
    }
    Ok(due.len())
}

/// Sweeps every `every` until `shutdown`.
pub async fn run(
    pool: Pool,
    publisher: Publisher,
    eraser: StreamEraser,
    within: chrono::Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match publish_due_erasures(&pool, &publisher).await {
            Ok(0) => {}
            Ok(published) => tracing::info!(published, "erasures by address published"),
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "erasures by address not published yet"),
        }
        match sweep(&pool, &publisher, &eraser, Utc::now() - within).await {
            Ok(0) => {}
            Ok(erased) => tracing::info!(erased, "unconfirmed sign-ups expired; their erasure is published"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "expiring unconfirmed sign-ups failed; next sweep retries")
            }
        }
    }
}

/// Publishes the erasure of up to `PER_SWEEP` sign-ups made before
/// `cutoff` and still unconfirmed, and drops e-mail changes requested before
/// it, purging their requests from the streams first. Returns how many
/// erasures were published.
pub async fn sweep(
    pool: &Pool,
    publisher: &Publisher,
    eraser: &StreamEraser,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<usize> {
    #[derive(QueryableByName)]
    struct Expired {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let mut conn = pool.get().await?;
    let changes: Vec<Change> = sql_query(format!(
        "SELECT prospect_id AS id, request_seq AS seq FROM pending_changes WHERE requested_at < $1 LIMIT {PER_SWEEP}"
    ))
    .bind::<Timestamptz, _>(cutoff)
    .load(&mut conn)
    .await?;
    for Change { id, seq } in &changes {
        // The request and every older one; a newer one (and its row) stays.
        eraser.purge_change_requests(*id, u64::try_from(*seq).unwrap_or_default() + 1).await?;
        sql_query("DELETE FROM pending_changes WHERE prospect_id = $1 AND request_seq = $2")
            .bind::<SqlUuid, _>(*id)
            .bind::<BigInt, _>(*seq)
            .execute(&mut conn)
            .await?;
    }
    let expired: Vec<Expired> = sql_query(format!(
        "SELECT id FROM prospects WHERE confirmed_at IS NULL AND deleted_at IS NULL AND signed_up_at < $1 \
         ORDER BY signed_up_at LIMIT {PER_SWEEP}"
    ))
    .bind::<Timestamptz, _>(cutoff)
    .load(&mut conn)
    .await?;
    drop(conn);
    for Expired { id } in &expired {
        let now = Utc::now();
        let context = EventContext { id: expiry_event_id(*id), time: now, traceparent: None };
        publisher.publish(&ProspectDeleted { prospect_id: *id, deleted_at: now, disowned: false }, &context).await?;
    }
    Ok(expired.len())
}
