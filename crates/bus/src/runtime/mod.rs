//! The service runtime: everything a Signup binary does around its own work,
//! written once.
//!
//! A service is a [`Service`]: a name, a settings type, what `run` does until
//! shutdown and, optionally, what `check` verifies and extra subcommands.
//! [`main`] does the rest, the same way for every binary:
//! 1. the command line: `run` (the default; `--from-start` for a handler),
//!    `check`, and the service's own subcommands ([`cli`]);
//! 2. the settings, layered and strict ([`settings`]), logging and, when
//!    the OTLP variables ask for it, trace export ([`telemetry`]);
//! 3. the NATS connection, made once;
//! 4. the shutdown signal, and a stop bounded by `[shutdown] timeout_secs`
//!    ([`shutdown`]);
//! 5. at the end, pending messages flushed, the connection drained and the
//!    last spans sent.
//!
//! A handler's `run` is usually one call to [`Context::consume`]: readiness,
//! the health/metrics server ([`ops`]) and the consumer runner. [`Backoff`]
//! is the retry pause every loop uses.
//!
//! ```no_run
//! use bus::runtime::{Context, Service};
//! # #[derive(Default, serde::Deserialize)] struct Settings {
//! #     nats: bus::NatsSettings, log: bus::telemetry::LogSettings, shutdown: bus::settings::ShutdownSettings }
//! # bus::service_settings!(Settings);
//! struct Hello;
//! impl Service for Hello {
//!     const NAME: &'static str = "hello";
//!     const ABOUT: &'static str = "Says hello until stopped";
//!     type Settings = Settings;
//!     type Command = bus::runtime::NoCommands;
//!     async fn run(_settings: Settings, context: Context) -> anyhow::Result<()> {
//!         context.shutdown.cancelled().await;
//!         Ok(())
//!     }
//! }
//! fn main() -> anyhow::Result<()> {
//!     bus::runtime::main::<Hello>()
//! }
//! ```

pub mod cli;
pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub use crate::backoff::Backoff;
pub use cli::{Invocation, NoCommands};

use crate::consume::{ConsumerRunner, Handler};
use crate::settings::{ConsumerSettings, NatsSettings, ShutdownSettings, StreamSettings};
use ops::{OpsServer, OpsSettings, Readiness};
use telemetry::LogSettings;

/// A Signup binary.
pub trait Service: Sized + 'static {
    /// Its name: the NATS connection's, and for a handler its durable
    /// consumer's (by convention the crate's name).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Whether it consumes events: `run` then takes `--from-start`.
    const CONSUMES: bool = false;
    /// Everything it reads from configuration.
    type Settings: ServiceSettings;
    /// Subcommands beside `run` and `check` ([`NoCommands`] when none).
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

/// Implements [`ServiceSettings`] for a struct with the fields `nats`, `log`
/// and `shutdown`.
#[macro_export]
macro_rules! service_settings {
    ($settings:ty) => {
        impl $crate::runtime::ServiceSettings for $settings {
            fn nats(&self) -> &$crate::settings::NatsSettings {
                &self.nats
            }
            fn log(&self) -> &$crate::telemetry::LogSettings {
                &self.log
            }
            fn shutdown(&self) -> &$crate::settings::ShutdownSettings {
                &self.shutdown
            }
        }
    };
}

/// A test that `config/default.toml` (beside the calling crate, two folders
/// up) documents `$settings`' built-in defaults: see
/// [`check_documented_defaults`](crate::settings::check_documented_defaults).
#[macro_export]
macro_rules! documented_defaults_test {
    ($settings:ty) => {
        #[cfg(test)]
        #[test]
        fn config_default_toml_documents_the_built_in_defaults() {
            let file = ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
            $crate::settings::check_documented_defaults::<$settings>(&file).unwrap_or_else(|error| panic!("{error}"));
        }
    };
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
        let mut readiness = Readiness::new(self.client.clone());
        let consumer_ready = readiness.part("consumer");
        let ops = OpsServer::start(http, default_port, readiness, &self.shutdown)?;
        let consumer = ConsumerSettings { from_start: consumer.from_start || self.from_start, ..consumer.clone() };
        let consumed = ConsumerRunner::new(self.client.clone(), stream.clone(), self.name, consumer)
            .with_ready_flag(consumer_ready)
            .run(handler, self.shutdown.clone())
            .await;
        ops.stopped().await.context("stopping the health/metrics server")?;
        consumed
    }
}

/// The whole binary: parses the command line, loads the settings, sets up
/// logging, and runs `S` on a Tokio runtime.
pub fn main<S: Service>() -> anyhow::Result<()> {
    let invocation = cli::parse::<S>(std::env::args_os());
    let settings: S::Settings = settings::load().context("loading settings")?;
    telemetry::init(settings.log(), S::NAME).context("setting up logs and traces")?;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(start::<S>(invocation, settings));
    telemetry::shutdown();
    outcome
}

async fn start<S: Service>(invocation: Invocation<S::Command>, settings: S::Settings) -> anyhow::Result<()> {
    let from_start = match invocation {
        Invocation::Run { from_start } => from_start,
        Invocation::Check => {
            crate::connection::check(settings.nats()).await?;
            S::check(&settings).await?;
            tracing::info!(service = S::NAME, "settings valid; NATS and dependencies reachable");
            return Ok(());
        }
        Invocation::Extra(command) => match S::command(&settings, command).await? {
            Then::Exit => return Ok(()),
            Then::Run => false,
        },
    };
    let shutdown = shutdown::on_signal();
    let client = crate::connection::connect(settings.nats(), S::NAME).await?;
    let bound = settings.shutdown().timeout();
    let context = Context { name: S::NAME, client: client.clone(), shutdown: shutdown.clone(), from_start };
    let outcome = shutdown::bounded(S::run(settings, context), &shutdown, bound).await.unwrap_or(Ok(()));
    // Publishes and acks still buffered go out before the connection closes.
    if tokio::time::timeout(bound, client.flush()).await.is_err() {
        tracing::warn!("could not flush to NATS in time; unacknowledged work will be redelivered");
    }
    client.drain().await.context("draining NATS")?;
    outcome
}
