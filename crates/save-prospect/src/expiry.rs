//! Erasing sign-ups that were never confirmed.
//!
//! A sign-up that its address's owner has not confirmed within
//! `[links] confirm_within_secs` (7 days by default) is erased as if its
//! owner had asked: save-prospect publishes `ProspectDeleted` for it, so every
//! handler erases it, not just this database. The event's id is derived from
//! the prospect id, so instances sweeping at the same time store it once, and
//! a sweep repeated before the erasure is applied changes nothing.
//! E-mail changes whose new address was never confirmed are dropped.

use std::time::Duration;

use bus::{EventContext, Publisher};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use messages::ProspectDeleted;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::Pool;

/// Most sign-ups erased per sweep; the next sweep takes the rest.
const PER_SWEEP: i64 = 500;

/// Namespace of the erasure events' ids (UUIDv5 of the prospect id).
const EXPIRY_IDS: Uuid = Uuid::from_u128(0x5f0c_2a3e_8d4b_4c61_9e7a_1b2c_3d4e_5f60);

/// The `ce-id` of the erasure of an expired sign-up.
pub fn expiry_event_id(prospect_id: Uuid) -> Uuid {
    Uuid::new_v5(&EXPIRY_IDS, prospect_id.as_bytes())
}

/// Sweeps every `every` until `shutdown`.
pub async fn run(
    pool: Pool,
    publisher: Publisher,
    within: chrono::Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match sweep(&pool, &publisher, Utc::now() - within).await {
            Ok(0) => {}
            Ok(erased) => tracing::info!(erased, "unconfirmed sign-ups expired; their erasure is published"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "expiring unconfirmed sign-ups failed; next sweep retries")
            }
        }
    }
}

/// Publishes the erasure of up to [`PER_SWEEP`] sign-ups made before
/// `cutoff` and still unconfirmed, and drops e-mail changes requested before
/// it. Returns how many erasures were published.
pub async fn sweep(pool: &Pool, publisher: &Publisher, cutoff: DateTime<Utc>) -> anyhow::Result<usize> {
    #[derive(QueryableByName)]
    struct Expired {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let mut conn = pool.get().await?;
    sql_query("DELETE FROM pending_changes WHERE requested_at < $1")
        .bind::<Timestamptz, _>(cutoff)
        .execute(&mut conn)
        .await?;
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
        publisher.publish(&ProspectDeleted { prospect_id: *id, deleted_at: now }, &context).await?;
    }
    Ok(expired.len())
}
