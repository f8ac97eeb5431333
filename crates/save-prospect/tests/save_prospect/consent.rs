//! Consent records in save-prospect against real Postgres: a sign-up's
//! consent and its confirmation's client are stored, a version 1 sign-up
//! reads as "not recorded", a merged sign-up's newer consent passes to the
//! holder, and an erasure removes the record with everything else.

use bus::{Delivery, Handler};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use messages::{
    ClientContext, Consent, ConsentRecord, ProspectConfirmed, ProspectDeleted, ProspectDetails, ProspectEvent,
    ProspectSignedUp, ProspectUpdated,
};
use save_prospect::schema::prospects;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::common::{delivery, details, handler};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + seconds, 0).expect("time")
}

fn browser(address: &str) -> ClientContext {
    ClientContext { client_address: Some(address.into()), user_agent: Some("Mozilla/5.0 (test)".into()) }
}

fn recorded(version: &str, when: DateTime<Utc>, client: Option<ClientContext>) -> Consent {
    Consent::Recorded(ConsentRecord { notice_version: version.into(), agreed_at: when, client })
}

fn signed_up(id: Uuid, details: ProspectDetails, consent: Consent, seq: u64) -> Delivery<ProspectEvent> {
    let signed_up_at = match &consent {
        Consent::Recorded(record) => record.agreed_at,
        Consent::NotRecorded => at(0),
    };
    delivery(ProspectEvent::SignedUp(ProspectSignedUp { prospect_id: id, details, signed_up_at, consent }), seq)
}

fn confirmed(id: Uuid, client: Option<ClientContext>, seq: u64) -> Delivery<ProspectEvent> {
    let event = ProspectConfirmed { prospect_id: id, confirmed_at: at(60), client: client.unwrap_or_default() };
    delivery(ProspectEvent::Confirmed(event), seq)
}

/// The six consent columns of a row.
type Stored = (Option<String>, Option<DateTime<Utc>>, Option<String>, Option<String>, Option<String>, Option<String>);

async fn stored(database: &TestDatabase, id: Uuid) -> Stored {
    let mut conn = database.connect().await.expect("connect");
    prospects::table
        .find(id)
        .select((
            prospects::consent_notice_version,
            prospects::consent_agreed_at,
            prospects::consent_client_address,
            prospects::consent_user_agent,
            prospects::confirmed_client_address,
            prospects::confirmed_user_agent,
        ))
        .first(&mut conn)
        .await
        .expect("the row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_ups_consent_and_its_confirmations_client_are_stored_and_erased_with_the_rest() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let id = Uuid::now_v7();
    let consent = recorded("sha256:0123456789abcdef", at(5), Some(browser("203.0.113.7")));
    handler.handle(&[signed_up(id, details("Ada Ltd"), consent, 1)]).await.expect("sign-up");
    handler.handle(&[confirmed(id, Some(browser("198.51.100.9")), 2)]).await.expect("confirmation");
    assert_eq!(
        stored(&database, id).await,
        (
            Some("sha256:0123456789abcdef".into()),
            Some(at(5)),
            Some("203.0.113.7".into()),
            Some("Mozilla/5.0 (test)".into()),
            Some("198.51.100.9".into()),
            Some("Mozilla/5.0 (test)".into()),
        )
    );

    let erased = ProspectDeleted { prospect_id: id, deleted_at: at(90), disowned: false };
    handler.handle(&[delivery(ProspectEvent::Deleted(erased), 3)]).await.expect("erasure");
    assert_eq!(stored(&database, id).await, (None, None, None, None, None, None), "the consent record is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_sign_up_stores_no_consent_and_a_sign_up_overtaken_by_its_update_still_does() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let (old, overtaken) = (Uuid::now_v7(), Uuid::now_v7());
    handler.handle(&[signed_up(old, details("Old Ltd"), Consent::NotRecorded, 1)]).await.expect("v1 sign-up");
    assert_eq!(stored(&database, old).await, (None, None, None, None, None, None), "not recorded");

    // The update arrives first (a redelivery of the sign-up), then the sign-up.
    let update = ProspectUpdated {
        prospect_id: overtaken,
        details: ProspectDetails { email: "grace@example.com".into(), ..details("New Ltd") },
        updated_at: at(20),
    };
    handler.handle(&[delivery(ProspectEvent::Updated(update), 3)]).await.expect("update first");
    let consent = recorded("sha256:fedcba9876543210", at(10), None);
    let details = ProspectDetails { email: "grace@example.com".into(), ..details("Grace Ltd") };
    handler.handle(&[signed_up(overtaken, details, consent, 2)]).await.expect("sign-up after");
    let (version, agreed_at, client_address, ..) = stored(&database, overtaken).await;
    assert_eq!((version.as_deref(), agreed_at, client_address), (Some("sha256:fedcba9876543210"), Some(at(10)), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_sign_up_merged_into_the_holder_brings_its_newer_consent_and_an_erased_row_takes_none() {
    let database = TestDatabase::new();
    let handler = handler(&database).await;
    let (holder, again, erased) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    handler
        .handle(&[signed_up(holder, details("Old Ltd"), Consent::NotRecorded, 1), confirmed(holder, None, 2)])
        .await
        .expect("holder, signed up before consent records");
    let consent = recorded("sha256:1111222233334444", at(30), None);
    handler.handle(&[signed_up(again, details("New Ltd"), consent, 3)]).await.expect("second sign-up");
    handler.handle(&[confirmed(again, Some(browser("192.0.2.1")), 4)]).await.expect("merged");
    let (version, agreed_at, .., confirmed_from, _) = stored(&database, holder).await;
    assert_eq!(
        (version.as_deref(), agreed_at, confirmed_from.as_deref()),
        (Some("sha256:1111222233334444"), Some(at(30)), None),
        "the holder shows the newer agreement, and keeps its own confirmation with its own client"
    );
    // An older agreement, confirmed late, does not replace a newer one.
    let older = Uuid::now_v7();
    let consent = recorded("sha256:0000000000000000", at(20), None);
    handler.handle(&[signed_up(older, details("Older Ltd"), consent, 7)]).await.expect("an older sign-up");
    handler.handle(&[confirmed(older, None, 8)]).await.expect("merged late");
    let (version, agreed_at, ..) = stored(&database, holder).await;
    assert_eq!((version.as_deref(), agreed_at), (Some("sha256:1111222233334444"), Some(at(30))), "the newer stands");

    // An erasure that overtook its sign-up leaves a tombstone: the late
    // sign-up brings no consent back.
    let gone = ProspectDeleted { prospect_id: erased, deleted_at: at(40), disowned: false };
    handler.handle(&[delivery(ProspectEvent::Deleted(gone), 5)]).await.expect("erasure first");
    let consent = recorded("sha256:1111222233334444", at(35), Some(browser("192.0.2.2")));
    handler.handle(&[signed_up(erased, details("Late Ltd"), consent, 6)]).await.expect("late sign-up");
    assert_eq!(stored(&database, erased).await, (None, None, None, None, None, None));
}
