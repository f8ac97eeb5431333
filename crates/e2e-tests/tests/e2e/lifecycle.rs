//! Request-reply and the prospect lifecycle end to end: the `prospects`
//! service, status, the manage page (update, erase), manage tokens, and the
//! web tier while save-prospect is down. Real NATS, real Postgres.

use std::collections::BTreeSet;
use std::time::Duration;

use bus::async_nats::{self, jetstream};
use bus::request::{RequestError, request};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use e2e_tests::{System, id_from_location, links, manage_path};
use futures::StreamExt;
use links::{LinkSettings, Links, Purpose};
use messages::service::{
    self as contract, AddressRef, AddressesRef, FoundEach, FoundProspect, ProspectRef, StatusReply,
};
use messages::{Country, Role};
use save_prospect::schema::countries;
use secrecy::SecretString;
use serde_json::Value;
use test_support::eventually;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(2);

fn form(email: &str, company: &str) -> Vec<(&'static str, String)> {
    vec![
        ("firstName", "Ada".into()),
        ("lastName", "Lovelace".into()),
        ("email", email.into()),
        ("companyName", company.into()),
        ("country", "GB".into()),
        ("role", "EN".into()),
    ]
}

/// Replies to a `$SRV` discovery subject from every instance, until `want`
/// distinct instances answered.
async fn discover(client: &async_nats::Client, subject: &str, want: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), "service instances to answer", || async {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.ok()?;
        client.publish_with_reply(subject.to_owned(), inbox, "".into()).await.ok()?;
        let mut seen = Vec::new();
        while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await {
            seen.push(serde_json::from_slice::<Value>(&reply.payload).ok()?);
            if seen.len() == want {
                return Some(seen);
            }
        }
        None
    })
    .await
    .expect("discovery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prospects_service_is_discoverable_and_shared_by_its_instances() {
    let mut system = System::start().await.expect("system");
    system.start_saver().await.expect("second instance");
    let client = &system.client;

    let pings = discover(client, "$SRV.PING.prospects", 2).await;
    let ids: BTreeSet<&str> = pings.iter().map(|p| p["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 2, "two instances answer PING");
    assert!(pings.iter().all(|p| p["name"] == contract::SERVICE_NAME));
    let info = discover(client, "$SRV.INFO.prospects", 1).await;
    let subjects: BTreeSet<&str> = info[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(
        subjects,
        BTreeSet::from([
            contract::REFERENCE_COUNTRIES,
            contract::REFERENCE_ROLES,
            contract::STATUS,
            contract::GET,
            contract::FIND,
            contract::FIND_EACH,
            contract::HOLDERS,
            contract::EXPORT
        ])
    );

    // The countries reply equals the table, in form order.
    let reply: Vec<Country> = request(client, contract::REFERENCE_COUNTRIES, &(), TIMEOUT).await.expect("countries");
    let mut conn = system.db.connect().await.expect("db");
    let mut table: Vec<(String, String)> =
        countries::table.select((countries::code, countries::name)).load(&mut conn).await.expect("table");
    let mut got: Vec<(String, String)> = reply.iter().map(|c| (c.code.clone(), c.name.clone())).collect();
    assert_eq!(got[0].0, "-", "Not telling first");
    got.sort();
    table.sort();
    assert_eq!(got, table);
    let roles: Vec<Role> = request(client, contract::REFERENCE_ROLES, &(), TIMEOUT).await.expect("roles");
    assert!(roles.iter().any(|r| r.code == "EN"));

    // Requests are shared by the queue group: both instances answered some.
    for _ in 0..40 {
        let _: StatusReply = request(client, contract::STATUS, &ProspectRef { prospect_id: Uuid::now_v7() }, TIMEOUT)
            .await
            .expect("status");
    }
    let stats = discover(client, "$SRV.STATS.prospects", 2).await;
    for instance in &stats {
        let status_requests: u64 = instance["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| e["subject"] == contract::STATUS)
            .map(|e| e["num_requests"].as_u64().expect("count"))
            .sum();
        assert!(status_requests > 0, "every instance answered status requests: {stats:?}");
    }

    // A bad request gets the service API's error headers, not a hang.
    let error = request::<_, StatusReply>(client, contract::STATUS, &"not a prospect ref", TIMEOUT)
        .await
        .expect_err("bad request");
    assert!(
        matches!(&error, RequestError::Service { code: 400, description } if description.contains("invalid request")),
        "{error:?}"
    );
    let error = request::<_, Value>(client, contract::GET, &ProspectRef { prospect_id: Uuid::now_v7() }, TIMEOUT)
        .await
        .expect_err("unknown prospect");
    assert!(matches!(error, RequestError::Service { code: 404, .. }), "{error:?}");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_each_of_several_addresses_answers_what_finding_each_one_does() {
    let system = System::start().await.expect("system");
    // One address signed up once, one twice (the second confirmed), one never.
    let mut ids = Vec::new();
    for email in ["once@example.com", "twice@example.com", "Twice@Example.com"] {
        let response = system.post_form(&form(email, "Acme")).await.expect("post");
        assert_eq!(response.status(), 303);
        let id = id_from_location(&response).expect("id");
        system.saved(id).await.expect("saved");
        ids.push(id);
    }
    let confirm = Purpose::Confirm.path(&links().confirm_token(ids[2], Utc::now()));
    assert_eq!(system.http.post(system.web_url(&confirm)).send().await.expect("confirm").status(), 303);
    let client = &system.client;
    let find = |email: &'static str| async move {
        match request::<_, FoundProspect>(client, contract::FIND, &AddressRef { email: email.into() }, TIMEOUT).await {
            Ok(found) => Some(found),
            Err(RequestError::Service { code: contract::NOT_FOUND, .. }) => None,
            Err(error) => panic!("find {email}: {error}"),
        }
    };
    eventually(Duration::from_secs(20), "the confirmed sign-up to hold its address", || async {
        find("twice@example.com").await.filter(|f| f.confirmed).map(|_| ())
    })
    .await
    .expect("confirmed");

    let asked =
        [" ONCE@example.com ", "never@example.com", "twice@example.com", "once@example.com", "twice@example.com"];
    let each: FoundEach = request(
        client,
        contract::FIND_EACH,
        &AddressesRef { emails: asked.iter().map(|e| (*e).into()).collect() },
        TIMEOUT,
    )
    .await
    .expect("find-each");
    let mut one_by_one = Vec::new();
    for email in asked {
        one_by_one.push(find(email).await);
    }
    assert_eq!(each.holders, one_by_one, "in the order asked, as find answers each");
    assert_eq!(each.holders[0].as_ref().map(|f| f.prospect_id), Some(ids[0]));
    assert_eq!(each.holders[1], None);
    assert!(each.holders[2].as_ref().is_some_and(|f| f.confirmed));

    // A request too large is refused, naming the field.
    let too_many = AddressesRef { emails: vec!["a@example.com".into(); contract::FIND_EACH_MAX + 1] };
    match request::<_, FoundEach>(client, contract::FIND_EACH, &too_many, TIMEOUT).await {
        Err(RequestError::Service { code: contract::BAD_REQUEST, description }) => {
            assert!(description.contains("emails"), "{description}");
        }
        other => panic!("a request of {} addresses: {other:?}", contract::FIND_EACH_MAX + 1),
    }
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_moves_from_pending_to_confirmed() {
    let mut system = System::start_without_saver().await.expect("system");
    // The service alone (no consumer yet), so the sign-up stays pending.
    let settings = system.saver_settings();
    let pool = save_prospect::prepare_database(&settings, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("database");
    let service =
        save_prospect::prospects_service::start(&system.client, pool, reader(&system.client)).await.expect("service");

    let response = system.post_form(&form("pending@example.com", "Waiting Ltd")).await.expect("post");
    assert_eq!(response.status(), 303);
    let id = id_from_location(&response).expect("id");
    let thanks_url = e2e_tests::location(&response).expect("location");
    let base = system.web_url("");
    let http = system.http.clone();
    let status = move |id: Uuid| {
        let url = format!("{base}/api/prospects/{id}");
        let http = http.clone();
        async move { http.get(url).send().await.expect("status").json::<Value>().await.expect("json") }
    };
    assert_eq!(status(id).await, serde_json::json!({"prospectId": id.to_string(), "status": "pending"}));
    assert_eq!(status(Uuid::now_v7()).await["status"], "pending", "an unknown id reads as pending");
    let page = system.http.get(system.web_url(&thanks_url)).send().await.expect("thanks").text().await.expect("body");
    assert!(page.contains("check your inbox") && page.contains("Waiting for you to confirm it"), "{page}");
    assert!(page.contains("Refresh the status"), "works without JavaScript");
    let not_a_uuid = system.http.get(system.web_url("/api/prospects/nope")).send().await.expect("404");
    assert_eq!(not_a_uuid.status(), 404);

    // Saved, but still pending: nobody has confirmed it.
    system.start_saver().await.expect("consumer");
    system.saved(id).await.expect("saved");
    assert_eq!(status(id).await["status"], "pending");

    let confirm = Purpose::Confirm.path(&links().confirm_token(id, Utc::now()));
    let confirmed = system.http.post(system.web_url(&confirm)).send().await.expect("confirm");
    assert_eq!(confirmed.status(), 303);
    eventually(Duration::from_secs(20), "the status to become confirmed", || async {
        (status(id).await["status"] == "confirmed").then_some(())
    })
    .await
    .expect("confirmed");
    let page = system.http.get(system.web_url(&thanks_url)).send().await.expect("thanks").text().await.expect("body");
    assert!(page.contains("Your sign-up is confirmed."));
    service.stop().await.expect("stop service");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_page_updates_then_erases_and_the_tombstone_survives_a_replay() {
    let mut system = System::start().await.expect("system");
    let response = system.post_form(&form("manage@example.com", "Before Ltd")).await.expect("post");
    let id = id_from_location(&response).expect("id");
    system.saved(id).await.expect("saved");
    let manage_url = system.web_url(&manage_path(id));

    let page = system.http.get(&manage_url).send().await.expect("manage");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("body");
    assert!(page.contains("value=\"Before Ltd\"") && page.contains("value=\"manage@example.com\""), "current details");

    // Same validation as sign-up.
    let bad = system.http.post(&manage_url).form(&form("not-an-email", "After Ltd")).send().await.expect("post");
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.expect("body").contains("E-mail is not a valid e-mail address"));

    let updated =
        system.http.post(&manage_url).form(&form("manage@example.com", "After Ltd")).send().await.expect("post");
    assert_eq!(updated.status(), 303);
    eventually(Duration::from_secs(20), "the update in Postgres", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        (row.company_name.as_deref() == Some("After Ltd")).then_some(())
    })
    .await
    .expect("updated");
    let page = system.http.get(&manage_url).send().await.expect("manage").text().await.expect("body");
    assert!(page.contains("value=\"After Ltd\""), "the page and Postgres agree");

    let erased = system.http.post(format!("{manage_url}/erase")).send().await.expect("erase");
    assert_eq!(erased.status(), 303);
    let row = eventually(Duration::from_secs(20), "the erasure in Postgres", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        row.deleted_at.is_some().then_some(row)
    })
    .await
    .expect("erased");
    assert_eq!((row.email, row.first_name, row.last_name, row.company_name), (None, None, None, None));
    assert_eq!(system.http.get(&manage_url).send().await.expect("manage").status(), 404, "nothing left to manage");
    let status: Value = system
        .http
        .get(system.web_url(&format!("/api/prospects/{id}")))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "deleted");

    // Replay the whole stream into a fresh consumer: the tombstone holds.
    system.stop_saver().await.expect("stop");
    let js = jetstream::new(system.client.clone());
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    stream.delete_consumer(save_prospect::CONSUMER_NAME).await.expect("delete consumer");
    system.start_saver().await.expect("restart");
    eventually(Duration::from_secs(20), "the replay to finish", || async {
        let info = stream.consumer_info(save_prospect::CONSUMER_NAME).await.ok()?;
        (info.delivered.stream_sequence >= 3 && info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("replayed");
    let row = system.prospect(id).await.expect("row").expect("tombstone");
    assert!(row.deleted_at.is_some());
    assert_eq!((row.email, row.first_name, row.company_name), (None, None, None), "no data came back");
    let token = manage_url.rsplit('/').next().expect("token").to_owned();
    e2e_tests::logs::assert_free_of(&e2e_tests::logs::captured(), &[&token], "the services' logs");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manage_tokens_are_404_and_reveal_nothing() {
    let system = System::start().await.expect("system");
    let response = system.post_form(&form("token@example.com", "Tokens Ltd")).await.expect("post");
    let id = id_from_location(&response).expect("id");
    let links = links();
    let token = links.manage_token(id, Utc::now());
    system.saved(id).await.expect("saved");
    let other =
        id_from_location(&system.post_form(&form("other@example.com", "Other Ltd")).await.expect("post")).expect("id");
    system.saved(other).await.expect("saved");

    let expired = links.manage_token(id, Utc::now() - chrono::Duration::days(31));
    let (claims, signature) = token.rsplit_once('.').expect("signed");
    let mut tampered_signature = signature.to_owned();
    let flipped = if tampered_signature.ends_with('A') { 'B' } else { 'A' };
    tampered_signature.pop();
    tampered_signature.push(flipped);
    let tampered = format!("{claims}.{tampered_signature}");
    let for_another = token.replacen(&id.to_string(), &other.to_string(), 1);
    let forged_by_someone_else =
        Links::with_secret(&LinkSettings::default(), &SecretString::from("not the secret, but long"))
            .expect("links")
            .manage_token(id, Utc::now());
    let never_signed_up = links.manage_token(Uuid::now_v7(), Utc::now());
    let a_confirmation_link = links.confirm_token(id, Utc::now());

    let answer = |token: String| {
        let url = system.web_url(&format!("/prospects/manage/{token}"));
        let http = system.http.clone();
        async move {
            let response = http.get(url).send().await.expect("get");
            (response.status().as_u16(), response.text().await.expect("body"))
        }
    };
    let (_, not_found_page) = answer(never_signed_up.clone()).await;
    for (name, bad) in [
        ("expired", expired),
        ("tampered", tampered),
        ("for another prospect", for_another),
        ("signed with another secret", forged_by_someone_else),
        ("made for confirming", a_confirmation_link),
        ("garbage", "abc".to_owned()),
    ] {
        let (status, page) = answer(bad.clone()).await;
        assert_eq!(status, 404, "{name}");
        assert_eq!(page, not_found_page, "{name}: same page as for a prospect that does not exist");
        let post =
            system.http.post(system.web_url(&format!("/prospects/manage/{bad}/erase"))).send().await.expect("erase");
        assert_eq!(post.status(), 404, "{name}: cannot erase");
        let thanks = system.http.get(system.web_url(&format!("/signup/thanks/{bad}"))).send().await.expect("thanks");
        assert_eq!(thanks.status(), 404, "{name}: no thank-you page");
    }
    assert_eq!(answer(token.clone()).await.0, 200, "the genuine token still works");
    assert!(system.prospect(id).await.expect("row").expect("row").deleted_at.is_none(), "nothing was erased");
    e2e_tests::logs::assert_free_of(&e2e_tests::logs::captured(), &[&token], "the services' logs");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_save_prospect_down_the_form_renders_and_status_is_unknown() {
    // Cold start with no service: the built-in lists.
    let system = System::start_without_saver().await.expect("system");
    let form_page = system.http.get(system.web_url("/signup")).send().await.expect("form");
    assert_eq!(form_page.status(), 200);
    assert!(form_page.text().await.expect("body").contains(">United Kingdom</option>"));
    let countries: Vec<Country> =
        system.http.get(system.web_url("/api/countries")).send().await.expect("countries").json().await.expect("json");
    assert_eq!(countries.len(), messages::reference::builtin_countries().len());
    let response = system
        .http
        .get(system.web_url(&format!("/api/prospects/{}", Uuid::now_v7())))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answers within its timeout");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "unknown");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_lists_come_from_the_service_and_survive_its_outage() {
    let mut system = System::start().await.expect("system");
    let saved = system.post_form(&form("first@example.com", "First Ltd")).await.expect("post");
    system.saved(id_from_location(&saved).expect("id")).await.expect("database ready");
    // Give the service a list the built-in one does not have, to tell them apart.
    let mut conn = system.db.connect().await.expect("db");
    diesel::insert_into(countries::table)
        .values((countries::code.eq("XK"), countries::name.eq("Kosovo")))
        .execute(&mut conn)
        .await
        .expect("insert");
    let has_kosovo = || async {
        let list: Vec<Country> =
            system.http.get(system.web_url("/api/countries")).send().await.ok()?.json().await.ok()?;
        list.iter().any(|c| c.code == "XK").then_some(())
    };
    eventually(Duration::from_secs(20), "the service's lists", has_kosovo).await.expect("from the service");

    system.stop_saver().await.expect("stop");
    let form_page = system.http.get(system.web_url("/signup")).send().await.expect("form").text().await.expect("body");
    assert!(form_page.contains(">Kosovo</option>"), "the last known lists are served");
    let response = system
        .post_form(&[
            ("firstName", "Vjosa"),
            ("lastName", "Osmani"),
            ("email", "v@example.com"),
            ("country", "XK"),
            ("role", "-"),
        ])
        .await
        .expect("post");
    assert_eq!(response.status(), 303, "codes from the cached lists are accepted");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_small_batches_keep_each_prospects_newest_state() {
    use bus::{EventContext, Publisher};
    use messages::{ProspectDetails, ProspectSignedUp, ProspectUpdated};

    let mut system = System::start_without_saver().await.expect("system");
    for _ in 0..2 {
        let mut settings = system.saver_settings();
        settings.save_prospect.consumer.batch_size = 3;
        system.start_saver_with(settings).await.expect("instance");
    }
    let publisher = Publisher::new(system.client.clone(), "/e2e-test", TIMEOUT);
    let details = |i: usize, version: usize| ProspectDetails {
        first_name: "Ada".into(),
        last_name: format!("Number {i}"),
        email: format!("ada{i}@example.com").into(),
        company_name: Some(format!("v{version}")),
        country: Country { code: "GB".into(), name: "United Kingdom".into() },
        role: Role { code: "EN".into(), name: "Engineer".into() },
    };
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        let event = ProspectSignedUp {
            prospect_id: *id,
            details: details(i, 0),
            signed_up_at: Utc::now(),
            consent: messages::Consent::NotRecorded,
        };
        publisher.publish(&event, &EventContext::new()).await.expect("sign-up");
    }
    for version in 1..=5 {
        for (i, id) in ids.iter().enumerate() {
            let event = ProspectUpdated { prospect_id: *id, details: details(i, version), updated_at: Utc::now() };
            publisher.publish(&event, &EventContext::new()).await.expect("update");
        }
    }
    for id in &ids {
        let row = eventually(Duration::from_secs(30), "the newest update", || async {
            let row = system.prospect(*id).await.ok().flatten()?;
            (row.company_name.as_deref() == Some("v5")).then_some(row)
        })
        .await
        .expect("newest state");
        assert_eq!(row.deleted_at, None);
    }
    // Once everything is acked, nothing older overwrote the newest state.
    let js = jetstream::new(system.client.clone());
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    eventually(Duration::from_secs(20), "all events acked", || async {
        let info = stream.consumer_info(save_prospect::CONSUMER_NAME).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("acked");
    for id in &ids {
        assert_eq!(system.prospect(*id).await.expect("row").expect("row").company_name.as_deref(), Some("v5"));
    }
    system.stop().await.expect("stop");
}

/// The prospects service's reader of the default event stream.
fn reader(client: &bus::async_nats::Client) -> save_prospect::prospects_service::StreamReader {
    save_prospect::prospects_service::StreamReader::new(client, &bus::StreamSettings::default())
}
