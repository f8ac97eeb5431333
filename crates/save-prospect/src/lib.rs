//! save-prospect: saves prospects to PostgreSQL from the event stream.
//!
//! It consumes every prospect event through its durable consumer
//! `save-prospect`, applies each fetched batch in one transaction —
//! idempotently (applied event ids are recorded) and tolerant of order (a row
//! remembers the stream sequence of the last event applied to it) — and acks
//! the batch only after the commit. It owns the database: it creates it when
//! missing and runs the embedded migrations (`save-prospect migrate`, and at
//! start-up unless disabled). It holds the ownership rules of double opt-in
//! (see [`apply`]), erases sign-ups never confirmed in time ([`expiry`]),
//! purges an erased prospect's personal data from the event and dead-letter
//! streams once the erasure is committed (`bus::erasure`), erases with it
//! every other sign-up that holds the address, purges e-mail change requests
//! once they are done with, moves the time from which a prospect's links
//! count (`links_not_before`) when its address moves, and reports how full
//! the streams are (`signup_stream_bytes`).
//!
//! # Layout
//! - [`settings`]: configuration (`[database]`, `[nats]`, `[save_prospect]`).
//! - [`db`]: pool, database creation, migrations.
//! - [`schema`]: diesel tables, mirroring `migrations/`.
//! - [`apply`]: the [`SaveProspect`] handler: the batch, then one module
//!   per event kind with its SQL.
//! - [`prospects_service`]: the query side, the `prospects.*` request-reply
//!   service (reference data,
//!   status, details, the holder of an address).
//! - [`expiry`]: publishes the erasure of sign-ups never confirmed.
//! - the [`Service`] of [`SaveProspect`]: the binary (`run [--from-start]`,
//!   `migrate`, `check`) — serve health and metrics (`[save_prospect.http]`,
//!   port 8082), prepare the database, then answer requests and consume
//!   events until shutdown.

pub mod apply;
pub mod db;
pub mod expiry;
pub mod prospects_service;
pub mod schema;
pub mod settings;

use std::time::Duration;

use anyhow::Context as _;
use runtime::{Backoff, Context, Service, Then};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub use apply::SaveProspect;
pub use settings::Settings;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "save-prospect";

pub use settings::HTTP_PORT;

/// Creates the database if needed, runs migrations when configured, and
/// returns the pool. Waits for Postgres (retrying) until `shutdown`.
pub async fn prepare_database(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<db::Pool> {
    let url = settings.database.url.expose_secret();
    let connector = db::Connector::from_settings(&settings.database)?;
    let pool = db::pool(url, settings.database.pool_size, &connector)?;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = async {
            if settings.database.create_if_missing {
                db::create_database_if_missing(url, &connector).await?;
            }
            if settings.save_prospect.migrate_on_start {
                let ran = db::migrate(&pool).await?;
                if !ran.is_empty() {
                    tracing::info!(migrations = ?ran, "migrations applied");
                }
            }
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(pool),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "database not ready; retrying");
                anyhow::ensure!(backoff.wait(shutdown).await, "stopped before the database was ready");
            }
        }
    }
}

/// The subcommands beside `run` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Create the database if missing and run pending migrations, then exit.
    Migrate,
}

impl Service for SaveProspect {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str =
        "Saves prospects from NATS JetStream to PostgreSQL and answers the prospects.* requests";
    const OFFERS_FROM_START: bool = true;
    type Settings = Settings;
    type Command = Command;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        run(settings, context).await
    }

    /// Postgres answers.
    async fn check(settings: &Settings) -> anyhow::Result<()> {
        let connector = db::Connector::from_settings(&settings.database)?;
        let _conn =
            connector.connect(settings.database.url.expose_secret()).await.context("Postgres is not reachable")?;
        Ok(())
    }

    async fn command(settings: &Settings, Command::Migrate: Command) -> anyhow::Result<Then> {
        let url = settings.database.url.expose_secret();
        let connector = db::Connector::from_settings(&settings.database)?;
        db::create_database_if_missing(url, &connector).await?;
        let ran = db::migrate(&db::pool(url, 1, &connector)?).await?;
        tracing::info!(migrations = ?ran, "database is up to date");
        Ok(Then::Exit)
    }
}

/// The service until shutdown: prepares the database, then answers requests
/// and consumes events.
async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
    let ops = context.ops(&settings.save_prospect.http, HTTP_PORT, &["database"])?;
    let (client, shutdown) = (context.client.clone(), context.shutdown.clone());
    let pool = prepare_database(&settings, &shutdown).await.context("preparing the database")?;
    let js = bus::async_nats::jetstream::new(client.clone());
    let Some(stream) = bus::stream::wait_for_stream(&js, &settings.nats.stream, &shutdown).await else {
        return ops.stopped().await;
    };
    // The stream as it was just found (asking again could time out under
    // load, and stop the service at start-up).
    db::check_stream_origin(&pool, &bus::stream::identity(stream.cached_info())).await?;
    ops.part("database").set(true);
    // The request-reply service has connections of its own: a flood of
    // status requests waits for those, never for the writers'.
    let service_pool = db::pool(
        settings.database.url.expose_secret(),
        settings.database.service_pool_size,
        &db::Connector::from_settings(&settings.database)?,
    )?;
    let service_client = match settings.save_prospect.service.nats(&settings.nats) {
        Some(nats) => bus::connect(&nats, prospects_service::CONNECTION_NAME).await?,
        None => client.clone(),
    };
    let streams = prospects_service::StreamReader::new(&client, &settings.nats.stream);
    let service = prospects_service::start(&service_client, service_pool, streams).await?;
    // Ready only once the server has the service's subscriptions (a
    // connection of its own may still be connecting).
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    while let Err(error) = service_client.flush().await {
        tracing::warn!(%error, "the prospects service is not connected yet; retrying");
        if !backoff.wait(&shutdown).await {
            break;
        }
    }
    let publisher = bus::Publisher::new(client.clone(), "/save-prospect", settings.nats.request_timeout())
        .with_retry(settings.nats.publish_retry())
        .with_dataschema(&settings.links.base_url);
    let eraser = bus::erasure::StreamEraser::new(client.clone(), &settings.nats.stream);
    let expiring = tokio::spawn(expiry::run(
        pool.clone(),
        publisher.clone(),
        eraser.clone(),
        settings.links.confirm_within(),
        Duration::from_secs(settings.save_prospect.expiry_check_secs.max(1)),
        shutdown.clone(),
    ));
    let streams = vec![settings.nats.stream.name.clone(), bus::stream::dlq_stream_name(&settings.nats.stream)];
    let reporting = tokio::spawn(bus::stream::report_usage(
        bus::async_nats::jetstream::new(client.clone()),
        streams,
        Duration::from_secs(15),
        shutdown.clone(),
    ));
    let handler = SaveProspect::new(pool).with_stream_eraser(eraser).with_publisher(publisher);
    let consumed = context.consume_beside(ops, &settings.nats.stream, &settings.save_prospect.consumer, handler).await;
    reporting.abort();
    if let Err(error) = expiring.await {
        tracing::warn!(%error, "the expiry of unconfirmed sign-ups ended abnormally");
    }
    if let Err(error) = service.stop().await {
        tracing::warn!(%error, "could not stop the prospects service cleanly");
    }
    consumed
}
