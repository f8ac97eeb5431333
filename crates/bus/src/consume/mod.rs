//! The consumer runner: a durable pull consumer feeding batches of typed
//! events to a [`Handler`].
//!
//! The runner fetches up to `batch_size` messages (taking what is ready at
//! once, or waiting for the first one when idle, so a quiet system has low
//! latency and a busy one gets full batches), decodes them, gives the batch to
//! the handler, and acks every message only after the handler returned `Ok` —
//! that is, after its effect is durable. When a batch fails:
//! - a message that cannot even be decoded (poison) is copied to the
//!   dead-letter stream with the reason and terminated;
//! - a batch of several events is re-applied one event at a time, so one bad
//!   event does not fail or delay the others;
//! - an event that fails is nak'ed with a growing, jittered delay, and
//!   dead-lettered once it failed `max_deliver` times or permanently;
//! - an event the handler defers ([`HandlerError::Deferred`]: a budget used
//!   up for now) is redelivered after the wait it names, never dead-lettered
//!   for waiting;
//! - while a dependency is down ([`HandlerError::Unavailable`]) the batch is
//!   held and retried after pauses and nothing new is fetched, so an outage
//!   never burns through the deliveries of the backlog; on NATS 2.11 and
//!   later the durable consumer itself is paused on the server meanwhile,
//!   so no other lane or replica fetches either, and resumed once the
//!   dependency answers.
//!
//! While a batch is being applied the next one is already fetched, so the
//! handler never waits for the server between batches. Batch size adapts to
//! the load: each fetch takes what is waiting, up to `batch_size`. An event
//! reaching an idle consumer is applied at once; when events are already
//! waiting but not a full batch, the runner keeps collecting for `linger_ms`,
//! so a busy system pays a transaction's fixed cost for many events at a
//! time instead of a few.
//!
//! On shutdown it stops fetching, finishes and acks the batch in hand, hands
//! back a batch fetched but not started, and flushes the acks before
//! returning.
//!
//! # Layout
//! Each part is a piece of [`ConsumerRunner`], readable alone:
//! - this module: the [`Handler`] contract, the runner and its lanes (the
//!   fetch-apply loop, with the connection-level retry);
//! - `durable`: the durable consumer on the server — created, its ack wait
//!   kept in step, paused and resumed during an outage;
//! - `fetch`: taking batches (ready now, lingering under load, waiting when
//!   idle) and prefetching the next while one is applied;
//! - `delivery`: a message to a typed [`Delivery`] (or why it is refused);
//! - `batch`: one batch — decode, apply, fall back to one event at a time,
//!   hold during an outage;
//! - `settle`: ack, nak with delay, progress acks and the outage pause;
//! - `dead_letter`: copying a failed event to the dead-letter stream;
//! - [`names`]: the metrics' names, shared by the sites that count and the
//!   start, which sets the counters to zero.

mod batch;
mod dead_letter;
mod delivery;
mod durable;
mod fetch;
pub mod names;
mod settle;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use messages::EventSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::ready::ReadyFlag;
use crate::settings::{ConsumerSettings, StreamSettings};

/// What a handler does with a batch of events.
///
/// Implementations must be idempotent (the same event can arrive again after
/// a crash or a lost ack) and must make their effect durable before
/// returning `Ok`, because the runner acks right after.
pub trait Handler: Send + Sync + 'static {
    /// The events this handler consumes: one event type or an enum such as
    /// [`messages::ProspectEvent`].
    type Event: EventSet;

    /// Applies a batch, in stream order, all or nothing. On an error the
    /// runner decides by its kind (see [`HandlerError`]); a failed batch of
    /// several events is retried one event at a time.
    fn handle(&self, batch: &[Delivery<Self::Event>]) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Why a batch could not be applied; decides what happens to it.
