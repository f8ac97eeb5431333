//! NATS JetStream plumbing shared by every Signup service.
//!
//! A service connects once ([`connect`]), makes sure the `PROSPECTS` stream
//! exists ([`ensure_stream`]), and then either publishes typed events
//! ([`Publisher`]) or consumes them through a durable pull consumer
//! ([`ConsumerRunner`] with a [`Handler`]). The service runtime every
//! binary runs in — command line, settings loader, telemetry, ops server,
//! shutdown and drain — is the crate `runtime`, built on this one; this
//! crate knows nothing of it (nor of HTTP).
//!
//! # Layout
//! NATS plumbing:
//! - [`connection`]: connecting with retry, reconnecting forever, logging
//!   connection events.
//! - [`stream`]: idempotent creation/update of the event stream.
//! - [`publish`]: CloudEvents headers, de-duplication id, awaited PubAck.
//! - [`request`](mod@request): typed request-reply, both sides of a NATS micro-service.
//! - [`consume`]: the batch consumer runner (ack after success, nak with
//!   delay on failure, graceful stop).
//! - [`dlq`]: listing, replaying and purging dead letters.
//! - [`ledger`]: where one prospect's events stand with each handler
//!   (applied, pending, in flight, dead-lettered), from NATS's own state.
//! - [`erasure`]: purging an erased prospect's history from the streams.
//! - [`export`]: a person's events (kinds, times) and the mails sent to
//!   them, for the export of their data.
//! - [`redact`]: e-mail addresses out of reasons, log lines and spans.
//! - [`backoff`]: the one retry pause (doubling, capped, jitter, cut short
//!   by shutdown), for the plumbing and the runtime alike.
//! - [`trace`]: the W3C trace context a sign-up carries across every hop,
//!   and the spans' messaging attributes.
//! - [`tls`]: the rustls client configuration for a service's own TLS
//!   connections (system roots or one CA file).
//! - [`settings`]: the NATS, stream and consumer settings.
//! - [`ready`]: the flag a part of a service raises once it is up.

pub mod backoff;
pub mod connection;
pub mod consume;
pub mod dlq;
pub mod erasure;
pub mod export;
pub mod ledger;
pub mod publish;
pub mod ready;
pub mod redact;
pub mod request;
pub mod settings;
pub mod stream;
pub mod tls;
pub mod trace;

pub use async_nats;
pub use connection::{connect, is_connected};
pub use consume::{ConsumerRunner, Delivery, EventMeta, Handler, HandlerError};
pub use metrics;
pub use publish::{EventContext, PublishError, Published, Publisher};
pub use request::{RequestError, request};
pub use settings::{ConsumerSettings, NatsSettings, StreamSettings};
pub use stream::ensure_stream;
