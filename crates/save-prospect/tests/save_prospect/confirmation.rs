//! Double opt-in in save-prospect against real Postgres: a sign-up never
//! touches the prospect holding its address until its owner confirms it;
//! confirmations, e-mail changes and the expiry of unconfirmed sign-ups.

use std::time::Duration;

use bus::async_nats::jetstream;
use bus::settings::{NatsSettings, StreamSettings};
use bus::{Delivery, Handler, HandlerError, Publisher};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use messages::{
    Event, ProspectConfirmed, ProspectDeleted, ProspectDetails, ProspectEmailChangeRequested, ProspectEvent,
    ProspectSignedUp, ProspectUpdated, cloudevents as ce,
};
use save_prospect::schema::{pending_changes, prospect_aliases, prospects};
use save_prospect::{db, expiry};
use test_support::{NatsServer, TestDatabase};
use uuid::Uuid;

use crate::common::{delivery, details, handler};

fn signed_up(id: Uuid, details: ProspectDetails, at: DateTime<Utc>, seq: u64) -> Delivery<ProspectEvent> {
    delivery(
        ProspectEvent::SignedUp(ProspectSignedUp {
            prospect_id: id,
            details,
            signed_up_at: at,
            consent: messages::Consent::NotRecorded,
        }),
        seq,
    )
}

fn confirmed(id: Uuid, seq: u64) -> Delivery<ProspectEvent> {
    delivery(
        ProspectEvent::Confirmed(ProspectConfirmed {
            prospect_id: id,
            confirmed_at: Utc::now(),
            client: Default::default(),
        }),
        seq,
    )
}

/// (email, company, confirmed) of a row, or `None` when there is none.
async fn row(database: &TestDatabase, id: Uuid) -> Option<(Option<String>, Option<String>, bool)> {
    let mut conn = database.connect().await.expect("connect");
    prospects::table
        .find(id)
        .select((prospects::email, prospects::company_name, prospects::confirmed_at.is_not_null()))
        .first(&mut conn)
        .await
        .optional()
        .expect("query")
}

