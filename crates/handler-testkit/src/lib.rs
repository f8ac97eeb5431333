//! A test kit for Signup event handlers: a handler's own tests run it the way
//! production does, against a real `nats-server`, in about ten lines.
//!
//! ```no_run
//! use handler_testkit::{TestBus, sample};
//! # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! # #[derive(Clone, Default)] struct Counter(Arc<AtomicUsize>);
//! # impl Counter { fn handled(&self) -> usize { self.0.load(Ordering::SeqCst) } }
//! # impl bus::Handler for Counter {
//! #     type Event = messages::ProspectSignedUp;
//! #     async fn handle(&self, batch: &[bus::Delivery<Self::Event>]) -> Result<(), bus::HandlerError> {
//! #         self.0.fetch_add(batch.len(), Ordering::SeqCst);
//! #         Ok(())
//! #     }
//! # }
//!
//! // In a handler crate's tests/, under #[tokio::test(flavor = "multi_thread")]:
//! async fn a_sign_up_reaches_the_handler() -> anyhow::Result<()> {
//!     let bus = TestBus::start().await?; // a private nats-server and the event stream
//!     let handler = Counter::default();
//!     let running = bus.run("counter", handler.clone()).await?; // the real consumer runner
//!     bus.publish(&sample::signed_up()).await?; // through signup-web's publisher
//!     bus.settled("counter").await?; // every event it takes is acked (or dead-lettered)
//!     assert_eq!(handler.handled(), 1);
//!     running.stop().await
//! }
//! ```
//!
//! What the handler sees is what it sees in production: the events travel
//! through JetStream with their CloudEvents headers, arrive through the
//! handler's own durable consumer, are retried and dead-lettered by the same
//! runner ([`bus::ConsumerRunner`]) with its settings shortened for tests
//! ([`test_consumer`]). Nothing is faked: the server is the `nats-server`
//! binary (see [`test_support::nats_server_bin`] for where it is found; the
//! project's `scripts/test` installs one).
//!
//! # Layout
//! - [`TestBus`]: the server, the streams, publishing, running a handler,
//!   waiting for it to settle, the dead letters.
//! - [`Running`]: a handler running until [`Running::stop`].
//! - [`sample`]: a valid event of each type, with fresh ids.
//! - [`eventually`] (from `test-support`): for an effect outside NATS (a row,
//!   a mail, a request) that a test can only poll.

use std::time::Duration;

use anyhow::Context as _;
use bus::async_nats::{self, jetstream};
use bus::settings::{ConsumerSettings, NatsSettings, StreamSettings};
use bus::{EventContext, Handler, Published, Publisher};
use messages::{Event, EventSet};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use test_support::{NatsServer, eventually};

/// How long the waits of this kit give the handler.
const PATIENCE: Duration = Duration::from_secs(30);

/// A private `nats-server` with the event and dead-letter streams, and a
/// client of it.
pub struct TestBus {
    server: NatsServer,
    client: async_nats::Client,
    stream: StreamSettings,
    publisher: Publisher,
}

impl TestBus {
    /// Starts a `nats-server` with JetStream on a free port, its store in a
    /// temporary folder, and creates the streams as the services do.
    pub async fn start() -> anyhow::Result<Self> {
        let server = NatsServer::start().await?;
        let client =
            bus::connect(&NatsSettings { url: server.url(), ..NatsSettings::default() }, "handler-testkit").await?;
        let stream = StreamSettings::default();
        let js = jetstream::new(client.clone());
        bus::ensure_stream(&js, &stream).await?;
        bus::stream::ensure_dlq_stream(&js, &stream).await?;
        // signup-web's publisher (source /handler-testkit, no ce-dataschema:
        // no web serves the schemas here), retrying through a restart.
        let publisher = Publisher::new(client.clone(), "/handler-testkit", Duration::from_secs(5))
            .with_retry(Duration::from_secs(10));
        Ok(Self { server, client, stream, publisher })
    }

    /// The server's URL, for a handler that connects by itself.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A connection to the server.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The server itself, to stop and restart it (an outage).
    pub fn server(&mut self) -> &mut NatsServer {
        &mut self.server
    }

    /// The event stream's settings (name, subjects).
    pub fn stream(&self) -> &StreamSettings {
        &self.stream
    }

    /// Publishes `event` on its subject with the CloudEvents headers
    /// signup-web's publisher (`bus::Publisher`) writes, and waits until the
    /// stream has stored it; a publish that fails for a passing reason (the
    /// server restarting) is tried again for up to 10 s.
    pub async fn publish<E: Event>(&self, event: &E) -> anyhow::Result<Published> {
        self.publisher.publish(event, &EventContext::new()).await.context("publishing")
    }

    /// Runs `handler` through the real consumer runner on the durable
    /// consumer `consumer` (the handler crate's `CONSUMER_NAME`), with
    /// [`test_consumer`] settings; returns once the consumer exists.
    pub async fn run<H: Handler>(&self, consumer: &str, handler: H) -> anyhow::Result<Running> {
        self.run_with(consumer, test_consumer(), handler).await
    }

