//! The mailer against a real nats-server and a real SMTP server (aiosmtpd,
//! plain, STARTTLS or implicit TLS): mails arrive once, carry working links,
//! respect the per-address limit, and SMTP failures follow the runner's
//! policy. Events are published the way signup-web publishes them.

use std::time::Duration;

use bus::async_nats::jetstream;
use bus::async_nats::{self, HeaderMap};
use bus::settings::{NatsSettings, StreamSettings};
use bus::{Delivery, EventContext, EventMeta, Handler, HandlerError, Publisher};
use chrono::Utc;
use futures::StreamExt as _;
use links::{Links, Purpose};
use mailer::{Mailer, Settings};
use messages::{Event, ManageLinkRequested, ProspectEvent, cloudevents as ce, dlq};
use runtime::{Context, Service as _};
use secrecy::SecretString;
use smtp::SmtpTls as Tls;
use test_support::{NatsServer, SmtpServer, SmtpTls, TestDatabase, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "mailer-test-secret-of-enough-length";

struct Bed {
    _nats: NatsServer,
    smtp: SmtpServer,
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Settings,
    /// The prospects service the mailer asks who holds an address: the real
    /// one, on a database of this test's own.
    _db: TestDatabase,
    pool: save_prospect::db::Pool,
    prospects: Option<bus::async_nats::service::Service>,
    /// The prospect holding each address this test used.
    holders: std::sync::Mutex<std::collections::HashMap<String, Uuid>>,
}

impl Bed {
    async fn start(tls: SmtpTls) -> Self {
        Self::with_smtp(SmtpServer::start_tls(tls).await.expect("smtp server"), tls).await
    }

    /// A bed whose mail goes to `smtp`, a server speaking `tls`.
    async fn with_smtp(smtp: SmtpServer, tls: SmtpTls) -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let mut settings =
            Settings { nats: NatsSettings { url: nats.url(), ..NatsSettings::default() }, ..Settings::default() };
        settings.links.secret = Some(SecretString::from(SECRET));
        settings.links.base_url = "https://signup.example".into();
        settings.mailer.smtp.port = smtp.port();
        settings.mailer.smtp.tls = match tls {
            SmtpTls::Plain => Tls::None,
            SmtpTls::StartTls => Tls::Starttls,
            SmtpTls::Implicit => Tls::Tls,
        };
        settings.mailer.consumer.idle_wait_ms = 300;
        settings.mailer.consumer.retry_base_ms = 100;
        settings.mailer.consumer.from_start = true;
        settings.mailer.http.port = Some(0);
        let client = bus::connect(&settings.nats, mailer::CONSUMER_NAME).await.expect("connect");
        let js = jetstream::new(client.clone());
        bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
        bus::stream::ensure_dlq_stream(&js, &StreamSettings::default()).await.expect("dead-letter stream");
        let db = TestDatabase::new();
        let connector = save_prospect::db::Connector::plain();
        save_prospect::db::create_database_if_missing(&db.url(), &connector).await.expect("database");
        let pool = save_prospect::db::pool(&db.url(), 2, &connector).expect("pool");
        save_prospect::db::migrate(&pool).await.expect("migrations");
        let prospects =
            save_prospect::prospects_service::start(&client, pool.clone(), reader(&client)).await.expect("service");
        client.flush().await.expect("flushed");
        Self {
            _nats: nats,
            smtp,
            client,
            js,
            settings,
            _db: db,
            pool,
            prospects: Some(prospects),
            holders: Default::default(),
        }
    }

    /// The prospect that holds `email` (case-insensitively), saved as
    /// save-prospect saves a sign-up the first time it is asked for.
    async fn holder(&self, email: &str) -> Uuid {
        use diesel_async::RunQueryDsl as _;
        let key = email.to_lowercase();
        if let Some(id) = self.holders.lock().expect("holders").get(&key) {
            return *id;
        }
        let id = Uuid::now_v7();
        let mut conn = self.pool.get().await.expect("connection");
        diesel::sql_query(
            "INSERT INTO prospects (id, email, first_name, last_name, country_code, role_code, signed_up_at, \
             updated_at, last_event_seq) VALUES ($1, $2, 'Ada', 'Lovelace', 'GB', 'EN', now(), now(), 0)",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Text, _>(email)
        .execute(&mut conn)
        .await
        .expect("a prospect holding the address");
        self.holders.lock().expect("holders").insert(key, id);
        id
    }

    /// A prospect holding `email` whose owner confirmed it.
    async fn confirmed_holder(&self, email: &str) -> Uuid {
        use diesel_async::RunQueryDsl as _;
        let id = self.holder(email).await;
        let mut conn = self.pool.get().await.expect("connection");
        diesel::sql_query("UPDATE prospects SET confirmed_at = now() WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(id)
            .execute(&mut conn)
            .await
            .expect("confirmed");
        id
    }

    /// Runs the mailer until the returned token is cancelled.
    fn run(&self) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        Mailer::new(&self.settings, self.client.clone()).expect("mailer");
        let shutdown = CancellationToken::new();
        let context = Context::new(mailer::CONSUMER_NAME, self.client.clone(), shutdown.clone());
        (shutdown, tokio::spawn(Mailer::run(self.settings.clone(), context)))
    }

    /// Publishes a request for a new manage link to `email`, as the lost-link
    /// page does; returns the stream sequence.
    async fn request_link(&self, email: &str) -> (ManageLinkRequested, u64) {
        let (event, published) = self.request_link_as(email, false).await;
        (event, published.stream_sequence)
    }

    /// Publishes a request for a new manage link to `email`, from its owner
    /// (the manage page) or not.
    async fn request_link_as(&self, email: &str, by_owner: bool) -> (ManageLinkRequested, bus::Published) {
        let prospect_id = self.holder(email).await;
        let event = ManageLinkRequested { prospect_id, email: email.into(), requested_at: Utc::now(), by_owner };
        (event.clone(), self.publish(&event).await)
    }

    async fn publish<E: messages::Event>(&self, event: &E) -> bus::Published {
        let publisher = Publisher::new(self.client.clone(), "/test", Duration::from_secs(2));
        publisher.publish(event, &EventContext::new()).await.expect("published")
    }

    /// Whether the mail of event `event_id` is recorded as done (sent, or
    /// deliberately not).
    async fn recorded(&self, event_id: Uuid) -> Option<String> {
        let sent = self.js.get_key_value(mailer::records::SENT_BUCKET).await.expect("bucket");
        let value = sent.get(format!("{event_id}.mail")).await.expect("read")?;
        Some(String::from_utf8_lossy(&value).into_owned())
    }

    /// Waits until the mailer's consumer has settled everything up to `seq`.
    async fn settled(&self, seq: u64) {
        let stream = self.js.get_stream("PROSPECTS").await.expect("stream");
        eventually(Duration::from_secs(30), "the mailer to settle the events", || async {
            let info = stream.consumer_info(mailer::CONSUMER_NAME).await.ok()?;
            (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(())
        })
        .await
        .expect("settled");
    }

    async fn mails_to(&self, address: &str, count: usize) -> Vec<String> {
        eventually(Duration::from_secs(20), "the mail", || async {
            let mails = self.smtp.messages_to(address);
            (mails.len() >= count).then_some(mails)
        })
        .await
        .expect("mail")
    }
}

/// The text part of a raw mail.
fn text_of(raw: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).expect("a mail");
    let text = mail.subparts.iter().find(|p| p.ctype.mimetype == "text/plain").expect("a text part");
    assert!(mail.subparts.iter().any(|p| p.ctype.mimetype == "text/html"), "an HTML part too");
    text.get_body().expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_request_is_mailed_once_even_when_replayed_or_redelivered() {
    let bed = Bed::start(SmtpTls::Plain).await;
    let (shutdown, task) = bed.run();
    let (event, seq) = bed.request_link("ada@example.com").await;
    let mails = bed.mails_to("ada@example.com", 1).await;
    let text = text_of(&mails[0]);
    assert!(mails[0].contains("Subject: Your link to change or erase your details"), "{}", mails[0]);
    let url = text.split_whitespace().find(|w| w.starts_with("https://signup.example/")).expect("a link");
    let token = url.strip_prefix("https://signup.example/prospects/manage/").expect("a manage link");
    let links = Links::new(&bed.settings.links).expect("links");
    assert_eq!(links.verify(Purpose::Manage, token, Utc::now()).map(|c| c.prospect_id), Some(event.prospect_id));
    bed.settled(seq).await;

    // A dead-letter replay publishes the same event (same ce-id) again.
    let stored = bed.js.get_stream("PROSPECTS").await.expect("stream").get_raw_message(seq).await.expect("stored");
    let mut headers: HeaderMap = stored.headers.clone();
    headers.insert(ce::NATS_MSG_ID, format!("replay:{seq}").as_str());
    headers.insert(dlq::REPLAY_OF_SEQ, seq.to_string().as_str());
    let ack = bed.js.publish_with_headers(stored.subject.clone(), headers, stored.payload.clone()).await;
    let replayed = ack.expect("publish").await.expect("stored").sequence;
    bed.settled(replayed).await;
    assert_eq!(bed.smtp.messages().len(), 1, "the replay sent nothing");

    // Every event delivered again (a new consumer starting at the beginning).
    bed.js.get_stream("PROSPECTS").await.expect("stream").delete_consumer(mailer::CONSUMER_NAME).await.expect("reset");
    let (_, last) = bed.request_link("grace@example.com").await;
    bed.mails_to("grace@example.com", 1).await;
    bed.settled(last).await;
    assert_eq!(bed.smtp.messages_to("ada@example.com").len(), 1, "the redelivery sent nothing");

    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

fn delivery(event: ManageLinkRequested) -> Delivery<ProspectEvent> {
    Delivery {
        meta: EventMeta {
            event_id: Uuid::now_v7(),
            ce_type: ManageLinkRequested::TYPE.into(),
            source: "/test".into(),
            time: None,
            traceparent: None,
            stream_sequence: 1,
            delivered: 1,
        },
        event: ProspectEvent::ManageLinkRequested(event),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_implicit_tls_check_the_servers_certificate() {
    for tls in [SmtpTls::StartTls, SmtpTls::Implicit] {
        let mut bed = Bed::start(tls).await;
        bed.settings.mailer.smtp.host = "localhost".into();
        let event = ManageLinkRequested {
            prospect_id: bed.holder("ada@example.com").await,
            email: "ada@example.com".into(),
            requested_at: Utc::now(),
            by_owner: false,
        };

        // Its certificate is signed by nobody the system trusts.
        let untrusted = Mailer::new(&bed.settings, bed.client.clone()).expect("mailer");
        let error = untrusted.handle(&[delivery(event.clone())]).await.expect_err("refused");
        assert!(matches!(error, HandlerError::Unavailable(_)), "{tls:?}: held, not dead-lettered: {error}");
        assert!(bed.smtp.messages().is_empty(), "{tls:?}: nothing sent without a trusted certificate");

        bed.settings.mailer.smtp.ca_file = Some(bed.smtp.certificate());
        let trusting = Mailer::new(&bed.settings, bed.client.clone()).expect("mailer");
        trusting.handle(&[delivery(event)]).await.expect("sent over TLS");
        assert_eq!(bed.smtp.messages_to("ada@example.com").len(), 1, "{tls:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_is_dead_lettered_and_a_busy_one_retried() {
    let bed = Bed::start(SmtpTls::Plain).await;
    let (shutdown, task) = bed.run();
    let (refused, refused_seq) = bed.request_link("refused@example.com").await;
    let (_, busy_seq) = bed.request_link("later-2@example.com").await;

    let mail = bed.mails_to("later-2@example.com", 1).await;
    assert_eq!(mail.len(), 1, "retried until the server took it, once");
    let dlq = bed.js.get_stream("PROSPECTS_DLQ").await.expect("dead-letter stream");
    let dead_letter = eventually(Duration::from_secs(30), "the dead letter", || async {
        dlq.get_last_raw_message_by_subject(&dlq::subject(mailer::CONSUMER_NAME, &refused.subject())).await.ok()
    })
    .await
    .expect("the dead letter");
    let reason = dead_letter.headers.get(dlq::REASON).map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(reason.contains("permanent") && reason.contains("550") && reason.contains("5.1.1"), "{reason}");
    // The server's answer quotes the address; the dead letter outlives an
    // erasure, so it must not.
    assert!(!reason.to_lowercase().contains("refused@example.com"), "the address is kept out: {reason}");
    assert_eq!(dead_letter.headers.get(dlq::STREAM_SEQ).map(|v| v.as_str().to_owned()), Some(refused_seq.to_string()));
    bed.settled(busy_seq).await;
    assert!(bed.smtp.messages_to("refused@example.com").is_empty());

    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gets_its_share_of_mails_and_the_rest_waits_but_never_the_owners() {
    let mut bed = Bed::start(SmtpTls::Plain).await;
    bed.settings.mailer.per_address_limit = 2;
    let (shutdown, task) = bed.run();
    // Someone who knows the address asks for its link three times.
    for _ in 0..2 {
        bed.request_link("Flooded@Example.com").await;
    }
    let (_, waiting) = bed.request_link_as("flooded@example.com", false).await;
    bed.request_link("someone.else@example.com").await;
    bed.mails_to("someone.else@example.com", 1).await;
    bed.mails_to("flooded@example.com", 2).await;

    // The owner acts on the manage page: a new link that ends the old ones,
    // and a change of address. Both go at once, whatever the stranger used up.
    let (_, owners) = bed.request_link_as("flooded@example.com", true).await;
    let prospect_id = bed.holder("flooded@example.com").await;
    let details = messages::ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "moved.on@example.com".into(),
        company_name: None,
        country: messages::Country { code: "GB".into(), name: "United Kingdom".into() },
        role: messages::Role { code: "EN".into(), name: "Engineer".into() },
    };
    let change = messages::ProspectEmailChangeRequested {
        prospect_id,
        details,
        previous_email: "flooded@example.com".into(),
        requested_at: Utc::now(),
    };
    let changed = bed.publish(&change).await;
    let mails = bed.mails_to("flooded@example.com", 4).await;
    let subjects: Vec<String> =
        mails.iter().filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")).map(str::to_owned)).collect();
    assert!(subjects.iter().any(|s| s == "Your sign-up's address is being changed"), "{subjects:?}");
    bed.mails_to("moved.on@example.com", 1).await;
    eventually(Duration::from_secs(20), "the owner's mails recorded", || async {
        (bed.recorded(owners.event_id).await.as_deref() == Some("sent")).then_some(())
    })
    .await
    .expect("recorded");

    // The stranger's third request waits for room, unsent and not given up.
    assert_eq!(bed.smtp.messages_to("flooded@example.com").len(), 4, "two of three, and the owner's two");
    assert_eq!(bed.recorded(waiting.event_id).await, None, "not recorded as sent, nor as skipped");
    let stream = bed.js.get_stream("PROSPECTS").await.expect("stream");
    let info = stream.consumer_info(mailer::CONSUMER_NAME).await.expect("consumer");
    assert!(info.ack_floor.stream_sequence < waiting.stream_sequence, "kept for later: {info:?}");
    assert!(info.delivered.stream_sequence >= changed.stream_sequence, "the events after it went on");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_that_waited_goes_once_there_is_room_and_a_replaced_one_not_at_all() {
    let mut bed = Bed::start(SmtpTls::Plain).await;
    // One an address per 4 s: long enough that the two requests below find
    // the first mail's window still open, short enough to wait for.
    bed.settings.mailer.per_address_limit = 1;
    bed.settings.mailer.per_address_window_secs = 4;
    let (shutdown, task) = bed.run();
    bed.request_link("waits@example.com").await;
    bed.mails_to("waits@example.com", 1).await;
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");

    // Two more while the mailer is away: both must wait, and the newer one
    // replaces the older.
    let (_, replaced) = bed.request_link_as("waits@example.com", false).await;
    let (newest, last) = bed.request_link_as("waits@example.com", false).await;
    let (shutdown, task) = bed.run();
    let mails = bed.mails_to("waits@example.com", 2).await;
    bed.settled(last.stream_sequence).await;
    assert_eq!(bed.smtp.messages_to("waits@example.com").len(), 2, "the replaced request sent nothing");
    assert_eq!(bed.recorded(replaced.event_id).await.as_deref(), Some("replaced"));
    assert_eq!(bed.recorded(last.event_id).await.as_deref(), Some("sent"));
    let text = text_of(&mails[1]);
    let url = text.split_whitespace().find(|w| w.starts_with("https://signup.example/")).expect("a link");
    let token = url.strip_prefix("https://signup.example/prospects/manage/").expect("a manage link");
    let links = Links::new(&bed.settings.links).expect("links");
    let claims = links.verify(Purpose::Manage, token, Utc::now()).expect("genuine");
    assert_eq!(claims.issued_at.timestamp_millis(), newest.requested_at.timestamp_millis(), "the newest one's link");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

fn ada(email: &str) -> messages::ProspectDetails {
    messages::ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: email.into(),
        company_name: None,
        country: messages::Country { code: "GB".into(), name: "United Kingdom".into() },
        role: messages::Role { code: "EN".into(), name: "Engineer".into() },
    }
}

/// A sign-up of Ada's at `email`, now, with no consent recorded.
fn signed_up(email: &str) -> messages::ProspectSignedUp {
    messages::ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: ada(email),
        signed_up_at: Utc::now(),
        consent: messages::Consent::NotRecorded,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_mail_carries_what_receivers_require() {
    let mut bed = Bed::start(SmtpTls::Plain).await;
    bed.settings.mailer.from = "Signup <signup@signup.example>".into();
    let (shutdown, task) = bed.run();
    // A new address; an address another prospect holds; a change of
    // address (two mails); a lost link.
    bed.publish(&signed_up("new.kind@example.com")).await;
    let holder = bed.holder("held.kind@example.com").await;
    bed.publish(&signed_up("held.kind@example.com")).await;
    bed.publish(&messages::ProspectEmailChangeRequested {
        prospect_id: holder,
        details: ada("moved.kind@example.com"),
        previous_email: "held.kind@example.com".into(),
        requested_at: Utc::now(),
    })
    .await;
    bed.request_link("link.kind@example.com").await;
    let mut mails = bed.mails_to("new.kind@example.com", 1).await;
    mails.extend(bed.mails_to("held.kind@example.com", 2).await);
    mails.extend(bed.mails_to("moved.kind@example.com", 1).await);
    mails.extend(bed.mails_to("link.kind@example.com", 1).await);
    let subjects: std::collections::BTreeSet<String> =
        mails.iter().filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")).map(str::to_owned)).collect();
    assert_eq!(subjects.len(), 5, "the five kinds: {subjects:?}");
    test_support::mail::assert_all_acceptable(&mails, "signup.example");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_dkim_signed_when_a_key_is_configured() {
    // A key pair, as an operator makes one.
    let keys = tempfile::tempdir().expect("a folder");
    let key = keys.path().join("dkim.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl genrsa: {}", String::from_utf8_lossy(&made.stderr));
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(public.status.success());
    use base64::Engine as _;
    let public = base64::engine::general_purpose::STANDARD.encode(public.stdout);

    let mut bed = Bed::start(SmtpTls::Plain).await;
    bed.settings.mailer.from = "Signup <signup@signup.example>".into();
    bed.settings.mailer.smtp.dkim = Some(smtp::DkimSettings {
        selector: "s2026".into(),
        domain: None,
        private_key_file: key,
        algorithm: smtp::DkimAlgorithm::Rsa,
    });
    let (shutdown, task) = bed.run();
    bed.request_link("signed@example.com").await;
    let mail = bed.mails_to("signed@example.com", 1).await.remove(0);
    assert!(mail.contains("DKIM-Signature:"), "{}", &mail[..mail.len().min(800)]);
    let verifies = |mail: &str, selector: &str| {
        test_support::mail::dkim_verifies(mail, selector, "signup.example", &public).expect("dkimpy")
    };
    assert!(verifies(&mail, "s2026"), "the signature verifies against the published key");
    assert!(!verifies(&mail.replacen("Subject: ", "Subject: Re: ", 1), "s2026"), "and fails for an altered mail");
    // A copy replayed with a header added that the mail never had (a
    // Reply-To to the replayer) fails too.
    let eol = if mail.contains("\r\n") { "\r\n" } else { "\n" };
    let replayed = mail.replacen("Subject: ", &format!("Reply-To: replayer@evil.example{eol}Subject: "), 1);
    assert!(replayed.contains("Reply-To: replayer@evil.example"));
    assert!(!verifies(&replayed, "s2026"), "a header added to a signed mail breaks the signature");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_address_gets_nothing_about_a_sign_up_but_its_owner_still_gets_their_own_mail() {
    let bed = Bed::start(SmtpTls::Plain).await;
    mailer::buckets(&bed.settings).ensure(&bed.js).await.expect("buckets");
    // Three addresses whose owners said "it wasn't me", as signup-web records
    // it: a digest, no address.
    let links = Links::new(&bed.settings.links).expect("links");
    let list = bed.js.get_key_value(mailer::records::SUPPRESSED_BUCKET).await.expect("the suppression list");
    for address in ["fresh.gone@example.com", "Held.Gone@example.com", "pending.gone@example.com"] {
        list.put(links.suppression_key(address), "0".into()).await.expect("suppressed");
    }
    let (shutdown, task) = bed.run();
    let holder = bed.confirmed_holder("held.gone@example.com").await;
    // A sign-up with a suppressed address nobody holds, one with the held
    // one, an address change to a suppressed address: none mails it.
    let mut quiet = Vec::new();
    for email in ["FRESH.gone@example.com", "held.gone@example.com"] {
        let event = signed_up(email);
        quiet.push(bed.publish(&event).await);
    }
    bed.publish(&messages::ProspectEmailChangeRequested {
        prospect_id: holder,
        details: ada("fresh.gone@example.com"),
        previous_email: "held.gone@example.com".into(),
        requested_at: Utc::now(),
    })
    .await;
    // The holder's own mail still goes: the notice of the change it asked
    // for, and a new manage link.
    let (_, link) = bed.request_link("held.gone@example.com").await;
    // A stranger who signed the suppressed address up again (the sign-up is
    // pending, its mail suppressed) and then asks the lost-link page for its
    // link: nobody has confirmed the address, so that mail is about a
    // sign-up too, and goes no more than the confirmation would.
    quiet.push(bed.request_link_as("pending.gone@example.com", false).await.1);
    let control = signed_up("control.gone@example.com");
    let last = bed.publish(&control).await;
    bed.settled(last.stream_sequence.max(link)).await;
    assert_eq!(bed.mails_to("control.gone@example.com", 1).await.len(), 1, "the mailer mails others");
    for address in ["fresh.gone@example.com", "pending.gone@example.com"] {
        assert!(bed.smtp.messages_to(address).is_empty(), "nothing about a sign-up to the suppressed {address}");
    }
    // Two events, so in either order: one retried (a slow answer of the
    // prospects service) goes after the other.
    let mut held: Vec<String> = bed
        .smtp
        .messages_to("held.gone@example.com")
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")).map(str::to_owned))
        .collect();
    held.sort_unstable();
    assert_eq!(
        held,
        ["Your link to change or erase your details", "Your sign-up's address is being changed"],
        "only the owner's own mail"
    );
    for published in &quiet {
        assert_eq!(bed.recorded(published.event_id).await.as_deref(), Some("suppressed"));
    }
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_budget_give_each_mail_its_own_turn() {
    let bed = Bed::start(SmtpTls::Plain).await;
    let buckets = mailer::buckets(&bed.settings);
    buckets.ensure(&bed.js).await.expect("buckets");
    // Two instances, each with a connection of its own, taking turns of one
    // budget at once: four per four seconds.
    let links = Links::new(&bed.settings.links).expect("links");
    let mut instances = Vec::new();
    for _ in 0..2 {
        let client = bus::connect(&bed.settings.nats, "budget-test").await.expect("connect");
        instances.push(std::sync::Arc::new(mailer::records::Records::new(
            jetstream::new(client),
            buckets.clone(),
            links.clone(),
        )));
    }
    let now = Utc::now().timestamp_millis();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let records = std::sync::Arc::clone(&instances[i % 2]);
        tasks.push(tokio::spawn(async move {
            records.reserve("budget.total", 4, Duration::from_secs(4), now).await.expect("a turn")
        }));
    }
    let mut turns = Vec::new();
    for task in tasks {
        turns.push(task.await.expect("join"));
    }
    turns.sort_unstable();
    // Four at once, then one a second: nobody's turn taken twice.
    let expected: Vec<i64> = (0..16).map(|k| now + 1_000 * (k - 3).max(0)).collect();
    assert_eq!(turns, expected);
}

/// A flood to one domain uses that domain's budget, not everyone's: the
/// total is taken at a mail's turn of its domain, so a sign-up at another
/// domain goes at once instead of waiting behind the flooded domain's
/// backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_at_one_domain_holds_back_no_mail_to_another() {
    let mut bed = Bed::start(SmtpTls::Plain).await;
    // Two per domain and four in all per eight seconds.
    bed.settings.mailer.budget = mailer::budget::BudgetSettings { per_domain: 2, total: 4, window_secs: 8 };
    let (shutdown, task) = bed.run();
    for i in 0..10 {
        let event = signed_up(&format!("flood{i}@flooded.example"));
        bed.publish(&event).await;
    }
    let calm = signed_up("calm@other.example");
    bed.publish(&calm).await;
    bed.mails_to("calm@other.example", 1).await;
    // Taken with every flooded mail, the total would have made it wait for
    // the eleventh turn in all (14 s), behind five of the flood.
    let flooded = (0..10).filter(|i| !bed.smtp.messages_to(&format!("flood{i}@flooded.example")).is_empty()).count();
    assert!(flooded <= 3, "the other domain's mail went after {flooded} of the flood");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

/// An address the SMTP server cannot take as it is (non-ASCII, and the
/// server offers no SMTPUTF8, as the test server does not) is that one
/// mail's problem: it is dead-lettered, and the mail of the next sign-up
/// goes, instead of every mail being held as if the server were down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_server_cannot_take_holds_back_no_other_mail() {
    let bed = Bed::start(SmtpTls::Plain).await;
    let (shutdown, task) = bed.run();
    let unusable = signed_up("josé@bücher.example");
    bed.publish(&unusable).await;
    let next = signed_up("ada@example.com");
    bed.publish(&next).await;
    assert_eq!(bed.mails_to("ada@example.com", 1).await.len(), 1, "the next sign-up's mail goes");
    let dlq = bed.js.get_stream("PROSPECTS_DLQ").await.expect("dead-letter stream");
    let dead_letter = eventually(Duration::from_secs(30), "the dead letter", || async {
        dlq.get_last_raw_message_by_subject(&dlq::subject(mailer::CONSUMER_NAME, &unusable.subject())).await.ok()
    })
    .await
    .expect("the dead letter");
    let reason = dead_letter.headers.get(dlq::REASON).map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(reason.contains("SMTPUTF8"), "{reason}");
    assert!(!reason.contains("bücher"), "the address is kept out: {reason}");
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
}

/// `count` sign-ups of new addresses `<prefix><i>@example.com`, published.
async fn sign_ups(bed: &Bed, prefix: &str, count: usize) -> Vec<String> {
    let mut addresses = Vec::new();
    for i in 0..count {
        let email = format!("{prefix}{i}@example.com");
        let event = signed_up(&email);
        bed.publish(&event).await;
        addresses.push(email);
    }
    addresses
}

/// The `Message-ID` of a raw mail.
fn message_id(raw: &str) -> String {
    let (headers, _) = mailparse::parse_headers(raw.as_bytes()).expect("headers");
    headers.iter().find(|h| h.get_key_ref().eq_ignore_ascii_case("message-id")).expect("a Message-ID").get_value()
}

/// A relay that takes its time over each mail does not set the pace of the
/// mail: the mailer keeps as many mails under way as it has connections
/// (`mailer.smtp.pool_size`), never more, and each goes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_relay_gets_as_many_mails_at_once_as_the_mailer_has_connections() {
    let smtp = SmtpServer::start_slow(Duration::from_millis(300)).await.expect("a slow smtp server");
    let bed = Bed::with_smtp(smtp, SmtpTls::Plain).await;
    // All waiting before the mailer starts: its first batch holds them all.
    let addresses = sign_ups(&bed, "slow", 12).await;
    let (shutdown, task) = bed.run();
    for address in &addresses {
        bed.mails_to(address, 1).await;
    }
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
    for address in &addresses {
        assert_eq!(bed.smtp.messages_to(address).len(), 1, "{address}: one mail");
    }
    let pool = usize::try_from(bed.settings.mailer.smtp.pool_size).expect("pool size");
    assert_eq!(bed.smtp.peak_transactions(), pool, "mails under way at once at the slow relay");
}

/// The mailer as a process, stopped (SIGTERM) and then killed (SIGKILL) in
/// the middle of a burst, with mails under way at a slow relay: nothing is
/// lost, a graceful stop sends nothing twice, and after the kill the only
/// mails sent again are those under way at that moment, each with the
/// `Message-ID` of its first copy, so that the receiver's mailbox keeps one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_stopped_or_killed_mid_burst_loses_no_mail_and_sends_none_twice() {
    // The relay keeps each mail, then takes its time to answer: a kill in
    // that moment leaves a mail delivered that the mailer never heard of.
    let smtp = SmtpServer::start_slow(Duration::from_millis(200)).await.expect("a slow smtp server");
    let bed = Bed::with_smtp(smtp, SmtpTls::Plain).await;
    let addresses = sign_ups(&bed, "burst", 60).await;
    let env = [
        ("SIGNUP_CONFIG_DIR", String::new()),
        ("SIGNUP__NATS__URL", bed.settings.nats.url.clone()),
        ("SIGNUP__LINKS__SECRET", SECRET.to_owned()),
        ("SIGNUP__LINKS__BASE_URL", "https://signup.example".to_owned()),
        ("SIGNUP__MAILER__SMTP__PORT", bed.smtp.port().to_string()),
        ("SIGNUP__MAILER__SMTP__TLS", "none".to_owned()),
        ("SIGNUP__MAILER__HTTP__PORT", "0".to_owned()),
        ("SIGNUP__MAILER__CONSUMER__FROM_START", "true".to_owned()),
        // A graceful stop finishes the batch in hand: a third of the burst.
        ("SIGNUP__MAILER__CONSUMER__BATCH_SIZE", "20".to_owned()),
        // What the killed instance held comes back this soon.
        ("SIGNUP__MAILER__CONSUMER__ACK_WAIT_SECS", "3".to_owned()),
    ];
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mailer"))
            .arg("run")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the mailer process")
    };
    let delivered = |at_least: usize| {
        let smtp = &bed.smtp;
        eventually(Duration::from_secs(60), "mails delivered", move || async move {
            (smtp.messages().len() >= at_least).then_some(())
        })
    };

    let mut mailer = start();
    delivered(5).await.expect("the first mails");
    let pid = mailer.id().expect("running").to_string();
    let stopped = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill -TERM");
    assert!(stopped.success());
    assert!(mailer.wait().await.expect("exit").success(), "a graceful stop");
    let before_kill = bed.smtp.messages();
    for address in &addresses {
        assert!(bed.smtp.messages_to(address).len() <= 1, "{address}: mailed twice by a graceful stop");
    }

    let mut mailer = start();
    delivered(before_kill.len() + 6).await.expect("more mails");
    mailer.kill().await.expect("SIGKILL");

    let mut mailer = start();
    for address in &addresses {
        bed.mails_to(address, 1).await;
    }
    let stream = bed.js.get_stream("PROSPECTS").await.expect("stream");
    let last = stream.cached_info().state.last_sequence;
    bed.settled(last).await;
    mailer.kill().await.expect("stopped");

    let pool = usize::try_from(bed.settings.mailer.smtp.pool_size).expect("pool size");
    let mut again = 0;
    for address in &addresses {
        let mails = bed.smtp.messages_to(address);
        let ids: std::collections::BTreeSet<String> = mails.iter().map(|m| message_id(m)).collect();
        assert_eq!(ids.len(), 1, "{address}: {} mails, all one message for its mailbox", mails.len());
        again += mails.len() - 1;
    }
    assert!(again <= pool, "{again} mails sent again: only those under way at the kill");
}

/// The same event published twice (again after the stream's duplicate
/// window, so both copies are stored) and fetched in one batch: the mails
/// of a batch go out several at once, yet this one goes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_in_one_batch_mails_once() {
    let bed = Bed::start(SmtpTls::Plain).await;
    let event = signed_up("twice@example.com");
    let first = bed.publish(&event).await;
    let stream = bed.js.get_stream("PROSPECTS").await.expect("stream");
    let stored = stream.get_raw_message(first.stream_sequence).await.expect("stored");
    let mut headers: HeaderMap = stored.headers.clone();
    headers.insert(ce::NATS_MSG_ID, "published-again");
    let again = bed.js.publish_with_headers(stored.subject.clone(), headers, stored.payload.clone()).await;
    let again = again.expect("publish").await.expect("stored").sequence;
    // Both wait before the mailer starts: its first batch holds both.
    let (shutdown, task) = bed.run();
    bed.mails_to("twice@example.com", 1).await;
    bed.settled(again).await;
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
    assert_eq!(bed.smtp.messages_to("twice@example.com").len(), 1, "one mail for one event");
}

/// The mailer asks the prospects service who holds the addresses of a batch
/// once for the batch (`prospects.find-each`), not once a mail: each mail
/// still gets the mail its address's holder calls for (a sign-up with an
/// address someone holds gets the claim mail, a link request goes only to
/// the holder's address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_asks_who_holds_its_addresses_once() {
    let bed = Bed::start(SmtpTls::Plain).await;
    // All waiting before the mailer starts: its first batch holds them all.
    let addresses = sign_ups(&bed, "batched", 20).await;
    bed.confirmed_holder("held@example.com").await;
    let claim = signed_up("held@example.com");
    bed.publish(&claim).await;
    // The same address in another spelling, in the same batch: the same
    // holder's, so the claim mail too, sent to the address as it was typed.
    let shouted = signed_up("Held@Example.COM");
    bed.publish(&shouted).await;
    let (_, last) = bed.request_link("linked@example.com").await;
    let (shutdown, task) = bed.run();
    for address in &addresses {
        assert!(
            bed.mails_to(address, 1).await[0].contains("Subject: Please confirm your sign-up"),
            "{address}: the confirmation"
        );
    }
    let held = bed.mails_to("held@example.com", 2).await;
    assert_eq!(held.len(), 2, "one mail per sign-up");
    for mail in &held {
        assert!(mail.contains("Subject: Someone signed up with your address"), "{mail}");
    }
    assert!(held.iter().any(|m| m.contains("To: Held@Example.COM")), "as typed: {held:?}");
    assert!(held.iter().any(|m| m.contains("To: held@example.com")), "as typed: {held:?}");
    bed.mails_to("linked@example.com", 1).await;
    bed.settled(last).await;
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");

    // What the service counted, endpoint by endpoint.
    let inbox = bed.client.new_inbox();
    let mut replies = bed.client.subscribe(inbox.clone()).await.expect("subscribed");
    bed.client.publish_with_reply("$SRV.STATS.prospects", inbox, "".into()).await.expect("asked");
    let stats = replies.next().await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).expect("json");
    let requests = |subject: &str| {
        stats["endpoints"].as_array().expect("endpoints").iter().find(|e| e["subject"] == subject).expect(subject)
            ["num_requests"]
            .as_u64()
            .expect("num_requests")
    };
    assert_eq!(requests(messages::service::FIND), 0, "no mail asked on its own");
    let batches = requests(messages::service::FIND_EACH);
    assert!((1..=3).contains(&batches), "23 events asked about in {batches} requests");
}

/// While the prospects service does not answer, only the mails that need
/// its answer wait (a sign-up's, whose wording depends on who holds the
/// address); the rest of the batch goes (an address change's two mails,
/// which need nothing of it), and the sign-up's mail goes once the service
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_prospects_service_holds_only_the_mails_that_need_it() {
    let mut bed = Bed::start(SmtpTls::Plain).await;
    let holder = bed.holder("held.away@example.com").await;
    bed.prospects.take().expect("the service").stop().await.expect("stopped");
    // Both waiting before the mailer starts: its first batch holds both.
    let sign_up = signed_up("waits.away@example.com");
    bed.publish(&sign_up).await;
    bed.publish(&messages::ProspectEmailChangeRequested {
        prospect_id: holder,
        details: ada("moves.away@example.com"),
        previous_email: "held.away@example.com".into(),
        requested_at: Utc::now(),
    })
    .await;
    let (shutdown, task) = bed.run();
    bed.mails_to("held.away@example.com", 1).await;
    bed.mails_to("moves.away@example.com", 1).await;
    assert!(bed.smtp.messages_to("waits.away@example.com").is_empty(), "the sign-up's mail waits for the service");

    let back = save_prospect::prospects_service::start(&bed.client, bed.pool.clone(), reader(&bed.client))
        .await
        .expect("service again");
    bed.mails_to("waits.away@example.com", 1).await;
    shutdown.cancel();
    task.await.expect("join").expect("stops cleanly");
    back.stop().await.expect("stopped");
    for address in ["held.away@example.com", "moves.away@example.com", "waits.away@example.com"] {
        assert_eq!(bed.smtp.messages_to(address).len(), 1, "{address}: one mail");
    }
}

/// The prospects service's reader of the default event stream.
fn reader(client: &bus::async_nats::Client) -> save_prospect::prospects_service::StreamReader {
    save_prospect::prospects_service::StreamReader::new(client, &bus::StreamSettings::default())
}

/// The deployment's set-up step (`mailer buckets`, a job run once) waits out
/// a NATS server that takes its requests and leaves them unanswered for a
/// while — under load, or still starting — instead of failing the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn making_the_buckets_waits_out_a_server_that_answers_late() {
    let nats = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(nats.url()).await.expect("connected");
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_millis(300));
    nats.freeze().expect("the server stopped where it is");
    let step = tokio::spawn(async move { mailer::buckets(&Settings::default()).ensure(&js).await.map(|()| js) });
    // Silent for several request timeouts: the outage itself, not a wait
    // for something to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.thaw().expect("the server goes on");
    let js =
        step.await.expect("join").unwrap_or_else(|e| panic!("the buckets are made once the server answers: {e:#}"));
    for bucket in [mailer::records::SENT_BUCKET, mailer::records::RATE_BUCKET, mailer::records::SUPPRESSED_BUCKET] {
        js.get_key_value(bucket).await.unwrap_or_else(|e| panic!("{bucket} was made: {e}"));
    }
}
