//! The fault-test bed: signup-web, save-prospect (and, for some tests, the
//! analytics indexer and the mailer) as real processes
//! against a NATS the test owns (one server, or a cluster) and a database of
//! their own, with the counts every fault test reports: accepted, refused
//! (503), saved, lost, duplicated. Used by `tests/e2e/faults.rs` and
//! `tests/e2e/cluster.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::async_nats::{self, jetstream};
use bus::settings::NatsSettings;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use save_prospect::schema::prospects;
use test_support::{TestDatabase, eventually, free_port};
use uuid::Uuid;

use crate::processes::{Burst, Service, burst};

/// signup-web (started) and save-prospect (on demand) as processes.
pub struct FaultBed {
    /// The services' database.
    pub db: TestDatabase,
    /// Where signup-web listens.
    pub web_url: String,
    /// A NATS client for the test's own looks at the streams.
    pub client: async_nats::Client,
    nats_url: String,
    common: Vec<(String, String)>,
    _web: Service,
}

/// The web's link secret here: it must never be logged.
pub const LINKS_SECRET: &str = "fault-test-links-secret";

/// The analytics indexer's access token here.
pub const ANALYTICS_TOKEN: &str = "fault-test-analytics-token-0123456789";

impl FaultBed {
    /// Starts signup-web against `nats_url` (one URL or a seed list) and
    /// waits until it is ready. `common` goes to every service started here
    /// (e.g. the stream's replicas on a cluster).
    pub async fn start(nats_url: String, common: &[(&str, &str)]) -> Self {
        let common: Vec<(String, String)> = common.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let db = TestDatabase::new();
        let port = free_port().expect("port");
        let mut env = vec![
            ("SIGNUP__WEB__PORT".to_owned(), port.to_string()),
            ("SIGNUP__NATS__URL".to_owned(), nats_url.clone()),
            ("SIGNUP__NATS__REQUEST_TIMEOUT_MS".to_owned(), "1000".to_owned()),
            ("SIGNUP__LINKS__SECRET".to_owned(), LINKS_SECRET.to_owned()),
            // The bursts (and the contract tests' look-ups) all come from one
            // address.
            ("SIGNUP__WEB__RATE_LIMIT__PER_MINUTE".to_owned(), "0".to_owned()),
            ("SIGNUP__WEB__RATE_LIMIT__LOOKUPS_PER_MINUTE".to_owned(), "0".to_owned()),
            // The bursts post sign-ups as a load test does: the bot check has
            // tests of its own (public_edge.rs).
            ("SIGNUP__WEB__BOT_CHECK__ENABLED".to_owned(), "false".to_owned()),
        ];
        env.extend(common.iter().cloned());
        let web = Service::spawn("signup-web", &["serve"], &env).expect("signup-web");
        let web_url = format!("http://127.0.0.1:{port}");
        let client = bus::connect(&NatsSettings { url: nats_url.clone(), ..NatsSettings::default() }, "fault-test")
            .await
            .expect("connect");
        let bed = Self { db, web_url, client, nats_url, common, _web: web };
        bed.web_ready().await;
        bed
    }

    async fn web_ready(&self) {
        let url = format!("{}/readyz", self.web_url);
        eventually(Duration::from_secs(60), "signup-web ready", || async {
            (reqwest::get(&url).await.ok()?.status() == 200).then_some(())
        })
        .await
        .expect("ready");
    }

    /// Starts a save-prospect process (quick retries; no health port, so
    /// several can run), with `extra` settings.
    pub fn saver(&self, extra: &[(&str, &str)]) -> Service {
        let mut env = vec![
            ("SIGNUP__DATABASE__URL".to_owned(), self.db.url()),
            ("SIGNUP__NATS__URL".to_owned(), self.nats_url.clone()),
            ("SIGNUP__SAVE_PROSPECT__CONSUMER__IDLE_WAIT_MS".to_owned(), "300".to_owned()),
            ("SIGNUP__SAVE_PROSPECT__CONSUMER__RETRY_BASE_MS".to_owned(), "50".to_owned()),
            ("SIGNUP__SAVE_PROSPECT__CONSUMER__RETRY_MAX_MS".to_owned(), "400".to_owned()),
            ("SIGNUP__SAVE_PROSPECT__CONSUMER__OUTAGE_BACKOFF_MAX_MS".to_owned(), "1000".to_owned()),
            // Several instances run at once.
            ("SIGNUP__SAVE_PROSPECT__HTTP__PORT".to_owned(), "0".to_owned()),
        ];
        env.extend(self.common.iter().cloned());
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Service::spawn("save-prospect", &["run"], &env).expect("save-prospect")
    }

