//! What a service is ([`Service`]), the settings every service reads
//! ([`ServiceSettings`]), and what a running service is given ([`Context`]):
//! for a handler, one call to [`Context::consume`] runs its consumer beside
//! its health/metrics server.

use std::future::Future;

use anyhow::Context as _;
use bus::consume::{ConsumerRunner, Handler};
use bus::settings::{ConsumerSettings, NatsSettings, StreamSettings};
use tokio_util::sync::CancellationToken;

use crate::ops::{OpsServer, OpsSettings, Readiness, ReadyFlag};
use crate::settings::ShutdownSettings;
use crate::telemetry::LogSettings;

/// A Signup binary.
pub trait Service: Sized + 'static {
    /// Its name: the NATS connection's, and for a handler its durable
    /// consumer's (by convention the crate's name).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Whether `run` takes `--from-start` (a handler: its new durable
    /// consumer then starts at the stream's first event).
    const OFFERS_FROM_START: bool = false;
    /// Everything it reads from configuration.
    type Settings: ServiceSettings;
    /// Subcommands beside `run` and `check` (`NoCommands` when none).
    type Command: clap::Subcommand;

    /// Does the service's work until `context.shutdown` fires. The runtime
    /// owns the NATS client: it flushes and drains it afterwards.
    fn run(settings: Self::Settings, context: Context) -> impl Future<Output = anyhow::Result<()>>;

    /// What `check` verifies besides NATS (settings that can never work,
    /// a database or mail server that does not answer).
    fn check(settings: &Self::Settings) -> impl Future<Output = anyhow::Result<()>> {
        let _ = settings;
        async { Ok(()) }
    }

    /// Carries out one of the extra subcommands; [`Then::Run`] goes on to
    /// `run` afterwards.
    fn command(settings: &Self::Settings, command: Self::Command) -> impl Future<Output = anyhow::Result<Then>> {
        let _ = (settings, command);
        async { Ok(Then::Exit) }
    }
}

/// What follows an extra subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Exit with success.
    Exit,
    /// Go on as `run` would.
    Run,
}

/// The sections every service reads: `[nats]`, `[log]` and `[shutdown]`.
/// Implement it with [`service_settings!`](crate::service_settings).
pub trait ServiceSettings: serde::de::DeserializeOwned {
    /// `[nats]`.
    fn nats(&self) -> &NatsSettings;
    /// `[log]`.
    fn log(&self) -> &LogSettings;
    /// `[shutdown]`.
    fn shutdown(&self) -> &ShutdownSettings;
}

/// What a running service is given.
#[derive(Clone)]
pub struct Context {
    /// The service's name ([`Service::NAME`]).
    pub name: &'static str,
    /// The NATS connection (reconnecting by itself).
    pub client: async_nats::Client,
    /// Fires on SIGTERM or Ctrl-C.
    pub shutdown: CancellationToken,
    /// `run --from-start`: a new durable consumer starts at the stream's
    /// first event.
    pub from_start: bool,
}

impl Context {
    /// A context for running a service in-process (tests), not at a
    /// `--from-start`.
    pub fn new(name: &'static str, client: async_nats::Client, shutdown: CancellationToken) -> Self {
        Self { name, client, shutdown, from_start: false }
    }

    /// The health/metrics server (`http`, port `default_port` unless set),
    /// ready once NATS, the consumer and each of `parts` are up: for a
    /// service that must prepare something (a database) before it consumes,
    /// with `/healthz` answering meanwhile. Its consumer then runs with
    /// [`consume_beside`](Self::consume_beside).
    pub fn ops(&self, http: &OpsSettings, default_port: u16, parts: &[&'static str]) -> anyhow::Result<Ops> {
        let mut readiness = Readiness::new(self.client.clone());
        let consumer = readiness.part("consumer");
        let parts = parts.iter().map(|name| (*name, readiness.part(name))).collect();
        let server = OpsServer::start(http, default_port, readiness, &self.shutdown)?;
        Ok(Ops { server, consumer, parts })
    }

    /// Runs `handler` over the durable consumer named after the service,
    /// beside the health/metrics server (`http`, port `default_port` unless
    /// set) that reports it ready once the consumer exists, until shutdown.
    pub async fn consume<H: Handler>(
        &self,
        stream: &StreamSettings,
        consumer: &ConsumerSettings,
        http: &OpsSettings,
        default_port: u16,
        handler: H,
    ) -> anyhow::Result<()> {
        let ops = self.ops(http, default_port, &[])?;
        self.consume_beside(ops, stream, consumer, handler).await
    }

    /// Runs `handler` over the durable consumer named after the service
    /// until shutdown, beside `ops` (from [`ops`](Self::ops)), which it
    /// reports ready once the consumer exists, then stops.
    pub async fn consume_beside<H: Handler>(
        &self,
        ops: Ops,
        stream: &StreamSettings,
        consumer: &ConsumerSettings,
        handler: H,
    ) -> anyhow::Result<()> {
        let consumer = ConsumerSettings { from_start: consumer.from_start || self.from_start, ..consumer.clone() };
        let consumed = ConsumerRunner::new(self.client.clone(), stream.clone(), self.name, consumer)
            .with_ready_flag(ops.consumer.clone())
            .run(handler, self.shutdown.clone())
            .await;
        ops.stopped().await?;
        consumed
    }
}

/// A service's health/metrics server and the parts its readiness waits for.
pub struct Ops {
    server: OpsServer,
    consumer: ReadyFlag,
    parts: std::collections::BTreeMap<&'static str, ReadyFlag>,
}

impl Ops {
    /// The flag of one of the parts named to [`Context::ops`] (a flag of
    /// its own, never raised, for a name that was not).
    pub fn part(&self, name: &str) -> ReadyFlag {
        self.parts.get(name).cloned().unwrap_or_default()
    }

    /// Waits until the server has stopped (at shutdown).
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.server.stopped().await.context("stopping the health/metrics server")
    }
}
