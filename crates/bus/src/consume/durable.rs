//! The durable consumer on the server: created (with the stream and the
//! dead-letter stream), its ack wait kept in step with the settings, and
//! paused and resumed while a dependency is away (NATS 2.11 and later).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use messages::EventSet;

use super::ConsumerRunner;
use super::names;
use crate::stream::ensure_stream;

/// Unacknowledged messages a durable consumer allows (at least one batch).
const MAX_ACK_PENDING: i64 = 20_000;

impl ConsumerRunner {
    /// Makes sure the stream and this durable consumer exist. A consumer
    /// that exists already keeps what it was created with, except its ack
    /// wait, which follows the settings (it is updated when they differ):
    /// progress acks are timed by the consumer's real ack wait either way.
    pub async fn ensure_consumer<E: EventSet>(&self) -> anyhow::Result<PullConsumer> {
        use anyhow::Context as _;
        // A handler of dead letters reads the dead-letter stream.
        self.dead_letters.store(E::DEAD_LETTERS, Ordering::Relaxed);
        let stream = if E::DEAD_LETTERS {
            crate::stream::ensure_dlq_stream(&self.js, &self.stream).await?
        } else {
            let stream = ensure_stream(&self.js, &self.stream).await?;
            crate::stream::ensure_dlq_stream(&self.js, &self.stream).await?;
            stream
        };
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

    /// Pauses the durable consumer on the server for `length` (NATS 2.11 and
    /// later; on older servers only this lane holds back).
    pub(super) async fn pause_consumer(&self, length: Duration) {
        if !self.pausable.load(Ordering::Relaxed) {
            return;
        }
        let until = time::OffsetDateTime::now_utc() + length;
        let paused = match self.js.get_stream_no_info(self.stream_name()).await {
            Ok(stream) => stream.pause_consumer(&self.durable_name, until).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match paused {
            Ok(()) => {
                metrics::gauge!(names::PAUSED, "consumer" => self.durable_name.clone()).set(1.0);
                tracing::debug!(consumer = %self.durable_name, ?length, "consumer paused on the server");
            }
            Err(error) => tracing::warn!(consumer = %self.durable_name, %error, "cannot pause the consumer"),
        }
    }

    /// Lets every instance fetch again.
    pub(super) async fn resume_consumer(&self) {
        if !self.pausable.load(Ordering::Relaxed) {
            return;
        }
        let resumed = match self.js.get_stream_no_info(self.stream_name()).await {
            Ok(stream) => stream.resume_consumer(&self.durable_name).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match resumed {
            Ok(()) => {
                metrics::gauge!(names::PAUSED, "consumer" => self.durable_name.clone()).set(0.0);
                tracing::info!(consumer = %self.durable_name, "consumer resumed");
            }
            Err(error) => tracing::warn!(consumer = %self.durable_name, %error,
                "cannot resume the consumer; its pause runs out by itself"),
        }
    }
}
