//! The drain phase: a backlog on the stream applied by save-prospect, beside
//! the same rows inserted raw in batches.

use std::time::{Duration, Instant};

use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use messages::ProspectSignedUp;

use crate::system;

use crate::system::{Backends, Layout, Service, migrated_database};

use crate::report::*;
use crate::{SAVE, publish_all, say, sign_ups};

pub(crate) async fn drain(layout: &Layout, count: usize) -> anyhow::Result<Drain> {
    let backends = Backends::start().await?;
    let events = sign_ups(count);
    let start = Instant::now();
    publish_all(&backends, &events).await?;
    let fill_per_sec = count as f64 / start.elapsed().as_secs_f64();
    say(&format!("  stream filled at {fill_per_sec:.0}/s"));

    let mut service = Service::spawn(layout, "save-prospect", "drain-save-prospect", &["run"], &backends.env())?;
    let start = Instant::now();
    backends.wait_for_consumer(SAVE, Duration::from_secs(60)).await?;
    loop {
        service.ensure_running()?;
        if backends.backlog(SAVE).await? == 0 {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "save-prospect did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = start.elapsed().as_secs_f64();
    service.stop().await;
    let rows = system::count_prospects(&mut backends.database.connect().await?).await?;
    anyhow::ensure!(rows == count as u64, "{rows} rows after the drain, expected {count}");
    say(&format!("  drained in {drain_secs:.2} s: {:.0} events/s", count as f64 / drain_secs));

    // The same rows, inserted directly: batches of 500, one transaction each.
    let raw = migrated_database().await?;
    let mut conn = raw.connect().await?;
    let start = Instant::now();
    for chunk in events.chunks(500) {
        conn.transaction(async |conn| raw_insert(conn, chunk).await).await?;
    }
    let raw_insert_secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(system::count_prospects(&mut conn).await? == count as u64, "raw insert lost rows");
    say(&format!("  raw batched insert: {:.0} rows/s", count as f64 / raw_insert_secs));
    Ok(Drain {
        events: count,
        fill_per_sec,
        drain_secs,
        drain_per_sec: count as f64 / drain_secs,
        raw_insert_secs,
        raw_insert_per_sec: count as f64 / raw_insert_secs,
        ratio: raw_insert_secs / drain_secs,
    })
}

pub(crate) async fn raw_insert(conn: &mut AsyncPgConnection, chunk: &[ProspectSignedUp]) -> diesel::QueryResult<usize> {
    let column = |f: fn(&ProspectSignedUp) -> String| chunk.iter().map(f).collect::<Vec<String>>();
    diesel::sql_query(
        "INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                                signed_up_at, updated_at, last_event_seq) \
         SELECT id, email, first_name, last_name, company_name, country_code, role_code, at, at, 0 \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::timestamptz[]) AS u(id, email, first_name, last_name, company_name, country_code, role_code, at)",
    )
    .bind::<Array<SqlUuid>, _>(chunk.iter().map(|e| e.prospect_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|e| e.details.email.to_string()))
    .bind::<Array<Text>, _>(column(|e| e.details.first_name.clone()))
    .bind::<Array<Text>, _>(column(|e| e.details.last_name.clone()))
    .bind::<Array<Nullable<Text>>, _>(chunk.iter().map(|e| e.details.company_name.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|e| e.details.country.code.clone()))
    .bind::<Array<Text>, _>(column(|e| e.details.role.code.clone()))
    .bind::<Array<Timestamptz>, _>(chunk.iter().map(|e| e.signed_up_at).collect::<Vec<_>>())
    .execute(conn)
    .await
}
