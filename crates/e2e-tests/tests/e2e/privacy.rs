//! Erasure that erases, end to end: after "Erase my details" no message of
//! the event or dead-letter stream, no row, no index document and no log
//! line reveals the person; a handler replaying the history sees the erasure,
//! never the data. Real NATS, Postgres, SMTP server and analytics index.

use std::time::Duration;

use bus::async_nats::HeaderMap;
use bus::async_nats::jetstream::{self, stream::Stream};
use bus::dlq::DeadLetters;
use bus::settings::StreamSettings;
use e2e_tests::{System, id_from_location, location};
use messages::{Event, ProspectDeleted, ProspectSignedUp, cloudevents as ce, dlq};
use secrecy::SecretString;
use test_support::{TestDatabase, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ANALYTICS_TOKEN: &str = "privacy-test-analytics-token";

/// Every message of a stream as text: subject, headers and payload.
async fn raw_messages(js: &jetstream::Context, name: &str) -> Vec<String> {
    let mut stream: Stream = js.get_stream(name).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        // Purged messages leave gaps.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let headers: String = message
                .headers
                .iter()
                .map(|(name, values)| format!("{}: {:?}\n", AsRef::<str>::as_ref(name), values))
                .collect();
            out.push(format!("{}\n{headers}{}", message.subject, String::from_utf8_lossy(&message.payload)));
        }
    }
    out
}

/// What a person typed, unique to a test.
struct Person {
    first: String,
    last: String,
    email: String,
    company: String,
}

impl Person {
    fn new() -> Self {
        let tag = Uuid::now_v7().simple().to_string();
        Self {
            first: format!("Erasable{}", &tag[24..]),
            last: format!("Person{}", &tag[16..24]),
            email: format!("erase.{tag}@example.com"),
            company: format!("Forget Me {}", &tag[20..]),
        }
    }

    fn form(&self) -> Vec<(&'static str, String)> {
        vec![
            ("firstName", self.first.clone()),
            ("lastName", self.last.clone()),
            ("email", self.email.clone()),
            ("companyName", self.company.clone()),
            ("country", "NL".into()),
            ("role", "EN".into()),
        ]
    }

    /// The words that must not survive an erasure.
    fn traces(&self) -> [&str; 4] {
        [&self.first, &self.last, &self.email, &self.company]
    }

    fn found_in<'a>(&self, texts: &'a [String]) -> Option<&'a String> {
        texts.iter().find(|t| self.traces().iter().any(|w| t.contains(w)))
    }
}

/// Waits until neither stream holds anything of `person`.
async fn purged(js: &jetstream::Context, person: &Person) {
    eventually(Duration::from_secs(20), "the streams to be purged", || async {
        let mut all = raw_messages(js, "PROSPECTS").await;
        all.extend(raw_messages(js, "PROSPECTS_DLQ").await);
        person.found_in(&all).is_none().then_some(())
    })
    .await
    .expect("purged");
}

