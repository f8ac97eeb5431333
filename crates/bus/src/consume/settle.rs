//! Settling messages: ack, nak with a growing delay, progress acks while
//! an event is held, and the pause while a dependency is down.

use std::time::Duration;

use async_nats::jetstream::message::{AckKind, Acker};
use messages::{cloudevents as ce, dlq};
use tokio_util::sync::CancellationToken;

use super::delivery::header;
use super::names;
use super::{ConsumerRunner, Delivery, HandlerError};
use crate::backoff::Backoff;
use crate::settings::ConsumerSettings;
use crate::trace::TraceParent;

impl ConsumerRunner {
    /// A dependency is down: keep the messages (progress acks), pause, and
    /// report whether to try again (false once the service is stopping, after
    /// handing the messages back for another instance).
    pub(super) async fn hold(
        &self,
        held: &[Held],
        outage: &mut Outage,
        error: &anyhow::Error,
        shutdown: &CancellationToken,
    ) -> bool {
        if !outage.active() {
            let error = crate::redact::addresses(&format!("{error:#}")).into_owned();
            tracing::warn!(%error, held = held.len(), "dependency unavailable; pausing this consumer");
            // Not ready while paused: the readiness probe shows the outage.
            self.ready.set(false);
        }
        for one in held {
            ack(&one.acker, AckKind::Progress).await;
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
                for one in held {
                    ack(&one.acker, AckKind::Nak(None)).await;
                }
                false
            }
            () = tokio::time::sleep(pause) => true,
        }
    }

    /// After a failure of this one event: dead-letter it when it can never
    /// succeed or has used up its deliveries, else redeliver it later.
    pub(super) async fn settle_failure<E>(&self, delivery: &Delivery<E>, held: &Held, error: &HandlerError) {
        if let HandlerError::Deferred { for_at_least, .. } = error {
            tracing::info!(event_id = %delivery.meta.event_id, trace_id = held.trace_id(), delay = ?for_at_least,
                reason = %error, "event deferred; it comes back after the wait");
            ack(&held.acker, AckKind::Nak(Some(*for_at_least))).await;
            metrics::counter!(names::DEFERRED, "consumer" => self.durable_name.clone()).increment(1);
            return;
        }
        let exhausted = self.settings.max_deliver > 0 && delivery.meta.delivered >= self.settings.max_deliver;
        if matches!(error, HandlerError::Permanent(_)) || exhausted {
            self.dead_letter(held, &error.to_string(), false).await;
        } else {
            let delay = self.settings.retry_delay(delivery.meta.delivered);
            tracing::warn!(event_id = %delivery.meta.event_id, trace_id = held.trace_id(),
                delivered = delivery.meta.delivered, ?delay, error = %error, "event not applied; will be redelivered");
            ack(&held.acker, AckKind::Nak(Some(delay))).await;
            metrics::counter!(names::RETRIED, "consumer" => self.durable_name.clone()).increment(1);
        }
    }
}

/// The growing pause between retries while a dependency is down: from the
/// retry base (50 ms to 1 s) doubling to `outage_backoff_max_ms`, ±20%.
pub(super) struct Outage(Backoff);

impl Outage {
    pub(super) fn new(settings: &ConsumerSettings) -> Self {
        let max = Duration::from_millis(settings.outage_backoff_max_ms.max(100));
        let first = Duration::from_millis(settings.retry_base_ms.clamp(50, 1_000)).min(max);
        Self(Backoff::new(first, max).with_jitter())
    }

    /// Whether the dependency has been found down since this began.
    pub(super) fn active(&self) -> bool {
        self.0.started()
    }

    pub(super) fn next_pause(&mut self) -> Duration {
        self.0.next_delay()
    }
}

/// A fetched message kept with its acker and position until it is settled.
pub(super) struct Held {
    pub(super) message: async_nats::Message,
    pub(super) acker: Acker,
    pub(super) stream_sequence: u64,
    pub(super) delivered: i64,
    /// The event's `process` span while traces are exported (else none).
    pub(super) span: tracing::Span,
}

impl Held {
    /// The trace the event belongs to, for log lines about it.
    pub(super) fn trace_id(&self) -> String {
        header(&self.message, ce::TRACEPARENT).and_then(TraceParent::parse).map(|t| t.trace_id()).unwrap_or_default()
    }

    /// Where the event stands in the order: its first position when it is a
    /// replay, else its own.
    pub(super) fn logical_sequence(&self) -> u64 {
        header(&self.message, dlq::REPLAY_OF_SEQ).and_then(|s| s.parse().ok()).unwrap_or(self.stream_sequence)
    }
}

/// Sends one ack of `kind`; a failure is logged, never fatal.
pub(super) async fn ack(acker: &Acker, kind: AckKind) {
    // A lost ack only means a redelivery, which handlers tolerate.
    if let Err(error) = acker.ack_with(kind).await {
        tracing::warn!(%error, ?kind, "could not send ack");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_pauses_longer_each_time_up_to_its_cap() {
        let settings =
            ConsumerSettings { retry_base_ms: 100, outage_backoff_max_ms: 1_000, ..ConsumerSettings::default() };
        let mut outage = Outage::new(&settings);
        assert!(!outage.active(), "no outage before the first pause");
        let pauses: Vec<u128> = (0..6).map(|_| outage.next_pause().as_millis()).collect();
        assert!(outage.active());
        for (pause, nominal) in pauses.iter().zip([100u128, 200, 400, 800, 1_000, 1_000]) {
            assert!((nominal * 8 / 10..=nominal * 12 / 10).contains(pause), "{pauses:?}");
        }
    }

    #[test]
    fn an_outage_starts_between_50_ms_and_a_second() {
        let slow =
            ConsumerSettings { retry_base_ms: 60_000, outage_backoff_max_ms: 30_000, ..ConsumerSettings::default() };
        assert!(Outage::new(&slow).next_pause() <= Duration::from_millis(1_200));
        let eager = ConsumerSettings { retry_base_ms: 1, ..ConsumerSettings::default() };
        assert!(Outage::new(&eager).next_pause() >= Duration::from_millis(40));
    }
}
