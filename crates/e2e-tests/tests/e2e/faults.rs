//! Fault tests with real processes: signup-web and save-prospect run as their
//! own binaries against the test's own nats-server and database, and the
//! faults are real (SIGKILL, SIGTERM, a restarted nats-server, a database
//! that refuses connections, poison, a rejected row). Each prints a line:
//! fault, accepted, saved, lost, duplicated.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::async_nats::{self, jetstream};
use bus::dlq::DeadLetters;
use bus::settings::StreamSettings;
use bus::{EventContext, Publisher};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e_tests::faults::{FaultBed, reached, sign_up, spawn_burst};
use e2e_tests::processes::{Burst, burst};
use save_prospect::schema::{applied_events, prospects};
use test_support::{NatsServer, eventually};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_save_prospect_mid_burst() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let saver = bed.saver(&[]);
    let (progress, task) = spawn_burst(&bed, 10_000, 32);
    reached(&progress, 3_000).await;
    saver.kill_9().await.expect("kill -9");
    reached(&progress, 6_000).await;
    let _saver = bed.saver(&[]);
    let burst = task.await.expect("burst");
    assert!(burst.other.is_empty(), "only 303s: {:?}", &burst.other[..burst.other.len().min(10)]);
    assert_eq!(burst.accepted.len(), 10_000);
    bed.all_saved(&burst.accepted).await;
    bed.report("kill -9 save-prospect mid-burst", &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_mid_burst() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let mut nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[]);
    let (progress, task) = spawn_burst(&bed, 4_000, 16);
    reached(&progress, 1_000).await;
    nats.stop().await.expect("stop nats");
    let at_stop = AtomicUsize::load(&progress, Ordering::Relaxed);
    reached(&progress, at_stop + 50).await;
    nats.restart().await.expect("restart nats");
    let burst = task.await.expect("burst");
    assert!(burst.other.is_empty(), "never a 500 or no answer: {:?}", &burst.other[..burst.other.len().min(10)]);
    assert!(burst.refused > 0, "some sign-ups met the outage");
    assert_eq!(burst.accepted.len() + burst.refused, 4_000);
    bed.all_saved(&burst.accepted).await;
    bed.report("nats-server restarted mid-burst", &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_connections_for_20_seconds() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[("SIGNUP__SAVE_PROSPECT__CONSUMER__MAX_DELIVER", "3")]);
    // Let save-prospect create and migrate its database first.
    let first = burst(bed.web_url.clone(), 1, 1, Arc::default()).await;
    bed.all_saved(&first.accepted).await;

    let name = bed.db.url().rsplit('/').next().expect("name").to_owned();
    let admin_url = bed.db.url().replace(&format!("/{name}"), "/postgres");
    let mut admin = AsyncPgConnection::establish(&admin_url).await.expect("admin");
    diesel::sql_query(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .expect("deny");
    diesel::sql_query(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .execute(&mut admin)
        .await
        .expect("terminate");
    let (_, task) = spawn_burst(&bed, 2_000, 16);
    // The outage itself: the fault lasts 20 seconds whatever happens meanwhile.
    tokio::time::sleep(Duration::from_secs(20)).await;
    diesel::sql_query(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("allow");
    let burst = task.await.expect("burst");
    assert_eq!(burst.accepted.len(), 2_000, "the web tier never needed Postgres");
    bed.all_saved(&burst.accepted).await;
    assert_eq!(bed.dead_letters().await, 0, "an outage dead-letters nothing");
    bed.report("Postgres refused connections for 20 s", &burst.accepted, burst.refused).await;
}

/// Holds an exclusive lock on the `prospects` table for `hold` while a
/// 2,000 sign-up burst goes on, then lets go.
async fn burst_with_the_table_locked(bed: &FaultBed, hold: Duration) -> Burst {
    let mut locker = bed.connect().await.expect("db");
    let (_, task) = locker
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query("LOCK TABLE prospects IN ACCESS EXCLUSIVE MODE").execute(conn).await?;
            let (progress, task) = spawn_burst(bed, 2_000, 16);
            reached(&progress, 200).await;
            // The fault: the lock is held this long whatever happens meanwhile.
            tokio::time::sleep(hold).await;
            Ok((progress, task))
        })
        .await
        .expect("lock held, then released");
    task.await.expect("burst")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_past_ack_wait_redelivers_nothing() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let settings = [("SIGNUP__SAVE_PROSPECT__CONSUMER__ACK_WAIT_SECS", "3")];
    // Two replicas: a batch redelivered while still being applied would go
    // to the other one.
    let (_one, _two) = (bed.saver(&settings), bed.saver(&settings));
    let first = burst(bed.web_url.clone(), 1, 1, Arc::default()).await;
    bed.all_saved(&first.accepted).await;
    let burst = burst_with_the_table_locked(&bed, Duration::from_secs(9)).await;
    assert_eq!(burst.accepted.len(), 2_000);
    bed.all_saved(&burst.accepted).await;
    let redelivered = e2e_tests::faults::redelivered(&bed.client, "save-prospect").await;
    println!("fault: table locked 9 s, ack_wait 3 s, two replicas | redelivered {redelivered}");
    assert_eq!(redelivered, 0, "nothing redelivered while it was being applied");
    assert_eq!(bed.dead_letters().await, 0);
    bed.report("table locked 9 s past a 3 s ack_wait, two replicas", &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_past_the_statement_timeout_dead_letters_nothing() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[
        ("SIGNUP__DATABASE__STATEMENT_TIMEOUT_MS", "1000"),
        ("SIGNUP__SAVE_PROSPECT__CONSUMER__MAX_DELIVER", "2"),
    ]);
    let first = burst(bed.web_url.clone(), 1, 1, Arc::default()).await;
    bed.all_saved(&first.accepted).await;
    let burst = burst_with_the_table_locked(&bed, Duration::from_secs(10)).await;
    bed.all_saved(&burst.accepted).await;
    assert_eq!(bed.dead_letters().await, 0, "a database that does not answer in time is an outage");
    bed.report("table locked 10 s past a 1 s statement timeout, 2 deliveries", &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_among_good_events_is_dead_lettered_alone() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let js = jetstream::new(bed.client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    let publisher = Publisher::new(bed.client.clone(), "/fault-test", Duration::from_secs(5));
    let mut accepted = BTreeSet::new();
    for i in 0..1_000 {
        let event = sign_up(i, "Good Ltd");
        publisher.publish(&event, &EventContext::new()).await.expect("good");
        accepted.insert(event.prospect_id);
        if i % 10 == 0 {
            let poison: &[u8] = if i % 20 == 0 { b"{\"prospectId\": 42" } else { b"{\"hello\":\"not a sign-up\"}" };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(messages::cloudevents::ID, Uuid::now_v7().to_string().as_str());
            headers.insert(messages::cloudevents::TYPE, "io.signup.prospect.signedup.v1");
            js.publish_with_headers("events.prospect.signedup", headers, poison.to_vec().into())
                .await
                .expect("poison")
                .await
                .expect("stored");
        }
    }
    let _saver = bed.saver(&[]);
    bed.all_saved(&accepted).await;
    let letters = eventually(Duration::from_secs(30), "100 dead letters", || async {
        let count = bed.dead_letters().await;
        (count == 100).then_some(count)
    })
    .await
    .expect("dead letters");
    let list = DeadLetters::new(bed.client.clone(), &StreamSettings::default()).list(1_000).await.expect("list");
    assert!(list.iter().all(|l| l.reason.contains("cannot be decoded") && l.consumer == "save-prospect"));
    let info =
        js.get_stream("PROSPECTS").await.expect("stream").consumer_info("save-prospect").await.expect("info").clone();
    assert_eq!(info.num_redelivered, 0, "no good event was redelivered because of the poison");
    println!(
        "fault: 100 poison messages among 1000 | dead letters {letters} | redelivered good events {}",
        info.num_redelivered
    );
    bed.report("100 poison messages among 1000 good", &accepted, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_processing_exits_0_and_leaves_nothing_half_applied() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let (_, task) = spawn_burst(&bed, 5_000, 32);
    let burst = task.await.expect("burst");
    assert_eq!(burst.accepted.len(), 5_000);
    let saver =
        bed.saver(&[("SIGNUP__SAVE_PROSPECT__CONSUMER__BATCH_SIZE", "100"), ("SIGNUP__SHUTDOWN__TIMEOUT_SECS", "15")]);
    eventually(Duration::from_secs(60), "processing under way", || async {
        (!bed.saved_ids().await.is_empty()).then_some(())
    })
    .await
    .expect("started");
    let status = saver.terminate(Duration::from_secs(20)).await.expect("exits within the bound");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    // Nothing half-applied: every applied event has its row and vice versa.
    let mut conn = bed.connect().await.expect("db");
    let rows: i64 = prospects::table.count().get_result(&mut conn).await.expect("rows");
    let applied: i64 = applied_events::table.count().get_result(&mut conn).await.expect("applied");
    assert_eq!(rows, applied, "rows and applied events agree after the stop");
    println!("fault: SIGTERM during processing | exit {status} | saved before the stop {rows} of 5000");
    let _saver = bed.saver(&[]);
    bed.all_saved(&burst.accepted).await;
    bed.report("SIGTERM during processing, then restart", &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_too_early_then_after_the_fix_are_saved_exactly_once() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[]);
    let first = burst(bed.web_url.clone(), 1, 1, Arc::default()).await;
    bed.all_saved(&first.accepted).await;
    // The fault: the database rejects some rows (as a bad migration might).
    let mut conn = bed.refuse_company("fault_test", "Broken Ltd").await;
    let publisher = Publisher::new(bed.client.clone(), "/fault-test", Duration::from_secs(5));
    let mut good = BTreeSet::new();
    let mut broken = BTreeSet::new();
    for i in 0..30 {
        let event = sign_up(i, if i % 3 == 0 { "Broken Ltd" } else { "Good Ltd" });
        publisher.publish(&event, &EventContext::new()).await.expect("publish");
        if i % 3 == 0 {
            broken.insert(event.prospect_id)
        } else {
            good.insert(event.prospect_id)
        };
    }
    bed.all_saved(&good).await;
    eventually(Duration::from_secs(60), "the broken ones dead-lettered", || async {
        (bed.dead_letters().await == broken.len() as u64).then_some(())
    })
    .await
    .expect("dead letters");
    assert!(bed.saved_ids().await.is_disjoint(&broken));

    // A replay before the fix: the events fail and are dead-lettered again.
    let letters = DeadLetters::new(bed.client.clone(), &StreamSettings::default());
    let too_early = letters.all_sequences().await.expect("letters");
    for &sequence in &too_early {
        letters.replay(sequence, false).await.expect("replay");
    }
    let sequences = eventually(Duration::from_secs(60), "dead-lettered again", || async {
        let sequences = letters.all_sequences().await.ok()?;
        (sequences.len() == broken.len() && sequences.iter().all(|s| !too_early.contains(s))).then_some(sequences)
    })
    .await
    .expect("new letters");

    // The fix, then the replay again, within the duplicate window.
    diesel::sql_query("ALTER TABLE prospects DROP CONSTRAINT fault_test").execute(&mut conn).await.expect("fix");
    let dry = letters.replay(sequences[0], true).await.expect("dry run");
    assert_eq!(dry.new_stream_sequence, None);
    assert_eq!(bed.dead_letters().await, broken.len() as u64, "a dry run changes nothing");
    for sequence in sequences {
        letters.replay(sequence, false).await.expect("replay");
    }
    bed.all_saved(&broken).await;
    assert_eq!(bed.dead_letters().await, 0);
    let everything: BTreeSet<Uuid> = good.union(&broken).copied().chain(first.accepted.iter().copied()).collect();
    let applied: i64 = applied_events::table.count().get_result(&mut conn).await.expect("applied");
    assert_eq!(applied, everything.len() as i64, "each event applied exactly once");
    bed.report("dead letters replayed before the fix (failed again), then after it", &everything, 0).await;
}