    /// [`TestBus::run`] with these consumer settings.
    pub async fn run_with<H: Handler>(
        &self,
        consumer: &str,
        settings: ConsumerSettings,
        handler: H,
    ) -> anyhow::Result<Running> {
        let shutdown = CancellationToken::new();
        let runner = bus::ConsumerRunner::new(self.client.clone(), self.stream.clone(), consumer, settings);
        let task = tokio::spawn(runner.run(handler, shutdown.clone()));
        let running = Running { shutdown, task: Some(task) };
        let stream =
            if H::Event::DEAD_LETTERS { bus::stream::dlq_stream_name(&self.stream) } else { self.stream.name.clone() };
        let js = jetstream::new(self.client.clone());
        eventually(PATIENCE, &format!("the durable consumer {consumer}"), || async {
            js.get_stream(&stream).await.ok()?.consumer_info(consumer).await.ok().map(|_| ())
        })
        .await?;
        Ok(running)
    }

    /// Waits until the consumer `consumer` has settled every event it takes
    /// that is in the stream now: applied and acked, or dead-lettered.
    pub async fn settled(&self, consumer: &str) -> anyhow::Result<()> {
        let js = jetstream::new(self.client.clone());
        eventually(PATIENCE, &format!("{consumer} to settle its events"), || async {
            for stream in [self.stream.name.clone(), bus::stream::dlq_stream_name(&self.stream)] {
                let Ok(found) = js.get_stream(&stream).await else { continue };
                if let Ok(info) = found.consumer_info(consumer).await {
                    return (info.num_pending == 0 && info.num_ack_pending == 0).then_some(());
                }
            }
            None
        })
        .await
    }

    /// How many dead letters the dead-letter stream holds.
    pub async fn dead_letters(&self) -> anyhow::Result<u64> {
        let js = jetstream::new(self.client.clone());
        let mut stream = js.get_stream(bus::stream::dlq_stream_name(&self.stream)).await?;
        Ok(stream.info().await?.state.messages)
    }
}

/// Consumer settings for tests: the defaults (a new consumer starts at the
/// stream's first event, five deliveries before a dead letter) with short
/// waits: an idle fetch of 200 ms, retries from 50 ms to 400 ms, and an ack
/// wait of 5 s (an event whose ack a crashed server lost comes again after
/// it; the runner keeps a slow batch alive with progress acks).
pub fn test_consumer() -> ConsumerSettings {
    ConsumerSettings {
        idle_wait_ms: 200,
        ack_wait_secs: 5,
        retry_base_ms: 50,
        retry_max_ms: 400,
        outage_backoff_max_ms: 500,
        ..ConsumerSettings::default()
    }
}

/// A handler running under the consumer runner; stopped when dropped.
pub struct Running {
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops the runner as SIGTERM does (it finishes and acks the batch in
    /// hand) and returns how the run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.context("the consumer runner panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A valid event of each type, with a fresh prospect id (or the one given)
/// and the time now.
pub mod sample {
    use chrono::Utc;
    use messages::{
        Country, ManageLinkRequested, ProspectConfirmed, ProspectDeleted, ProspectDetails,
        ProspectEmailChangeRequested, ProspectSignedUp, ProspectSignedUpV1, ProspectUpdated, Role,
    };
    use uuid::Uuid;

    /// Details as a sign-up carries them.
    pub fn details() -> ProspectDetails {
        ProspectDetails {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            company_name: Some("Analytical Engines".into()),
            country: Country { code: "GB".into(), name: "United Kingdom".into() },
            role: Role { code: "EN".into(), name: "Engineer".into() },
        }
    }

    /// A sign-up of a new prospect, as signup-web publishes it (version 2,
    /// its consent recorded).
    pub fn signed_up() -> ProspectSignedUp {
        let signed_up_at = Utc::now();
        ProspectSignedUp {
            prospect_id: Uuid::now_v7(),
            details: details(),
            signed_up_at,
            consent: messages::Consent::Recorded(messages::ConsentRecord {
                notice_version: "sha256:0123456789abcdef".into(),
                agreed_at: signed_up_at,
                client: None,
            }),
        }
    }

    /// A sign-up as the stream keeps those made before consent was recorded
    /// (version 1): a handler receives it as [`signed_up`]'s type, its
    /// consent "not recorded".
    pub fn signed_up_v1() -> ProspectSignedUpV1 {
        ProspectSignedUpV1 { prospect_id: Uuid::now_v7(), details: details(), signed_up_at: Utc::now() }
    }

    /// New details for `prospect_id`.
    pub fn updated(prospect_id: Uuid, details: ProspectDetails) -> ProspectUpdated {
        ProspectUpdated { prospect_id, details, updated_at: Utc::now() }
    }

    /// The confirmation of `prospect_id`'s sign-up.
    pub fn confirmed(prospect_id: Uuid) -> ProspectConfirmed {
        ProspectConfirmed { prospect_id, confirmed_at: Utc::now(), client: Default::default() }
    }

    /// The erasure of `prospect_id`.
    pub fn deleted(prospect_id: Uuid) -> ProspectDeleted {
        ProspectDeleted { prospect_id, deleted_at: Utc::now(), disowned: false }
    }

    /// `prospect_id` asks to move to `new_email`.
    pub fn email_change(prospect_id: Uuid, new_email: &str) -> ProspectEmailChangeRequested {
        let previous_email = details().email;
        ProspectEmailChangeRequested {
            prospect_id,
            details: ProspectDetails { email: new_email.into(), ..details() },
            previous_email,
            requested_at: Utc::now(),
        }
    }

    /// A new manage link asked for `prospect_id`'s address.
    pub fn link_requested(prospect_id: Uuid) -> ManageLinkRequested {
        ManageLinkRequested { prospect_id, email: details().email, requested_at: Utc::now(), by_owner: false }
    }
}
