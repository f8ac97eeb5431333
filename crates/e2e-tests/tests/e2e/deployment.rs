//! The services as the deployment runs them: real binaries configured only by
//! environment variables (secrets from files), each with its own NATS user
//! from `deploy/nats/nats-server.conf`, streams set up by `signup streams` as
//! the admin user. Shows that each service works within its permissions, is
//! refused outside them, and that `/metrics` counts what happened.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus::async_nats::{self, ConnectOptions, Event};
use e2e_tests::processes::{Service, binary};
use e2e_tests::test_support::{NatsServer, SmtpServer, TestDatabase, eventually, free_port};
use tokio::sync::mpsc;

const USERS: [&str; 7] =
    ["web", "save-prospect", "prospects", "analytics-indexer", "dead-letter-notifier", "mailer", "admin"];
const LINKS_SECRET: &str = "deployment-test-links-secret";
const ANALYTICS_TOKEN: &str = "deployment-test-analytics-token";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// `NATS_WEB_PASSWORD` for `web`, and so on.
fn password_variable(user: &str) -> String {
    format!("NATS_{}_PASSWORD", user.to_uppercase().replace('-', "_"))
}

fn password(user: &str) -> String {
    format!("p{}", user.replace('-', ""))
}

struct Deployment {
    nats: NatsServer,
    db: TestDatabase,
    secrets: tempfile::TempDir,
    index: tempfile::TempDir,
    web_port: u16,
    saver_port: u16,
    indexer_port: u16,
    notifier_port: u16,
    mailer_port: u16,
    smtp: SmtpServer,
    services: Vec<Service>,
}

impl Deployment {
    async fn start() -> Self {
        // A password for every user of the configuration (handlers added by
        // scripts/new-handler too); the tests below use those in USERS.
        let conf = std::fs::read_to_string(repo_file("deploy/nats/users.conf")).expect("users.conf");
        let users = conf.lines().filter_map(|line| line.trim().strip_prefix("user: ")).map(str::trim);
        let env: Vec<(String, String)> = users.map(|u| (password_variable(u), password(u))).collect();
        assert!(USERS.iter().all(|u| env.iter().any(|(k, _)| *k == password_variable(u))), "{env:?}");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let nats = NatsServer::start_with_config(&repo_file("deploy/nats/nats-server.conf"), &env)
            .await
            .expect("nats-server with the deployment's configuration");
        let secrets = tempfile::tempdir().expect("secrets dir");
        for user in USERS {
            std::fs::write(secrets.path().join(user), format!("{}\n", password(user))).expect("password file");
        }
        let mut deployment = Self {
            nats,
            db: TestDatabase::new(),
            secrets,
            index: tempfile::tempdir().expect("index dir"),
            web_port: free_port().expect("port"),
            saver_port: free_port().expect("port"),
            indexer_port: free_port().expect("port"),
            notifier_port: free_port().expect("port"),
            mailer_port: free_port().expect("port"),
            smtp: SmtpServer::start().await.expect("smtp server"),
            services: Vec::new(),
        };
        deployment.set_up_streams().await;
        deployment.start_services();
        deployment.all_ready().await;
        deployment
    }

    /// What every service gets: the server, its user, its password file, and
    /// streams it may only look up.
    fn env(&self, user: &str) -> Vec<(String, String)> {
        vec![
            ("SIGNUP__NATS__URL".into(), self.nats.url()),
            ("SIGNUP__NATS__USER".into(), user.into()),
            ("SIGNUP_FILE__NATS__PASSWORD".into(), self.secrets.path().join(user).display().to_string()),
            ("SIGNUP__NATS__STREAM__MANAGE".into(), "false".into()),
        ]
    }

