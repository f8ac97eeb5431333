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
//! # Layout
//! - [`service`]: [`Service`], its settings ([`ServiceSettings`]) and the
//!   [`Context`] `run` gets (`consume`, `consume_beside`, `ops`).
//! - [`cli`]: the command line; [`settings`]: the strict layered loader and
//!   the documented defaults' check; [`telemetry`]: logs and trace export;
//!   [`shutdown`]: the signal and the bounded stop.
//! - [`ops`]: the health/metrics server and what every HTTP server shares
//!   (metrics, health, the problem body, middleware).
//! - here: [`main`], and mimalloc as the global allocator.
//!
//! ```no_run
//! use runtime::{Context, Service};
//! # #[derive(Default, serde::Deserialize)] struct Settings {
//! #     nats: bus::NatsSettings, log: runtime::telemetry::LogSettings, shutdown: runtime::settings::ShutdownSettings }
//! # runtime::service_settings!(Settings);
//! struct Hello;
//! impl Service for Hello {
//!     const NAME: &'static str = "hello";
//!     const ABOUT: &'static str = "Says hello until stopped";
//!     type Settings = Settings;
//!     type Command = runtime::NoCommands;
//!     async fn run(_settings: Settings, context: Context) -> anyhow::Result<()> {
//!         context.shutdown.cancelled().await;
//!         Ok(())
//!     }
//! }
//! fn main() -> anyhow::Result<()> {
//!     runtime::main::<Hello>()
//! }
//! ```

/// mimalloc for every binary built on the runtime: under load, glibc's malloc and
/// free took a fifth of the indexer's CPU (the `mimalloc` feature, on by
/// default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cli;
pub mod ops;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

use anyhow::Context as _;

pub use bus;
pub use bus::backoff::Backoff;
pub use cli::{Invocation, NoCommands};
pub use service::{Context, Ops, Service, ServiceSettings, Then};

/// Implements [`ServiceSettings`] for a struct with the fields `nats`, `log`
/// and `shutdown`.
#[macro_export]
macro_rules! service_settings {
    ($settings:ty) => {
        impl $crate::ServiceSettings for $settings {
            fn nats(&self) -> &$crate::bus::settings::NatsSettings {
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
            bus::connection::check(settings.nats()).await?;
            S::check(&settings).await?;
            tracing::info!(service = S::NAME, "settings valid; NATS and dependencies reachable");
            return Ok(());
        }
        Invocation::Extra(command) => match S::command(&settings, command).await? {
            Then::Exit => return Ok(()),
            Then::Run => false,
        },
    };
    // The metrics recorder first: what a service counts before its health
    // and metrics server is up (its counters set to zero, say) would
    // otherwise go to no recorder at all.
    ops::metrics::prometheus();
    let shutdown = shutdown::on_signal();
    let client = bus::connection::connect(settings.nats(), S::NAME).await?;
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
