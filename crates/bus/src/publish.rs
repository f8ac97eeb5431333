//! Typed publishing with CloudEvents headers and an awaited PubAck.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, HeaderMap};
use chrono::{DateTime, SecondsFormat, Utc};
use messages::{Event, cloudevents as ce};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::connection::is_connected;
use crate::trace::{self, EVENT_DESTINATION_TEMPLATE, MESSAGING_SYSTEM, TraceParent};

/// Events that could not be stored, by `type` (the `ce-type`): the counter
/// a service starts at zero for each type it publishes.
pub const PUBLISH_FAILURES: &str = "signup_publish_failures_total";

/// The `producer` span of one publish, with the messaging attributes.
fn publish_span<E: Event>(event: &E, context: &EventContext) -> tracing::Span {
    let subject = event.subject();
    tracing::info_span!(
        "publish",
        otel.name = trace::event_span_name("send", E::KIND),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %subject,
        messaging.destination.template = EVENT_DESTINATION_TEMPLATE,
        messaging.message.id = %context.id,
        cloudevents.event_id = %context.id,
        cloudevents.event_type = E::TYPE,
        messaging.nats.stream_sequence = tracing::field::Empty,
        messaging.nats.duplicate = tracing::field::Empty,
    )
}

/// The CloudEvents attributes of one publish that are not the event itself.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// `ce-id` and `Nats-Msg-Id`: publishing twice with the same id inside the
    /// stream's duplicate window stores the event once.
    pub id: Uuid,
    /// `ce-time`.
    pub time: DateTime<Utc>,
    /// W3C `traceparent` of the request that caused the event, if any.
    pub traceparent: Option<String>,
}

impl EventContext {
    /// A fresh UUIDv7 id, stamped now.
    pub fn new() -> Self {
        Self { id: Uuid::now_v7(), time: Utc::now(), traceparent: None }
    }

    /// Carries a trace context along.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }
}

impl Default for EventContext {
    fn default() -> Self {
        Self::new()
    }
}

/// The server's word that an event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event's `ce-id`.
    pub event_id: Uuid,
    /// Its sequence number in the stream.
    pub stream_sequence: u64,
    /// The server had already stored an event with this id (de-duplicated).
    pub duplicate: bool,
}

/// Why an event is not (known to be) stored. Every case means "try again
/// later" to a caller: nothing was half-done on our side.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The client is not connected to NATS right now.
    #[error("not connected to NATS")]
    NotConnected,
    /// No PubAck arrived within the timeout.
    #[error("no PubAck from JetStream in time")]
    Timeout,
    /// JetStream could not take the event for now: no stream answered (its
    /// leader is being elected, or it is not created yet), or the
    /// connection broke while publishing.
    #[error("JetStream is not taking events right now: {0}")]
    Unavailable(String),
    /// JetStream refused the event (limits, …).
    #[error("JetStream did not store the event: {0}")]
    Rejected(String),
    /// The event could not be serialised (a bug, never the visitor's fault).
    #[error("could not serialise the event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Publishes typed events to JetStream as `source` (the `ce-source`).
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    js: jetstream::Context,
    source: String,
    retry_for: std::time::Duration,
    /// The public URL of signup-web, which serves the payloads' schemas.
    schema_base_url: Option<String>,
}

impl Publisher {
    /// A publisher on `client` that waits `ack_timeout` for each PubAck.
    pub fn new(client: Client, source: impl Into<String>, ack_timeout: std::time::Duration) -> Self {
        let js =
            jetstream::ContextBuilder::new().timeout(ack_timeout).backpressure_on_inflight(true).build(client.clone());
        Self { client, js, source: source.into(), retry_for: std::time::Duration::ZERO, schema_base_url: None }
    }

