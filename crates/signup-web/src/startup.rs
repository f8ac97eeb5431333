//! Building and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use bus::Publisher;
use bus::async_nats::{self, jetstream};
use links::Links;
use runtime::{Backoff, Context, Service, Then};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_actix_web::AppExt as _;

use crate::bot_check::{BotCheck, UsedProofs};
use crate::limits::{self, RateLimiter};
use crate::reference_data::ReferenceData;
use crate::settings::Settings;
use crate::state::AppState;
use crate::{api, health, openapi, pages};

/// A bound, not yet running, signup-web server.
pub struct Application {
    port: u16,
    server: Server,
    /// Publishes still running after their answer went out.
    background: TaskTracker,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares the server
    /// on the given NATS connection. Also starts making sure the event stream
    /// exists, in the background, so start-up never waits for NATS.
    pub fn build(
        settings: &Settings,
        client: async_nats::Client,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((settings.web.host.as_str(), settings.web.port))
            .with_context(|| format!("binding {}:{}", settings.web.host, settings.web.port))?;
        let port = listener.local_addr()?.port();

        let state = web::Data::new(app_state(settings, &client, shutdown)?);
        let jetstream = state.jetstream.clone();
        let reference = Arc::clone(&state.reference);
        let service_timeout = state.service_timeout;
        let background = state.background.clone();
        tokio::spawn(ensure_stream_in_background(jetstream, settings.nats.stream.clone(), shutdown.clone()));
        tokio::spawn(reference.keep_fresh(
            client,
            Duration::from_secs(settings.web.reference_ttl_secs.max(1)),
            service_timeout,
            shutdown.clone(),
        ));

        // The failure counters from zero, so the first failure is an increase
        // Prometheus can see (and alert on).
        bus::metrics::counter!(crate::limits::RATE_LIMITED).absolute(0);
        for ce_type in messages::ProspectEvent::TYPES {
            bus::metrics::counter!(bus::publish::PUBLISH_FAILURES, "type" => ce_type).absolute(0);
        }
        let rate_limiter = RateLimiter::new(&settings.web.rate_limit, settings.web.trust_forwarded_for);
        tokio::spawn(rate_limiter.clone().keep_small(shutdown.clone()));
        let rate_limiter = web::Data::new(rate_limiter);
        runtime::ops::prometheus();

        let limit = settings.web.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                // Innermost first: the limit, the headers (429s get them too),
                // HEAD as GET (limited as GET), then metrics and the access
                // log see every answer.
                .wrap(from_fn(limits::limit_requests))
                .wrap(from_fn(limits::no_store_for_prospects))
                .wrap(limits::security_headers())
                .wrap(from_fn(runtime::ops::head_as_get))
                .wrap(from_fn(runtime::ops::observe_http))
                .app_data(state.clone())
                .app_data(rate_limiter.clone())
                .app_data(web::PayloadConfig::new(limit))
                .app_data(web::Data::new(api::BodyLimit(limit)))
                .configure(pages::signup::routes)
                .configure(pages::confirm::routes)
                .configure(pages::manage::routes)
                .configure(pages::my_data::routes)
                .configure(pages::new_link::routes)
                .configure(pages::assets::routes)
                .route("/healthz", web::get().to(runtime::ops::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(runtime::ops::metrics_endpoint))
                // The JSON API, as its OpenAPI document describes it.
                .into_utoipa_app()
                .configure(openapi::routes)
                .into_app()
                .configure(|config| runtime::ops::undeclared_methods(config, openapi::document()))
                .default_service(web::to(pages::not_found))
        })
        .disable_signals()
        .shutdown_timeout(settings.shutdown.timeout_secs);
        if settings.web.workers > 0 {
            server = server.workers(settings.web.workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self { port, server, background })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown`, then stops taking connections and lets the
    /// requests in flight finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.stop(true).await;
        });
        let served = self.server.await;
        // Requests answered before their publish was done: let those finish
        // (they try once more now that the server stops).
        self.background.close();
        self.background.wait().await;
        served
    }
}

impl Service for Application {
    const NAME: &'static str = "signup-web";
    const ABOUT: &'static str = "The Signup web tier: sign-up form and JSON API";
    type Settings = Settings;
    type Command = Command;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let app = Application::build(&settings, context.client, &context.shutdown)?;
        tracing::info!(port = app.port(), "signup-web listening; the form is at /signup");
        app.run_until_stopped(context.shutdown).await.context("serving HTTP")
    }

    async fn command(settings: &Settings, Command::Buckets: Command) -> anyhow::Result<Then> {
        bus::connection::check(&settings.nats).await?;
        let client = bus::connect(&settings.nats, Self::NAME).await?;
        let used = UsedProofs::new(&settings.web.bot_check, jetstream::new(client.clone()), &settings.nats.stream);
        used.ensure_bucket().await?;
        client.flush().await?;
        tracing::info!(bucket = crate::bot_check::USED_BUCKET, "the bot check's bucket is ready");
        Ok(Then::Exit)
    }
}

/// The subcommands beside `run` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Create the bot check's key-value bucket of used proofs
    /// (`WEB_CHALLENGES`), or update it to the settings, then exit: a
    /// deployment's set-up step, run with a NATS user that may manage
    /// streams (the web's own may not).
    Buckets,
}

async fn ensure_stream_in_background(js: jetstream::Context, stream: bus::StreamSettings, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match bus::ensure_stream(&js, &stream).await {
            Ok(_) => {
                tracing::info!(stream = %stream.name, "event stream ready");
                return;
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "event stream not ready yet; retrying")
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// The state every handler shares, from the settings: the publisher, the
/// reference lists, the link keys, the bot check, the privacy notice (its
/// version and text logged, to show later what a sign-up agreed to).
fn app_state(
    settings: &Settings,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<AppState> {
    let jetstream = jetstream::ContextBuilder::new().timeout(settings.nats.request_timeout()).build(client.clone());
    let service_timeout = Duration::from_millis(settings.web.service_timeout_ms);
    let reference = Arc::new(ReferenceData::builtin());
    // The mailer signs with the same secret: without one, no mailed link
    // could ever work here.
    let links = Links::new(&settings.links)?;
    let bot_check = BotCheck::new(&settings.web.bot_check, &links);
    let privacy = crate::privacy::PrivacyNotice::new(&settings.web.privacy, settings.web.trust_forwarded_for)?;
    // The text behind the version, in the log: keep it (with every
    // earlier one) to show what a sign-up agreed to.
    tracing::info!(notice_version = %privacy.version, notice = %privacy.text,
        policy_url = privacy.policy_url.as_deref().unwrap_or_default(),
        record_client = settings.web.privacy.record_client, "the privacy notice sign-ups agree to");
    Ok(AppState {
        publisher: Publisher::new(client.clone(), "/signup-web", settings.nats.request_timeout())
            .with_retry(settings.nats.publish_retry())
            .with_dataschema(&settings.links.base_url),
        reference: Arc::clone(&reference),
        links,
        confirm_days: settings.links.confirm_within_days(),
        jetstream: jetstream.clone(),
        stream: settings.nats.stream.clone(),
        service_timeout,
        background: TaskTracker::new(),
        shutdown: shutdown.clone(),
        suppressed: tokio::sync::OnceCell::new(),
        bot_check,
        used_proofs: UsedProofs::new(&settings.web.bot_check, jetstream.clone(), &settings.nats.stream),
        privacy,
    })
}