    async fn set_up_streams(&self) {
        let output = tokio::process::Command::new(binary("signup").expect("signup binary"))
            .arg("streams")
            .env("SIGNUP_CONFIG_DIR", "")
            .envs(self.env("admin"))
            .output()
            .await
            .expect("signup streams");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "signup streams: {stdout} {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("stream PROSPECTS ready") && stdout.contains("stream PROSPECTS_DLQ ready"), "{stdout}");
        // The limits are visible where the streams are set up.
        assert!(stdout.contains("at most 4096 MiB, kept forever, when full: refuse new messages"), "{stdout}");
        assert!(stdout.contains("at most 512 MiB, kept 30 days"), "{stdout}");
        // The mailer's buckets, by the admin too (small, so a test fills one).
        let output = tokio::process::Command::new(binary("mailer").expect("mailer binary"))
            .arg("buckets")
            .env("SIGNUP_CONFIG_DIR", "")
            .env("SIGNUP__MAILER__BUCKET_MAX_MB", "1")
            .envs(self.env("admin"))
            .output()
            .await
            .expect("mailer buckets");
        assert!(output.status.success(), "mailer buckets: {}", String::from_utf8_lossy(&output.stderr));
        // The bot check's bucket of used proofs, likewise.
        let output = tokio::process::Command::new(binary("signup-web").expect("signup-web binary"))
            .arg("buckets")
            .env("SIGNUP_CONFIG_DIR", "")
            .envs(self.env("admin"))
            .output()
            .await
            .expect("signup-web buckets");
        assert!(output.status.success(), "signup-web buckets: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn start_services(&mut self) {
        let mut web = self.env("web");
        web.extend([
            ("SIGNUP__WEB__PORT".into(), self.web_port.to_string()),
            ("SIGNUP__LINKS__SECRET".into(), LINKS_SECRET.into()),
            // The bot check is on, as deployed, with challenges quick to solve.
            ("SIGNUP__WEB__BOT_CHECK__DIFFICULTY".into(), "20".into()),
            ("SIGNUP__WEB__BOT_CHECK__ITERATIONS".into(), "10".into()),
        ]);
        let mut saver = self.env("save-prospect");
        saver.extend([
            ("SIGNUP__DATABASE__URL".into(), self.db.url()),
            ("SIGNUP__SAVE_PROSPECT__HTTP__PORT".into(), self.saver_port.to_string()),
            ("SIGNUP__SAVE_PROSPECT__CONSUMER__IDLE_WAIT_MS".into(), "300".into()),
            // The prospects service answers as a user of its own.
            ("SIGNUP__SAVE_PROSPECT__SERVICE__USER".into(), "prospects".into()),
            (
                "SIGNUP_FILE__SAVE_PROSPECT__SERVICE__PASSWORD".into(),
                self.secrets.path().join("prospects").display().to_string(),
            ),
        ]);
        let mut indexer = self.env("analytics-indexer");
        indexer.extend([
            ("SIGNUP__ANALYTICS__PORT".into(), self.indexer_port.to_string()),
            ("SIGNUP__ANALYTICS__INDEX_DIR".into(), self.index.path().join("index").display().to_string()),
            ("SIGNUP__ANALYTICS__TOKEN".into(), ANALYTICS_TOKEN.into()),
            ("SIGNUP__ANALYTICS__WRITER_MEMORY_MB".into(), "15".into()),
            ("SIGNUP__ANALYTICS__CONSUMER__IDLE_WAIT_MS".into(), "300".into()),
            ("SIGNUP__ANALYTICS__CONSUMER__LINGER_MS".into(), "20".into()),
            // Few dead letters, so that the cap is reached in a test.
            ("SIGNUP__ANALYTICS__CONSUMER__DEAD_LETTER_CAP".into(), "2".into()),
        ]);
        let mut notifier = self.env("dead-letter-notifier");
        notifier.push(("SIGNUP__NOTIFIER__HTTP__PORT".into(), self.notifier_port.to_string()));
        let mut mailer = self.env("mailer");
        mailer.extend([
            ("SIGNUP__MAILER__HTTP__PORT".into(), self.mailer_port.to_string()),
            ("SIGNUP__MAILER__SMTP__PORT".into(), self.smtp.port().to_string()),
            ("SIGNUP__MAILER__SMTP__TLS".into(), "none".into()),
            ("SIGNUP__MAILER__CONSUMER__IDLE_WAIT_MS".into(), "300".into()),
            ("SIGNUP__LINKS__SECRET".into(), LINKS_SECRET.into()),
            ("SIGNUP__LINKS__BASE_URL".into(), Self::url(self.web_port, "")),
        ]);
        self.services = vec![
            Service::spawn("signup-web", &["serve"], &web).expect("signup-web"),
            Service::spawn("save-prospect", &["run"], &saver).expect("save-prospect"),
            Service::spawn("analytics-indexer", &["run"], &indexer).expect("analytics-indexer"),
            Service::spawn("dead-letter-notifier", &["run"], &notifier).expect("dead-letter-notifier"),
            Service::spawn("mailer", &["run"], &mailer).expect("mailer"),
        ];
    }

    fn url(port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    /// Ready means each service's durable consumer exists (or, for the web,
    /// the stream was found): each did that with its own user.
    async fn all_ready(&self) {
        for port in [self.web_port, self.saver_port, self.indexer_port, self.notifier_port, self.mailer_port] {
            let url = Self::url(port, "/readyz");
            eventually(Duration::from_secs(30), &format!("{url} to be ready"), || async {
                (reqwest::get(&url).await.ok()?.status() == 200).then_some(())
            })
            .await
            .expect("ready");
        }
    }

    /// Signs up through the form, with a solved challenge; returns the
    /// prospect id from the redirect.
    async fn sign_up(&self, email: &str) -> uuid::Uuid {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
        let altcha = e2e_tests::solved_challenge(&http, &Self::url(self.web_port, "")).await.expect("a challenge");
        let fields = [
            ("firstName", "Ada"),
            ("lastName", "Lovelace"),
            ("email", email),
            ("country", "GB"),
            ("role", "EN"),
            ("altcha", &altcha),
        ];
        let response = http.post(Self::url(self.web_port, "/signup")).form(&fields).send().await.expect("post /signup");
        assert_eq!(response.status(), 303, "the sign-up is accepted");
        e2e_tests::id_from_location(&response).expect("prospect id")
    }

    async fn saved(&self, id: uuid::Uuid) {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use save_prospect::schema::prospects;
        eventually(Duration::from_secs(20), "the row in Postgres", || async {
            let mut conn = self.db.connect().await.ok()?;
            prospects::table.find(id).select(prospects::id).first::<uuid::Uuid>(&mut conn).await.ok()
        })
        .await
        .expect("saved by save-prospect with its own user");
    }

    /// Waits until the index counts one sign-up.
    async fn indexed(&self) {
        let http = reqwest::Client::new();
        let url = Self::url(self.indexer_port, "/api/analytics/summary");
        eventually(Duration::from_secs(20), "the document in the index", || async {
            let summary: serde_json::Value =
                http.get(&url).bearer_auth(ANALYTICS_TOKEN).send().await.ok()?.json().await.ok()?;
            (summary["total"].as_u64()? == 1).then_some(())
        })
        .await
        .expect("indexed by analytics-indexer with its own user");
    }

    /// A raw client logged in as `user`, with the server's errors (such as
    /// permission violations) in a channel.
    async fn client_as(&self, user: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (errors, received) = mpsc::unbounded_channel();
        let client = ConnectOptions::with_user_and_password(user.into(), password(user))
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |event| {
                let errors = errors.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        errors.send(error.to_string()).ok();
                    }
                }
            })
            .connect(self.nats.url())
            .await
            .expect("connect");
        (client, received)
    }
}

