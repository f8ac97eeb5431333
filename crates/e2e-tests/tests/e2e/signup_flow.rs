//! The vertical slice end to end: browser form → signup-web → JetStream →
//! save-prospect → Postgres, with real NATS and real Postgres.

use std::collections::BTreeSet;
use std::time::Duration;

use bus::async_nats::{self, jetstream};
use bus::{EventContext, Publisher};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use e2e_tests::{System, id_from_location};
use messages::{Country, Event, ProspectDetails, ProspectSignedUp, Role, cloudevents as ce};
use save_prospect::schema::applied_events;
use test_support::eventually;
use uuid::Uuid;

const GOLDEN_SIGNED_UP: &str = include_str!("../../../messages/tests/golden/prospect-signed-up.json");

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

async fn stream_messages(client: &async_nats::Client) -> u64 {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("PROSPECTS").await.expect("stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_becomes_an_event_and_exactly_that_row() {
    let system = System::start().await.expect("system");
    let response = system
        .post_form(&[
            ("firstName", "  Ada "),
            ("lastName", "Lovelace"),
            ("email", "Ada@Example.com"),
            ("companyName", "Analytical Engines"),
            ("country", "GB"),
            ("role", "EN"),
        ])
        .await
        .expect("post");
    assert_eq!(response.status(), 303);
    let id = id_from_location(&response).expect("prospect id in Location");
    assert_eq!(id.get_version_num(), 7, "prospect ids are UUIDv7");
    let thanks_url = e2e_tests::location(&response).expect("Location");
    assert_eq!(thanks_url, format!("/signup/thanks/{id}"), "the thank-you page names the sign-up, nothing more");

    // The event on the stream: CloudEvents headers and the golden JSON shape.
    let js = jetstream::new(system.client.clone());
    let stored = js.get_stream("PROSPECTS").await.expect("stream").get_raw_message(1).await.expect("message 1");
    assert_eq!(stored.subject.as_str(), messages::streams::event_subject(id, ProspectSignedUp::KIND));
    let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(ce::SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(header(ce::TYPE).as_deref(), Some(ProspectSignedUp::TYPE));
    assert_eq!(header(ce::SOURCE).as_deref(), Some("/signup-web"));
    assert_eq!(header(ce::CONTENT_TYPE).as_deref(), Some("application/json"));
    let event_id: Uuid = header(ce::ID).expect("ce-id").parse().expect("ce-id is a UUID");
    assert_eq!(header(ce::NATS_MSG_ID), Some(event_id.to_string()));
    assert!(chrono::DateTime::parse_from_rfc3339(&header(ce::TIME).expect("ce-time")).is_ok());

    let payload: serde_json::Value = serde_json::from_slice(&stored.payload).expect("JSON payload");
    let golden: serde_json::Value = serde_json::from_str(GOLDEN_SIGNED_UP).expect("golden JSON");
    assert_eq!(keys(&payload), keys(&golden), "same fields as the golden file");
    assert_eq!(keys(&payload["country"]), keys(&golden["country"]));
    assert_eq!(payload["prospectId"], id.to_string());
    assert_eq!(payload["firstName"], "Ada");
    assert_eq!(payload["email"], "Ada@Example.com");
    assert_eq!(payload["country"], serde_json::json!({"code": "GB", "name": "United Kingdom"}));
    assert_eq!(payload["role"], serde_json::json!({"code": "EN", "name": "Engineer"}));
    // Signing up agreed to the notice the form showed, at the sign-up's
    // time; the client is not recorded unless the operator asks for it.
    let notice = default_notice();
    assert_eq!(
        payload["consent"],
        serde_json::json!({"recorded": true, "noticeVersion": notice.version, "agreedAt": payload["signedUpAt"]})
    );

    // The row has exactly the submitted values.
    let row = system.saved(id).await.expect("saved");
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(row.email.as_deref(), Some("Ada@Example.com"));
    assert_eq!(row.company_name.as_deref(), Some("Analytical Engines"));
    assert_eq!(row.country_code.as_deref(), Some("GB"));
    assert_eq!(row.role_code.as_deref(), Some("EN"));
    assert_eq!(row.deleted_at, None);
    assert_eq!(system.prospect_count().await.expect("count"), 1);

    let thanks = system.http.get(system.web_url(&thanks_url)).send().await.expect("thanks");
    assert_eq!(thanks.status(), 200);
    assert!(thanks.text().await.expect("body").contains(&id.to_string()));
    system.stop().await.expect("stop");
}

fn default_notice() -> signup_web::privacy::PrivacyNotice {
    signup_web::privacy::PrivacyNotice::new(&signup_web::privacy::PrivacySettings::default(), false).expect("notice")
}

const ADA: [(&str, &str); 6] = [
    ("firstName", "Ada"),
    ("lastName", "Lovelace"),
    ("email", "ada@example.com"),
    ("companyName", ""),
    ("country", "GB"),
    ("role", "EN"),
];

/// The consent of the newest sign-up on the stream.
async fn last_consent(client: &async_nats::Client) -> serde_json::Value {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("PROSPECTS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let stored = stream.get_raw_message(last).await.expect("last message");
    let payload: serde_json::Value = serde_json::from_slice(&stored.payload).expect("JSON payload");
    payload["consent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_shows_the_privacy_notice_and_a_sign_up_on_an_older_one_is_sent_back() {
    let policy = "https://example.com/privacy";
    let system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 0;
        settings.web.privacy.policy_url = policy.into();
    })
    .await
    .expect("system");
    let notice = signup_web::privacy::PrivacyNotice::new(
        &signup_web::privacy::PrivacySettings { policy_url: policy.into(), ..Default::default() },
        false,
    )
    .expect("notice");
    let page = system.http.get(system.web_url("/signup")).send().await.expect("form").text().await.expect("body");
    assert!(page.contains(&notice.text), "the notice is on the form");
    assert!(page.contains(&format!("href=\"{policy}\"")), "with its link");
    assert!(page.contains(&format!("name=\"noticeVersion\" value=\"{}\"", notice.version)), "and its version");

    // A page loaded before the notice changed: nothing is published, the
    // form comes back with the notice in force and the answers kept.
    let before = stream_messages(&system.client).await;
    let mut stale = ADA.to_vec();
    stale.push(("noticeVersion", "sha256:0000000000000000"));
    let answer = system.post_form(&stale).await.expect("post");
    assert_eq!(answer.status(), 409);
    let page = answer.text().await.expect("body");
    assert!(page.contains("privacy notice changed") && page.contains(&notice.version), "the new notice, to read");
    assert!(page.contains("value=\"Lovelace\""), "the answers kept");
    assert_eq!(stream_messages(&system.client).await, before, "nothing published");

    let mut current = ADA.to_vec();
    current.push(("noticeVersion", notice.version.as_str()));
    assert_eq!(system.post_form(&current).await.expect("post").status(), 303);
    assert_eq!(last_consent(&system.client).await["noticeVersion"], notice.version.as_str());
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_goes_into_the_consent_only_when_the_operator_records_it() {
    let system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 0;
        settings.web.privacy.record_client = true;
    })
    .await
    .expect("system");
    // An X-Forwarded-For a client writes itself is not its address: the
    // proxy in front is not trusted here (web.trust_forwarded_for off).
    let answer = system
        .http
        .post(system.web_url("/signup"))
        .header("user-agent", "Mozilla/5.0 (consent test)")
        .header("x-forwarded-for", "203.0.113.9")
        .form(&ADA)
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 303);
    let consent = last_consent(&system.client).await;
    assert_eq!(consent["clientAddress"], "127.0.0.1");
    assert_eq!(consent["userAgent"], "Mozilla/5.0 (consent test)");
    // Recording the client is part of what is agreed to: another version.
    let recording = signup_web::privacy::PrivacySettings { record_client: true, ..Default::default() };
    let version = signup_web::privacy::PrivacyNotice::new(&recording, false).expect("notice").version;
    assert_eq!(consent["noticeVersion"], version.as_str());
    assert_ne!(version, default_notice().version);
    system.stop().await.expect("stop");
}

