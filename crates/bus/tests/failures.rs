//! The consumer runner's failure policy against a real nats-server: retries
//! with delay, isolation of bad events, dead letters, and outages that do not
//! use up deliveries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bus::settings::{ConsumerSettings, NatsSettings, StreamSettings};
use bus::{ConsumerRunner, Delivery, EventContext, Handler, HandlerError, Publisher};
use chrono::Utc;
use messages::{Event, ProspectDeleted, ProspectEvent, dlq};
use test_support::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a scripted handler does with one prospect's event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Fails (transiently) until its `n`-th delivery.
    FailUntilDelivery(i64),
    /// Always fails transiently.
    AlwaysFail,
    /// Fails permanently.
    Reject,
}

/// Applies events, following a script per prospect; records what it applied
/// (event id, delivery count). Optionally reports the database down for
/// its first `outage_calls` calls.
#[derive(Clone, Default)]
struct Scripted {
    scripts: Arc<HashMap<uuid::Uuid, Script>>,
    applied: Arc<Mutex<Vec<(Uuid, i64)>>>,
    calls: Arc<Mutex<usize>>,
    outage_calls: usize,
}

impl Handler for Scripted {
    type Event = ProspectEvent;
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            *calls += 1;
            *calls
        };
        if call <= self.outage_calls {
            return Err(HandlerError::Unavailable(anyhow::anyhow!("database unreachable")));
        }
        for delivery in batch {
            match self.scripts.get(&delivery.event.prospect_id()) {
                Some(Script::FailUntilDelivery(n)) if delivery.meta.delivered < *n => {
                    return Err(HandlerError::Transient(anyhow::anyhow!("flaky")));
                }
                Some(Script::AlwaysFail) => return Err(HandlerError::Transient(anyhow::anyhow!("always failing"))),
                Some(Script::Reject) => return Err(HandlerError::Permanent(anyhow::anyhow!("value not acceptable"))),
                _ => {}
            }
        }
        self.applied.lock().expect("lock").extend(batch.iter().map(|d| (d.meta.event_id, d.meta.delivered)));
        Ok(())
    }
}

struct Bed {
    _server: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    publisher: Publisher,
}

async fn bed() -> Bed {
    let server = NatsServer::start().await.expect("nats-server");
    let client = bus::connect(&NatsSettings { url: server.url(), ..NatsSettings::default() }, "failures-test")
        .await
        .expect("connect");
    eventually(Duration::from_secs(5), "connection", || async { bus::is_connected(&client).then_some(()) })
        .await
        .expect("connected");
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    let publisher = Publisher::new(client.clone(), "/failures-test", Duration::from_secs(2));
    Bed { _server: server, client, js, publisher }
}

impl Bed {
    /// Publishes one event per script entry (in order) and returns (prospect, event) ids.
    async fn publish(&self, count: usize) -> Vec<(Uuid, Uuid)> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let event = ProspectDeleted { prospect_id: Uuid::now_v7(), deleted_at: Utc::now() };
            let context = EventContext::new();
            self.publisher.publish(&event, &context).await.expect("publish");
            ids.push((event.prospect_id, context.id));
        }
        ids
    }

    fn run(
        &self,
        handler: Scripted,
        settings: ConsumerSettings,
    ) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let shutdown = CancellationToken::new();
        let runner = ConsumerRunner::new(self.client.clone(), StreamSettings::default(), "failures-test", settings);
        (shutdown.clone(), tokio::spawn(runner.run(handler, shutdown)))
    }

    async fn dead_letters(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let Ok(mut stream) = self.js.get_stream("PROSPECTS_DLQ").await else { return Vec::new() };
        let count = stream.info().await.expect("info").state.messages;
        let mut letters = Vec::new();
        for seq in 1..=count {
            letters.push(stream.get_raw_message(seq).await.expect("letter"));
        }
        letters
    }

    async fn settled(&self) -> jetstream::consumer::Info {
        eventually(Duration::from_secs(20), "every message settled", || async {
            let stream = self.js.get_stream("PROSPECTS").await.ok()?;
            let info = stream.consumer_info("failures-test").await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(info)
        })
        .await
        .expect("settled")
    }
}

fn quick() -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 50,
        idle_wait_ms: 200,
        retry_base_ms: 50,
        retry_max_ms: 200,
        ..ConsumerSettings::default()
    }
}

