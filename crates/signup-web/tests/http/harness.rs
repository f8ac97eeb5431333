//! signup-web in-process on a free port, on a nats-server of the test's own.

use std::time::Duration;

use anyhow::Context as _;
use bus::async_nats;
use bus::settings::NatsSettings;
use secrecy::SecretString;
use test_support::{NatsServer, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The link secret the tests' web tier signs with.
const TOKEN_SECRET: &str = "web-test-token-secret-0123456789";

/// signup-web and its own nats-server.
pub struct System {
    /// The test's nats-server.
    pub nats: NatsServer,
    /// An HTTP client that does not follow redirects.
    pub http: reqwest::Client,
    /// A NATS client for the test's own looks at the stream.
    pub client: async_nats::Client,
    web_url: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl System {
    /// signup-web with the tests' settings: rate limits off (the tests post
    /// and poll from one address), the bot check off.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_web_with(|settings| {
            settings.web.rate_limit.per_minute = 0;
            settings.web.rate_limit.lookups_per_minute = 0;
        })
        .await
    }

    /// Like [`System::start`], with the settings adjusted by
    /// `configure` (which sees the test defaults: among them, the bot check
    /// off and the rate limits on).
    pub async fn start_web_with(configure: impl FnOnce(&mut signup_web::Settings)) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = bus::connect(&nats_settings(&nats), "web-test").await?;
        let mut settings = signup_web::Settings::default();
        settings.web.port = 0;
        settings.web.workers = 2;
        settings.web.reference_ttl_secs = 1;
        settings.web.bot_check.enabled = false;
        settings.links.secret = Some(SecretString::from(TOKEN_SECRET));
        settings.nats = nats_settings(&nats);
        configure(&mut settings);
        let web_client = bus::connect(&settings.nats, "signup-web").await?;
        let shutdown = CancellationToken::new();
        let app = signup_web::Application::build(&settings, web_client, &shutdown)?;
        let web_url = format!("http://127.0.0.1:{}", app.port());
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { app.run_until_stopped(shutdown).await }
        });
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let system = Self { nats, http, client, web_url, shutdown, task };
        system.wait_ready().await?;
        Ok(system)
    }

    /// The web tier's URL of `path`.
    pub fn web_url(&self, path: &str) -> String {
        format!("{}{path}", self.web_url)
    }

    /// Waits until `/readyz` says ready.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        eventually(Duration::from_secs(15), "signup-web to be ready", || async {
            let response = self.http.get(self.web_url("/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// How many events the stream `PROSPECTS` holds.
    pub async fn stored_events(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        js.get_stream("PROSPECTS").await.expect("stream").info().await.expect("info").state.messages
    }

    /// Stops signup-web.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("signup-web panicked")?.context("signup-web")
    }
}

/// NATS settings pointing at `server`.
pub fn nats_settings(server: &NatsServer) -> NatsSettings {
    NatsSettings { url: server.url(), request_timeout_ms: 1_000, ..NatsSettings::default() }
}

/// The prospect id in a `/signup/thanks/{id}` or `/api/prospects/{id}`
/// location.
pub fn id_from_location(response: &reqwest::Response) -> anyhow::Result<Uuid> {
    let location = response.headers().get(reqwest::header::LOCATION).context("no Location header")?.to_str()?;
    Ok(location.rsplit('/').next().unwrap_or_default().parse()?)
}