/// A JetStream context that gives up on a refused request after a second
/// (the server drops it: no answer ever comes).
fn quick_jetstream(client: &async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(client.clone())
}

/// Waits for the server to report a permission violation mentioning `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let wait = async {
        while let Some(error) = errors.recv().await {
            let error = error.to_lowercase();
            if error.contains("permissions violation") && error.contains(&subject.to_lowercase()) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no permissions violation reported for {subject}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_works_with_its_own_user_and_is_refused_outside_its_permissions() {
    let deployment = Deployment::start().await;
    let email = "ada.deployment@example.com";
    let id = deployment.sign_up(email).await;
    deployment.saved(id).await;
    deployment.indexed().await;
    // The mailer, with its own user: asks who holds the address, keeps its
    // record in its own buckets, mails the link; the link confirms.
    let mail = eventually(Duration::from_secs(20), "the confirmation mail", || async {
        deployment.smtp.messages_to(email).pop()
    })
    .await
    .expect("mailed by the mailer with its own user");
    let mail = e2e_tests::Mail::parse(&mail, &Deployment::url(deployment.web_port, "")).expect("a mail");
    let confirm = mail.link("/prospects/confirm/").expect("confirmation link");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let confirmed = http.post(Deployment::url(deployment.web_port, confirm)).send().await.expect("confirm");
    assert_eq!(confirmed.status(), 303);

    // A poison event: each handler dead-letters it under its own name, and
    // the notifier fetches both letters (its mail server is absent, so it
    // keeps them unacknowledged).
    let (admin, _) = deployment.client_as("admin").await;
    let js = async_nats::jetstream::new(admin);
    js.publish("events.prospect.signedup", "not json".into()).await.expect("publish").await.expect("stored");
    let letters = js.get_stream("PROSPECTS_DLQ").await.expect("dead-letter stream");
    for handler in ["save-prospect", "analytics-indexer"] {
        let subject = format!("dlq.prospect.{handler}.signedup");
        eventually(Duration::from_secs(20), &format!("a dead letter on {subject}"), || async {
            letters.get_last_raw_message_by_subject(&subject).await.ok()
        })
        .await
        .expect("dead-lettered with the handler's own user");
    }
    eventually(Duration::from_secs(20), "the notifier to fetch both letters", || async {
        let info = letters.consumer_info("dead-letter-notifier").await.ok()?;
        (info.delivered.consumer_sequence >= 2).then_some(())
    })
    .await
    .expect("fetched with the notifier's own user");

    // An erasure: save-prospect, with its own user, purges the prospect's
    // events and dead letters that hold personal data.
    let links = links::Links::new(&links::LinkSettings {
        secret: Some(secrecy::SecretString::from(LINKS_SECRET)),
        ..links::LinkSettings::default()
    })
    .expect("links");
    let erase = links::Purpose::Manage.path(&links.manage_token(id, chrono::Utc::now())) + "/erase";
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let erased = http.post(Deployment::url(deployment.web_port, &erase)).send().await.expect("erase");
    assert_eq!(erased.status(), 303);
    let (admin, _) = deployment.client_as("admin").await;
    let events = async_nats::jetstream::new(admin).get_stream("PROSPECTS").await.expect("stream");
    let signed_up = messages::streams::event_subject(id, "signedup");
    eventually(Duration::from_secs(20), "the sign-up to be purged", || async {
        events.get_last_raw_message_by_subject(&signed_up).await.is_err().then_some(())
    })
    .await
    .expect("purged by save-prospect with its own user");

    // The web user may publish events but not read them, nor touch dead letters.
    let (web, mut errors) = deployment.client_as("web").await;
    let _events = web.subscribe("events.>").await.expect("the subscribe is sent");
    violation(&mut errors, "events.>").await;
    let _letters = web.subscribe("dlq.>").await.expect("the subscribe is sent");
    violation(&mut errors, "dlq.>").await;
    // Nor the handlers' inboxes, where their fetched events arrive.
    for inboxes in ["_INBOX.>", "_INBOX_save-prospect.>"] {
        let _replies = web.subscribe(inboxes).await.expect("the subscribe is sent");
        violation(&mut errors, inboxes).await;
    }
    web.publish("dlq.prospect.save-prospect.signedup", "forged".into()).await.expect("sent");
    violation(&mut errors, "dlq.prospect.save-prospect.signedup").await;
    // Nor ask the prospects service what only operators ask: every sign-up of an address.
    web.publish("prospects.holders", "{}".into()).await.expect("sent");
    violation(&mut errors, "prospects.holders").await;
    let js = quick_jetstream(&web);
    let stream = js.get_stream("PROSPECTS").await.expect("the web user may look the stream up");
    let created = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("intruder".into()),
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "the web user cannot create consumers");
    violation(&mut errors, "$JS.API.CONSUMER.CREATE.PROSPECTS.intruder").await;
    let deleted = js.delete_stream("PROSPECTS").await;
    assert!(deleted.is_err(), "the web user cannot delete the stream");
    violation(&mut errors, "$JS.API.STREAM.DELETE.PROSPECTS").await;

    // A handler may use its own consumer only, and may not publish events.
    let (saver, mut errors) = deployment.client_as("save-prospect").await;
    let js = quick_jetstream(&saver);
    let stream = js.get_stream("PROSPECTS").await.expect("lookup");
    assert!(stream.consumer_info("save-prospect").await.is_ok(), "its own consumer");
    assert!(stream.consumer_info("analytics-indexer").await.is_err(), "not another handler's");
    violation(&mut errors, "$JS.API.CONSUMER.INFO.PROSPECTS.analytics-indexer").await;
    saver.publish("events.prospect.signedup", "forged".into()).await.expect("sent");
    violation(&mut errors, "events.prospect.signedup").await;
    // ... except the erasure of sign-ups never confirmed.
    let erasure = messages::ProspectDeleted {
        prospect_id: uuid::Uuid::now_v7(),
        deleted_at: chrono::Utc::now(),
        disowned: false,
    };
    let subject = messages::Event::subject(&erasure);
    let stored = js.publish(subject, serde_json::to_vec(&erasure).expect("json").into()).await;
    stored.expect("sent").await.expect("save-prospect may publish erasures");

    // The mailer may ask who holds an address, but not publish events.
    let (mailer, mut errors) = deployment.client_as("mailer").await;
    mailer.publish("events.prospect.confirmed", "forged".into()).await.expect("sent");
    violation(&mut errors, "events.prospect.confirmed").await;

    // The notifier reads dead letters only.
    let (notifier, mut errors) = deployment.client_as("dead-letter-notifier").await;
    let js = quick_jetstream(&notifier);
    assert!(js.get_stream("PROSPECTS").await.is_err(), "the notifier cannot see the event stream");
    violation(&mut errors, "$JS.API.STREAM.INFO.PROSPECTS").await;
    assert!(js.get_stream("PROSPECTS_DLQ").await.is_ok(), "but can see the dead letters");

    // Every handler user is refused what is not its own: another user's
    // inbox, another handler's consumer, publishing sign-ups, deleting a
    // stream.
    let forged_subject = messages::streams::event_subject(uuid::Uuid::now_v7(), "signedup");
    for user in ["save-prospect", "analytics-indexer", "mailer", "crm-webhook", "dead-letter-notifier"] {
        let (client, mut errors) = deployment.client_as(user).await;
        let _replies = client.subscribe("_INBOX_web.>").await.expect("the subscribe is sent");
        violation(&mut errors, "_INBOX_web.>").await;
        client.publish(forged_subject.clone(), "forged".into()).await.expect("sent");
        violation(&mut errors, &forged_subject).await;
        let js = quick_jetstream(&client);
        assert!(js.delete_stream("PROSPECTS_DLQ").await.is_err(), "{user} cannot delete a stream");
        violation(&mut errors, "$JS.API.STREAM.DELETE.PROSPECTS_DLQ").await;
        let other = if user == "save-prospect" { "analytics-indexer" } else { "save-prospect" };
        let next = format!("$JS.API.CONSUMER.MSG.NEXT.PROSPECTS.{other}");
        client.publish(next.clone(), "1".into()).await.expect("sent");
        violation(&mut errors, &next).await;
    }
    // ... and may pause (and resume) its own consumer, as the runner does
    // while a dependency is away.
    let (saver, _) = deployment.client_as("save-prospect").await;
    let stream = quick_jetstream(&saver).get_stream("PROSPECTS").await.expect("lookup");
    let until = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    assert!(stream.pause_consumer("save-prospect", until).await.expect("may pause its own").paused);
    assert!(!stream.resume_consumer("save-prospect").await.expect("may resume its own").paused);

    // Acks work in the reply-subject form this server uses: after the work
    // above, no consumer waits for an ack and none redelivered anything.
    let (admin, _) = deployment.client_as("admin").await;
    let events = async_nats::jetstream::new(admin).get_stream("PROSPECTS").await.expect("stream");
    for consumer in ["save-prospect", "analytics-indexer", "mailer"] {
        let info = eventually(Duration::from_secs(20), &format!("{consumer} acked everything"), || async {
            let info = events.consumer_info(consumer).await.ok()?.clone();
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
        })
        .await
        .expect("acked with the handler's own user");
        assert_eq!(info.num_redelivered, 0, "{consumer}: no ack was refused, so nothing came back");
    }

    // A real dead letter (a handler's copy of an event the stream holds)
    // is replayed by the operator.
    let genuine = deployment.sign_up("grace.deployment@example.com").await;
    deployment.saved(genuine).await;
    // The indexer's user may read the delivery ledger (its operator side).
    let (indexer, _) = deployment.client_as("analytics-indexer").await;
    let ledger =
        bus::ledger::Ledger::read(&quick_jetstream(&indexer), &bus::settings::StreamSettings::default(), genuine)
            .await
            .expect("the indexer's user reads the ledger");
    let handlers: Vec<&str> = ledger.events[0].handlers.iter().map(|h| h.handler.as_str()).collect();
    assert!(handlers.contains(&"save-prospect") && handlers.contains(&"analytics-indexer"), "{handlers:?}");
    let genuine_subject = messages::streams::event_subject(genuine, "signedup");
    let original = events.get_last_raw_message_by_subject(&genuine_subject).await.expect("the sign-up event");
    let ce_id = original.headers.get(messages::cloudevents::ID).expect("ce-id").as_str().to_owned();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(messages::dlq::CONSUMER, "save-prospect");
    headers.insert(messages::dlq::SUBJECT, genuine_subject.as_str());
    headers.insert(messages::dlq::STREAM_SEQ, original.sequence.to_string().as_str());
    headers.insert(messages::cloudevents::ID, ce_id.as_str());
    let letter = messages::dlq::subject("save-prospect", &genuine_subject);
    let stored = quick_jetstream(&saver).publish_with_headers(letter, headers, original.payload.clone()).await;
    stored.expect("sent").await.expect("a handler may write letters under its own name");

    // A compromised handler may write letters under its own name: forged
    // ones (an erasure of someone else; a JetStream API subject) are refused
    // by the operator's replay, and nothing of theirs is published.
    let (crm, _) = deployment.client_as("crm-webhook").await;
    let crm = quick_jetstream(&crm);
    let victim = messages::streams::event_subject(id, "deleted");
    for (subject, sequence) in [(victim.as_str(), "2"), ("$JS.API.STREAM.DELETE.PROSPECTS", "1")] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(messages::dlq::CONSUMER, "crm-webhook");
        headers.insert(messages::dlq::SUBJECT, subject);
        headers.insert(messages::dlq::STREAM_SEQ, sequence);
        headers.insert(messages::cloudevents::ID, uuid::Uuid::now_v7().to_string().as_str());
        let letter = messages::dlq::subject("crm-webhook", &victim);
        let stored = crm.publish_with_headers(letter, headers, "{}".into()).await.expect("sent").await;
        stored.expect("a handler may write letters under its own name");
    }
    let mut events = events;
    // Sequences, not counts: erasures have purged messages meanwhile.
    let before = events.info().await.expect("info").state.last_sequence;
    let output = tokio::process::Command::new(binary("signup").expect("signup binary"))
        .args(["dlq", "replay", "--all"])
        .env("SIGNUP_CONFIG_DIR", "")
        .envs(deployment.env("admin"))
        .output()
        .await
        .expect("signup dlq replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the command fails: {stdout}");
    assert!(stdout.matches("refused, kept").count() >= 2, "{stdout}");
    assert!(stdout.contains(&format!("replayed as stream sequence {} to {genuine_subject}", before + 1)), "{stdout}");
    let after = events.info().await.expect("info").state.last_sequence;
    assert_eq!(after, before + 1, "the genuine letter's event only: {stdout}");
    let replayed = events.get_last_raw_message_by_subject(&genuine_subject).await.expect("replayed");
    assert_eq!(replayed.headers.get(messages::cloudevents::ID).map(|v| v.as_str()), Some(ce_id.as_str()));
}