fn header(letter: &async_nats::jetstream::message::StreamMessage, name: &str) -> String {
    letter.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn a_failing_event_is_retried_alone_while_the_others_are_applied() {
    let bed = bed().await;
    let ids = bed.publish(10).await;
    let flaky = ids[4];
    let handler =
        Scripted { scripts: Arc::new(HashMap::from([(flaky.0, Script::FailUntilDelivery(3))])), ..Scripted::default() };
    let (shutdown, task) = bed.run(handler.clone(), quick());
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");

    let applied = handler.applied.lock().expect("lock").clone();
    let mut applied_ids: Vec<Uuid> = applied.iter().map(|(id, _)| *id).collect();
    applied_ids.sort();
    let mut expected: Vec<Uuid> = ids.iter().map(|(_, event)| *event).collect();
    expected.sort();
    assert_eq!(applied_ids, expected, "every event applied exactly once");
    assert_eq!(
        applied.iter().find(|(id, _)| *id == flaky.1).map(|(_, d)| *d),
        Some(3),
        "the flaky one on its 3rd delivery"
    );
    assert!(
        applied.iter().filter(|(id, _)| *id != flaky.1).all(|(_, d)| *d == 1),
        "the good ones were not delayed: {applied:?}"
    );
    assert!(bed.dead_letters().await.is_empty());
}

#[tokio::test]
async fn poison_and_permanent_failures_are_dead_lettered_at_once_and_the_rest_applied() {
    let bed = bed().await;
    let good = bed.publish(3).await;
    let poison_subject = messages::streams::event_subject(uuid::Uuid::now_v7(), ProspectDeleted::KIND);
    bed.js.publish(poison_subject.clone(), "not json at all".into()).await.expect("raw").await.expect("ack");
    let rejected = bed.publish(1).await[0];
    let more = bed.publish(3).await;
    let handler = Scripted { scripts: Arc::new(HashMap::from([(rejected.0, Script::Reject)])), ..Scripted::default() };
    let (shutdown, task) = bed.run(handler.clone(), quick());
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");

    assert_eq!(handler.applied.lock().expect("lock").len(), good.len() + more.len());
    let letters = bed.dead_letters().await;
    assert_eq!(letters.len(), 2);
    let poison = letters.iter().find(|l| l.payload.as_ref() == b"not json at all").expect("poison letter");
    assert!(header(poison, dlq::REASON).contains("cannot be decoded"), "{}", header(poison, dlq::REASON));
    assert_eq!(header(poison, dlq::STREAM_SEQ), "4");
    assert_eq!(header(poison, dlq::SUBJECT), poison_subject);
    assert_eq!(poison.subject.as_str(), messages::dlq::subject("failures-test", &poison_subject));
    assert!(poison.subject.as_str().starts_with("dlq.prospect.failures-test.") && poison.subject.ends_with(".deleted"));
    let refused =
        letters.iter().find(|l| header(l, messages::cloudevents::ID) == rejected.1.to_string()).expect("rejected");
    assert!(header(refused, dlq::REASON).contains("value not acceptable"));
    assert_eq!(header(refused, dlq::CONSUMER), "failures-test");
    assert_eq!(header(refused, dlq::DELIVERIES), "1", "permanent: no retries");
    assert_eq!(header(refused, messages::cloudevents::TYPE), ProspectDeleted::TYPE, "original headers kept");
    let original: ProspectDeleted = serde_json::from_slice(&refused.payload).expect("original payload");
    assert_eq!(original.prospect_id, rejected.0);
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_dead_lettered_after_max_deliveries() {
    let bed = bed().await;
    let ids = bed.publish(2).await;
    let doomed = ids[0];
    let handler =
        Scripted { scripts: Arc::new(HashMap::from([(doomed.0, Script::AlwaysFail)])), ..Scripted::default() };
    let (shutdown, task) = bed.run(handler.clone(), ConsumerSettings { max_deliver: 3, ..quick() });
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");

    let letters = bed.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(header(&letters[0], messages::cloudevents::ID), doomed.1.to_string());
    assert_eq!(header(&letters[0], dlq::DELIVERIES), "3");
    assert!(header(&letters[0], dlq::REASON).contains("always failing"), "the last error is the reason");
    assert_eq!(handler.applied.lock().expect("lock").iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![ids[1].1]);
}

#[tokio::test]
async fn an_outage_holds_the_batch_without_using_up_deliveries() {
    let bed = bed().await;
    let ids = bed.publish(20).await;
    // Down for the first 8 attempts; max_deliver 2 would dead-letter
    // everything if waiting counted as deliveries.
    let handler = Scripted { outage_calls: 8, ..Scripted::default() };
    let (shutdown, task) =
        bed.run(handler.clone(), ConsumerSettings { max_deliver: 2, outage_backoff_max_ms: 200, ..quick() });
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");

    let applied = handler.applied.lock().expect("lock").clone();
    assert_eq!(applied.len(), ids.len(), "everything applied once the dependency was back");
    assert!(applied.iter().all(|(_, delivered)| *delivered == 1), "no redeliveries: {applied:?}");
    assert!(*handler.calls.lock().expect("lock") > 8);
    assert!(bed.dead_letters().await.is_empty(), "nothing dead-lettered");
}
