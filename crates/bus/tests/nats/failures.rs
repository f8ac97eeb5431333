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
use messages::{Event, ProspectDeleted, ProspectEvent, ProspectSignedUp, ProspectSignedUpV1, dlq};
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
    /// Fails permanently on its first `n` attempts (across redeliveries and
    /// replays), then succeeds.
    RejectTimes(usize),
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
    /// Every event the handler was given: (event id, delivery count).
    seen: Arc<Mutex<Vec<(Uuid, i64)>>>,
    attempts: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// The first call takes this long (a lock, a slow dependency).
    first_call_takes: Option<Duration>,
    /// Every sign-up the handler was given, as it was given.
    sign_ups: Arc<Mutex<Vec<ProspectSignedUp>>>,
}

impl Handler for Scripted {
    type Event = ProspectEvent;
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            *calls += 1;
            *calls
        };
        self.seen.lock().expect("lock").extend(batch.iter().map(|d| (d.meta.event_id, d.meta.delivered)));
        self.sign_ups.lock().expect("lock").extend(batch.iter().filter_map(|d| match &d.event {
            ProspectEvent::SignedUp(e) => Some(e.clone()),
            _ => None,
        }));
        if call == 1
            && let Some(slow) = self.first_call_takes
        {
            tokio::time::sleep(slow).await;
        }
        if call <= self.outage_calls {
            return Err(HandlerError::Unavailable(anyhow::anyhow!("database unreachable")));
        }
        for delivery in batch {
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                let attempt = attempts.entry(delivery.event.prospect_id()).or_default();
                *attempt += 1;
                *attempt
            };
            match self.scripts.get(&delivery.event.prospect_id()) {
                Some(Script::RejectTimes(n)) if attempt <= *n => {
                    return Err(HandlerError::Permanent(anyhow::anyhow!("rejected for now")));
                }
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
            let event = ProspectDeleted { prospect_id: Uuid::now_v7(), deleted_at: Utc::now(), disowned: false };
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

// Versions: the stream holds version 1 sign-ups, written before version 2;
// a publisher upgraded before this handler writes a version it does not know.
#[tokio::test]
async fn a_version_1_sign_up_reaches_the_handler_as_version_2_and_an_unknown_version_is_dead_lettered_by_name() {
    let bed = bed().await;
    let details = messages::ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@example.com".into(),
        company_name: None,
        country: messages::Country { code: "GB".into(), name: "United Kingdom".into() },
        role: messages::Role { code: "EN".into(), name: "Engineer".into() },
    };
    let v1 = ProspectSignedUpV1 { prospect_id: Uuid::now_v7(), details: details.clone(), signed_up_at: Utc::now() };
    bed.publisher.publish(&v1, &EventContext::new()).await.expect("publish v1");
    let newer = Uuid::now_v7();
    let subject = messages::streams::event_subject(newer, ProspectSignedUp::KIND);
    let mut headers = async_nats::HeaderMap::new();
    let event_id = Uuid::now_v7().to_string();
    for (name, value) in [
        (messages::cloudevents::SPECVERSION, "1.0"),
        (messages::cloudevents::ID, event_id.as_str()),
        (messages::cloudevents::SOURCE, "/signup-web"),
        (messages::cloudevents::TYPE, "io.signup.prospect.signedup.v3"),
        (messages::cloudevents::NATS_MSG_ID, event_id.as_str()),
    ] {
        headers.insert(name, value);
    }
    let payload = serde_json::json!({"prospectId": newer, "signedUpAt": Utc::now(), "consent": {"recorded": false}});
    bed.js
        .publish_with_headers(subject.clone(), headers, payload.to_string().into())
        .await
        .expect("publish v3")
        .await
        .expect("ack");

    let handler = Scripted::default();
    let (shutdown, task) = bed.run(handler.clone(), quick());
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");

    let expected = ProspectSignedUp {
        prospect_id: v1.prospect_id,
        details,
        signed_up_at: v1.signed_up_at,
        consent: messages::Consent::NotRecorded,
    };
    assert_eq!(*handler.sign_ups.lock().expect("lock"), [expected], "version 1, read as version 2; version 3 never");
    let letters = bed.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let reason = header(&letters[0], dlq::REASON);
    assert!(
        reason.contains("\"io.signup.prospect.signedup.v3\" is a version this handler does not read")
            && reason.contains(ProspectSignedUp::TYPE),
        "{reason}"
    );
    assert_eq!(header(&letters[0], dlq::SUBJECT), subject);
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

#[tokio::test]
async fn a_replayed_event_that_fails_again_and_is_replayed_again_is_applied() {
    let bed = bed().await;
    let ids = bed.publish(1).await;
    let (prospect, event) = ids[0];
    let handler =
        Scripted { scripts: Arc::new(HashMap::from([(prospect, Script::RejectTimes(2))])), ..Scripted::default() };
    let (shutdown, task) = bed.run(handler.clone(), quick());
    let letters = bus::dlq::DeadLetters::new(bed.client.clone(), &StreamSettings::default());
    let letter = |n: usize| {
        let letters = &letters;
        async move {
            eventually(Duration::from_secs(20), "a dead letter", || async {
                let list = letters.list(100).await.ok()?;
                (list.len() == 1 && list[0].sequence as usize == n).then(|| list[0].sequence)
            })
            .await
            .expect("letter")
        }
    };
    // Dead-lettered, replayed, fails again (a new letter), replayed again:
    // all inside the duplicate window.
    let first = letter(1).await;
    letters.replay(first, false).await.expect("first replay");
    let second = letter(2).await;
    let replayed = letters.replay(second, false).await.expect("second replay");
    assert!(replayed.new_stream_sequence.is_some(), "the second replay is stored, not taken for a duplicate");
    eventually(Duration::from_secs(20), "the event to be applied", || async {
        handler.applied.lock().ok()?.iter().any(|(id, _)| *id == event).then_some(())
    })
    .await
    .expect("applied on its third attempt");
    assert!(letters.list(100).await.expect("list").is_empty(), "no letter left");
    shutdown.cancel();
    task.await.expect("join").expect("runner");
}

/// Writes a dead letter by hand, as any handler's NATS user could: under
/// `letter_subject`, saying it was `consumer`'s, of the event with `event_id`
/// on `subject` at stream sequence `sequence`.
async fn forge(bed: &Bed, letter_subject: &str, letter: [&str; 4], payload: &str) -> u64 {
    let [consumer, subject, sequence, event_id] = letter;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(dlq::CONSUMER, consumer);
    headers.insert(dlq::SUBJECT, subject);
    headers.insert(dlq::STREAM_SEQ, sequence);
    headers.insert(messages::cloudevents::ID, event_id);
    let ack = bed.js.publish_with_headers(letter_subject.to_owned(), headers, payload.to_owned().into()).await;
    ack.expect("sent").await.expect("stored").sequence
}

#[tokio::test]
async fn replay_refuses_letters_that_point_at_no_event_of_the_stream() {
    let bed = bed().await;
    bus::stream::ensure_dlq_stream(&bed.js, &StreamSettings::default()).await.expect("dlq");
    let (victim, event) = bed.publish(1).await[0];
    let subject = messages::streams::event_subject(victim, ProspectDeleted::KIND);
    let letter_subject = dlq::subject("crm-webhook", &subject);
    let event_id = event.to_string();
    let letters = bus::dlq::DeadLetters::new(bed.client.clone(), &StreamSettings::default());
    let cases = [
        ("a consumer header that is not the letter's handler", ["save-prospect", &subject, "1", &event_id]),
        ("a subject outside the stream", ["crm-webhook", "$JS.API.STREAM.DELETE.PROSPECTS", "1", &event_id]),
        ("another event's id at that sequence", ["crm-webhook", &subject, "1", "0192f0c1-7a3b-7cde-8f01-23456789abcd"]),
        ("a sequence the stream never had", ["crm-webhook", &subject, "999999", &event_id]),
    ];
    let stored =
        || async { bed.js.get_stream("PROSPECTS").await.expect("stream").info().await.expect("info").state.messages };
    let before = stored().await;
    for (what, letter) in cases {
        let sequence = forge(&bed, &letter_subject, letter, "{}").await;
        let error = letters.replay(sequence, false).await.expect_err(what);
        assert!(error.to_string().contains("refused, kept"), "{what}: {error}");
        assert!(letters.get(sequence).await.is_ok(), "{what}: the letter is kept");
    }
    assert_eq!(stored().await, before, "nothing was published");

    // A letter that points at the real event but carries another payload:
    // what is replayed is the event as the stream holds it.
    let forged = format!(r#"{{"prospectId":"{}","deletedAt":"2001-01-01T00:00:00Z"}}"#, Uuid::now_v7());
    let pointer = forge(&bed, &letter_subject, ["crm-webhook", &subject, "1", &event_id], &forged).await;
    let replayed = letters.replay(pointer, false).await.expect("replayed");
    let stream = bed.js.get_stream("PROSPECTS").await.expect("stream");
    let copy = stream.get_raw_message(replayed.new_stream_sequence.expect("stored")).await.expect("copy");
    let original = stream.get_raw_message(1).await.expect("original");
    assert_eq!(copy.payload, original.payload, "the stream's own payload, not the letter's");
    assert_eq!(copy.subject, original.subject);
}

#[tokio::test]
async fn a_batch_that_outlasts_the_ack_wait_is_not_handed_out_again() {
    let bed = bed().await;
    let ids = bed.publish(3).await;
    let handler = Scripted { first_call_takes: Some(Duration::from_secs(5)), ..Scripted::default() };
    let settings = ConsumerSettings { ack_wait_secs: 3, concurrency: 2, ..quick() };
    let (shutdown, task) = bed.run(handler.clone(), settings);
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");
    let seen = handler.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), ids.len(), "each event was given to the handler once: {seen:?}");
    assert!(seen.iter().all(|(_, delivered)| *delivered == 1), "none was redelivered: {seen:?}");
}

#[tokio::test]
async fn progress_acks_follow_the_consumers_own_ack_wait() {
    let bed = bed().await;
    // The consumer as an older deployment created it: a 3 s ack wait.
    let stream = bed.js.get_stream("PROSPECTS").await.expect("stream");
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("failures-test".into()),
            filter_subject: messages::streams::PROSPECTS_SUBJECTS.into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(3),
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .expect("old consumer");
    let ids = bed.publish(2).await;
    // The settings now say 30 s; the first batch takes 6.
    let handler = Scripted { first_call_takes: Some(Duration::from_secs(6)), ..Scripted::default() };
    let settings = ConsumerSettings { ack_wait_secs: 30, concurrency: 2, ..quick() };
    let (shutdown, task) = bed.run(handler.clone(), settings);
    bed.settled().await;
    shutdown.cancel();
    task.await.expect("join").expect("runner");
    let seen = handler.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), ids.len(), "each event was given to the handler once: {seen:?}");
    assert!(seen.iter().all(|(_, delivered)| *delivered == 1), "none was redelivered: {seen:?}");
    let info = stream.consumer_info("failures-test").await.expect("info");
    assert_eq!(info.config.ack_wait, Duration::from_secs(30), "the consumer follows the settings");
}