///
/// Shown (in a dead letter's reason, a log line, a span's status) with every
/// e-mail address replaced ([`crate::redact`]): the error may quote another
/// server's answer.
#[derive(Debug)]
pub enum HandlerError {
    /// Might succeed later (database down, timeout, serialization conflict):
    /// redeliver after a delay.
    Transient(anyhow::Error),
    /// Will never succeed as it is (a value the handler cannot accept):
    /// dead-letter it now.
    Permanent(anyhow::Error),
    /// A dependency (the database) is down; nothing is wrong with the events.
    /// The runner holds the batch and retries it after a pause, without
    /// using up deliveries, instead of dead-lettering the backlog.
    Unavailable(anyhow::Error),
    /// Nothing failed: this event must wait (a budget is used up for now).
    /// The runner redelivers it after `for_at_least`, and never
    /// dead-letters it for waiting; the other events go on.
    Deferred {
        /// How long it waits at least.
        for_at_least: std::time::Duration,
        /// Why, for the log.
        reason: anyhow::Error,
    },
}

impl HandlerError {
    /// The error behind it.
    pub fn cause(&self) -> &anyhow::Error {
        match self {
            Self::Transient(error) | Self::Permanent(error) | Self::Unavailable(error) => error,
            Self::Deferred { reason, .. } => reason,
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Transient(_) => "transient failure",
            Self::Permanent(_) => "permanent failure",
            Self::Unavailable(_) => "dependency unavailable",
            Self::Deferred { .. } => "deferred",
        };
        write!(f, "{kind}: {}", crate::redact::addresses(&format!("{:#}", self.cause())))
    }
}

impl std::error::Error for HandlerError {}

/// The CloudEvents and JetStream attributes of a delivered event.
#[derive(Debug, Clone)]
pub struct EventMeta {
    /// `ce-id`: the event's unique id, the key for idempotency.
    pub event_id: Uuid,
    /// `ce-type`.
    pub ce_type: String,
    /// `ce-source`.
    pub source: String,
    /// `ce-time`, when present and valid.
    pub time: Option<DateTime<Utc>>,
    /// `traceparent`, when present.
    pub traceparent: Option<String>,
    /// Position in the stream: orders events across redeliveries.
    pub stream_sequence: u64,
    /// How many times this message has been delivered (1 the first time).
    pub delivered: i64,
}

/// One decoded event with its attributes.
#[derive(Debug, Clone)]
pub struct Delivery<E> {
    /// Where and when the event came from.
    pub meta: EventMeta,
    /// The event itself.
    pub event: E,
}

/// Runs a handler over its durable consumer until shutdown.
pub struct ConsumerRunner {
    js: jetstream::Context,
    stream: StreamSettings,
    durable_name: String,
    settings: ConsumerSettings,
    ready: ReadyFlag,
    /// The durable consumer's own `ack_wait` (in milliseconds), as the server
    /// has it: what progress acks are timed by.
    ack_wait_ms: AtomicU64,
    /// Whether the server can pause a consumer (2.11 and later).
    pausable: AtomicBool,
    /// Whether the handler reads dead letters (the dead-letter stream).
    dead_letters: AtomicBool,
    /// The dead-letter stream's name.
    dlq_stream: String,
    /// The consumer that counts the handler's dead letters, once made (a
    /// storm of failures must not make it again for every letter).
    letter_tally: tokio::sync::Mutex<Option<jetstream::consumer::PullConsumer>>,
}

impl ConsumerRunner {
    /// A runner for the durable consumer `durable_name` (by convention the
    /// handler crate's name) on the stream described by `stream`.
    pub fn new(
        client: async_nats::Client,
        stream: StreamSettings,
        durable_name: impl Into<String>,
        settings: ConsumerSettings,
    ) -> Self {
        let ack_wait_ms = AtomicU64::new(settings.ack_wait_secs.saturating_mul(1_000));
        Self {
            js: jetstream::new(client),
            durable_name: durable_name.into(),
            settings,
            ready: ReadyFlag::default(),
            ack_wait_ms,
            pausable: AtomicBool::new(false),
            dead_letters: AtomicBool::new(false),
            dlq_stream: crate::stream::dlq_stream_name(&stream),
            stream,
            letter_tally: tokio::sync::Mutex::new(None),
        }
    }

