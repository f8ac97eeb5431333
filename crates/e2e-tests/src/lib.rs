//! Starts the whole Signup slice for end-to-end tests: a private nats-server,
//! a private Postgres database, signup-web on a free port and save-prospect,
//! each stoppable on its own, and on demand the mailer with an SMTP server of
//! its own. The tests are in `tests/`.

use runtime::{Context, Service as _};
use std::time::Duration;

use anyhow::Context as _;
use bus::async_nats;
use bus::settings::{ConsumerSettings, NatsSettings};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use save_prospect::schema::prospects;
use secrecy::SecretString;
use test_support::{NatsServer, SmtpServer, TestDatabase, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod browser;
pub mod faults;
pub mod logs;
pub mod processes;

pub use test_support;

/// A running service: its stop signal and its task.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("service task panicked")?
    }
}

/// signup-web + save-prospect + their own NATS and database.
pub struct System {
    /// The test's nats-server.
    pub nats: NatsServer,
    /// The test's database.
    pub db: TestDatabase,
    /// An HTTP client that does not follow redirects.
    pub http: reqwest::Client,
    /// A NATS client for the test's own looks at the stream.
    pub client: async_nats::Client,
    /// The SMTP server the mailer sends to, once [`System::start_mailer`] ran.
    pub smtp: Option<SmtpServer>,
    web_url: String,
    web: Option<Running>,
    savers: Vec<Running>,
    mailer: Option<Running>,
}

impl System {
    /// How many events the stream `PROSPECTS` holds.
    pub async fn stored_events(&self) -> u64 {
        let js = bus::async_nats::jetstream::new(self.client.clone());
        js.get_stream("PROSPECTS").await.expect("stream").info().await.expect("info").state.messages
    }

    /// How many events the stream `PROSPECTS` holds on `subject` (wildcards
    /// allowed).
    pub async fn events_on(&self, subject: &str) -> u64 {
        use futures::TryStreamExt as _;
        let js = bus::async_nats::jetstream::new(self.client.clone());
        let stream = js.get_stream("PROSPECTS").await.expect("stream");
        let subjects: Vec<(String, usize)> =
            stream.info_with_subjects(subject).await.expect("info").try_collect().await.expect("subjects");
        subjects.into_iter().map(|(_, count)| count as u64).sum()
    }

    /// Starts everything.
    pub async fn start() -> anyhow::Result<Self> {
        let mut system = Self::start_without_saver().await?;
        system.start_saver().await?;
        Ok(system)
    }

    /// Starts NATS, the database and signup-web, but not save-prospect.
    /// The web's rate limits are off: the tests post and poll from one
    /// address.
    pub async fn start_without_saver() -> anyhow::Result<Self> {
        Self::start_web_with(|settings| {
            settings.web.rate_limit.per_minute = 0;
            settings.web.rate_limit.lookups_per_minute = 0;
        })
        .await
    }

