//! One batch, from fetched messages to settled ones: decode, apply, fall
//! back to one event at a time when the batch fails, hold everything while a
//! dependency is down.

use async_nats::jetstream::{self, message::AckKind};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::delivery::{Refused, decode};
use super::names;
use super::settle::{Held, Outage, ack};
use super::{ConsumerRunner, Delivery, EventMeta, Handler, HandlerError};
use crate::trace::{self, EVENT_DESTINATION_TEMPLATE, MESSAGING_SYSTEM, TraceParent};

impl ConsumerRunner {
    /// Decodes, applies and settles one fetched batch. Poison goes straight to
    /// the dead-letter stream; a failing batch is re-applied message by
    /// message so that one bad event cannot hold back the good ones; while a
    /// dependency is down the whole batch is held and retried (fetching
    /// pauses) without using up deliveries.
    pub(super) async fn process<H: Handler>(
        &self,
        handler: &H,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) {
        let consumer = self.durable_name.clone();
        metrics::counter!(names::RECEIVED, "consumer" => consumer.clone()).increment(messages.len() as u64);
        // The last message knows how many more wait behind it: the lag.
        if let Some(info) = messages.last().and_then(|m| m.info().ok()) {
            metrics::gauge!(names::PENDING, "consumer" => consumer.clone()).set(info.pending as f64);
        }
        let exporting = crate::trace::exporting();
        let (deliveries, held) = self.decode_batch::<H>(messages, exporting).await;
        if deliveries.is_empty() {
            return;
        }
        let span = self.batch_span(&deliveries, exporting);
        let started = std::time::Instant::now();
        self.apply(handler, &deliveries, &held, shutdown).instrument(span).await;
        metrics::histogram!(names::BATCH_SIZE, "consumer" => consumer.clone()).record(deliveries.len() as f64);
        metrics::histogram!(names::APPLY_SECONDS, "consumer" => consumer).record(started.elapsed().as_secs_f64());
        tracing::debug!(consumer = %self.durable_name, size = deliveries.len(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch settled");
    }

    /// The batch's events decoded, each beside its held message; what
    /// cannot be decoded (poison, forged) is dead-lettered here.
    async fn decode_batch<H: Handler>(
        &self,
        messages: Vec<jetstream::Message>,
        exporting: bool,
    ) -> (Vec<Delivery<H::Event>>, Vec<Held>) {
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut held = Vec::with_capacity(messages.len());
        for message in messages {
            let (stream_sequence, delivered) =
                message.info().map(|info| (info.stream_sequence, info.delivered)).unwrap_or_default();
            let (message, acker) = message.split();
            match decode::<H::Event>(&message, stream_sequence, delivered) {
                Ok(delivery) => {
                    let span = if exporting {
                        self.event_span(&message.subject, &delivery.meta)
                    } else {
                        tracing::Span::none()
                    };
                    deliveries.push(delivery);
                    held.push(Held { message, acker, stream_sequence, delivered, span });
                }
                Err(refused) => {
                    let forged = matches!(refused, Refused::Forged(_));
                    if forged {
                        let subject = crate::redact::addresses(message.subject.as_str()).into_owned();
                        tracing::warn!(consumer = %self.durable_name, %subject, stream_sequence,
                            "refused a forged event: its subject is not its own");
                        metrics::counter!(names::FORGED, "consumer" => self.durable_name.clone()).increment(1);
                    }
                    let span = tracing::Span::none();
                    let refused_held = Held { message, acker, stream_sequence, delivered, span };
                    self.dead_letter(&refused_held, &refused.reason(), forged).await;
                }
            }
        }
        (deliveries, held)
    }

    /// The span of one batch: with the messaging attributes and a link to
    /// each of its events' traces when traces are exported, a plain one
    /// otherwise.
    fn batch_span<E>(&self, deliveries: &[Delivery<E>], exporting: bool) -> tracing::Span {
        let first = deliveries.first().map(|d| d.meta.stream_sequence).unwrap_or_default();
        if !exporting {
            return tracing::info_span!("batch", consumer = %self.durable_name, size = deliveries.len(), first_sequence = first);
        }
        let span = tracing::info_span!(
            "batch",
            otel.name = %format_args!("process {}", self.stream.name),
            otel.kind = "consumer",
            messaging.system = MESSAGING_SYSTEM,
            messaging.operation.type = "process",
            messaging.destination.name = %self.stream.name,
            messaging.consumer.group.name = %self.durable_name,
            messaging.batch.message_count = deliveries.len(),
            consumer = %self.durable_name,
            size = deliveries.len(),
            first_sequence = first,
        );
        // The batch is its own trace, linked to each of its events'.
        for delivery in deliveries {
            if let Some(parent) = delivery.meta.traceparent.as_deref().and_then(TraceParent::parse) {
                parent.link_from(&span);
            }
        }
        span
    }

    /// The `process` span of one event, a child of the span that published
    /// it (when the event carries its context), with the messaging
    /// attributes. It ends when the event is settled.
    fn event_span(&self, subject: &str, meta: &EventMeta) -> tracing::Span {
        let kind = subject.rsplit('.').next().unwrap_or_default();
        let span = tracing::info_span!(
            "process",
            otel.name = trace::event_span_name("process", kind),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = MESSAGING_SYSTEM,
            messaging.operation.type = "process",
            messaging.destination.name = %subject,
            messaging.destination.template = EVENT_DESTINATION_TEMPLATE,
            messaging.consumer.group.name = %self.durable_name,
            messaging.message.id = %meta.event_id,
            cloudevents.event_id = %meta.event_id,
            cloudevents.event_type = %meta.ce_type,
            messaging.nats.stream_sequence = meta.stream_sequence,
            messaging.nats.delivered = meta.delivered,
            trace_id = tracing::field::Empty,
        );
        if let Some(parent) = meta.traceparent.as_deref().and_then(TraceParent::parse) {
            parent.adopt(&span);
        }
        span
    }

    /// Applies `deliveries`, settling each: acked when applied, retried or
    /// dead-lettered when it fails, held while a dependency is down.
    ///
    /// The batch is tried whole; when it fails (not for an outage), its
    /// events are tried one at a time, so one bad event cannot hold back the
    /// others. During an outage what is left is held and tried again, whole,
    /// once the pause is over.
    pub(super) async fn apply<H: Handler>(
        &self,
        handler: &H,
        deliveries: &[Delivery<H::Event>],
        held: &[Held],
        shutdown: &CancellationToken,
    ) {
        let mut outage = Outage::new(&self.settings);
        // Everything before `start` is settled.
        let mut start = 0;
        let mut one_by_one = false;
        while start < deliveries.len() {
            let end = if one_by_one { start + 1 } else { deliveries.len() };
            let (pending, holding) = (&deliveries[start..end], &held[start..end]);
            // Progress acks from the first attempt on: a batch that takes
            // longer than the ack wait must not be handed out again while it
            // is still being applied.
            match self.handle_holding(handler, pending, holding).await {
                Ok(()) => {
                    for one in holding {
                        ack(&one.acker, AckKind::Ack).await;
                    }
                    self.count_applied(pending);
                    if outage.active() {
                        tracing::info!(applied = holding.len(), "dependency back; held events applied");
                        self.resume_consumer().await;
                        outage = Outage::new(&self.settings);
                    }
                    start = end;
                }
                Err(HandlerError::Unavailable(error)) => {
                    if !self.hold(&held[start..], &mut outage, &error, shutdown).await {
                        return;
                    }
                    // Once the dependency is back, what is left goes whole again.
                    one_by_one = false;
                }
                Err(error) if pending.len() == 1 => {
                    self.settle_failure(&pending[0], &holding[0], &error).await;
                    start = end;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "batch failed; applying its events one by one");
                    one_by_one = true;
                }
            }
        }
    }

    /// Runs the handler while telling the server, every third of the ack
    /// wait, that the messages are still being worked on.
    pub(super) async fn handle_holding<H: Handler>(
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
                    for one in held {
                        ack(&one.acker, AckKind::Progress).await;
                    }
                }
            }
        }
    }

    /// Counts applied events, and records each one's critical time: from
    /// the event's time (`ce-time`) to now, when it is applied and acked.
    pub(super) fn count_applied<E>(&self, applied: &[Delivery<E>]) {
        metrics::counter!(names::APPLIED, "consumer" => self.durable_name.clone()).increment(applied.len() as u64);
        let now = chrono::Utc::now();
        let critical = metrics::histogram!(names::CRITICAL_TIME, "consumer" => self.durable_name.clone());
        for time in applied.iter().filter_map(|delivery| delivery.meta.time) {
            critical.record((now - time).to_std().unwrap_or_default().as_secs_f64());
        }
    }
}
