//! NATS JetStream plumbing shared by every Signup service.
//!
//! A service connects once ([`connect`]), makes sure the `PROSPECTS` stream
//! exists ([`ensure_stream`]), and then either publishes typed events
//! ([`Publisher`]) or consumes them through a durable pull consumer
//! ([`ConsumerRunner`] with a [`Handler`]). The shared start-up pieces every
//! binary needs — layered [`settings`], [`telemetry`] and the [`shutdown`]
//! signal — live here too, so a new handler crate needs only `messages` and
//! `bus`.
//!
//! # Layout
//! - [`settings`]: the `config`-crate loader and the NATS/consumer settings.
//! - [`connection`]: connecting with retry, reconnecting forever, logging
//!   connection events.
//! - [`stream`]: idempotent creation/update of the event stream.
//! - [`publish`]: CloudEvents headers, de-duplication id, awaited PubAck.
//! - [`request`]: typed request-reply, both sides of a NATS micro-service.
//! - [`consume`]: the batch consumer runner (ack after success, nak with
//!   delay on failure, graceful stop).
//! - [`dlq`]: listing, replaying and purging dead letters.
//! - [`erasure`]: purging an erased prospect's history from the streams.
//! - [`ops`]: Prometheus metrics, `/healthz` and `/readyz`, and the small
//!   health/metrics server a handler runs beside its consumer.
//! - [`telemetry`], [`shutdown`]: logging set-up and SIGTERM/Ctrl-C handling.
//! - [`tls`]: the rustls client configuration for a service's own TLS
//!   connections (system roots or one CA file).

pub mod connection;
pub mod consume;
pub mod dlq;
pub mod erasure;
pub mod ops;
pub mod publish;
pub mod request;
pub mod settings;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod tls;

pub use async_nats;
pub use connection::{connect, is_connected};
pub use consume::{ConsumerRunner, Delivery, EventMeta, Handler, HandlerError};
pub use metrics;
pub use publish::{EventContext, PublishError, Published, Publisher};
pub use request::{RequestError, request};
pub use settings::{ConsumerSettings, NatsSettings, StreamSettings};
pub use stream::ensure_stream;
