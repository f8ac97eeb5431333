//! The set-based batch path against real Postgres: a batch applied at once
//! must leave exactly the rows that applying its events one at a time
//! leaves, whatever mix of sign-ups, confirmations, updates, requested
//! e-mail changes, deletes, shared e-mail addresses (in any case), moved
//! addresses and redeliveries it holds.

use bus::{Delivery, EventMeta, Handler};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use messages::{
    Country, ProspectConfirmed, ProspectDeleted, ProspectDetails, ProspectEmailChangeRequested, ProspectEvent,
    ProspectSignedUp, ProspectUpdated, Role,
};
use save_prospect::schema::{pending_changes, prospect_aliases, prospects};
use save_prospect::{SaveProspect, db};
use test_support::TestDatabase;
use uuid::Uuid;

async fn handler(database: &TestDatabase) -> SaveProspect {
    db::create_database_if_missing(&database.url(), &db::Connector::plain()).await.expect("create");
    let pool = db::pool(&database.url(), 2, &db::Connector::plain()).expect("pool");
    db::migrate(&pool).await.expect("migrate");
    SaveProspect::new(pool)
}

/// A random story of `len` events over a few prospects and addresses.
fn scenario(rng: &mut fastrand::Rng, len: usize) -> Vec<Delivery<ProspectEvent>> {
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let base = Utc::now() - Duration::hours(1);
    let mut out: Vec<Delivery<ProspectEvent>> = Vec::with_capacity(len);
    // Prospects that have a row by now: a confirmation or an e-mail change
    // only ever follows a saved sign-up (both come from links mailed for it).
    let mut saved: Vec<Uuid> = Vec::new();
    for index in 0..len {
        let seq = index as u64 + 1;
        // Now and then a redelivery of an earlier event (same ce-id).
        if !out.is_empty() && rng.u8(..10) == 0 {
            let mut again = out[rng.usize(..out.len())].clone();
            again.meta.stream_sequence = seq;
            out.push(again);
            continue;
        }
        let mut id = ids[rng.usize(..ids.len())];
        let at = base + Duration::seconds(rng.i64(0..3_600));
        let event = match rng.u8(..26) {
            20..23 if !saved.is_empty() => {
                id = saved[rng.usize(..saved.len())];
                ProspectEvent::Confirmed(ProspectConfirmed {
                    prospect_id: id,
                    confirmed_at: at,
                    client: Default::default(),
                })
            }
            23..26 if !saved.is_empty() => {
                id = saved[rng.usize(..saved.len())];
                ProspectEvent::EmailChangeRequested(ProspectEmailChangeRequested {
                    prospect_id: id,
                    details: details(rng),
                    previous_email: "before@example.com".into(),
                    requested_at: at,
                })
            }
            0..9 => ProspectEvent::SignedUp(ProspectSignedUp {
                prospect_id: id,
                details: details(rng),
                signed_up_at: at,
                consent: messages::Consent::NotRecorded,
            }),
            9..17 => ProspectEvent::Updated(ProspectUpdated { prospect_id: id, details: details(rng), updated_at: at }),
            _ => ProspectEvent::Deleted(ProspectDeleted { prospect_id: id, deleted_at: at, disowned: false }),
        };
        if matches!(event, ProspectEvent::SignedUp(_) | ProspectEvent::Updated(_) | ProspectEvent::Deleted(_)) {
            saved.push(id);
        }
        let ce_type = event.ce_type().to_owned();
        let meta = EventMeta {
            event_id: Uuid::now_v7(),
            ce_type,
            source: "/test".into(),
            time: None,
            traceparent: None,
            stream_sequence: seq,
            delivered: 1,
        };
        out.push(Delivery { meta, event });
    }
    out
}

fn details(rng: &mut fastrand::Rng) -> ProspectDetails {
    let mut email =
        ["ada@example.com", "grace@example.com", "alan@example.com", "edsger@example.com"][rng.usize(..4)].to_owned();
    if rng.bool() {
        email = email.to_uppercase();
    }
    ProspectDetails {
        first_name: format!("First{}", rng.u8(..)),
        last_name: "Last".into(),
        email: email.into(),
        company_name: rng.bool().then(|| format!("Company {}", rng.u8(..))),
        country: Country { code: "GB".into(), name: "United Kingdom".into() },
        role: Role { code: "EN".into(), name: "Engineer".into() },
    }
}

type Row = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i64,
    Option<DateTime<Utc>>,
);

async fn rows(database: &TestDatabase) -> (Vec<Row>, Vec<(Uuid, Uuid)>, Vec<(Uuid, Uuid, String)>) {
    let mut conn = database.connect().await.expect("connect");
    let rows = prospects::table
        .select((
            prospects::id,
            prospects::email,
            prospects::first_name,
            prospects::company_name,
            prospects::signed_up_at,
            prospects::updated_at,
            prospects::deleted_at,
            prospects::last_event_seq,
            prospects::confirmed_at,
        ))
        .order(prospects::id)
        .load(&mut conn)
        .await
        .expect("prospects");
    let aliases = prospect_aliases::table
        .select((prospect_aliases::alias_id, prospect_aliases::prospect_id))
        .order(prospect_aliases::alias_id)
        .load(&mut conn)
        .await
        .expect("aliases");
    let changes = pending_changes::table
        .select((pending_changes::prospect_id, pending_changes::request_id, pending_changes::email))
        .order(pending_changes::prospect_id)
        .load(&mut conn)
        .await
        .expect("pending changes");
    (rows, aliases, changes)
}

async fn clear(database: &TestDatabase) {
    let mut conn = database.connect().await.expect("connect");
    diesel::sql_query("TRUNCATE pending_changes, prospect_aliases, prospects, applied_events")
        .execute(&mut conn)
        .await
        .expect("truncate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_leaves_what_its_events_one_by_one_leave() {
    let (one_by_one_db, batch_db) = (TestDatabase::new(), TestDatabase::new());
    let (one_by_one, batched) = (handler(&one_by_one_db).await, handler(&batch_db).await);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..40 {
        let events = scenario(&mut rng, 40);
        for event in &events {
            one_by_one.handle(std::slice::from_ref(event)).await.expect("one event");
        }
        batched.handle(&events).await.expect("the whole batch");
        let (expected, actual) = (rows(&one_by_one_db).await, rows(&batch_db).await);
        assert!(!expected.0.is_empty(), "the story wrote rows");
        assert_eq!(actual, expected, "round {round} of seed {seed}: batch and one-by-one differ for {events:#?}");
        clear(&one_by_one_db).await;
        clear(&batch_db).await;
    }
}
