//! analytics-indexer: a search and analytics index fed by prospect events.
//!
//! It consumes every prospect event through its own durable consumer
//! `analytics-indexer`, keeps one document per prospect in an embedded Tantivy
//! index (added, replaced, or turned into a tombstone), commits the index
//! before the batch is acked, and serves the analytics API and dashboard. It
//! never reads Postgres: everything it knows comes from the events, so a new
//! or wiped index is rebuilt by replaying the stream from its first message —
//! and so is an index built from another stream (one recreated, restored or
//! on another server numbers its events anew: `stream-origin` beside the
//! index names the stream it was built from).
//!
//! # Layout
//! - [`settings`]: configuration (`[analytics]`, `[nats]`, `[log]`).
//! - [`index`]: the Tantivy schema and the index on disk.
//! - [`handler`]: [`handler::IndexHandler`], applying events in order.
//! - [`query`]: the summary and the search.
//! - [`http`], [`dashboard`]: the API, the dashboard, access control, and
//!   the operators' delivery ledger of a prospect (`bus::ledger`).
//! - [`session`]: the dashboard's login session (a signed cookie that
//!   expires).
//! - [`openapi`]: the API's OpenAPI 3.1 document (bearer auth), built from
//!   the routes it serves.
//! - [`schema`]: the shapes only the document describes (reference entry,
//!   date range, refusals; the problem body is `runtime::ops::Problem`).
//! - [`Application`]: opens the index, binds the port, consumes and serves
//!   until shutdown; its [`Service`] is the binary (`run`, `reindex`, `check`).

pub mod dashboard;
pub mod handler;
pub mod http;
pub mod index;
pub mod openapi;
pub mod query;
pub mod schema;
pub mod session;
pub mod settings;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use bus::ConsumerRunner;
use bus::async_nats::{self, jetstream};
use runtime::ops::Readiness;
use runtime::{Context, Service, Then};
use tokio_util::sync::CancellationToken;
use utoipa_actix_web::AppExt as _;

use crate::handler::IndexHandler;
use crate::http::HttpState;
use crate::index::ProspectIndex;
pub use crate::settings::Settings;

/// The dashboard uses its own inline stylesheet and no script; forms post
/// only here; nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The shortest access token accepted.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "analytics-indexer";

/// An opened index with its HTTP server bound, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    consumer: ConsumerRunner,
    handler: IndexHandler,
    index: Arc<ProspectIndex>,
    replay: bool,
    client: async_nats::Client,
    stream: bus::settings::StreamSettings,
}

