//! Order tolerance of the save-prospect handler against real Postgres:
//! events for one prospect delivered out of stream order, and by two
//! instances at once, end in the state of the newest event.

use bus::{Delivery, Handler};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use messages::{Event, ProspectDeleted, ProspectEvent, ProspectSignedUp, ProspectUpdated};
use save_prospect::SaveProspect;
use save_prospect::schema::prospects;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::common::{delivery, details, handler};

/// The lifecycle of one prospect: signed up (1), updated twice (2, 3).
struct Story {
    id: Uuid,
    signed_up_at: DateTime<Utc>,
    signed_up: Delivery<ProspectEvent>,
    first_update: Delivery<ProspectEvent>,
    second_update: Delivery<ProspectEvent>,
}

fn story() -> Story {
    let id = Uuid::now_v7();
    let signed_up_at = Utc::now() - Duration::minutes(10);
    let update = |company: &str, seq| {
        delivery(
            ProspectEvent::Updated(ProspectUpdated {
                prospect_id: id,
                details: details(company),
                updated_at: Utc::now(),
            }),
            seq,
        )
    };
    Story {
        id,
        signed_up_at,
        signed_up: delivery(
            ProspectEvent::SignedUp(ProspectSignedUp {
                prospect_id: id,
                details: details("Signed up"),
                signed_up_at,
                consent: messages::Consent::NotRecorded,
            }),
            1,
        ),
        first_update: update("First update", 2),
        second_update: update("Second update", 3),
    }
}

fn deleted(id: Uuid, seq: u64) -> Delivery<ProspectEvent> {
    delivery(ProspectEvent::Deleted(ProspectDeleted { prospect_id: id, deleted_at: Utc::now(), disowned: false }), seq)
}

async fn row(
    database: &TestDatabase,
    id: Uuid,
) -> (Option<String>, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>) {
    let mut conn = database.connect().await.expect("connect");
    prospects::table
        .find(id)
        .select((prospects::company_name, prospects::email, prospects::signed_up_at, prospects::deleted_at))
        .first(&mut conn)
        .await
        .expect("row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_in_reverse_order_leave_the_newest_state() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let story = story();
    for batch in [&story.second_update, &story.first_update, &story.signed_up] {
        handler.handle(std::slice::from_ref(batch)).await.expect("applied");
    }
    let (company, email, signed_up_at, deleted_at) = row(&database, story.id).await;
    assert_eq!(company.as_deref(), Some("Second update"));
    assert_eq!(email.as_deref(), Some("ada@example.com"));
    assert_eq!(
        signed_up_at.timestamp_micros(),
        story.signed_up_at.timestamp_micros(),
        "the late sign-up's time is kept"
    );
    assert_eq!(deleted_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_applying_at_once_leave_the_newest_state() {
    let database = TestDatabase::new();
    let first = handler(&database).await;
    let second = first.clone();
    for _ in 0..20 {
        let story = story();
        let older = vec![story.signed_up, story.first_update];
        let newer = vec![story.second_update];
        let (a, b) = tokio::join!(first.handle(&older), second.handle(&newer));
        a.expect("first instance");
        b.expect("second instance");
        assert_eq!(row(&database, story.id).await.0.as_deref(), Some("Second update"));
        handler_delete(&first, story.id).await;
    }
}

async fn handler_delete(handler: &SaveProspect, id: Uuid) {
    handler.handle(&[deleted(id, 1_000)]).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_prospect_never_comes_back() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;

    // Deleted before its sign-up and updates were applied (or redelivered).
    let story = story();
    handler.handle(&[deleted(story.id, 4)]).await.expect("delete first");
    handler.handle(&[story.signed_up, story.first_update, story.second_update]).await.expect("late events");
    let (company, email, _, deleted_at) = row(&database, story.id).await;
    assert_eq!((company, email), (None, None), "no personal data");
    assert!(deleted_at.is_some(), "tombstone kept");

    // Deleted after being saved, then the older events are redelivered.
    let story = self::story();
    let replay = || {
        [&story.signed_up, &story.first_update, &story.second_update].map(|d| {
            let mut again = d.clone();
            again.meta.event_id = Uuid::now_v7();
            again
        })
    };
    handler.handle(&[story.signed_up.clone(), story.first_update.clone()]).await.expect("saved");
    handler.handle(&[deleted(story.id, 4)]).await.expect("deleted");
    handler.handle(&replay()).await.expect("replayed");
    let (company, email, _, deleted_at) = row(&database, story.id).await;
    assert_eq!((company, email), (None, None), "no personal data after the replay");
    assert!(deleted_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_for_an_unknown_prospect_waits_for_no_one() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let story = story();
    handler.handle(std::slice::from_ref(&story.first_update)).await.expect("update first");
    assert_eq!(row(&database, story.id).await.0.as_deref(), Some("First update"));
    handler.handle(std::slice::from_ref(&story.signed_up)).await.expect("sign-up later");
    assert_eq!(row(&database, story.id).await.0.as_deref(), Some("First update"), "the older sign-up changes nothing");
    assert_eq!(ProspectUpdated::TYPE, story.first_update.meta.ce_type);
}