    /// Reports through `flag` whether the consumer is working: set once the
    /// durable consumer exists, cleared while fetching fails or while the
    /// handler's dependency is down (events held).
    pub fn with_ready_flag(mut self, flag: ReadyFlag) -> Self {
        self.ready = flag;
        self
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in
    /// hand, acks it and flushes. Connection trouble is waited out, never
    /// fatal.
    ///
    /// It runs as a task of its own on the runtime's workers, beside the
    /// NATS connection's task, whoever awaits it: awaited on a service's
    /// main thread (`block_on`), every reply from NATS woke that thread
    /// from a worker, a context switch each.
    pub async fn run<H: Handler>(self, handler: H, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::spawn(self.run_here(handler, shutdown))
            .await
            .unwrap_or_else(|panicked| Err(anyhow::anyhow!("the consumer runner panicked: {panicked}")))
    }

    async fn run_here<H: Handler>(self, handler: H, shutdown: CancellationToken) -> anyhow::Result<()> {
        let name = &self.durable_name;
        let lanes = self.settings.concurrency.max(1);
        tracing::info!(consumer = %name, lanes, "consumer runner started");
        zero_metrics(name);
        futures::future::join_all((0..lanes).map(|_| self.lane(&handler, &shutdown))).await;
        // Push out the acks of the last batches before the caller drains.
        if let Err(error) = self.js.client().flush().await {
            tracing::warn!(%error, "could not flush the last acks; those messages will be redelivered");
        }
        tracing::info!(consumer = %name, "consumer runner stopped");
        Ok(())
    }

    /// One fetch-and-apply loop; `concurrency` of them share the consumer.
    async fn lane<H: Handler>(&self, handler: &H, shutdown: &CancellationToken) {
        let name = &self.durable_name;
        // Connection-level trouble: 100 ms doubling to 5 s.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut consumer: Option<PullConsumer> = None;
        // The next batch, fetched while the previous one was being applied.
        let mut prefetched: Option<Vec<jetstream::Message>> = None;
        while !shutdown.is_cancelled() {
            let current = match &consumer {
                Some(c) => c,
                None => match self.ensure_consumer::<H::Event>().await {
                    Ok(c) => {
                        tracing::info!(consumer = %name, "durable consumer ready");
                        self.ready.set(true);
                        backoff.reset();
                        consumer.insert(c)
                    }
                    Err(error) => {
                        tracing::warn!(consumer = %name, error = %format!("{error:#}"), "consumer not ready; retrying");
                        self.ready.set(false);
                        backoff.wait(shutdown).await;
                        continue;
                    }
                },
            };
            let fetched = match prefetched.take() {
                Some(messages) => Ok(messages),
                None => self.next_batch(current, shutdown).await,
            };
            match fetched {
                Ok(messages) if messages.is_empty() => {
                    // Nothing arrived within the idle wait: no lag.
                    metrics::gauge!(names::PENDING, "consumer" => name.clone()).set(0.0);
                    backoff.reset();
                }
                Ok(messages) => {
                    backoff.reset();
                    prefetched = self.process_and_prefetch(handler, messages, current, shutdown).await;
                    // The batch is settled, so any outage it waited out is over.
                    self.ready.set(true);
                }
                Err(error) => {
                    tracing::warn!(consumer = %name, error = %format!("{error:#}"), "fetch failed; will re-check the consumer");
                    self.ready.set(false);
                    consumer = None;
                    backoff.wait(shutdown).await;
                }
            }
        }
        // A batch fetched but not started goes back at once, for another
        // instance (or the next start) to take.
        for message in prefetched.into_iter().flatten() {
            if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(%error, "could not hand back a fetched message; it will be redelivered");
            }
        }
    }

    /// The stream the durable consumer reads.
    pub(super) fn stream_name(&self) -> &str {
        if self.dead_letters.load(Ordering::Relaxed) { &self.dlq_stream } else { &self.stream.name }
    }

    /// A third of the consumer's real ack wait (at least 100 ms).
    pub(super) fn progress_interval(&self) -> Duration {
        (Duration::from_millis(self.ack_wait_ms.load(Ordering::Relaxed)) / 3).max(Duration::from_millis(100))
    }
}

/// The consumer's counters and gauges, at zero from its start: a series that
/// first appears at 1 gives Prometheus no increase to alert on (the first
/// dead letter would pass unseen), and a dashboard panel has a line to draw.
fn zero_metrics(name: &str) {
    for counter in names::COUNTERS {
        metrics::counter!(counter, "consumer" => name.to_owned()).absolute(0);
    }
    metrics::gauge!(names::PAUSED, "consumer" => name.to_owned()).set(0.0);
}
