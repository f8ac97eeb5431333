//! Consent records and "Download my data", end to end: from the form
//! through the event to Postgres, the manage page and the export; the
//! export compared with what Postgres, the stream and the mailer's records
//! hold; only the manage link opens it; an erasure takes the consent record
//! with it. Real NATS, Postgres and SMTP server.

use std::collections::BTreeSet;
use std::time::Duration;

use bus::async_nats::jetstream;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use e2e_tests::{System, id_from_location};
use messages::service::ProspectExport;
use messages::{Consent, cloudevents as ce, streams};
use save_prospect::schema::prospects;
use test_support::eventually;
use uuid::Uuid;

const SIGNING_UP: &str = "Mozilla/5.0 (consent test; signing up)";
const CONFIRMING: &str = "Mozilla/5.0 (consent test; confirming)";

/// The consent columns of a row: version, time, client address, user agent,
/// and the confirming client's address and user agent.
type ConsentColumns =
    (Option<String>, Option<DateTime<Utc>>, Option<String>, Option<String>, Option<String>, Option<String>);

async fn consent_columns(system: &System, id: Uuid) -> ConsentColumns {
    let mut conn = system.db.connect().await.expect("db");
    prospects::table
        .find(id)
        .select((
            prospects::consent_notice_version,
            prospects::consent_agreed_at,
            prospects::consent_client_address,
            prospects::consent_user_agent,
            prospects::confirmed_client_address,
            prospects::confirmed_user_agent,
        ))
        .first(&mut conn)
        .await
        .expect("row")
}

/// `(kind, ce-type, ce-id)` of each event the stream holds on the prospect's
/// subjects, read here without the export's code.
async fn stream_events(system: &System, id: Uuid) -> Vec<(String, String, String)> {
    let js = jetstream::new(system.client.clone());
    let mut stream = js.get_stream("PROSPECTS").await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else { continue };
        let prefix = format!("events.prospect.{id}.");
        if let Some(kind) = message.subject.strip_prefix(prefix.as_str()) {
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            out.push((kind.to_owned(), header(ce::TYPE), header(ce::ID)));
        }
    }
    out
}

/// `(event id, slot)` of every mail the mailer's bucket records as sent.
async fn sent_records(system: &System) -> BTreeSet<(String, String)> {
    let js = jetstream::new(system.client.clone());
    let bucket = js.get_key_value(streams::SENT_BUCKET).await.expect("bucket");
    let mut keys = bucket.keys().await.expect("keys");
    let mut out = BTreeSet::new();
    use futures::StreamExt as _;
    while let Some(key) = keys.next().await {
        let key = key.expect("key");
        let value = bucket.get(&key).await.expect("get").unwrap_or_default();
        if &value[..] == b"sent" {
            let (event, slot) = key.split_once('.').expect("<event id>.<slot>");
            out.insert((event.to_owned(), slot.to_owned()));
        }
    }
    out
}

async fn export_of(system: &System, manage: &str) -> ProspectExport {
    let answer = system.http.get(system.web_url(&format!("{manage}/data.json"))).send().await.expect("get");
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-disposition"].to_str().expect("header").starts_with("attachment"),
        "a file to keep"
    );
    assert_eq!(answer.headers()["cache-control"], "no-store", "never kept by a cache");
    answer.json().await.expect("the export's JSON")
}

/// Posts the form for `address` from the client `forwarded` (the proxy's
/// `X-Forwarded-For`) with the browser `agent`; the new prospect's id.
async fn sign_up(system: &System, address: &str, company: &str, forwarded: &str, agent: &str, version: &str) -> Uuid {
    let form = [
        ("firstName", "Ada"),
        ("lastName", "Lovelace"),
        ("email", address),
        ("companyName", company),
        ("country", "GB"),
        ("role", "EN"),
        ("noticeVersion", version),
    ];
    let posted = system
        .http
        .post(system.web_url("/signup"))
        .header("user-agent", agent)
        .header("x-forwarded-for", forwarded)
        .form(&form)
        .send();
    id_from_location(&posted.await.expect("post")).expect("id")
}