    /// Starts an analytics-indexer process (index in `index_dir`, API on
    /// `port` with [`ANALYTICS_TOKEN`]), with `extra` settings.
    pub fn indexer(&self, index_dir: &std::path::Path, port: u16, extra: &[(&str, &str)]) -> Service {
        let mut env = vec![
            ("SIGNUP__NATS__URL".to_owned(), self.nats_url.clone()),
            ("SIGNUP__ANALYTICS__PORT".to_owned(), port.to_string()),
            ("SIGNUP__ANALYTICS__INDEX_DIR".to_owned(), index_dir.display().to_string()),
            ("SIGNUP__ANALYTICS__TOKEN".to_owned(), ANALYTICS_TOKEN.to_owned()),
            ("SIGNUP__ANALYTICS__CONSUMER__IDLE_WAIT_MS".to_owned(), "300".to_owned()),
        ];
        env.extend(self.common.iter().cloned());
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Service::spawn("analytics-indexer", &["run"], &env).expect("analytics-indexer")
    }

    /// Starts a mailer process sending over plain SMTP to `smtp_port` on
    /// this machine, with `extra` settings.
    pub fn mailer(&self, smtp_port: u16, extra: &[(&str, &str)]) -> Service {
        let mut env = vec![
            ("SIGNUP__NATS__URL".to_owned(), self.nats_url.clone()),
            ("SIGNUP__LINKS__SECRET".to_owned(), LINKS_SECRET.to_owned()),
            ("SIGNUP__LINKS__BASE_URL".to_owned(), self.web_url.clone()),
            ("SIGNUP__MAILER__SMTP__HOST".to_owned(), "127.0.0.1".to_owned()),
            ("SIGNUP__MAILER__SMTP__PORT".to_owned(), smtp_port.to_string()),
            ("SIGNUP__MAILER__SMTP__TLS".to_owned(), "none".to_owned()),
            ("SIGNUP__MAILER__CONSUMER__IDLE_WAIT_MS".to_owned(), "300".to_owned()),
            ("SIGNUP__MAILER__HTTP__PORT".to_owned(), "0".to_owned()),
        ];
        env.extend(self.common.iter().cloned());
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Service::spawn("mailer", &["run"], &env).expect("mailer")
    }

    /// Waits until these handlers' durable consumers exist (a new one
    /// starts at new events: what is published afterwards reaches them).
    pub async fn consumers_ready(&self, names: &[&str]) {
        let js = jetstream::new(self.client.clone());
        for name in names {
            eventually(Duration::from_secs(60), &format!("the consumer {name}"), || async {
                js.get_stream("PROSPECTS").await.ok()?.consumer_info(*name).await.ok().map(drop)
            })
            .await
            .expect("consumer");
        }
    }

    /// Runs the operator CLI (`signup …`) against this bed's NATS and
    /// returns what it printed; fails when it fails.
    pub async fn signup(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::processes::signup_cli(&self.nats_url, &[], args).await
    }

    /// The fault of a bad migration: from now on the database refuses rows
    /// of `company` (a check constraint named `constraint`). Returns the
    /// connection that fixes it later (`DROP CONSTRAINT`).
    pub async fn refuse_company(&self, constraint: &str, company: &str) -> AsyncPgConnection {
        let mut conn = self.connect().await.expect("db");
        diesel::sql_query(format!(
            "ALTER TABLE prospects ADD CONSTRAINT {constraint} CHECK (company_name IS DISTINCT FROM '{company}')"
        ))
        .execute(&mut conn)
        .await
        .expect("constraint");
        conn
    }

    /// A connection to the services' database, once it exists.
    pub async fn connect(&self) -> Option<AsyncPgConnection> {
        AsyncPgConnection::establish(&self.db.url()).await.ok()
    }

