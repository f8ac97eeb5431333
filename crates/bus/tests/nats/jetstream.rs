//! The bus against a real nats-server (one per test).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bus::settings::{ConsumerSettings, NatsSettings, StreamSettings};
use bus::{ConsumerRunner, Delivery, EventContext, Handler, HandlerError, PublishError, Publisher};
use chrono::Utc;
use futures::StreamExt;
use messages::{Event, ProspectDeleted, ProspectEvent, cloudevents as ce};
use test_support::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn settings(server: &NatsServer) -> NatsSettings {
    NatsSettings { url: server.url(), ..NatsSettings::default() }
}

async fn connected(server: &NatsServer) -> async_nats::Client {
    let client = bus::connect(&settings(server), "bus-test").await.expect("connect");
    eventually(Duration::from_secs(5), "the client to connect", || async { bus::is_connected(&client).then_some(()) })
        .await
        .expect("connected");
    client
}

/// A private server with the event stream, and a connected client.
async fn started() -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::start().await.expect("nats-server");
    let client = connected(&server).await;
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    (server, client, js)
}

fn deleted() -> ProspectDeleted {
    ProspectDeleted { prospect_id: Uuid::now_v7(), deleted_at: Utc::now(), disowned: false }
}

#[tokio::test]
async fn publish_sets_cloudevents_headers_and_deduplicates_by_event_id() {
    let (_server, client, js) = started().await;
    let publisher = Publisher::new(client, "/bus-test", Duration::from_secs(2));

    let event = deleted();
    let context =
        EventContext::new().with_traceparent(Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()));
    let first = publisher.publish(&event, &context).await.expect("first publish");
    let second = publisher.publish(&event, &context).await.expect("second publish");
    assert!(!first.duplicate);
    assert!(second.duplicate, "same Nats-Msg-Id inside the window is dropped");
    assert_eq!(first.stream_sequence, second.stream_sequence);

    let mut stream = js.get_stream("PROSPECTS").await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
    let stored = stream.get_raw_message(first.stream_sequence).await.expect("stored message");
    let headers = stored.headers;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(stored.subject.as_str(), event.subject(), "the prospect's own subject");
    assert_eq!(get(ce::SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(get(ce::ID), Some(context.id.to_string()));
    assert_eq!(get(ce::NATS_MSG_ID), Some(context.id.to_string()));
    assert_eq!(get(ce::SOURCE).as_deref(), Some("/bus-test"));
    assert_eq!(get(ce::TYPE).as_deref(), Some(ProspectDeleted::TYPE));
    assert_eq!(get(ce::CONTENT_TYPE).as_deref(), Some("application/json"));
    assert_eq!(get(ce::TRACEPARENT), context.traceparent);
    let time = get(ce::TIME).expect("ce-time");
    assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok(), "{time}");
    let payload: ProspectDeleted = serde_json::from_slice(&stored.payload).expect("payload is the event");
    assert_eq!(payload, event);
}

#[tokio::test]
async fn ensuring_the_stream_twice_at_once_is_safe_and_keeps_settings() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = connected(&server).await;
    let js = jetstream::new(client);
    let stream = StreamSettings { duplicate_window_secs: 300, ..StreamSettings::default() };
    let (a, b) = tokio::join!(bus::ensure_stream(&js, &stream), bus::ensure_stream(&js, &stream));
    a.expect("first");
    b.expect("second");
    let mut names: Vec<String> = js.stream_names().map(|n| n.expect("name")).collect().await;
    names.sort();
    assert_eq!(names, vec!["PROSPECTS".to_owned()]);
    let info = js.get_stream("PROSPECTS").await.expect("stream").cached_info().clone();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(300));
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.retention, jetstream::stream::RetentionPolicy::Limits);
    // Metadata the server keeps (2.10 and later) says what the stream holds.
    assert_eq!(info.config.metadata.get("signup.subjects").map(String::as_str), Some("events.prospect.>"));
}

#[tokio::test]
async fn publishing_without_nats_fails_fast_instead_of_buffering() {
    let mut server = NatsServer::start().await.expect("nats-server");
    let client = connected(&server).await;
    bus::ensure_stream(&jetstream::new(client.clone()), &StreamSettings::default()).await.expect("stream");
    let publisher = Publisher::new(client.clone(), "/bus-test", Duration::from_millis(500));
    server.stop().await.expect("stop");
    eventually(Duration::from_secs(5), "the client to notice", || async {
        (!bus::is_connected(&client)).then_some(())
    })
    .await
    .expect("disconnected");
    let error = publisher.publish(&deleted(), &EventContext::new()).await.expect_err("no server");
    assert!(matches!(error, PublishError::NotConnected), "{error:?}");

    server.restart().await.expect("restart");
    eventually(Duration::from_secs(10), "a publish to succeed again", || async {
        publisher.publish(&deleted(), &EventContext::new()).await.ok()
    })
    .await
    .expect("recovers without a new client");
}

async fn consumer_info(js: &jetstream::Context) -> jetstream::consumer::Info {
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    stream.consumer_info("bus-test").await.expect("consumer info")
}

fn quick_consumer() -> ConsumerSettings {
    ConsumerSettings { batch_size: 100, idle_wait_ms: 200, retry_base_ms: 100, ..ConsumerSettings::default() }
}

#[tokio::test]
async fn shutdown_finishes_and_acks_the_batch_in_hand() {
    /// Blocks inside the handler until released, to stop mid-batch.
    #[derive(Clone)]
    struct Slow {
        entered: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
        done: Arc<Mutex<usize>>,
    }
    impl Handler for Slow {
        type Event = ProspectEvent;
        async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
            self.entered.notify_one();
            self.release.notified().await;
            *self.done.lock().expect("lock") += batch.len();
            Ok(())
        }
    }

    let (_server, client, js) = started().await;
    let publisher = Publisher::new(client.clone(), "/bus-test", Duration::from_secs(2));
    for _ in 0..5 {
        publisher.publish(&deleted(), &EventContext::new()).await.expect("publish");
    }
    let handler = Slow { entered: Arc::default(), release: Arc::default(), done: Arc::default() };
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(client.clone(), StreamSettings::default(), "bus-test", quick_consumer());
    let task = tokio::spawn(runner.run(handler.clone(), shutdown.clone()));
    handler.entered.notified().await;
    shutdown.cancel();
    handler.release.notify_one();
    task.await.expect("join").expect("runner stops cleanly");
    assert_eq!(*handler.done.lock().expect("lock"), 5, "the batch in hand was finished");

    let info = eventually(Duration::from_secs(5), "acks to reach the server", || async {
        let info = consumer_info(&js).await;
        (info.num_ack_pending == 0).then_some(info)
    })
    .await
    .expect("acked");
    assert_eq!(info.num_pending, 0, "nothing left to redeliver");
    assert_eq!(info.delivered.stream_sequence, 5);
}