/// The value of the first sample of `name` whose labels include every one of
/// `labels` (`key="value"`), from a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let labelled = format!("{name}{{");
    page.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let matches = if labels.is_empty() {
            series == name
        } else {
            series.starts_with(&labelled) && labels.iter().all(|label| series.contains(label))
        };
        if matches { value.parse().ok() } else { None }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_sign_up_in_every_service() {
    let deployment = Deployment::start().await;
    let metrics = |port: u16| async move {
        let response = reqwest::get(Deployment::url(port, "/metrics")).await.expect("GET /metrics");
        assert_eq!(response.status(), 200);
        response.text().await.expect("body")
    };
    let signed_up = ["type=\"io.signup.prospect.signedup.v2\""];
    let before = metrics(deployment.web_port).await;
    assert_eq!(sample(&before, "signup_events_published_total", &signed_up), None, "nothing published yet");

    let email = "grace.metrics@example.com";
    let id = deployment.sign_up(email).await;
    deployment.saved(id).await;
    deployment.indexed().await;
    eventually(Duration::from_secs(20), "the confirmation mail", || async { deployment.smtp.messages_to(email).pop() })
        .await
        .expect("mailed");
    let sent = ["kind=\"confirm\"", "outcome=\"sent\""];
    assert_eq!(sample(&metrics(deployment.mailer_port).await, "signup_mails_total", &sent), Some(1.0));

    let web = metrics(deployment.web_port).await;
    let proxied = reqwest::Client::new()
        .get(Deployment::url(deployment.web_port, "/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("GET /metrics through a proxy");
    assert_eq!(proxied.status(), 404, "metrics are not served to requests that came through a proxy");
    assert_eq!(sample(&web, "signup_events_published_total", &signed_up), Some(1.0), "{web}");
    let posted = ["route=\"/signup\"", "method=\"POST\"", "status=\"303\""];
    assert_eq!(sample(&web, "http_requests_total", &posted), Some(1.0), "{web}");
    let latency = sample(&web, "http_request_duration_seconds_count", &["route=\"/signup\"", "method=\"POST\""]);
    assert_eq!(latency, Some(1.0), "one latency observation: {web}");

    for (port, consumer) in [(deployment.saver_port, "save-prospect"), (deployment.indexer_port, "analytics-indexer")] {
        let label = format!("consumer=\"{consumer}\"");
        // The handler acks right after applying; the counter follows at once,
        // but the scrape may race it.
        let page = eventually(Duration::from_secs(10), "the applied counter", || async {
            let page = metrics(port).await;
            (sample(&page, "signup_handler_events_applied_total", &[&label]) >= Some(1.0)).then_some(page)
        })
        .await
        .expect("applied counted");
        assert!(sample(&page, "signup_handler_events_received_total", &[&label]) >= Some(1.0), "{page}");
        assert!(sample(&page, "signup_handler_batch_size_count", &[&label]) >= Some(1.0), "{page}");
        assert!(sample(&page, "signup_handler_apply_seconds_count", &[&label]) >= Some(1.0), "{page}");
        // At zero from the start: the first dead letter is an increase.
        assert_eq!(sample(&page, "signup_handler_events_dead_lettered_total", &[&label]), Some(0.0), "{page}");
        assert!(sample(&page, "signup_handler_pending", &[&label]).is_some(), "the lag gauge: {page}");
    }
    // The fill of both streams, reported by save-prospect.
    let page = eventually(Duration::from_secs(30), "the stream gauges", || async {
        let page = metrics(deployment.saver_port).await;
        sample(&page, "signup_stream_bytes", &["stream=\"PROSPECTS\""]).is_some().then_some(page)
    })
    .await
    .expect("reported");
    assert_eq!(sample(&page, "signup_stream_max_bytes", &["stream=\"PROSPECTS\""]), Some(4096.0 * 1024.0 * 1024.0));
    assert!(sample(&page, "signup_stream_max_bytes", &["stream=\"PROSPECTS_DLQ\""]).is_some(), "{page}");

    // Every metric the Grafana dashboard and the alert rules ask for is one a
    // service exports: the names on the live pages.
    let ports = [deployment.web_port, deployment.saver_port, deployment.indexer_port, deployment.notifier_port];
    let mut exported = BTreeSet::new();
    for port in ports.into_iter().chain([deployment.mailer_port]) {
        let page = metrics(port).await;
        let series = page.lines().filter(|line| !line.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next());
        exported.extend(series.map(str::to_owned));
    }
    for (file, name) in queried_metrics() {
        assert!(exported.contains(&name), "{file} asks for {name}, which no service exports: {exported:?}");
    }
}

/// Each metric the Grafana dashboard's panels and the alert rules query,
/// with the file that asks for it. A Signup metric is `signup_…`, `http_…`
/// or `process_…`; Prometheus' own `up` is not one.
fn queried_metrics() -> BTreeSet<(&'static str, String)> {
    let dashboard_file = "deploy/grafana/dashboards/signup.json";
    let text = std::fs::read_to_string(repo_file(dashboard_file)).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let targets = panels.iter().flat_map(|panel| panel["targets"].as_array().into_iter().flatten());
    let mut queries: Vec<(&str, String)> =
        targets.map(|target| (dashboard_file, target["expr"].as_str().expect("a PromQL expr").to_owned())).collect();
    let rules_file = "deploy/prometheus/alerts.yml";
    let rules = std::fs::read_to_string(repo_file(rules_file)).expect("the alert rules");
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            queries.push((rules_file, expr.to_owned()));
        }
    }
    // A folded expression (`expr: >-`) continues on the lines below it.
    let folded = rules.split("expr: >-\n").skip(1).map(|rest| rest.split("\n        for:").next().unwrap_or(rest));
    queries.extend(folded.map(|expr| (rules_file, expr.to_owned())));
    assert!(queries.len() > 20, "{queries:?}");
    let mut names = BTreeSet::new();
    for (file, query) in queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if ["signup_", "http_", "process_"].iter().any(|prefix| word.starts_with(prefix)) {
                names.insert((file, word.to_owned()));
            }
        }
    }
    names
}