fn sign_up_event(email: &str) -> ProspectSignedUp {
    ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: ProspectDetails {
            first_name: "Grace".into(),
            last_name: "Hopper".into(),
            email: email.into(),
            company_name: None,
            country: Country { code: "US".into(), name: "United States".into() },
            role: Role { code: "EN".into(), name: "Engineer".into() },
        },
        signed_up_at: Utc::now(),
        consent: messages::Consent::NotRecorded,
    }
}

async fn applied_count(system: &System) -> i64 {
    let mut conn = system.db.connect().await.expect("db");
    applied_events::table.count().get_result(&mut conn).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_redeliveries_leave_one_row() {
    let mut system = System::start().await.expect("system");
    let publisher = Publisher::new(system.client.clone(), "/e2e-test", Duration::from_secs(2));

    // The same event published twice with one Nats-Msg-Id.
    let event = sign_up_event("grace@example.com");
    let context = EventContext::new();
    assert!(!publisher.publish(&event, &context).await.expect("first").duplicate);
    assert!(publisher.publish(&event, &context).await.expect("second").duplicate);
    system.saved(event.prospect_id).await.expect("saved");

    // The same ce-id arriving again as a new message (as a replay would):
    // the handler recognises the applied event.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ce::SPECVERSION, "1.0");
    headers.insert(ce::ID, context.id.to_string().as_str());
    headers.insert(ce::SOURCE, "/e2e-test");
    headers.insert(ce::TYPE, ProspectSignedUp::TYPE);
    let js = jetstream::new(system.client.clone());
    js.publish_with_headers(event.subject(), headers, serde_json::to_vec(&event).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let marker = sign_up_event("marker@example.com");
    publisher.publish(&marker, &EventContext::new()).await.expect("marker");
    system.saved(marker.prospect_id).await.expect("marker saved after the replayed event");
    assert_eq!(system.prospect_count().await.expect("count"), 2);
    assert_eq!(applied_count(&system).await, 2);

    // A true redelivery of everything already applied: recreate the durable
    // consumer from the start of the stream.
    system.stop_saver().await.expect("stop saver");
    js.get_stream("PROSPECTS")
        .await
        .expect("stream")
        .delete_consumer(save_prospect::CONSUMER_NAME)
        .await
        .expect("delete consumer");
    system.start_saver().await.expect("restart saver");
    let last = sign_up_event("last@example.com");
    publisher.publish(&last, &EventContext::new()).await.expect("last");
    system.saved(last.prospect_id).await.expect("saved after the redelivery");
    assert_eq!(system.prospect_count().await.expect("count"), 3, "redelivered events added nothing");
    assert_eq!(applied_count(&system).await, 3);
    system.stop().await.expect("stop");
}

/// Every `href` of a page that points into the site.
fn site_links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|l| l.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_with_a_taken_address_changes_nothing_and_grants_nothing() {
    let system = System::start().await.expect("system");
    let owner = system
        .post_form(&[
            ("firstName", "Ada"),
            ("lastName", "Byron"),
            ("email", "owner@example.com"),
            ("companyName", "Owner Ltd"),
            ("country", "GB"),
            ("role", "-"),
        ])
        .await
        .expect("owner");
    let owner_id = id_from_location(&owner).expect("id");
    let before = system.saved(owner_id).await.expect("owner saved");

    let intruder = system
        .post_form(&[
            ("firstName", "Mallory"),
            ("lastName", "Intruder"),
            ("email", "OWNER@example.com"),
            ("companyName", "Takeover Inc"),
            ("country", "NL"),
            ("role", "EN"),
        ])
        .await
        .expect("intruder");
    assert_eq!(intruder.status(), 303, "the form answers as for any sign-up");
    let intruder_id = id_from_location(&intruder).expect("id");
    // Wait until save-prospect has applied the intruder's event.
    eventually(Duration::from_secs(20), "the second sign-up to be applied", || async {
        let mut conn = system.db.connect().await.ok()?;
        let applied: i64 = applied_events::table
            .filter(applied_events::prospect_id.eq(intruder_id))
            .count()
            .get_result(&mut conn)
            .await
            .ok()?;
        (applied > 0).then_some(())
    })
    .await
    .expect("applied");
    assert_eq!(system.prospect(owner_id).await.expect("row"), Some(before), "the owner's row is unchanged");

    // Nothing the second visitor was given opens the owner's record.
    let thanks = e2e_tests::location(&intruder).expect("Location");
    let mut pages = vec![thanks];
    let mut seen = BTreeSet::new();
    while let Some(page) = pages.pop() {
        if !seen.insert(page.clone()) || page.starts_with("/static/") {
            continue;
        }
        let response = system.http.get(system.web_url(&page)).send().await.expect("page");
        let body = response.text().await.expect("body");
        for secret in ["owner@example.com", "OWNER@example.com", "Byron", "Owner Ltd"] {
            assert!(!body.contains(secret), "{page} shows the owner's {secret:?}");
        }
        pages.extend(
            site_links(&body).into_iter().filter(|l| l.starts_with("/signup/thanks") || l.starts_with("/prospects/")),
        );
    }
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_accepted_while_save_prospect_is_down_are_all_saved_later() {
    const SIGN_UPS: usize = 1_000;
    let mut system = System::start_without_saver().await.expect("system");
    let system_ref = &system;
    let ids: Vec<Uuid> = futures::stream::iter(0..SIGN_UPS)
        .map(|i| async move {
            let email = format!("visitor{i}@example.com");
            let response = system_ref
                .post_form(&[
                    ("firstName", "Visitor"),
                    ("lastName", &i.to_string()),
                    ("email", &email),
                    ("country", "FR"),
                    ("role", "DV"),
                ])
                .await
                .expect("post");
            assert_eq!(response.status(), 303, "sign-up {i} accepted");
            id_from_location(&response).expect("id")
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), SIGN_UPS);
    assert_eq!(stream_messages(&system.client).await, SIGN_UPS as u64);

    system.start_saver().await.expect("start saver");
    eventually(Duration::from_secs(60), "all sign-ups saved", || async {
        (system.prospect_count().await.ok()? == SIGN_UPS as i64).then_some(())
    })
    .await
    .expect("all saved");
    let mut conn = system.db.connect().await.expect("db");
    let saved: BTreeSet<Uuid> = save_prospect::schema::prospects::table
        .select(save_prospect::schema::prospects::id)
        .load(&mut conn)
        .await
        .expect("ids")
        .into_iter()
        .collect();
    assert_eq!(saved, ids.into_iter().collect(), "exactly the accepted prospects");
    system.stop().await.expect("stop");
}

use futures::StreamExt as _;