async fn post(system: &System, path: &str) -> reqwest::Response {
    system.http.post(system.web_url(path)).send().await.expect("post")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_erasure_nothing_kept_anywhere_reveals_the_person() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let index = tempfile::tempdir().expect("index folder");
    let mut analytics =
        analytics_indexer::Settings { nats: e2e_tests::nats_settings(&system.nats), ..Default::default() };
    analytics.analytics.port = 0;
    analytics.analytics.index_dir = index.path().join("index");
    analytics.analytics.token = Some(SecretString::from(ANALYTICS_TOKEN));
    analytics.analytics.writer_memory_mb = 15;
    analytics.analytics.consumer.idle_wait_ms = 300;
    let client = bus::connect(&analytics.nats, analytics_indexer::CONSUMER_NAME).await.expect("connect");
    let indexer = analytics_indexer::Application::build(&analytics, client).expect("indexer");
    let search = format!("http://127.0.0.1:{}/api/analytics/search", indexer.port());
    let stop_indexer = CancellationToken::new();
    let indexer = tokio::spawn(indexer.run_until_stopped(stop_indexer.clone()));

    // A whole life: sign-up, confirmation, a change, an address change asked
    // for, a lost link, and an event no handler can read (dead letters).
    let person = Person::new();
    let id = id_from_location(&system.post_form(&person.form()).await.expect("post")).expect("id");
    let mail = system.mails_to(&person.email, 1).await.expect("mail").remove(0);
    let (confirm, manage) = (
        mail.link("/prospects/confirm/").expect("link").to_owned(),
        mail.link("/prospects/manage/").expect("link").to_owned(),
    );
    assert_eq!(post(&system, &confirm).await.status(), 303);
    let mut changed = person.form();
    changed[3].1 = format!("{} Two", person.company);
    let response = system.http.post(system.web_url(&manage)).form(&changed).send().await.expect("change");
    assert_eq!(response.status(), 303);
    changed[2].1 = format!("new.{}", person.email);
    let response = system.http.post(system.web_url(&manage)).form(&changed).send().await.expect("new address");
    assert_eq!(location(&response).expect("location"), format!("{manage}?requested=1"));
    let asked = system.http.post(system.web_url("/prospects/new-link")).form(&[("email", &person.email)]).send();
    assert_eq!(asked.await.expect("post").status(), 303);
    let js = jetstream::new(system.client.clone());
    let poison = format!(r#"{{"prospectId":"{id}","email":"{}","firstName":"{}""#, person.email, person.first);
    js.publish(messages::streams::event_subject(id, "updated"), poison.into())
        .await
        .expect("sent")
        .await
        .expect("stored");
    let letters = js.get_stream("PROSPECTS_DLQ").await.expect("dead letters");
    eventually(Duration::from_secs(20), "the dead letters", || async {
        letters.get_last_raw_message_by_subject(&format!("dlq.prospect.save-prospect.{id}.updated")).await.ok()
    })
    .await
    .expect("dead-lettered");
    let http = reqwest::Client::new();
    let hits = |q: String| {
        let (http, search) = (http.clone(), search.clone());
        async move {
            let page: serde_json::Value = http
                .get(format!("{search}?q={q}"))
                .bearer_auth(ANALYTICS_TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            page["total"].as_u64()
        }
    };
    eventually(Duration::from_secs(20), "the index to hold the person", || async {
        (hits(person.last.clone()).await == Some(1)).then_some(())
    })
    .await
    .expect("indexed");
    let mut before = raw_messages(&js, "PROSPECTS").await;
    before.extend(raw_messages(&js, "PROSPECTS_DLQ").await);
    assert!(person.found_in(&before).is_some(), "the streams hold the person before the erasure");

    // "Erase my details".
    assert_eq!(post(&system, &format!("{manage}/erase")).await.status(), 303);
    purged(&js, &person).await;
    let events = raw_messages(&js, "PROSPECTS").await;
    let erasure = messages::streams::event_subject(id, ProspectDeleted::KIND);
    assert!(events.iter().any(|m| m.starts_with(&erasure)), "the erasure itself stays, for replaying handlers");
    eventually(Duration::from_secs(20), "the row to be erased", || async {
        system.prospect(id).await.ok().flatten()?.deleted_at.map(drop)
    })
    .await
    .expect("erased");
    let row = system.prospect(id).await.expect("row").expect("tombstone");
    assert_eq!((row.email, row.first_name, row.last_name, row.company_name), (None, None, None, None));
    let mut conn = system.db.connect().await.expect("db");
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let waiting: i64 =
        save_prospect::schema::pending_changes::table.count().get_result(&mut conn).await.expect("count");
    assert_eq!(waiting, 0, "the waiting address change went too");
    for word in [person.last.clone(), person.first.clone(), person.email.clone()] {
        eventually(Duration::from_secs(20), "the index to forget", || async {
            (hits(word.clone()).await == Some(0)).then_some(())
        })
        .await
        .expect("gone from the index");
    }
    let tokens: Vec<&str> = [&confirm, &manage].iter().map(|l| l.rsplit('/').next().expect("token")).collect();
    let mut secrets = tokens.clone();
    secrets.push(ANALYTICS_TOKEN);
    e2e_tests::logs::assert_free_of(&e2e_tests::logs::captured(), &secrets, "the services' logs");
    stop_indexer.cancel();
    indexer.await.expect("join").expect("indexer stops");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_replaying_everything_sees_the_erasure_never_the_data() {
    let mut system = System::start().await.expect("system");
    let person = Person::new();
    let id = id_from_location(&system.post_form(&person.form()).await.expect("post")).expect("id");
    let kept = Person::new();
    let other = id_from_location(&system.post_form(&kept.form()).await.expect("post")).expect("id");
    system.saved(id).await.expect("saved");
    system.saved(other).await.expect("saved");
    assert_eq!(post(&system, &format!("{}/erase", e2e_tests::manage_path(id))).await.status(), 303);
    let js = jetstream::new(system.client.clone());
    purged(&js, &person).await;

    // A brand-new save-prospect, with an empty database, replays the stream.
    system.stop_saver().await.expect("stop");
    js.get_stream("PROSPECTS")
        .await
        .expect("stream")
        .delete_consumer(save_prospect::CONSUMER_NAME)
        .await
        .expect("reset");
    let fresh = TestDatabase::new();
    let mut settings = system.saver_settings();
    settings.database.url = SecretString::from(fresh.url());
    system.start_saver_with(settings).await.expect("a new instance");
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use save_prospect::schema::prospects;
    let rows: Vec<(Uuid, Option<String>, Option<chrono::DateTime<chrono::Utc>>)> =
        eventually(Duration::from_secs(30), "the replay", || async {
            let rows: Vec<(Uuid, Option<String>, Option<chrono::DateTime<chrono::Utc>>)> = prospects::table
                .select((prospects::id, prospects::email, prospects::deleted_at))
                .load(&mut fresh.connect().await.ok()?)
                .await
                .ok()?;
            (rows.len() == 2).then_some(rows)
        })
        .await
        .expect("replayed");
    let erased = rows.iter().find(|r| r.0 == id).expect("the erased prospect");
    assert_eq!((erased.1.as_deref(), erased.2.is_some()), (None, true), "only the erasure was replayed");
    assert_eq!(rows.iter().find(|r| r.0 == other).and_then(|r| r.1.clone()), Some(kept.email.clone()));
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_of_an_erased_prospect_is_never_kept_shown_or_replayed() {
    let system = System::start().await.expect("system");
    let person = Person::new();
    let id = id_from_location(&system.post_form(&person.form()).await.expect("post")).expect("id");
    system.saved(id).await.expect("saved");
    assert_eq!(post(&system, &format!("{}/erase", e2e_tests::manage_path(id))).await.status(), 303);
    let js = jetstream::new(system.client.clone());
    purged(&js, &person).await;
    let stream = js.get_stream("PROSPECTS").await.expect("stream");

    // An event of the erased prospect failing afterwards is not kept as a
    // dead letter (the handler's runner asks whether it was erased).
    let poison = "not json at all";
    let seq = js
        .publish(messages::streams::event_subject(id, ProspectSignedUp::KIND), poison.into())
        .await
        .expect("sent")
        .await
        .expect("stored")
        .sequence;
    eventually(Duration::from_secs(20), "save-prospect to settle the poison", || async {
        let info = stream.consumer_info(save_prospect::CONSUMER_NAME).await.ok()?;
        (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("settled");
    let letter_subject = dlq::subject(save_prospect::CONSUMER_NAME, &messages::streams::event_subject(id, "signedup"));
    let dead = js.get_stream("PROSPECTS_DLQ").await.expect("dead letters");
    assert!(dead.get_last_raw_message_by_subject(&letter_subject).await.is_err(), "no letter was made");

    // A letter made in the moment between (here: by hand) is withheld and
    // cannot be replayed.
    let original = format!(
        r#"{{"prospectId":"{id}","firstName":"{}","lastName":"{}","email":"{}","country":{{"code":"NL","name":"Netherlands"}},"role":{{"code":"EN","name":"Engineer"}},"signedUpAt":"2026-11-30T10:00:00Z"}}"#,
        person.first, person.last, person.email
    );
    let subject = messages::streams::event_subject(id, ProspectSignedUp::KIND);
    let mut headers = HeaderMap::new();
    headers.insert(ce::ID, Uuid::now_v7().to_string().as_str());
    headers.insert(ce::TYPE, ProspectSignedUp::TYPE);
    headers.insert(dlq::SUBJECT, subject.as_str());
    headers.insert(dlq::CONSUMER, "save-prospect");
    headers.insert(dlq::REASON, "made by the test");
    let letter = js
        .publish_with_headers(dlq::subject("save-prospect", &subject), headers, original.into())
        .await
        .expect("sent")
        .await
        .expect("stored")
        .sequence;
    let letters = DeadLetters::new(system.client.clone(), &StreamSettings::default());
    let shown = letters.get(letter).await.expect("the letter");
    assert!(shown.withheld && shown.payload.is_empty(), "its payload is withheld");
    let refused = letters.replay(letter, false).await.expect_err("not replayed");
    assert!(refused.to_string().contains("erased"), "{refused}");
    assert!(letters.get(letter).await.is_err(), "and it is gone");
    assert!(person.found_in(&raw_messages(&js, "PROSPECTS").await).is_none(), "nothing came back");
    system.stop().await.expect("stop");
}

/// How many events the stream holds on `subject`.
fn sign_up_form(first: &str, email: &str) -> Vec<(&'static str, String)> {
    vec![
        ("firstName", first.into()),
        ("lastName", "Holder".into()),
        ("email", email.into()),
        ("country", "NL".into()),
        ("role", "EN".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_sign_up_erases_every_sign_up_that_holds_its_address() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let tag = Uuid::now_v7().simple().to_string();
    let address = format!("holder.{tag}@example.com");
    let owner = id_from_location(&system.post_form(&sign_up_form("Owner", &address)).await.expect("post")).expect("id");
    let mail = system.mail_to(&address, "Please confirm your sign-up").await.expect("mail");
    assert_eq!(post(&system, mail.link("/prospects/confirm/").expect("link")).await.status(), 303);
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(owner).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    // Two more sign-ups with the address, pending: a duplicate and a
    // stranger's claim.
    let mut others = Vec::new();
    for (first, typed) in [("Again", address.to_uppercase()), ("Stranger", address.clone())] {
        let id = id_from_location(&system.post_form(&sign_up_form(first, &typed)).await.expect("post")).expect("id");
        system.saved(id).await.expect("saved");
        others.push(id);
    }

    // "Erase my details", from the owner's manage link.
    let manage = mail.link("/prospects/manage/").expect("link");
    assert_eq!(post(&system, &format!("{manage}/erase")).await.status(), 303);
    for id in others.iter().chain([&owner]) {
        eventually(Duration::from_secs(30), "every sign-up with the address to be erased", || async {
            system.prospect(*id).await.ok().flatten()?.deleted_at.map(drop)
        })
        .await
        .unwrap_or_else(|_| panic!("{id} was not erased"));
    }
    let js = jetstream::new(system.client.clone());
    for id in &others {
        let erasure = messages::streams::event_subject(*id, ProspectDeleted::KIND);
        let stream = js.get_stream("PROSPECTS").await.expect("stream");
        stream.get_last_raw_message_by_subject(&erasure).await.expect("an erasure every handler applies");
        eventually(Duration::from_secs(20), "their sign-ups to be purged", || async {
            (system.events_on(&messages::streams::event_subject(*id, ProspectSignedUp::KIND)).await == 0).then_some(())
        })
        .await
        .expect("purged");
    }
    // The lost-link page finds nobody to mail now.
    let before = system.events_on("events.prospect.*.linkrequested").await;
    let asked = system.http.post(system.web_url("/prospects/new-link")).form(&[("email", &address)]).send();
    assert_eq!(asked.await.expect("post").status(), 303);
    let probe = id_from_location(
        &system.post_form(&sign_up_form("Probe", &format!("probe.{tag}@example.com"))).await.expect("post"),
    )
    .expect("id");
    system.saved(probe).await.expect("saved");
    assert_eq!(
        system.events_on("events.prospect.*.linkrequested").await,
        before,
        "no link request for an erased address"
    );
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_typed_into_an_email_change_leaves_the_stream_once_the_change_is_done_with() {
    let mut system = System::start_without_saver().await.expect("system");
    let mut settings = system.saver_settings();
    settings.links.confirm_within_secs = 4;
    settings.save_prospect.expiry_check_secs = 1;
    system.start_saver_with(settings).await.expect("saver");
    let tag = Uuid::now_v7().simple().to_string();
    let js = jetstream::new(system.client.clone());
    let id = id_from_location(
        &system.post_form(&sign_up_form("Ada", &format!("ada.{tag}@example.com"))).await.expect("post"),
    )
    .expect("id");
    system.saved(id).await.expect("saved");
    // Confirmed, so the sign-up itself never expires.
    let confirm = links::Purpose::Confirm.path(&e2e_tests::links().confirm_token(id, chrono::Utc::now()));
    assert_eq!(post(&system, &confirm).await.status(), 303);
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    let changes = messages::streams::event_subject(id, "emailchange");
    let ask = |email: String| {
        let request = system.http.post(system.web_url(&e2e_tests::manage_path(id))).form(&sign_up_form("Ada", &email));
        async move { request.send().await.expect("post") }
    };
    let in_stream = |text: String| {
        let js = js.clone();
        async move { raw_messages(&js, "PROSPECTS").await.iter().any(|m| m.contains(&text)) }
    };

    // A typo, then the right address: the typo's request is purged.
    assert_eq!(ask(format!("typo.{tag}@example.con")).await.status(), 303);
    eventually(Duration::from_secs(20), "the first request", || async {
        (system.events_on(&changes).await == 1).then_some(())
    })
    .await
    .expect("stored");
    assert_eq!(ask(format!("right.{tag}@example.com")).await.status(), 303);
    eventually(Duration::from_secs(20), "the replaced request to be purged", || async {
        (system.events_on(&changes).await == 1 && !in_stream(format!("typo.{tag}")).await).then_some(())
    })
    .await
    .expect("the typo is gone from the stream");

    // Confirmed: the request is done (the update carries the address now).
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    let request = stream.get_last_raw_message_by_subject(&changes).await.expect("the request");
    let request_id: Uuid = request.headers.get(ce::ID).expect("ce-id").as_str().parse().expect("uuid");
    let token = e2e_tests::links().email_token(id, request_id, chrono::Utc::now());
    assert_eq!(post(&system, &links::Purpose::ConfirmEmail.path(&token)).await.status(), 303);
    eventually(Duration::from_secs(20), "the applied request to be purged", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        (row.email.as_deref() == Some(&format!("right.{tag}@example.com")) && system.events_on(&changes).await == 0)
            .then_some(())
    })
    .await
    .expect("applied, and its request purged");

    // Never confirmed: once its link expires, the request goes too.
    assert_eq!(ask(format!("late.{tag}@example.com")).await.status(), 303);
    eventually(Duration::from_secs(20), "the late request", || async {
        (system.events_on(&changes).await == 1).then_some(())
    })
    .await
    .expect("stored");
    eventually(Duration::from_secs(30), "the expired request to be purged", || async {
        (system.events_on(&changes).await == 0).then_some(())
    })
    .await
    .expect("purged when it expired");
    assert!(!in_stream(format!("late.{tag}")).await, "no trace of the unconfirmed address");
    system.stop().await.expect("stop");
}
