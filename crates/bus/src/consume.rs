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

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use messages::{EventSet, cloudevents as ce, dlq};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::ops::ReadyFlag;
use crate::settings::{ConsumerSettings, StreamSettings};
use crate::stream::ensure_stream;

/// Unacknowledged messages a durable consumer allows (at least one batch).
const MAX_ACK_PENDING: i64 = 20_000;

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
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (database down, timeout, serialization conflict):
    /// redeliver after a delay.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed as it is (a value the handler cannot accept):
    /// dead-letter it now.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
    /// A dependency (the database) is down; nothing is wrong with the events.
    /// The runner holds the batch and retries it after a pause, without
    /// using up deliveries, instead of dead-lettering the backlog.
    #[error("dependency unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

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
            stream,
            durable_name: durable_name.into(),
            settings,
            ready: ReadyFlag::default(),
            ack_wait_ms,
            pausable: AtomicBool::new(false),
        }
    }

    /// Reports through `flag` whether the consumer is working: set once the
    /// durable consumer exists, cleared while fetching fails or while the
    /// handler's dependency is down (events held).
    pub fn with_ready_flag(mut self, flag: ReadyFlag) -> Self {
        self.ready = flag;
        self
    }

    /// Makes sure the stream and this durable consumer exist. A consumer
    /// that exists already keeps what it was created with, except its ack
    /// wait, which follows the settings (it is updated when they differ):
    /// progress acks are timed by the consumer's real ack wait either way.
    pub async fn ensure_consumer<E: EventSet>(&self) -> anyhow::Result<PullConsumer> {
        use anyhow::Context as _;
        let stream = ensure_stream(&self.js, &self.stream).await?;
        crate::stream::ensure_dlq_stream(&self.js, &self.stream).await?;
        let name = &self.durable_name;
        let mut consumer = stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("{name}: {}", E::FILTER_SUBJECT)),
                    filter_subject: E::FILTER_SUBJECT.to_owned(),
                    deliver_policy: if self.settings.from_start {
                        jetstream::consumer::DeliverPolicy::All
                    } else {
                        jetstream::consumer::DeliverPolicy::New
                    },
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(self.settings.ack_wait_secs),
                    // The runner counts deliveries and dead-letters; the server
                    // must never stop redelivering on its own (that would drop
                    // an event whose dead letter could not be stored).
                    max_deliver: -1,
                    // Generous and fixed: instances with other batch sizes share this consumer.
                    max_ack_pending: MAX_ACK_PENDING.max(i64::try_from(self.settings.batch_size).unwrap_or(i64::MAX)),
                    // Who uses this consumer, for `nats consumer info` and the
                    // operator's `signup` command (NATS 2.10 metadata).
                    metadata: [
                        ("signup.handler".to_owned(), name.clone()),
                        ("signup.events".to_owned(), E::FILTER_SUBJECT.to_owned()),
                        ("signup.created_by".to_owned(), format!("bus {}", env!("CARGO_PKG_VERSION"))),
                    ]
                    .into(),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating durable consumer {name}"))?;
        let wanted = Duration::from_secs(self.settings.ack_wait_secs);
        let actual = consumer.cached_info().config.ack_wait;
        if actual != wanted {
            let config = jetstream::consumer::Config { ack_wait: wanted, ..consumer.cached_info().config.clone() };
            match stream.update_consumer(config).await {
                Ok(_) => {
                    tracing::info!(consumer = %name, from = ?actual, to = ?wanted, "updated the consumer's ack wait");
                    consumer = stream
                        .get_consumer(name)
                        .await
                        .map_err(|e| anyhow::anyhow!("looking up consumer {name}: {e}"))?;
                }
                Err(error) => tracing::warn!(consumer = %name, %error, ack_wait = ?actual,
                    "cannot update the consumer's ack wait; progress acks follow the one it has"),
            }
        }
        let ack_wait = consumer.cached_info().config.ack_wait;
        self.ack_wait_ms.store(u64::try_from(ack_wait.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let version = self.js.client().server_info().version;
        let pausable = semver::Version::parse(&version).is_ok_and(|v| v >= semver::Version::new(2, 11, 0));
        self.pausable.store(pausable, Ordering::Relaxed);
        if consumer.cached_info().paused {
            // Left paused by an instance that stopped during an outage: try
            // the dependency now rather than wait for the pause to run out.
            self.resume_consumer().await;
        }
        Ok(consumer)
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in
    /// hand, acks it and flushes. Connection trouble is waited out, never
    /// fatal.
    pub async fn run<H: Handler>(self, handler: H, shutdown: CancellationToken) -> anyhow::Result<()> {
        let name = &self.durable_name;
        let lanes = self.settings.concurrency.max(1);
        tracing::info!(consumer = %name, lanes, "consumer runner started");
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
        let mut backoff = Backoff::default();
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
                    metrics::gauge!("signup_handler_pending", "consumer" => name.clone()).set(0.0);
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

    /// Processes `messages` while fetching the next batch, so the consumer
    /// never waits for the server between batches. Fetched messages that wait
    /// for a long batch (a database outage, say) get progress acks, so the
    /// server does not hand them out again meanwhile. Returns the next batch,
    /// if one was fetched.
    async fn process_and_prefetch<H: Handler>(
        &self,
        handler: &H,
        messages: Vec<jetstream::Message>,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> Option<Vec<jetstream::Message>> {
        let processing = self.process(handler, messages, shutdown);
        let fetching = self.next_batch(consumer, shutdown);
        tokio::pin!(processing, fetching);
        let mut next: Option<anyhow::Result<Vec<jetstream::Message>>> = None;
        let mut ticker = tokio::time::interval(self.progress_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut processing => break,
                result = &mut fetching, if next.is_none() => {
                    next = Some(result);
                    ticker.reset();
                }
                _ = ticker.tick(), if matches!(&next, Some(Ok(n)) if !n.is_empty()) => {
                    for message in next.iter().flatten().flatten() {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::warn!(%error, "could not send a progress ack");
                        }
                    }
                }
            }
        }
        // Processing is done; an unfinished fetch is what the runner would wait for now.
        let result = match next {
            Some(result) => result,
            None => fetching.await,
        };
        // On an error the next round fetches again and recovers as usual.
        result.inspect_err(|error| tracing::debug!(error = %format!("{error:#}"), "prefetch failed")).ok()
    }

    /// Takes what is ready now; when nothing is, waits (up to `idle_wait_ms`)
    /// for the first message and then takes what arrived with it.
    async fn next_batch(
        &self,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<jetstream::Message>> {
        // The server refuses pull requests for more than the consumer's
        // max_ack_pending, which the instance that created it chose.
        let limit = usize::try_from(consumer.cached_info().config.max_ack_pending).ok().filter(|l| *l > 0);
        let max = self.settings.batch_size.clamp(1, limit.unwrap_or(usize::MAX));
        let idle_wait = Duration::from_millis(self.settings.idle_wait_ms.max(100));
        let mut out = Vec::new();
        let started = tokio::time::Instant::now();
        collect_ready(consumer, max, &mut out).await?;
        if !out.is_empty() {
            // Under load: gather more for a moment, so the batch pays the
            // fixed cost of a transaction for many events, not a few.
            let linger = Duration::from_millis(self.settings.linger_ms);
            if out.len() < max && !linger.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(out),
                    () = tokio::time::sleep_until(started + linger) => {}
                }
                collect_ready(consumer, max - out.len(), &mut out).await?;
            }
            return Ok(out);
        }
        let mut waiting = consumer.batch().max_messages(1).expires(idle_wait).messages().await?;
        // The batch ends by itself at `expires`; the outer bound covers a
        // connection that dropped mid-request.
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(out),
            first = tokio::time::timeout(idle_wait + Duration::from_secs(2), waiting.next()) => first,
        };
        match first {
            Ok(Some(message)) => out.push(message.map_err(|e| anyhow::anyhow!(e))?),
            Ok(None) => return Ok(out),
            Err(_elapsed) => anyhow::bail!("pull request got no answer within {idle_wait:?}"),
        }
        if max > 1 {
            collect_ready(consumer, max - 1, &mut out).await?;
        }
        Ok(out)
    }

    /// Decodes, applies and settles one fetched batch. Poison goes straight to
    /// the dead-letter stream; a failing batch is re-applied message by
    /// message so that one bad event cannot hold back the good ones; while a
    /// dependency is down the whole batch is held and retried (fetching
    /// pauses) without using up deliveries.
    async fn process<H: Handler>(&self, handler: &H, messages: Vec<jetstream::Message>, shutdown: &CancellationToken) {
        let consumer = self.durable_name.clone();
        metrics::counter!("signup_handler_events_received_total", "consumer" => consumer.clone())
            .increment(messages.len() as u64);
        // The last message knows how many more wait behind it: the lag.
        if let Some(info) = messages.last().and_then(|m| m.info().ok()) {
            metrics::gauge!("signup_handler_pending", "consumer" => consumer.clone()).set(info.pending as f64);
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut held = Vec::with_capacity(messages.len());
        for message in messages {
            let (stream_sequence, delivered) =
                message.info().map(|info| (info.stream_sequence, info.delivered)).unwrap_or_default();
            let (message, acker) = message.split();
            match decode::<H::Event>(&message, stream_sequence, delivered) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    held.push(Held { message, acker, stream_sequence, delivered });
                }
                Err(reason) => {
                    let letter = Held { message, acker, stream_sequence, delivered };
                    self.dead_letter(&letter, &format!("cannot be decoded: {reason}")).await;
                }
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let first = deliveries.first().map(|d| d.meta.stream_sequence).unwrap_or_default();
        let span = tracing::info_span!("batch", consumer = %self.durable_name, size = deliveries.len(), first_sequence = first);
        let started = std::time::Instant::now();
        self.apply(handler, &deliveries, &held, shutdown).instrument(span).await;
        metrics::histogram!("signup_handler_batch_size", "consumer" => consumer.clone())
            .record(deliveries.len() as f64);
        metrics::histogram!("signup_handler_apply_seconds", "consumer" => consumer)
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(consumer = %self.durable_name, size = deliveries.len(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch settled");
    }

    /// Applies `deliveries`, settling each: acked when applied, retried or
    /// dead-lettered when it fails, held while a dependency is down.
    async fn apply<H: Handler>(
        &self,
        handler: &H,
        deliveries: &[Delivery<H::Event>],
        held: &[Held],
        shutdown: &CancellationToken,
    ) {
        let mut outage = Outage::new(&self.settings);
        // Everything before `start` is settled.
        let mut start = 0;
        'batch: loop {
            let (pending, letters) = (&deliveries[start..], &held[start..]);
            // Progress acks from the first attempt on: a batch that takes
            // longer than the ack wait must not be handed out again while it
            // is still being applied.
            let result = self.handle_holding(handler, pending, letters).await;
            match result {
                Ok(()) => {
                    for letter in letters {
                        ack(&letter.acker, AckKind::Ack).await;
                    }
                    self.count_applied(letters.len());
                    if outage.active() {
                        tracing::info!(applied = letters.len(), "dependency back; held events applied");
                        self.resume_consumer().await;
                    }
                    return;
                }
                Err(HandlerError::Unavailable(error)) => {
                    if !self.hold(letters, &mut outage, &error, shutdown).await {
                        return;
                    }
                }
                Err(error) if pending.len() == 1 => return self.settle_failure(&pending[0], &letters[0], &error).await,
                Err(error) => {
                    tracing::warn!(error = %error, "batch failed; applying its events one by one");
                    let first = start;
                    for index in first..deliveries.len() {
                        match self.handle_holding(handler, &deliveries[index..=index], &held[index..=index]).await {
                            Ok(()) => {
                                ack(&held[index].acker, AckKind::Ack).await;
                                self.count_applied(1);
                                if outage.active() {
                                    self.resume_consumer().await;
                                    outage = Outage::new(&self.settings);
                                }
                            }
                            Err(HandlerError::Unavailable(error)) => {
                                start = index;
                                if !self.hold(&held[start..], &mut outage, &error, shutdown).await {
                                    return;
                                }
                                continue 'batch;
                            }
                            Err(error) => self.settle_failure(&deliveries[index], &held[index], &error).await,
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Runs the handler while telling the server, every third of the ack
    /// wait, that the messages are still being worked on.
    async fn handle_holding<H: Handler>(
        &self,
        handler: &H,
        deliveries: &[Delivery<H::Event>],
        held: &[Held],
    ) -> Result<(), HandlerError> {
        let attempt = handler.handle(deliveries);
        tokio::pin!(attempt);
        let mut ticker = tokio::time::interval(self.progress_interval());
        ticker.tick().await;
        loop {
            tokio::select! {
                result = &mut attempt => return result,
                _ = ticker.tick() => {
                    for letter in held {
                        ack(&letter.acker, AckKind::Progress).await;
                    }
                }
            }
        }
    }

    fn count_applied(&self, events: usize) {
        metrics::counter!("signup_handler_events_applied_total", "consumer" => self.durable_name.clone())
            .increment(events as u64);
    }

    /// A third of the consumer's real ack wait (at least 100 ms).
    fn progress_interval(&self) -> Duration {
        (Duration::from_millis(self.ack_wait_ms.load(Ordering::Relaxed)) / 3).max(Duration::from_millis(100))
    }

    /// A dependency is down: keep the messages (progress acks), pause, and
    /// report whether to try again (false once the service is stopping, after
    /// handing the messages back for another instance).
    async fn hold(
        &self,
        held: &[Held],
        outage: &mut Outage,
        error: &anyhow::Error,
        shutdown: &CancellationToken,
    ) -> bool {
        if !outage.active() {
            tracing::warn!(error = %format!("{error:#}"), held = held.len(), "dependency unavailable; pausing this consumer");
            // Not ready while paused: the readiness probe shows the outage.
            self.ready.set(false);
        }
        for letter in held {
            ack(&letter.acker, AckKind::Progress).await;
        }
        // Never pause longer than the server waits for a sign of life.
        let pause = outage.next_pause().min(self.progress_interval());
        // Every instance stops fetching, not only this lane: the consumer is
        // paused on the server until a little after the next try, which
        // renews the pause while the dependency stays down (and a pause
        // left by an instance that died runs out by itself).
        self.pause_consumer(pause + Duration::from_secs(2)).await;
        tokio::select! {
            () = shutdown.cancelled() => {
                for letter in held {
                    ack(&letter.acker, AckKind::Nak(None)).await;
                }
                false
            }
            () = tokio::time::sleep(pause) => true,
        }
    }

    /// Pauses the durable consumer on the server for `length` (NATS 2.11 and
    /// later; on older servers only this lane holds back).
    async fn pause_consumer(&self, length: Duration) {
        if !self.pausable.load(Ordering::Relaxed) {
            return;
        }
        let until = time::OffsetDateTime::now_utc() + length;
        let paused = match self.js.get_stream_no_info(&self.stream.name).await {
            Ok(stream) => stream.pause_consumer(&self.durable_name, until).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match paused {
            Ok(()) => {
                metrics::gauge!("signup_consumer_paused", "consumer" => self.durable_name.clone()).set(1.0);
                tracing::debug!(consumer = %self.durable_name, ?length, "consumer paused on the server");
            }
            Err(error) => tracing::warn!(consumer = %self.durable_name, %error, "cannot pause the consumer"),
        }
    }

    /// Lets every instance fetch again.
    async fn resume_consumer(&self) {
        if !self.pausable.load(Ordering::Relaxed) {
            return;
        }
        let resumed = match self.js.get_stream_no_info(&self.stream.name).await {
            Ok(stream) => stream.resume_consumer(&self.durable_name).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match resumed {
            Ok(()) => {
                metrics::gauge!("signup_consumer_paused", "consumer" => self.durable_name.clone()).set(0.0);
                tracing::info!(consumer = %self.durable_name, "consumer resumed");
            }
            Err(error) => tracing::warn!(consumer = %self.durable_name, %error,
                "cannot resume the consumer; its pause runs out by itself"),
        }
    }

    /// After a failure of this one event: dead-letter it when it can never
    /// succeed or has used up its deliveries, else redeliver it later.
    async fn settle_failure<E>(&self, delivery: &Delivery<E>, letter: &Held, error: &HandlerError) {
        let exhausted = self.settings.max_deliver > 0 && delivery.meta.delivered >= self.settings.max_deliver;
        if matches!(error, HandlerError::Permanent(_)) || exhausted {
            self.dead_letter(letter, &error.to_string()).await;
        } else {
            let delay = self.settings.retry_delay(delivery.meta.delivered);
            tracing::warn!(event_id = %delivery.meta.event_id, delivered = delivery.meta.delivered, ?delay,
                error = %error, "event not applied; will be redelivered");
            ack(&letter.acker, AckKind::Nak(Some(delay))).await;
            metrics::counter!("signup_handler_events_retried_total", "consumer" => self.durable_name.clone())
                .increment(1);
        }
    }

    /// Copies the message to the dead-letter stream with the reason, waits for
    /// that to be stored, then terminates the original. If the copy cannot be
    /// stored the original is redelivered later instead: never dropped. An
    /// event holding personal data of a prospect that has been erased
    /// meanwhile is not kept at all: erasure purges such letters, and one
    /// made later must not bring the data back.
    async fn dead_letter(&self, letter: &Held, reason: &str) {
        let subject = letter.message.subject.as_str();
        if let Some(prospect) = messages::streams::prospect_of(subject)
            && messages::streams::carries_personal_data(subject)
        {
            match crate::erasure::is_erased(&self.js, &self.stream.name, prospect).await {
                Ok(true) => {
                    tracing::info!(stream_sequence = letter.stream_sequence, %prospect,
                        "the event's prospect was erased: not kept as a dead letter");
                    ack(&letter.acker, AckKind::Term).await;
                    return;
                }
                Ok(false) => {}
                // Keep the letter: better than losing an event.
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot tell whether the prospect was erased")
                }
            }
        }
        let mut headers = letter.message.headers.clone().unwrap_or_default();
        let event_id = headers.get(ce::ID).map(|v| v.as_str().to_owned()).unwrap_or_else(|| "-".to_owned());
        let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(1_000).collect();
        // One letter per consumer and position, however often this is retried.
        headers.insert(ce::NATS_MSG_ID, format!("{}:{}", self.durable_name, letter.stream_sequence).as_str());
        headers.insert(dlq::REASON, reason.as_str());
        headers.insert(dlq::CONSUMER, self.durable_name.as_str());
        headers.insert(dlq::DELIVERIES, letter.delivered.to_string().as_str());
        headers.insert(dlq::STREAM_SEQ, letter.logical_sequence().to_string().as_str());
        headers.insert(dlq::SUBJECT, letter.message.subject.as_str());
        let subject = dlq::subject(&self.durable_name, &letter.message.subject);
        let publish = PublishMessage::build().headers(headers).payload(letter.message.payload.clone());
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match stored {
            Ok(()) => {
                tracing::error!(event_id, stream_sequence = letter.stream_sequence, delivered = letter.delivered,
                    %reason, "event dead-lettered");
                ack(&letter.acker, AckKind::Term).await;
                metrics::counter!("signup_handler_events_dead_lettered_total", "consumer" => self.durable_name.clone())
                    .increment(1);
            }
            Err(error) => {
                tracing::warn!(event_id, %error, "could not store the dead letter; the event will be redelivered");
                ack(&letter.acker, AckKind::Nak(Some(self.settings.retry_delay(letter.delivered)))).await;
            }
        }
    }
}

/// The growing pause between retries while a dependency is down.
struct Outage {
    next: Option<Duration>,
    base: Duration,
    max: Duration,
}

impl Outage {
    fn new(settings: &ConsumerSettings) -> Self {
        let max = Duration::from_millis(settings.outage_backoff_max_ms.max(100));
        Self { next: None, base: Duration::from_millis(settings.retry_base_ms.clamp(50, 1_000)).min(max), max }
    }

    fn active(&self) -> bool {
        self.next.is_some()
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next.unwrap_or(self.base);
        self.next = Some((pause * 2).min(self.max));
        crate::settings::jitter(pause)
    }
}

/// A fetched message kept with its acker and position until it is settled.
struct Held {
    message: async_nats::Message,
    acker: Acker,
    stream_sequence: u64,
    delivered: i64,
}

impl Held {
    /// Where the event stands in the order: its first position when it is a
    /// replay, else its own.
    fn logical_sequence(&self) -> u64 {
        header(&self.message, dlq::REPLAY_OF_SEQ).and_then(|s| s.parse().ok()).unwrap_or(self.stream_sequence)
    }
}

/// Takes up to `max` messages that are ready now. Bounded in time: a request
/// in flight when the server restarts would otherwise never end.
async fn collect_ready(consumer: &PullConsumer, max: usize, out: &mut Vec<jetstream::Message>) -> anyhow::Result<()> {
    const LIMIT: Duration = Duration::from_secs(5);
    let collect = async {
        let mut ready = consumer.fetch().max_messages(max).messages().await?;
        while let Some(message) = ready.next().await {
            out.push(message.map_err(|e| anyhow::anyhow!(e))?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(LIMIT, collect).await.map_err(|_| anyhow::anyhow!("fetch got no answer within {LIMIT:?}"))?
}

async fn ack(acker: &Acker, kind: AckKind) {
    // A lost ack only means a redelivery, which handlers tolerate.
    if let Err(error) = acker.ack_with(kind).await {
        tracing::warn!(%error, ?kind, "could not send ack");
    }
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn decode<E: EventSet>(
    message: &async_nats::Message,
    stream_sequence: u64,
    delivered: i64,
) -> Result<Delivery<E>, String> {
    let ce_type = header(message, ce::TYPE).ok_or("missing ce-type header")?;
    let event_id = header(message, ce::ID)
        .ok_or("missing ce-id header")?
        .parse::<Uuid>()
        .map_err(|e| format!("ce-id is not a UUID: {e}"))?;
    let event = E::decode(ce_type, &message.payload).map_err(|e| e.to_string())?;
    Ok(Delivery {
        meta: EventMeta {
            event_id,
            ce_type: ce_type.to_owned(),
            source: header(message, ce::SOURCE).unwrap_or_default().to_owned(),
            time: header(message, ce::TIME).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc()),
            traceparent: header(message, ce::TRACEPARENT).map(str::to_owned),
            // A replayed dead letter keeps its original place in the order.
            stream_sequence: header(message, dlq::REPLAY_OF_SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(stream_sequence),
            delivered,
        },
        event,
    })
}

/// Doubling wait between retries of the connection-level loop, 100 ms to 5 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.attempts = 0;
    }

    async fn wait(&mut self, shutdown: &CancellationToken) {
        let delay = Duration::from_millis(100 * 2u64.pow(self.attempts.min(6))).min(Duration::from_secs(5));
        self.attempts = self.attempts.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