/// Follows a mailed confirmation link from the client `forwarded`.
async fn follow(system: &System, link: &str, forwarded: &str, agent: &str) {
    let confirmed =
        system.http.post(system.web_url(link)).header("user-agent", agent).header("x-forwarded-for", forwarded).send();
    assert_eq!(confirmed.await.expect("confirm").status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_travels_from_the_form_to_postgres_the_manage_page_and_the_export_and_an_erasure_takes_it() {
    let mut system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 0;
        settings.web.rate_limit.lookups_per_minute = 0;
        settings.web.privacy.record_client = true;
        // Behind a proxy: the client is the last X-Forwarded-For entry, so
        // each request here can come from an address of its own.
        settings.web.trust_forwarded_for = true;
    })
    .await
    .expect("system");
    system.start_saver().await.expect("saver");
    system.start_mailer().await.expect("mailer");
    let notice = signup_web::privacy::PrivacyNotice::new(
        &signup_web::privacy::PrivacySettings { record_client: true, ..Default::default() },
        false,
    )
    .expect("notice");
    let address = format!("consent.{}@example.com", Uuid::now_v7().simple());

    // The form: the notice's version rides along; the client is recorded,
    // at sign-up and again at confirmation.
    let id = sign_up(&system, &address, "Consent Ltd", "203.0.113.7", SIGNING_UP, &notice.version).await;
    let mail = system.mail_to(&address, "Please confirm your sign-up").await.expect("confirmation mail");
    follow(&system, mail.link("/prospects/confirm/").expect("confirm link"), "198.51.100.9", CONFIRMING).await;
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");

    // Postgres: what was agreed to, when, and from where, twice.
    let (version, agreed_at, client_address, user_agent, confirmed_address, confirmed_agent) =
        consent_columns(&system, id).await;
    let row = system.saved(id).await.expect("row");
    assert_eq!(version.as_deref(), Some(notice.version.as_str()));
    assert_eq!(agreed_at, Some(row.signed_up_at), "agreed by signing up");
    assert_eq!((client_address.as_deref(), user_agent.as_deref()), (Some("203.0.113.7"), Some(SIGNING_UP)));
    assert_eq!((confirmed_address.as_deref(), confirmed_agent.as_deref()), (Some("198.51.100.9"), Some(CONFIRMING)));

    // The manage page says what was agreed and when.
    let manage = mail.link("/prospects/manage/").expect("manage link").to_owned();
    let page = system.http.get(system.web_url(&manage)).send().await.expect("get").text().await.expect("page");
    assert!(page.contains(&notice.version) && page.contains(notice.text.as_str()), "the notice agreed to");
    assert!(page.contains(&row.signed_up_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()), "when");
    assert!(page.contains("203.0.113.7") && page.contains("198.51.100.9") && page.contains(CONFIRMING), "where");
    assert!(page.contains(&format!("{manage}/data")), "the download link");

    // The owner signs up again with the address and confirms it: that
    // sign-up is merged into the record and brings its newer agreement.
    let again = sign_up(&system, &address, "Again Ltd", "192.0.2.44", SIGNING_UP, &notice.version).await;
    let claim = system.mail_to(&address, "Someone signed up with your address").await.expect("claim mail");
    follow(&system, claim.link("/prospects/confirm/").expect("confirm link"), "192.0.2.45", CONFIRMING).await;
    eventually(Duration::from_secs(20), "the second sign-up merged", || async {
        let holder = system.prospect(id).await.ok().flatten()?;
        (holder.company_name.as_deref() == Some("Again Ltd") && system.prospect(again).await.ok()?.is_none())
            .then_some(())
    })
    .await
    .expect("merged");

    // The export, against what Postgres, the stream and the mailer hold. The
    // mailer records a mail as sent just after the server took it: the
    // records are awaited first.
    let held = [stream_events(&system, id).await, stream_events(&system, again).await].concat();
    let ids: BTreeSet<String> = held.iter().map(|(_, _, id)| id.clone()).collect();
    let received = system.smtp.as_ref().expect("smtp").messages_to(&address).len();
    eventually(Duration::from_secs(20), "the mails recorded as sent", || async {
        let recorded = sent_records(&system).await.into_iter().filter(|(event, _)| ids.contains(event)).count();
        (recorded == received).then_some(())
    })
    .await
    .expect("recorded");
    let export = export_of(&system, &manage).await;
    let row = system.saved(id).await.expect("row");
    let (version, agreed_at, client_address, user_agent, _, confirmed_agent) = consent_columns(&system, id).await;
    assert_eq!(client_address.as_deref(), Some("192.0.2.44"), "the newer agreement's client");
    assert_eq!(export.prospect.prospect_id, id);
    assert_eq!(export.merged_sign_ups, [again]);
    assert_eq!(Some(export.prospect.details.email.to_string()), row.email);
    assert_eq!(export.prospect.details.company_name, row.company_name);
    assert_eq!(export.prospect.confirmed_at, row.confirmed_at);
    assert_eq!(export.prospect.pending_change, None);
    let Some(Consent::Recorded(record)) = &export.prospect.consent else { panic!("no consent in the export") };
    assert_eq!((Some(&record.notice_version), Some(record.agreed_at)), (version.as_ref(), agreed_at));
    let client = record.client.as_ref().expect("client");
    assert_eq!((&client.client_address, &client.user_agent), (&client_address, &user_agent));
    let from = export.prospect.confirmed_from.as_ref().expect("confirming client");
    assert_eq!(from.user_agent, confirmed_agent);
    let mut exported: Vec<(String, String)> =
        export.events.iter().map(|e| (e.kind.clone(), e.event_type.clone())).collect();
    let mut in_stream: Vec<(String, String)> = held.iter().map(|(kind, t, _)| (kind.clone(), t.clone())).collect();
    exported.sort();
    in_stream.sort();
    assert_eq!(exported, in_stream, "every event the stream holds about both sign-ups, and only those");
    assert_eq!(export.events.iter().filter(|e| e.kind == "signedup").count(), 2);
    assert!(export.events.iter().all(|e| e.kind != "signedup" || e.event_type == "io.signup.prospect.signedup.v2"));
    let sent: BTreeSet<(String, String)> =
        sent_records(&system).await.into_iter().filter(|(event, _)| ids.contains(event)).collect();
    let kind_of = |event: &str| held.iter().find(|(_, _, id)| id == event).map(|(kind, ..)| kind.clone());
    let expected: Vec<(String, String)> =
        sent.iter().map(|(event, slot)| (kind_of(event).expect("kind"), slot.clone())).collect();
    let mut listed: Vec<(String, String)> =
        export.mails.iter().map(|m| (m.about.clone(), m.recipient.clone())).collect();
    listed.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(listed, expected, "the mails the mailer recorded");
    assert_eq!(export.mails.len(), system.smtp.as_ref().expect("smtp").messages_to(&address).len(), "and received");
    assert_eq!(export.mails.len(), 2, "the confirmation request and the mail about the second sign-up");

    // The readable page shows the same.
    let readable = system.http.get(system.web_url(&format!("{manage}/data"))).send().await.expect("get");
    assert_eq!(readable.headers()["cache-control"], "no-store");
    let readable = readable.text().await.expect("page");
    assert!(readable.contains(&address) && readable.contains("Again Ltd") && readable.contains(&notice.version));
    assert!(readable.contains("io.signup.prospect.signedup.v2") && readable.contains("id=\"mails\""));
    let raw = system.http.get(system.web_url(&format!("{manage}/data.json"))).send().await.expect("get");
    let raw = raw.text().await.expect("JSON");
    assert!(!raw.contains("addressTaken") && !raw.contains("linksNotBefore"), "nothing the system keeps for itself");

    // The operators' copy, for a request made by post: the same document.
    let printed = system.signup(&["prospect", "export", &id.to_string()]).await.expect("signup prospect export");
    let operators: ProspectExport = serde_json::from_str(&printed).expect("JSON");
    assert_eq!((operators.prospect, operators.events), (export.prospect.clone(), export.events.clone()));

    // Only proof of the address opens it: a forged or altered link opens
    // nothing, and says nothing.
    let forged = format!("/prospects/manage/{}", "A".repeat(manage.len() - "/prospects/manage/".len()));
    let mut altered = manage.clone();
    let last = altered.pop().expect("token");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    for link in [forged, altered] {
        for path in [format!("{link}/data"), format!("{link}/data.json")] {
            let answer = system.http.get(system.web_url(&path)).send().await.expect("get");
            assert_eq!(answer.status(), 404, "{path}");
            assert!(!answer.text().await.expect("body").contains(&address));
        }
    }
    // Nor does a link that ended: the owner asks for a new one.
    let renewed = system.http.post(system.web_url(&format!("{manage}/new-link"))).send();
    assert_eq!(renewed.await.expect("new link").status(), 303);
    let fresh = system.mail_to(&address, "Your link to change or erase your details").await.expect("the new link");
    let fresh = fresh.link("/prospects/manage/").expect("manage link").to_owned();
    eventually(Duration::from_secs(20), "the old link to end", || async {
        let answer = system.http.get(system.web_url(&format!("{manage}/data.json"))).send().await.ok()?;
        (answer.status() == 404).then_some(())
    })
    .await
    .expect("ended");
    let answer = system.http.get(system.web_url(&format!("{manage}/data"))).send().await.expect("get");
    assert_eq!(answer.status(), 404);
    assert_eq!(export_of(&system, &fresh).await.prospect, export.prospect, "the new link opens it");

    // "Erase my details": the consent record goes with the rest, and the
    // export is gone.
    let erased = system.http.post(system.web_url(&format!("{fresh}/erase"))).send();
    assert_eq!(erased.await.expect("erase").status(), 303);
    eventually(Duration::from_secs(20), "the erasure", || async {
        system.prospect(id).await.ok().flatten()?.deleted_at.map(drop)
    })
    .await
    .expect("erased");
    assert_eq!(consent_columns(&system, id).await, (None, None, None, None, None, None));
    // The stream keeps the erasure only: the sign-ups and confirmations,
    // with the clients recorded in them, are purged.
    eventually(Duration::from_secs(20), "the history purged", || async {
        let kinds: Vec<String> = stream_events(&system, id).await.into_iter().map(|(kind, ..)| kind).collect();
        (kinds == ["deleted"] && stream_events(&system, again).await.is_empty()).then_some(())
    })
    .await
    .expect("only the erasure left");
    let after = system.http.get(system.web_url(&format!("{fresh}/data.json"))).send().await.expect("get");
    assert_eq!(after.status(), 404);
    system.stop().await.expect("stop");
}