    /// Like [`System::start_without_saver`], with signup-web's settings
    /// adjusted by `configure` (which sees the test defaults: among them,
    /// the bot check off).
    pub async fn start_web_with(configure: impl FnOnce(&mut signup_web::Settings)) -> anyhow::Result<Self> {
        logs::capture();
        let nats = NatsServer::start().await?;
        let db = TestDatabase::new();
        let client = bus::connect(&nats_settings(&nats), "e2e-test").await?;
        let mut web_settings = signup_web::Settings::default();
        web_settings.web.port = 0;
        web_settings.web.workers = 2;
        web_settings.links.secret = Some(SecretString::from(TOKEN_SECRET));
        web_settings.web.reference_ttl_secs = 1;
        web_settings.nats = nats_settings(&nats);
        // Off, as for a load test: the tests of the bot check turn it on
        // (and solve its challenges), the others post bare sign-ups.
        web_settings.web.bot_check.enabled = false;
        configure(&mut web_settings);
        let web_client = bus::connect(&web_settings.nats, "signup-web").await?;
        let shutdown = CancellationToken::new();
        let app = signup_web::Application::build(&web_settings, web_client, &shutdown)?;
        let web_url = format!("http://127.0.0.1:{}", app.port());
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { app.run_until_stopped(shutdown).await.map_err(Into::into) }
        });
        let system = Self {
            nats,
            db,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?,
            client,
            smtp: None,
            web_url,
            web: Some(Running { shutdown, task }),
            savers: Vec::new(),
            mailer: None,
        };
        system.wait_ready().await?;
        Ok(system)
    }

    /// The web tier's base URL.
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

    /// save-prospect's settings for this system.
    pub fn saver_settings(&self) -> save_prospect::Settings {
        let mut settings = save_prospect::Settings::default();
        settings.database.url = SecretString::from(self.db.url());
        settings.database.pool_size = 4;
        settings.nats = nats_settings(&self.nats);
        settings.save_prospect.consumer =
            ConsumerSettings { idle_wait_ms: 500, retry_base_ms: 200, ..ConsumerSettings::default() };
        settings.save_prospect.http.port = Some(0);
        settings
    }

    /// Starts a save-prospect instance (it creates and migrates the database);
    /// call it again for more instances sharing the durable consumer.
    pub async fn start_saver(&mut self) -> anyhow::Result<()> {
        self.start_saver_with(self.saver_settings()).await
    }

    /// Starts a save-prospect instance with these settings.
    pub async fn start_saver_with(&mut self, settings: save_prospect::Settings) -> anyhow::Result<()> {
        let client = bus::connect(&settings.nats, save_prospect::CONSUMER_NAME).await?;
        let shutdown = CancellationToken::new();
        let context = Context::new(save_prospect::CONSUMER_NAME, client, shutdown.clone());
        let task = tokio::spawn(save_prospect::SaveProspect::run(settings, context));
        self.savers.push(Running { shutdown, task });
        Ok(())
    }

    /// Stops every save-prospect instance gracefully.
    pub async fn stop_saver(&mut self) -> anyhow::Result<()> {
        for saver in self.savers.drain(..) {
            saver.stop().await?;
        }
        Ok(())
    }

    /// The mailer's settings for this system: plain SMTP to the test's own
    /// server, links to this web tier, signed with its secret.
    pub fn mailer_settings(&self, smtp_port: u16) -> mailer::Settings {
        let mut settings = mailer::Settings { nats: nats_settings(&self.nats), ..mailer::Settings::default() };
        settings.links.secret = Some(SecretString::from(TOKEN_SECRET));
        settings.links.base_url = self.web_url.clone();
        settings.mailer.smtp.port = smtp_port;
        settings.mailer.smtp.tls = smtp::SmtpTls::None;
        settings.mailer.consumer.idle_wait_ms = 500;
        settings.mailer.consumer.retry_base_ms = 200;
        settings.mailer.http.port = Some(0);
        settings
    }

    /// Starts an SMTP server and the mailer sending to it.
    pub async fn start_mailer(&mut self) -> anyhow::Result<()> {
        let smtp = SmtpServer::start().await?;
        let settings = self.mailer_settings(smtp.port());
        self.smtp = Some(smtp);
        self.start_mailer_with(settings).await
    }

    /// Starts the mailer with these settings, and waits until its durable
    /// consumer exists (a new one starts at new events: whatever is published
    /// after this returns is mailed).
    pub async fn start_mailer_with(&mut self, settings: mailer::Settings) -> anyhow::Result<()> {
        let client = bus::connect(&settings.nats, mailer::CONSUMER_NAME).await?;
        mailer::Mailer::new(&settings, client.clone())?;
        let shutdown = CancellationToken::new();
        let context = Context::new(mailer::CONSUMER_NAME, client, shutdown.clone());
        let task = tokio::spawn(mailer::Mailer::run(settings, context));
        self.mailer = Some(Running { shutdown, task });
        let js = async_nats::jetstream::new(self.client.clone());
        eventually(Duration::from_secs(20), "the mailer's consumer", || async {
            js.get_stream("PROSPECTS").await.ok()?.consumer_info(mailer::CONSUMER_NAME).await.ok().map(drop)
        })
        .await
    }

    /// Waits until `address` has received a mail with this subject, and
    /// returns the first such.
    pub async fn mail_to(&self, address: &str, subject: &str) -> anyhow::Result<Mail> {
        let smtp = self.smtp.as_ref().context("the mailer was not started")?;
        eventually(Duration::from_secs(20), &format!("a mail {subject:?} to {address}"), || async {
            smtp.messages_to(address)
                .iter()
                .filter_map(|m| Mail::parse(m, &self.web_url).ok())
                .find(|m| m.subject == subject)
        })
        .await
    }

    /// Waits until `address` has received `count` mails, and returns them.
    pub async fn mails_to(&self, address: &str, count: usize) -> anyhow::Result<Vec<Mail>> {
        let smtp = self.smtp.as_ref().context("the mailer was not started")?;
        let raw = eventually(Duration::from_secs(20), &format!("{count} mail(s) to {address}"), || async {
            let mails = smtp.messages_to(address);
            (mails.len() >= count).then_some(mails)
        })
        .await?;
        raw.iter().map(|m| Mail::parse(m, &self.web_url)).collect()
    }

    /// Posts the sign-up form with these fields.
    pub async fn post_form<T: serde::Serialize + ?Sized>(&self, fields: &T) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.post(self.web_url("/signup")).form(fields).send().await?)
    }

    /// How many prospects rows exist (live or deleted).
    pub async fn prospect_count(&self) -> anyhow::Result<i64> {
        let mut conn = self.db.connect().await?;
        Ok(prospects::table.count().get_result(&mut conn).await?)
    }

    /// The saved row of a prospect, if any.
    pub async fn prospect(&self, id: Uuid) -> anyhow::Result<Option<ProspectRow>> {
        let mut conn = self.db.connect().await?;
        Ok(prospects::table.find(id).select(ProspectRow::as_select()).first(&mut conn).await.optional()?)
    }

    /// Waits until the prospect's row exists.
    pub async fn saved(&self, id: Uuid) -> anyhow::Result<ProspectRow> {
        eventually(Duration::from_secs(20), "the prospect row", || async { self.prospect(id).await.ok().flatten() })
            .await
    }

    /// Runs the operator CLI (`signup …`) against this system's NATS, with
    /// its link secret, and returns what it printed; fails when it fails.
    pub async fn signup(&self, args: &[&str]) -> anyhow::Result<String> {
        processes::signup_cli(&self.nats.url(), &[("SIGNUP__LINKS__SECRET", TOKEN_SECRET)], args).await
    }

    /// Stops the services.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mailer) = self.mailer.take() {
            mailer.stop().await?;
        }
        self.stop_saver().await?;
        if let Some(web) = self.web.take() {
            web.stop().await?;
        }
        Ok(())
    }
}