fn someone_else(email: &str) -> ProspectDetails {
    ProspectDetails { first_name: "Mallory".into(), email: email.into(), ..details("Takeover Inc") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_with_a_held_address_changes_nothing_until_its_owner_confirms_it() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let (owner, claim) = (Uuid::now_v7(), Uuid::now_v7());
    handler.handle(&[signed_up(owner, details("Owner Ltd"), Utc::now(), 1), confirmed(owner, 2)]).await.expect("owner");
    assert_eq!(row(&database, owner).await, Some((Some("ada@example.com".into()), Some("Owner Ltd".into()), true)));

    let claim_signed_up = signed_up(claim, someone_else("ADA@example.com"), Utc::now(), 3);
    handler.handle(std::slice::from_ref(&claim_signed_up)).await.expect("second sign-up");
    assert_eq!(
        row(&database, owner).await,
        Some((Some("ada@example.com".into()), Some("Owner Ltd".into()), true)),
        "the holder is untouched"
    );
    assert_eq!(row(&database, claim).await.map(|r| r.2), Some(false), "saved on its own, pending");

    // The owner of the address follows the link of the second sign-up.
    handler.handle(&[confirmed(claim, 4)]).await.expect("confirmation");
    assert_eq!(
        row(&database, owner).await,
        Some((Some("ADA@example.com".into()), Some("Takeover Inc".into()), true)),
        "the confirmed details now belong to the holder"
    );
    assert_eq!(row(&database, claim).await, None, "the sign-up's own row is gone");
    let mut conn = database.connect().await.expect("connect");
    let alias: Uuid = prospect_aliases::table
        .find(claim)
        .select(prospect_aliases::prospect_id)
        .first(&mut conn)
        .await
        .expect("alias");
    assert_eq!(alias, owner);

    // A replay of the merged sign-up cannot bring its row back.
    let mut replayed = claim_signed_up.clone();
    replayed.meta.event_id = Uuid::now_v7();
    handler.handle(&[replayed]).await.expect("replay");
    assert_eq!(row(&database, claim).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_overtook_its_sign_up_waits_for_it() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let id = Uuid::now_v7();
    let error = handler.handle(&[confirmed(id, 2)]).await.expect_err("nothing to confirm yet");
    assert!(matches!(error, HandlerError::Transient(_)), "{error}");
    handler.handle(&[signed_up(id, details("Later"), Utc::now(), 1)]).await.expect("sign-up");
    handler.handle(&[confirmed(id, 2)]).await.expect("confirmation, retried");
    assert_eq!(row(&database, id).await.map(|r| r.2), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_change_waits_for_its_new_address() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let id = Uuid::now_v7();
    handler.handle(&[signed_up(id, details("Owner Ltd"), Utc::now(), 1), confirmed(id, 2)]).await.expect("saved");
    let mut wanted = details("New Ltd");
    wanted.email = "ada@new.example".into();
    let request = ProspectEmailChangeRequested {
        prospect_id: id,
        details: wanted.clone(),
        previous_email: "ada@example.com".into(),
        requested_at: Utc::now(),
    };
    let request = delivery(ProspectEvent::EmailChangeRequested(request), 3);
    handler.handle(std::slice::from_ref(&request)).await.expect("request");
    assert_eq!(row(&database, id).await.map(|r| r.0), Some(Some("ada@example.com".into())), "not in effect yet");
    let mut conn = database.connect().await.expect("connect");
    let kept: (Uuid, String) = pending_changes::table
        .find(id)
        .select((pending_changes::request_id, pending_changes::email))
        .first(&mut conn)
        .await
        .expect("kept");
    assert_eq!(kept, (request.meta.event_id, "ada@new.example".to_owned()));

    // Confirmed: the web publishes the kept details as an update.
    let update = ProspectUpdated { prospect_id: id, details: wanted, updated_at: Utc::now() };
    handler.handle(&[delivery(ProspectEvent::Updated(update), 4)]).await.expect("update");
    assert_eq!(row(&database, id).await, Some((Some("ada@new.example".into()), Some("New Ltd".into()), true)));
    let left: i64 = pending_changes::table.count().get_result(&mut conn).await.expect("count");
    assert_eq!(left, 0, "the request is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_sign_ups_expire_and_their_erasure_is_published_once() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let pool = db::pool(&database.url(), 2, &db::Connector::plain()).expect("pool");
    let nats = NatsServer::start().await.expect("nats-server");
    let client = bus::connect(&NatsSettings { url: nats.url(), ..NatsSettings::default() }, "expiry-test")
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    bus::stream::ensure_dlq_stream(&js, &StreamSettings::default()).await.expect("dead-letter stream");
    let eraser = bus::erasure::StreamEraser::new(client.clone(), &StreamSettings::default());
    let publisher = Publisher::new(client, "/save-prospect", Duration::from_secs(2));

    let long_ago = Utc::now() - chrono::Duration::hours(2);
    let (stale, kept, recent) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let other = |email: &str| ProspectDetails { email: email.into(), ..details("x") };
    handler
        .handle(&[
            signed_up(stale, other("stale@example.com"), long_ago, 1),
            signed_up(kept, other("kept@example.com"), long_ago, 2),
            signed_up(recent, other("recent@example.com"), Utc::now(), 3),
            confirmed(kept, 4),
        ])
        .await
        .expect("saved");

    let cutoff = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(expiry::sweep(&pool, &publisher, &eraser, cutoff).await.expect("sweep"), 1, "only the stale one");
    assert_eq!(expiry::sweep(&pool, &publisher, &eraser, cutoff).await.expect("sweep again"), 1, "not applied yet");
    let mut stream = js.get_stream("PROSPECTS").await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 1, "the repeated erasure is stored once");
    let subject = messages::streams::event_subject(stale, ProspectDeleted::KIND);
    let stored = stream.get_last_raw_message_by_subject(&subject).await.expect("erasure");
    assert_eq!(
        stored.headers.get(ce::ID).map(|v| v.as_str().to_owned()),
        Some(expiry::expiry_event_id(stale).to_string())
    );
    let erasure: ProspectDeleted = serde_json::from_slice(&stored.payload).expect("payload");
    assert_eq!(erasure.prospect_id, stale);

    handler.handle(&[delivery(ProspectEvent::Deleted(erasure), 5)]).await.expect("erased");
    assert_eq!(row(&database, stale).await, Some((None, None, false)), "no personal data left");
    assert_eq!(expiry::sweep(&pool, &publisher, &eraser, cutoff).await.expect("sweep"), 0, "nothing left to expire");
    assert!(row(&database, kept).await.is_some_and(|r| r.0.is_some()), "confirmed ones stay");
    assert!(row(&database, recent).await.is_some_and(|r| r.0.is_some()), "recent ones stay");
}