    /// The live prospects saved so far.
    pub async fn saved_ids(&self) -> BTreeSet<Uuid> {
        let Some(mut conn) = self.connect().await else { return BTreeSet::new() };
        prospects::table
            .filter(prospects::deleted_at.is_null())
            .select(prospects::id)
            .load(&mut conn)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    /// Waits until every id in `expected` is saved.
    pub async fn all_saved(&self, expected: &BTreeSet<Uuid>) -> BTreeSet<Uuid> {
        eventually(Duration::from_secs(120), "every accepted sign-up saved", || async {
            let saved = self.saved_ids().await;
            expected.is_subset(&saved).then_some(saved)
        })
        .await
        .unwrap_or_else(|_| panic!("not every accepted sign-up was saved ({} expected)", expected.len()))
    }

    /// Rows that share an e-mail address, or an event applied twice.
    pub async fn duplicated(&self) -> i64 {
        let mut conn = self.connect().await.expect("db");
        let rows: i64 =
            prospects::table.filter(prospects::email.is_not_null()).count().get_result(&mut conn).await.expect("rows");
        let emails: i64 = prospects::table
            .filter(prospects::email.is_not_null())
            .select(diesel::dsl::sql::<diesel::sql_types::BigInt>("count(DISTINCT email_key)"))
            .get_result(&mut conn)
            .await
            .expect("emails");
        rows - emails
    }

    /// How many dead letters the dead-letter stream holds.
    pub async fn dead_letters(&self) -> u64 {
        let js = jetstream::new(self.client.clone());
        match js.get_stream("PROSPECTS_DLQ").await {
            Ok(mut stream) => stream.info().await.expect("info").state.messages,
            Err(_) => 0,
        }
    }

    /// Prints the fault's line (accepted, refused, saved, lost, duplicated)
    /// and fails unless nothing was lost or duplicated and the services'
    /// logs hold no secret or address.
    pub async fn report(&self, fault: &str, accepted: &BTreeSet<Uuid>, refused: usize) {
        let saved = self.saved_ids().await;
        let lost = accepted.difference(&saved).count();
        let duplicated = self.duplicated().await;
        println!(
            "fault: {fault} | accepted {} | refused (503) {refused} | saved {} | lost {lost} | duplicated {duplicated}",
            accepted.len(),
            accepted.intersection(&saved).count()
        );
        assert_eq!(lost, 0, "{fault}: lost sign-ups");
        assert_eq!(duplicated, 0, "{fault}: duplicated sign-ups");
        // Nothing secret or personal reached the services' logs (with
        // FAULT_LOGS=1 they went to the terminal instead).
        if std::env::var_os("FAULT_LOGS").is_none() {
            let logs = crate::processes::logs();
            crate::logs::assert_free_of(&logs, &[LINKS_SECRET, "@example.com"], "the services' logs");
        }
    }
}

/// Starts a burst of `count` sign-ups in the background; the counter says
/// how many were answered so far.
pub fn spawn_burst(
    bed: &FaultBed,
    count: usize,
    concurrency: usize,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Burst>) {
    let progress = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(burst(bed.web_url.clone(), count, concurrency, Arc::clone(&progress)));
    (progress, task)
}

/// Waits until `n` sign-ups of a burst were answered.
pub async fn reached(progress: &AtomicUsize, n: usize) {
    eventually(Duration::from_secs(60), "burst progress", || async {
        (AtomicUsize::load(progress, Ordering::Relaxed) >= n).then_some(())
    })
    .await
    .expect("progress");
}

/// The redelivery count of a consumer of the event stream: events handed
/// out again before their first delivery was acknowledged.
pub async fn redelivered(client: &async_nats::Client, consumer: &str) -> usize {
    let stream = jetstream::new(client.clone()).get_stream("PROSPECTS").await.expect("stream");
    stream.consumer_info(consumer).await.expect("consumer").num_redelivered
}

/// A sign-up event (number `i`, with this company) as the web would publish it.
pub fn sign_up(i: usize, company: &str) -> ProspectSignedUp {
    ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: ProspectDetails {
            first_name: "Good".into(),
            last_name: format!("Event{i}"),
            email: format!("good{i}.{}@example.com", Uuid::now_v7().simple()).into(),
            company_name: Some(company.into()),
            country: Country { code: "GB".into(), name: "United Kingdom".into() },
            role: Role { code: "EN".into(), name: "Engineer".into() },
        },
        signed_up_at: Utc::now(),
        consent: messages::Consent::NotRecorded,
    }
}