impl Application {
    /// Opens (or creates) the index and binds the HTTP listener (port 0 picks
    /// a free one).
    pub fn build(settings: &Settings, client: async_nats::Client) -> anyhow::Result<Self> {
        let analytics = &settings.analytics;
        let index = Arc::new(ProspectIndex::open(&analytics.index_dir)?);
        let replay = index.last_sequence()?.is_none();
        let handler = IndexHandler::new(Arc::clone(&index), analytics.writer_memory_mb * 1024 * 1024)?;
        let index_for_origin = Arc::clone(&index);
        // A short token is guessed; none would leave the personal data behind
        // a door nobody can open, which is a misconfiguration too.
        let token_length = analytics.token.as_ref().map_or(0, |t| secrecy::ExposeSecret::expose_secret(t).trim().len());
        anyhow::ensure!(
            token_length >= MIN_TOKEN_LENGTH,
            "analytics.token must be set to at least {MIN_TOKEN_LENGTH} characters (SIGNUP__ANALYTICS__TOKEN): \
             it guards the personal data of the dashboard and the search"
        );
        let sessions = http::session_for(analytics, &settings.links)?;
        let state = web::Data::new(HttpState {
            index,
            token: analytics.token.clone(),
            sessions,
            js: async_nats::jetstream::new(client.clone()),
            stream: settings.nats.stream.clone(),
        });
        let listener = TcpListener::bind((analytics.host.as_str(), analytics.port))
            .with_context(|| format!("binding {}:{}", analytics.host, analytics.port))?;
        let port = listener.local_addr()?.port();
        let mut readiness = Readiness::new(client.clone());
        let consumer_ready = readiness.part("consumer");
        let readiness = web::Data::new(readiness);
        runtime::ops::prometheus();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(runtime::ops::head_as_get))
                .wrap(runtime::ops::security_headers(CONTENT_SECURITY_POLICY))
                .wrap(from_fn(runtime::ops::observe_http))
                .app_data(state.clone())
                .app_data(readiness.clone())
                .route("/analytics", web::get().to(http::dashboard))
                .route("/analytics/login", web::post().to(http::login))
                .route("/analytics/logout", web::post().to(http::logout))
                .route("/healthz", web::get().to(runtime::ops::healthz))
                .route("/readyz", web::get().to(runtime::ops::readyz))
                .route("/metrics", web::get().to(runtime::ops::metrics_endpoint))
                // The analytics API, as its OpenAPI document describes it.
                .into_utoipa_app()
                .configure(openapi::routes)
                .into_app()
                .configure(|config| runtime::ops::undeclared_methods(config, openapi::document()))
        })
        .disable_signals()
        .shutdown_timeout(10)
        .workers(2)
        .listen(listener)?
        .run();
        let consumer = ConsumerRunner::new(
            client.clone(),
            settings.nats.stream.clone(),
            CONSUMER_NAME,
            analytics.consumer.clone(),
        )
        .with_ready_flag(consumer_ready);
        Ok(Self {
            port,
            server,
            consumer,
            handler,
            index: index_for_origin,
            replay,
            client,
            stream: settings.nats.stream.clone(),
        })
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Consumes and serves until `shutdown`. A new or wiped index first drops
    /// its durable consumer, so that the stream is replayed from the start;
    /// an index built from another stream is emptied first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let consume = async {
            let js = jetstream::new(self.client.clone());
            let Some(stream) = bus::stream::wait_for_stream(&js, &self.stream, &shutdown).await else {
                return Ok(());
            };
            // As it was just found: asking again could time out at start-up.
            let identity = bus::stream::identity(stream.cached_info());
            let mut replay = self.replay;
            if !replay && self.index.stream_origin().as_deref() != Some(identity.as_str()) {
                tracing::warn!(built_from = ?self.index.stream_origin(), stream = %identity,
                    "the index was built from another stream: rebuilding it from this one");
                self.handler.empty().await?;
                replay = true;
            }
            if replay {
                tracing::info!("the index is new or empty: replaying the stream from its first message");
                drop_consumer_when_reachable(&self.client, &self.stream.name, &shutdown).await;
            }
            self.index.record_stream_origin(&identity)?;
            self.consumer.run(self.handler, shutdown.clone()).await
        };
        let stop_http = async {
            shutdown.cancelled().await;
            handle.stop(true).await;
        };
        let (consumed, served, ()) = tokio::join!(consume, self.server, stop_http);
        served.context("serving HTTP")?;
        consumed
    }
}

/// Deletes this indexer's durable consumer (if any), waiting for NATS.
async fn drop_consumer_when_reachable(client: &async_nats::Client, stream: &str, shutdown: &CancellationToken) {
    let js = jetstream::new(client.clone());
    loop {
        match drop_consumer(&js, stream).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "cannot reset the consumer yet; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn drop_consumer(js: &jetstream::Context, stream: &str) -> anyhow::Result<()> {
    use jetstream::context::GetStreamErrorKind;
    use jetstream::stream::ConsumerErrorKind;
    let stream = match js.get_stream(stream).await {
        Ok(stream) => stream,
        Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    match stream.delete_consumer(CONSUMER_NAME).await {
        Ok(_) => Ok(()),
        Err(error) if matches!(error.kind(), ConsumerErrorKind::JetStream(ref e) if e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// The subcommands beside `run` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Drop the index and its durable consumer, then rebuild by replaying the stream (and keep running).
    Reindex,
}

impl Service for Application {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str = "Indexes prospect events for search and analytics, and serves the dashboard";
    type Settings = Settings;
    type Command = Command;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let app = Application::build(&settings, context.client)?;
        tracing::info!(port = app.port(), "analytics-indexer listening; the dashboard is at /analytics");
        app.run_until_stopped(context.shutdown).await
    }

    async fn command(settings: &Settings, Command::Reindex: Command) -> anyhow::Result<Then> {
        bus::connection::check(&settings.nats).await.context("reindexing needs NATS")?;
        let client = bus::connect(&settings.nats, CONSUMER_NAME).await?;
        drop_index(settings, &client).await?;
        client.drain().await.context("draining NATS")?;
        tracing::info!("index and consumer dropped; replaying the stream");
        Ok(Then::Run)
    }
}

/// Deletes the index folder and the durable consumer: the next start replays
/// the whole stream into a new index.
pub async fn drop_index(settings: &Settings, client: &async_nats::Client) -> anyhow::Result<()> {
    let dir = &settings.analytics.index_dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    drop_consumer(&jetstream::new(client.clone()), &settings.nats.stream.name).await
}
