//! mailer against a real nats-server: an event published the way
//! signup-web publishes it reaches the handler.

use std::time::Duration;

use bus::settings::{ConsumerSettings, NatsSettings};
use bus::{EventContext, Publisher};
use mailer::{Mailer, Settings};
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use test_support::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_sign_up_reaches_the_handler() {
    let nats = NatsServer::start().await.expect("nats-server");
    let mut settings =
        Settings { nats: NatsSettings { url: nats.url(), ..NatsSettings::default() }, ..Settings::default() };
    settings.mailer.consumer = ConsumerSettings { idle_wait_ms: 300, ..ConsumerSettings::default() };
    settings.mailer.http.port = Some(0);
    let client = bus::connect(&settings.nats, mailer::CONSUMER_NAME).await.expect("connect");
    let handler = Mailer::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(mailer::run(settings.clone(), client.clone(), handler.clone(), shutdown.clone()));

    let event = ProspectSignedUp {
        prospect_id: uuid::Uuid::now_v7(),
        details: ProspectDetails {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            company_name: None,
            country: Country { code: "GB".into(), name: "United Kingdom".into() },
            role: Role { code: "EN".into(), name: "Engineer".into() },
        },
        signed_up_at: chrono::Utc::now(),
    };
    bus::ensure_stream(&bus::async_nats::jetstream::new(client.clone()), &settings.nats.stream).await.expect("stream");
    let publisher = Publisher::new(client.clone(), "/test", Duration::from_secs(2));
    publisher.publish(&event, &EventContext::new()).await.expect("published");

    eventually(Duration::from_secs(20), "the handler to see the event", || async {
        (handler.handled() == 1).then_some(())
    })
    .await
    .expect("handled");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}