    /// Keeps trying a publish that failed for a passing reason (not
    /// connected, no PubAck in time, no stream leader) for up to `retry_for`,
    /// with the same de-duplication id: the event is stored once however
    /// many attempts reached the server.
    #[must_use]
    pub fn with_retry(mut self, retry_for: std::time::Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Gives every event a `ce-dataschema`: the URL where signup-web,
    /// answering at `base_url` (its public URL), serves the event type's
    /// JSON Schema.
    #[must_use]
    pub fn with_dataschema(mut self, base_url: &str) -> Self {
        self.schema_base_url = Some(base_url.to_owned());
        self
    }

    /// Publishes `event` on its subject and waits for the PubAck. With
    /// traces exported this is a `producer` span (a child of the current
    /// one, the HTTP request's), and the event carries its context;
    /// otherwise the event carries `context.traceparent`.
    pub async fn publish<E: Event>(&self, event: &E, context: &EventContext) -> Result<Published, PublishError> {
        use tracing::Instrument as _;

        let span = if crate::trace::exporting() { publish_span(event, context) } else { tracing::Span::none() };
        let result = self.publish_retrying(event, context).instrument(span.clone()).await;
        match &result {
            Ok(published) => {
                metrics::counter!("signup_events_published_total", "type" => E::TYPE).increment(1);
                span.record("messaging.nats.stream_sequence", published.stream_sequence);
                span.record("messaging.nats.duplicate", published.duplicate);
            }
            Err(error) => {
                metrics::counter!(PUBLISH_FAILURES, "type" => E::TYPE).increment(1);
                span.record("otel.status_code", "error");
                span.record("otel.status_description", error.to_string());
            }
        }
        result
    }

    async fn publish_retrying<E: Event>(&self, event: &E, context: &EventContext) -> Result<Published, PublishError> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut pause = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(500));
        loop {
            let result = self.publish_once(event, context).await;
            match &result {
                Err(error) if error.is_passing() && tokio::time::Instant::now() + pause.upcoming() < deadline => {
                    tracing::debug!(%error, "publish failed for now; trying again");
                    metrics::counter!("signup_publish_retries_total", "type" => E::TYPE).increment(1);
                    tokio::time::sleep(pause.next_delay()).await;
                }
                _ => break result,
            }
        }
    }

    async fn publish_once<E: Event>(&self, event: &E, context: &EventContext) -> Result<Published, PublishError> {
        // Fail fast instead of letting the client buffer the message while it
        // reconnects: a buffered message could still be stored after we have
        // told the caller it was not.
        if !is_connected(&self.client) {
            return Err(PublishError::NotConnected);
        }
        let payload = serde_json::to_vec(event)?;
        let publish = PublishMessage::build()
            .headers(self.headers::<E>(context))
            .message_id(context.id.to_string())
            .payload(payload.into());
        let ack = self
            .js
            .send_publish(event.subject(), publish)
            .await
            .map_err(|e| classify(e.kind(), &e.to_string()))?
            .await
            .map_err(|e| classify(e.kind(), &e.to_string()))?;
        tracing::debug!(stream_sequence = ack.sequence, duplicate = ack.duplicate, "event stored");
        Ok(Published { event_id: context.id, stream_sequence: ack.sequence, duplicate: ack.duplicate })
    }

    fn headers<E: Event>(&self, context: &EventContext) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ce::SPECVERSION, ce::SPEC_VERSION);
        headers.insert(ce::ID, context.id.to_string().as_str());
        headers.insert(ce::SOURCE, self.source.as_str());
        headers.insert(ce::TYPE, E::TYPE);
        headers.insert(ce::TIME, context.time.to_rfc3339_opts(SecondsFormat::Millis, true).as_str());
        headers.insert(ce::CONTENT_TYPE, ce::JSON_CONTENT_TYPE);
        if let Some(base_url) = &self.schema_base_url {
            headers.insert(ce::DATASCHEMA, ce::dataschema_url(base_url, E::TYPE).as_str());
        }
        // The publish span's own context when traces are exported.
        match TraceParent::of(&tracing::Span::current()) {
            Some(own) => headers.insert(ce::TRACEPARENT, own.header().as_str()),
            None => {
                if let Some(traceparent) = &context.traceparent {
                    headers.insert(ce::TRACEPARENT, traceparent.as_str());
                }
            }
        }
        headers
    }

    /// The underlying client, e.g. for readiness checks.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn classify(kind: jetstream::context::PublishErrorKind, message: &str) -> PublishError {
    use jetstream::context::PublishErrorKind as Kind;
    match kind {
        Kind::TimedOut => PublishError::Timeout,
        Kind::StreamNotFound | Kind::BrokenPipe => PublishError::Unavailable(message.to_owned()),
        // "JetStream system temporarily unavailable" and the like.
        _ if message.contains("503") || message.contains("temporarily unavailable") => {
            PublishError::Unavailable(message.to_owned())
        }
        _ => PublishError::Rejected(message.to_owned()),
    }
}

impl PublishError {
    /// Whether the same publish may well work in a moment.
    pub fn is_passing(&self) -> bool {
        matches!(self, Self::NotConnected | Self::Timeout | Self::Unavailable(_))
    }
}
