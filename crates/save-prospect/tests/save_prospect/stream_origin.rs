//! A database built from one event stream is never fed from another: a
//! stream that is recreated (a restore, a move to a cluster) numbers its
//! events from 1 again, so its newer events would look older than what the
//! database holds. save-prospect refuses to run then, saying what to do.

use std::time::Duration;

use bus::async_nats::jetstream;
use bus::settings::{ConsumerSettings, NatsSettings, StreamSettings};
use bus::{EventContext, Publisher};
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use runtime::{Context, Service as _};
use save_prospect::SaveProspect;
use secrecy::SecretString;
use test_support::{NatsServer, TestDatabase, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn settings(nats: &NatsServer, database: &TestDatabase) -> save_prospect::Settings {
    let mut settings = save_prospect::Settings {
        nats: NatsSettings { url: nats.url(), ..NatsSettings::default() },
        ..save_prospect::Settings::default()
    };
    settings.database.url = SecretString::from(database.url());
    settings.save_prospect.consumer = ConsumerSettings { idle_wait_ms: 300, ..ConsumerSettings::default() };
    settings.save_prospect.http.port = Some(0);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_built_from_another_stream_is_refused_with_what_to_do() {
    let nats = NatsServer::start().await.expect("nats-server");
    let database = TestDatabase::new();
    let client = bus::connect(&settings(&nats, &database).nats, "origin-test").await.expect("connect");
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    let publisher = Publisher::new(client.clone(), "/test", Duration::from_secs(2));
    let sign_up = ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: ProspectDetails {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            company_name: None,
            country: Country { code: "GB".into(), name: "United Kingdom".into() },
            role: Role { code: "EN".into(), name: "Engineer".into() },
        },
        signed_up_at: chrono::Utc::now(),
        consent: messages::Consent::NotRecorded,
    };
    publisher.publish(&sign_up, &EventContext::new()).await.expect("published");

    let shutdown = CancellationToken::new();
    let saver = tokio::spawn(SaveProspect::run(
        settings(&nats, &database),
        Context::new("save-prospect", client.clone(), shutdown.clone()),
    ));
    eventually(Duration::from_secs(20), "the sign-up saved", || async {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use save_prospect::schema::prospects;
        let mut conn = database.connect().await.ok()?;
        prospects::table.count().get_result::<i64>(&mut conn).await.ok().filter(|n| *n == 1)
    })
    .await
    .expect("saved");
    shutdown.cancel();
    saver.await.expect("join").expect("stops cleanly");

    // Another stream of the same name.
    js.delete_stream("PROSPECTS").await.expect("delete");
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("recreated");
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        SaveProspect::run(settings(&nats, &database), Context::new("save-prospect", client, CancellationToken::new())),
    )
    .await
    .expect("it stops by itself")
    .expect_err("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("built from the events of stream") && message.contains("rebuild"), "{message}");
}