/// A mail as the test SMTP server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `Subject:`.
    pub subject: String,
    /// The text part, decoded.
    pub text: String,
    /// The HTML part, decoded.
    pub html: String,
    /// The paths of the links in the text part that lead to the web tier.
    pub links: Vec<String>,
}

impl Mail {
    /// Reads a raw message; links to `web_url` become paths.
    pub fn parse(raw: &str, web_url: &str) -> anyhow::Result<Self> {
        let parsed = mailparse::parse_mail(raw.as_bytes())?;
        let subject = parsed.headers.iter().find(|h| h.get_key_ref().eq_ignore_ascii_case("subject"));
        let part = |mime: &str| -> anyhow::Result<String> {
            let part = parsed.subparts.iter().find(|p| p.ctype.mimetype == mime);
            Ok(part.with_context(|| format!("no {mime} part"))?.get_body()?)
        };
        let text = part("text/plain")?;
        let links = text.split_whitespace().filter_map(|word| word.strip_prefix(web_url)).map(str::to_owned).collect();
        Ok(Self { subject: subject.map(|h| h.get_value()).unwrap_or_default(), html: part("text/html")?, text, links })
    }

    /// The first link whose path starts with `prefix`.
    pub fn link(&self, prefix: &str) -> anyhow::Result<&str> {
        self.links
            .iter()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
            .with_context(|| format!("no {prefix} link in {:?}", self.text))
    }
}

/// A prospects row as the tests read it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = prospects)]
pub struct ProspectRow {
    /// `id`
    pub id: Uuid,
    /// `email`
    pub email: Option<String>,
    /// `first_name`
    pub first_name: Option<String>,
    /// `last_name`
    pub last_name: Option<String>,
    /// `company_name`
    pub company_name: Option<String>,
    /// `country_code`
    pub country_code: Option<String>,
    /// `role_code`
    pub role_code: Option<String>,
    /// `signed_up_at`
    pub signed_up_at: DateTime<Utc>,
    /// `deleted_at`
    pub deleted_at: Option<DateTime<Utc>>,
    /// `confirmed_at`
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// NATS settings pointing at `server`.
pub fn nats_settings(server: &NatsServer) -> NatsSettings {
    NatsSettings { url: server.url(), request_timeout_ms: 1_000, ..NatsSettings::default() }
}

/// The `Location` header of a response.
pub fn location(response: &reqwest::Response) -> anyhow::Result<String> {
    Ok(response.headers().get(reqwest::header::LOCATION).context("no Location header")?.to_str()?.to_owned())
}

/// The prospect id in a `/signup/thanks/{id}` or `/api/prospects/{id}`
/// location.
pub fn id_from_location(response: &reqwest::Response) -> anyhow::Result<Uuid> {
    let location = location(response)?;
    Ok(location.rsplit('/').next().unwrap_or_default().parse()?)
}

/// A challenge from the web tier at `web_url` (`GET /api/challenge`), solved
/// with ALTCHA's own crate: the value of `altcha` for one sign-up.
pub async fn solved_challenge(http: &reqwest::Client, web_url: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{web_url}/api/challenge")).send().await?.error_for_status()?;
    let challenge: altcha::Challenge = response.json().await?;
    Ok(solve(challenge))
}

pub use test_support::bot_check::solve;

/// The links of the test web tier, as the mailer makes them (same secret).
pub fn links() -> links::Links {
    let settings = links::LinkSettings { secret: Some(SecretString::from(TOKEN_SECRET)), ..Default::default() };
    links::Links::new(&settings).expect("the test secret is long enough")
}

/// The path of a manage link for `prospect_id`, as the mailer would send it.
pub fn manage_path(prospect_id: Uuid) -> String {
    links::Purpose::Manage.path(&links().manage_token(prospect_id, Utc::now()))
}

/// The secret the test web tier and mailer sign links with.
pub const TOKEN_SECRET: &str = "e2e-test-secret-for-manage-links";
