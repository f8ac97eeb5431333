//! __NAME__ against a real nats-server: an event published the way
//! signup-web publishes it reaches the handler.

use std::time::Duration;

use bus::runtime::Context;
use bus::settings::{ConsumerSettings, NatsSettings};
use bus::{EventContext, Publisher};
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use test_support::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;
use __CRATE__::{__TYPE__, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_sign_up_reaches_the_handler() {
    let nats = NatsServer::start().await.expect("nats-server");
    let mut settings = Settings { nats: NatsSettings { url: nats.url(), ..NatsSettings::default() }, ..Settings::default() };
    settings.__SECTION__.consumer = ConsumerSettings { idle_wait_ms: 300, ..ConsumerSettings::default() };
    settings.__SECTION__.http.port = Some(0);
    let client = bus::connect(&settings.nats, __CRATE__::CONSUMER_NAME).await.expect("connect");
    let handler = __TYPE__::default();
    let shutdown = CancellationToken::new();
    // What `run` does, with a handler the test can look at.
    let context = Context::new(__CRATE__::CONSUMER_NAME, client.clone(), shutdown.clone());
    let own = settings.__SECTION__.clone();
    let consuming = handler.clone();
    let task = tokio::spawn(async move {
        context.consume(&settings.nats.stream, &own.consumer, &own.http, __CRATE__::HTTP_PORT, consuming).await
    });

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
    bus::ensure_stream(&bus::async_nats::jetstream::new(client.clone()), &bus::StreamSettings::default()).await.expect("stream");
    let publisher = Publisher::new(client.clone(), "/test", Duration::from_secs(2));
    publisher.publish(&event, &EventContext::new()).await.expect("published");

    eventually(Duration::from_secs(20), "the handler to see the event", || async { (handler.handled() == 1).then_some(()) })
        .await
        .expect("handled");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}