/// CloudEvents headers of an event of `ce_type`, as signup-web writes them.
fn event_headers(ce_type: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    let id = uuid::Uuid::now_v7().to_string();
    headers.insert(messages::cloudevents::SPECVERSION, "1.0");
    headers.insert(messages::cloudevents::ID, id.as_str());
    headers.insert(messages::cloudevents::NATS_MSG_ID, id.as_str());
    headers.insert(messages::cloudevents::SOURCE, "/signup-web");
    headers.insert(messages::cloudevents::TYPE, ce_type);
    headers.insert(messages::cloudevents::TIME, chrono::Utc::now().to_rfc3339().as_str());
    headers.insert("Content-Type", "application/json");
    headers
}

/// Waits until `consumer` has settled every event of the stream up to `seq`.
async fn settled(deployment: &Deployment, consumer: &str, seq: u64) {
    let (admin, _) = deployment.client_as("admin").await;
    let events = async_nats::jetstream::new(admin).get_stream("PROSPECTS").await.expect("stream");
    eventually(Duration::from_secs(30), &format!("{consumer} to settle #{seq}"), || async {
        let info = events.consumer_info(consumer).await.ok()?.clone();
        (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_subject_and_type_disagree_is_refused_as_forged_by_every_handler() {
    let deployment = Deployment::start().await;
    let victim = deployment.sign_up("victim.forged@example.com").await;
    deployment.saved(victim).await;
    eventually(Duration::from_secs(20), "the victim's confirmation mail", || async {
        deployment.smtp.messages_to("victim.forged@example.com").pop()
    })
    .await
    .expect("mailed");

    // save-prospect's credential may publish erasures: on an erasure's
    // subject it sends a link request for the victim, to the attacker.
    let attacker = "attacker.forged@example.com";
    let forged = serde_json::json!({"prospectId": victim, "email": attacker, "requestedAt": chrono::Utc::now()});
    let (saver, _) = deployment.client_as("save-prospect").await;
    let subject = messages::streams::event_subject(victim, "deleted");
    let stored = quick_jetstream(&saver)
        .publish_with_headers(
            subject.clone(),
            event_headers(<messages::ManageLinkRequested as messages::Event>::TYPE),
            serde_json::to_vec(&forged).expect("json").into(),
        )
        .await
        .expect("sent")
        .await
        .expect("the deployment lets save-prospect publish on an erasure's subject");
    // The web's credential, on the right subject, with an address the
    // victim does not hold.
    let (web, _) = deployment.client_as("web").await;
    let wrong_address = quick_jetstream(&web)
        .publish_with_headers(
            messages::streams::event_subject(victim, "linkrequested"),
            event_headers(<messages::ManageLinkRequested as messages::Event>::TYPE),
            serde_json::to_vec(&forged).expect("json").into(),
        )
        .await
        .expect("sent")
        .await
        .expect("stored");
    for consumer in ["mailer", "save-prospect", "analytics-indexer"] {
        settled(&deployment, consumer, wrong_address.sequence.max(stored.sequence)).await;
    }
    assert!(deployment.smtp.messages_to(attacker).is_empty(), "nothing is mailed to the attacker");

    // Each handler refused the forged event and kept it as a dead letter that says why.
    let (admin, _) = deployment.client_as("admin").await;
    let js = async_nats::jetstream::new(admin);
    let letters = js.get_stream("PROSPECTS_DLQ").await.expect("dead-letter stream");
    for handler in ["mailer", "save-prospect", "analytics-indexer"] {
        let letter = messages::dlq::subject(handler, &subject);
        let letter = eventually(Duration::from_secs(20), &format!("a dead letter on {letter}"), || async {
            letters.get_last_raw_message_by_subject(&letter).await.ok()
        })
        .await
        .expect("dead-lettered");
        let reason = letter.headers.get(messages::dlq::REASON).map(|v| v.as_str().to_owned()).unwrap_or_default();
        assert!(reason.contains("forged"), "{handler}: {reason}");
        assert!(letter.payload.is_empty(), "{handler}: a forged event's payload is not kept");
        assert!(letter.headers.get(messages::dlq::PAYLOAD_WITHHELD).is_some(), "{handler}: and the letter says so");
    }
    let page = reqwest::get(Deployment::url(deployment.mailer_port, "/metrics")).await.expect("metrics");
    let page = page.text().await.expect("body");
    assert_eq!(sample(&page, "signup_handler_events_forged_total", &["consumer=\"mailer\""]), Some(1.0), "{page}");

    // The forged "erasure" does not make the victim look erased.
    let erased = bus::erasure::is_erased(&js, "PROSPECTS", victim).await.expect("look-up");
    assert!(!erased, "a message on the erasure subject that is no erasure does not erase");
    let status = reqwest::get(Deployment::url(deployment.web_port, &format!("/api/prospects/{victim}")))
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    assert!(status.contains("\"pending\""), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prospects_service_answers_only_to_the_requesters_inbox() {
    let deployment = Deployment::start().await;
    let id = deployment.sign_up("holder.deputy@example.com").await;
    deployment.saved(id).await;
    let (admin, _) = deployment.client_as("admin").await;
    let js = async_nats::jetstream::new(admin.clone());
    let mut events = js.get_stream("PROSPECTS").await.expect("stream");
    let before = events.info().await.expect("info").state.clone();

    // The web's credential may ask the service; it names, as the reply
    // subject, an erasure's subject and the JetStream API's purge.
    let (web, _) = deployment.client_as("web").await;
    let target = uuid::Uuid::now_v7();
    let erasure_subject = messages::streams::event_subject(target, "deleted");
    let find = serde_json::json!({"email": "holder.deputy@example.com"}).to_string();
    let status = serde_json::json!({"prospectId": id}).to_string();
    for (endpoint, reply, body) in [
        ("prospects.find", erasure_subject.as_str(), find.as_str()),
        ("prospects.status", "$JS.API.STREAM.PURGE.PROSPECTS", status.as_str()),
        ("prospects.get", erasure_subject.as_str(), status.as_str()),
    ] {
        web.publish_with_reply(endpoint, reply.to_owned(), body.to_owned().into()).await.expect("sent");
    }
    // The client library answers $SRV.* itself, whatever the reply
    // subject: only the service user's rights stop those answers.
    admin.publish_with_reply("$SRV.PING", erasure_subject.clone(), "".into()).await.expect("sent");
    admin
        .publish_with_reply("$SRV.INFO.prospects", "$JS.API.STREAM.PURGE.PROSPECTS".to_owned(), "".into())
        .await
        .expect("sent");
    admin.flush().await.expect("flushed");
    web.flush().await.expect("flushed");
    // The service's user may publish into inboxes and nowhere else.
    let (service, mut errors) = deployment.client_as("prospects").await;
    for subject in [erasure_subject.as_str(), "$JS.API.STREAM.PURGE.PROSPECTS", "dlq.prospect.save-prospect.x"] {
        service.publish(subject.to_owned(), "{}".into()).await.expect("sent");
        violation(&mut errors, subject).await;
    }
    // A genuine request still gets its answer, in the requester's inbox.
    let answered: messages::service::StatusReply =
        bus::request::request(&web, "prospects.status", &serde_json::json!({"prospectId": id}), Duration::from_secs(5))
            .await
            .expect("answered");
    assert_eq!(answered.status, messages::service::Status::Pending);
    // Every request above has been served by now (the service's own count).
    let stats: serde_json::Value = eventually(Duration::from_secs(10), "the service's statistics", || async {
        let reply = admin.request("$SRV.STATS.prospects", "".into()).await.ok()?;
        let stats: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
        let served: u64 = stats["endpoints"].as_array()?.iter().filter_map(|e| e["num_requests"].as_u64()).sum();
        (served >= 4).then_some(stats)
    })
    .await
    .expect("counted");
    let after = events.info().await.expect("info").state.clone();
    assert_eq!(after.messages, before.messages, "nothing stored, nothing purged: {stats}");
    assert!(
        events.get_last_raw_message_by_subject(&erasure_subject).await.is_err(),
        "no reply landed on an erasure's subject"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_can_widen_its_rights_or_starve_the_event_stream() {
    let deployment = Deployment::start().await;
    let (admin, _) = deployment.client_as("admin").await;
    let admin_js = quick_jetstream(&admin);
    let first = deployment.sign_up("first.rights@example.com").await;
    deployment.saved(first).await;
    let mail = eventually(Duration::from_secs(20), "the confirmation mail", || async {
        deployment.smtp.messages_to("first.rights@example.com").pop()
    })
    .await
    .expect("mailed");

    // "It wasn't me": the web, with its own user, puts the address's digest
    // on the suppression list (the mailer's bucket) and erases the sign-up.
    let web_url = Deployment::url(deployment.web_port, "");
    let mail = e2e_tests::Mail::parse(&mail, &web_url).expect("a mail");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let not_me = mail.link("/prospects/not-me/").expect("the link");
    let pressed = http.post(Deployment::url(deployment.web_port, not_me)).send().await.expect("post");
    assert_eq!(pressed.status(), 303, "pressed");
    let links = links::Links::new(&links::LinkSettings {
        secret: Some(secrecy::SecretString::from(LINKS_SECRET)),
        ..links::LinkSettings::default()
    })
    .expect("links");
    let list = admin_js.get_key_value("MAILER_SUPPRESSED").await.expect("the suppression list");
    let digest = links.suppression_key("first.rights@example.com");
    assert!(list.get(&digest).await.expect("read").is_some(), "suppressed by the web's own user");

    // The mailer's buckets are the deployment's, with a size limit; the
    // mailer may read and write their keys, not reconfigure them (adding a
    // source would copy data where erasure cannot reach) nor make new ones.
    let (mailer, mut errors) = deployment.client_as("mailer").await;
    let js = quick_jetstream(&mailer);
    for bucket in ["KV_MAILER_SENT", "KV_MAILER_RATE", "KV_MAILER_SUPPRESSED"] {
        let mut stream = admin_js.get_stream(bucket).await.expect("the bucket exists");
        let config = stream.info().await.expect("info").config.clone();
        assert!(config.max_bytes > 0, "{bucket} has a size limit: {config:?}");
        let widened = async_nats::jetstream::stream::Config {
            sources: Some(vec![async_nats::jetstream::stream::Source {
                name: "PROSPECTS_DLQ".into(),
                ..Default::default()
            }]),
            max_bytes: -1,
            ..config
        };
        assert!(js.update_stream(widened).await.is_err(), "the mailer cannot reconfigure {bucket}");
        violation(&mut errors, &format!("$JS.API.STREAM.UPDATE.{bucket}")).await;
    }
    // The suppression list it may read, never write: only the web suppresses,
    // and only an operator lifts a suppression.
    let suppressed = js.get_key_value("MAILER_SUPPRESSED").await.expect("the mailer opens the suppression list");
    assert!(suppressed.get(&digest).await.expect("the mailer reads it").is_some());
    assert!(suppressed.purge(&digest).await.is_err(), "the mailer cannot lift a suppression");
    violation(&mut errors, &format!("$KV.MAILER_SUPPRESSED.{digest}")).await;
    let copy = async_nats::jetstream::stream::Config { name: "KV_MAILER_COPY".into(), ..Default::default() };
    assert!(js.create_stream(copy).await.is_err(), "nor make a stream of its own");
    violation(&mut errors, "$JS.API.STREAM.CREATE.KV_MAILER_COPY").await;

    // Filling its bucket stops at the bucket's limit, and sign-ups are still taken.
    let rate = js.get_key_value("MAILER_RATE").await.expect("the mailer opens its bucket");
    let mut refused = false;
    for i in 0..64 {
        if rate.put(format!("filler{i}"), vec![b'x'; 64 * 1024].into()).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a write beyond the bucket's limit is refused");
    let id = deployment.sign_up("still.taken@example.com").await;
    deployment.saved(id).await;

    // Space is reserved for every stream: nothing can be created that would
    // eat into what the event stream may still grow to.
    let greedy = async_nats::jetstream::stream::Config {
        name: "GREEDY".into(),
        subjects: vec!["greedy.>".into()],
        max_bytes: 8 * 1024 * 1024 * 1024,
        ..Default::default()
    };
    let error = admin_js.create_stream(greedy).await.expect_err("no room left to reserve");
    assert!(error.to_string().contains("insufficient storage"), "{error}");

    // A handler's dead letters are capped: past its cap (2 here) the
    // indexer's letters keep their headers only; save-prospect (the default
    // cap) keeps all four in full.
    let poison: Vec<String> =
        (0..4).map(|_| messages::streams::event_subject(uuid::Uuid::now_v7(), "signedup")).collect();
    for subject in &poison {
        admin_js.publish(subject.clone(), "not json".into()).await.expect("sent").await.expect("stored");
    }
    let letters = admin_js.get_stream("PROSPECTS_DLQ").await.expect("dead letters");
    // (letters, of which in full)
    let count = |handler: &'static str| {
        let letters = letters.clone();
        let poison = poison.clone();
        async move {
            let (mut found, mut full) = (0, 0);
            for subject in &poison {
                let letter = messages::dlq::subject(handler, subject);
                if let Ok(letter) = letters.get_last_raw_message_by_subject(&letter).await {
                    found += 1;
                    full += usize::from(
                        !letter.payload.is_empty() && letter.headers.get(messages::dlq::PAYLOAD_WITHHELD).is_none(),
                    );
                }
            }
            (found, full)
        }
    };
    eventually(Duration::from_secs(30), "save-prospect's four dead letters", || async {
        (count("save-prospect").await == (4, 4)).then_some(())
    })
    .await
    .expect("dead-lettered");
    let metrics = Deployment::url(deployment.indexer_port, "/metrics");
    eventually(Duration::from_secs(30), "the indexer's letters over its cap", || async {
        let page = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        let over = sample(&page, "signup_handler_dead_letter_cap_reached_total", &["consumer=\"analytics-indexer\""]);
        (over >= Some(2.0)).then_some(())
    })
    .await
    .expect("over the cap");
    assert_eq!(count("analytics-indexer").await, (4, 2), "every failure is a letter; two in full, the cap");
}
