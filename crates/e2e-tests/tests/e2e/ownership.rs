//! Who a sign-up belongs to, end to end: double opt-in with signup-web,
//! save-prospect, the mailer and an SMTP server, on real NATS and Postgres.
//! The links come from the mails the SMTP server received.

use std::time::Duration;

use bus::async_nats::HeaderMap;
use bus::async_nats::jetstream;
use chrono::Utc;
use e2e_tests::{Mail, System, id_from_location, links, location};
use links::{LinkSettings, Links, Purpose};
use messages::{Event, ProspectConfirmed, ProspectDeleted, ProspectSignedUp, cloudevents as ce};
use secrecy::SecretString;
use test_support::eventually;
use uuid::Uuid;

fn form(first: &str, last: &str, email: &str, company: &str) -> Vec<(&'static str, String)> {
    vec![
        ("firstName", first.into()),
        ("lastName", last.into()),
        ("email", email.into()),
        ("companyName", company.into()),
        ("country", "GB".into()),
        ("role", "EN".into()),
    ]
}

async fn post(system: &System, path: &str) -> reqwest::Response {
    system.http.post(system.web_url(path)).send().await.expect("post")
}

async fn get(system: &System, path: &str) -> (u16, String) {
    let response = system.http.get(system.web_url(path)).send().await.expect("get");
    (response.status().as_u16(), response.text().await.expect("body"))
}

/// Signs up (a new address) and follows the link of its confirmation mail;
/// returns the prospect id and that mail.
async fn sign_up_and_confirm(system: &System, fields: &[(&'static str, String)]) -> (Uuid, Mail) {
    let email = &fields.iter().find(|(k, _)| *k == "email").expect("email").1;
    let id = id_from_location(&system.post_form(fields).await.expect("post")).expect("id");
    let mail = system.mail_to(email, "Please confirm your sign-up").await.expect("mail");
    let confirm = mail.link("/prospects/confirm/").expect("confirmation link").to_owned();
    assert_eq!(post(system, &confirm).await.status(), 303);
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    (id, mail)
}

/// The thank-you page with the prospect id taken out, to compare two.
async fn thanks_page(system: &System, response: &reqwest::Response) -> String {
    let id = id_from_location(response).expect("id");
    let (status, page) = get(system, &location(response).expect("location")).await;
    assert_eq!(status, 200);
    page.replace(&id.to_string(), "ID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_with_a_taken_address_changes_nothing_until_the_owner_confirms_it() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let (owner, first_mail) =
        sign_up_and_confirm(&system, &form("Ada", "Byron", "owner@example.com", "Owner Ltd")).await;
    assert_eq!(first_mail.subject, "Please confirm your sign-up");
    let before = system.prospect(owner).await.expect("row").expect("saved");

    let intruder =
        system.post_form(&form("Mallory", "Intruder", "OWNER@example.com", "Takeover Inc")).await.expect("intruder");
    assert_eq!(intruder.status(), 303);
    let stranger = system.post_form(&form("Grace", "Hopper", "grace@example.com", "Navy")).await.expect("stranger");
    assert_eq!(
        thanks_page(&system, &intruder).await,
        thanks_page(&system, &stranger).await,
        "the page does not tell whether the address was known"
    );
    let api = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&serde_json::json!({"firstName": "Eve", "lastName": "Api", "email": "owner@EXAMPLE.com",
            "country": "GB", "role": "EN"}))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 202, "the JSON API answers as for any sign-up");

    // The owner is told, and asked (the mails carry none of what was typed:
    // their links show it); nothing changed yet.
    let mails = system.mails_to("owner@example.com", 3).await.expect("mails");
    let claims: Vec<&Mail> = mails.iter().filter(|m| m.subject == "Someone signed up with your address").collect();
    assert_eq!(claims.len(), 2, "one mail for each sign-up with the address");
    let mut found = None;
    for claim in claims {
        assert!(!claim.text.contains("Mallory") && !claim.text.contains("Takeover"), "{}", claim.text);
        let confirm = claim.link("/prospects/confirm/").expect("link").to_owned();
        let (status, page) = get(&system, &confirm).await;
        assert_eq!(status, 200);
        assert!(page.contains("Confirm my sign-up"), "a button, so that opening the link changes nothing");
        if page.contains("Mallory") && page.contains("Takeover Inc") {
            found = Some(confirm);
        }
    }
    let confirm = found.expect("the second sign-up's link shows its details");
    assert_eq!(system.prospect(owner).await.expect("row"), Some(before), "the owner's row is unchanged");

    // Following that mail's link applies the second sign-up's details.
    assert_eq!(post(&system, &confirm).await.status(), 303);
    let row = eventually(Duration::from_secs(20), "the confirmed details", || async {
        let row = system.prospect(owner).await.ok().flatten()?;
        (row.company_name.as_deref() == Some("Takeover Inc")).then_some(row)
    })
    .await
    .expect("applied");
    assert_eq!((row.first_name.as_deref(), row.email.as_deref()), (Some("Mallory"), Some("OWNER@example.com")));
    assert!(row.confirmed_at.is_some());
    let intruder_id = id_from_location(&intruder).expect("id");
    let (_, status) = get(&system, &format!("/api/prospects/{intruder_id}")).await;
    assert!(status.contains("\"confirmed\""), "{status}");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_genuine_confirmation_link_confirms() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let response = system.post_form(&form("Ada", "Lovelace", "ada@example.com", "Engines")).await.expect("post");
    let id = id_from_location(&response).expect("id");
    let mail = system.mails_to("ada@example.com", 1).await.expect("mail").remove(0);
    let confirm = mail.link("/prospects/confirm/").expect("link").to_owned();
    let token = confirm.strip_prefix("/prospects/confirm/").expect("token");
    let other =
        id_from_location(&system.post_form(&form("Bo", "B", "bo@example.com", "")).await.expect("post")).expect("id");
    system.mails_to("bo@example.com", 1).await.expect("mail");
    system.saved(id).await.expect("saved");

    let mut altered = token.to_owned();
    let last = altered.pop().expect("non-empty");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let links = links();
    let wrong_secret =
        Links::with_secret(&LinkSettings::default(), &SecretString::from("someone else's secret")).expect("links");
    let expired = links.confirm_token(id, Utc::now() - chrono::Duration::days(8));
    let before = system.stored_events().await;
    for (name, bad) in [
        ("altered", altered),
        ("for another prospect", token.replacen(&id.to_string(), &other.to_string(), 1)),
        ("expired", expired),
        ("forged with another secret", wrong_secret.confirm_token(id, Utc::now())),
        ("a manage link", links.manage_token(id, Utc::now())),
        ("garbage", "not-a-token".to_owned()),
    ] {
        let path = Purpose::Confirm.path(&bad);
        assert_eq!(get(&system, &path).await.0, 404, "{name}");
        assert_eq!(post(&system, &path).await.status(), 404, "{name}");
    }
    assert_eq!(system.stored_events().await, before, "nothing was published");
    assert!(system.prospect(id).await.expect("row").expect("row").confirmed_at.is_none());

    assert_eq!(post(&system, &confirm).await.status(), 303);
    eventually(Duration::from_secs(20), "confirmed_at", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    let stream = jetstream::new(system.client.clone()).get_stream("PROSPECTS").await.expect("stream");
    let subject = messages::streams::event_subject(id, ProspectConfirmed::KIND);
    let event = stream.get_last_raw_message_by_subject(&subject).await.expect("the event");
    let event: ProspectConfirmed = serde_json::from_slice(&event.payload).expect("payload");
    assert_eq!(event.prospect_id, id);
    let (_, page) = get(&system, "/prospects/confirmed").await;
    assert!(page.contains("Your sign-up is confirmed"));
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_replayed_sign_up_sends_no_second_mail() {
    let mut system = System::start().await.expect("system");
    let smtp = test_support::SmtpServer::start().await.expect("smtp");
    let mut settings = system.mailer_settings(smtp.port());
    settings.mailer.consumer.from_start = true;
    system.smtp = Some(smtp);
    system.start_mailer_with(settings).await.expect("mailer");
    system.post_form(&form("Ada", "Lovelace", "once@example.com", "")).await.expect("post");
    system.mails_to("once@example.com", 1).await.expect("mail");

    let js = jetstream::new(system.client.clone());
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    let settled = |seq: u64| {
        let stream = stream.clone();
        async move {
            eventually(Duration::from_secs(30), "the mailer to settle", || async {
                let info = stream.consumer_info(mailer::CONSUMER_NAME).await.ok()?;
                (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(())
            })
            .await
            .expect("settled")
        }
    };

    // Replayed: the same event (same ce-id) stored again, as `signup dlq replay` does.
    let original = stream.get_raw_message(1).await.expect("the sign-up");
    assert!(original.subject.ends_with(ProspectSignedUp::KIND), "{}", original.subject);
    let mut headers: HeaderMap = original.headers.clone();
    headers.insert(ce::NATS_MSG_ID, "replayed-sign-up");
    let replay = js.publish_with_headers(original.subject.clone(), headers, original.payload.clone()).await;
    settled(replay.expect("publish").await.expect("stored").sequence).await;
    // Redelivered: the consumer starts over from the first event.
    stream.delete_consumer(mailer::CONSUMER_NAME).await.expect("reset the consumer");
    system.post_form(&form("Grace", "Hopper", "later@example.com", "")).await.expect("post");
    system.mails_to("later@example.com", 1).await.expect("mail");
    settled(system.stored_events().await).await;

    let smtp = system.smtp.as_ref().expect("smtp");
    assert_eq!(smtp.messages_to("once@example.com").len(), 1, "one mail, however often the event came");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_sign_up_is_erased_when_its_time_is_up() {
    let mut system = System::start_without_saver().await.expect("system");
    let mut settings = system.saver_settings();
    settings.links.confirm_within_secs = 3;
    settings.save_prospect.expiry_check_secs = 1;
    system.start_saver_with(settings).await.expect("saver");
    let unconfirmed = id_from_location(
        &system.post_form(&form("Ada", "Waits", "waits@example.com", "Never Ltd")).await.expect("post"),
    )
    .expect("id");
    let confirmed =
        id_from_location(&system.post_form(&form("Bo", "Confirms", "confirms@example.com", "")).await.expect("post"))
            .expect("id");
    system.saved(confirmed).await.expect("saved");
    let link = Purpose::Confirm.path(&links().confirm_token(confirmed, Utc::now()));
    assert_eq!(post(&system, &link).await.status(), 303);

    let row = eventually(Duration::from_secs(30), "the expired sign-up to be erased", || async {
        let row = system.prospect(unconfirmed).await.ok().flatten()?;
        row.deleted_at.is_some().then_some(row)
    })
    .await
    .expect("erased");
    assert_eq!((row.email, row.first_name, row.company_name), (None, None, None), "no personal data left");
    let stream = jetstream::new(system.client.clone()).get_stream("PROSPECTS").await.expect("stream");
    let subject = messages::streams::event_subject(unconfirmed, ProspectDeleted::KIND);
    let erasure = stream.get_last_raw_message_by_subject(&subject).await.expect("the erasure event");
    assert_eq!(erasure.headers.get(ce::SOURCE).map(|v| v.as_str().to_owned()).as_deref(), Some("/save-prospect"));
    let kept = system.prospect(confirmed).await.expect("row").expect("row");
    assert!(kept.deleted_at.is_none() && kept.confirmed_at.is_some(), "a confirmed sign-up stays");
    let (_, status) = get(&system, &format!("/api/prospects/{unconfirmed}")).await;
    assert!(status.contains("\"deleted\""), "{status}");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_takes_effect_only_once_confirmed_and_the_old_one_is_told() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let (id, mail) = sign_up_and_confirm(&system, &form("Ada", "Lovelace", "old@example.com", "Old Ltd")).await;
    let manage = mail.link("/prospects/manage/").expect("manage link").to_owned();
    let (status, page) = get(&system, &manage).await;
    assert_eq!(status, 200);
    assert!(page.contains("value=\"old@example.com\"") && page.contains("Status: confirmed"));

    let changed = system
        .http
        .post(system.web_url(&manage))
        .form(&form("Ada", "Lovelace", "new@example.com", "New Ltd"))
        .send()
        .await
        .expect("post");
    assert_eq!(changed.status(), 303);
    let (_, page) = get(&system, &location(&changed).expect("location")).await;
    assert!(page.contains("We have sent a link to your new address"), "{page}");
    eventually(Duration::from_secs(20), "the manage page to show the waiting change", || async {
        get(&system, &manage).await.1.contains("A change to <strong>new@example.com</strong> waits").then_some(())
    })
    .await
    .expect("shown");
    let told = system.mail_to("old@example.com", "Your sign-up's address is being changed").await.expect("told");
    assert!(told.text.contains("new@example.com"));
    told.link("/prospects/manage/").expect("a way to keep the details");
    let ask = system.mails_to("new@example.com", 1).await.expect("mail").remove(0);
    assert_eq!(ask.subject, "Please confirm your new address");
    assert!(ask.link("/prospects/manage/").is_err(), "the new address is not proven yet: no access");
    let confirm = ask.link("/prospects/confirm-email/").expect("link").to_owned();
    let row = system.prospect(id).await.expect("row").expect("row");
    assert_eq!((row.email.as_deref(), row.company_name.as_deref()), (Some("old@example.com"), Some("Old Ltd")));

    assert_eq!(get(&system, &confirm).await.0, 200);
    let confirmed = post(&system, &confirm).await;
    assert_eq!(confirmed.status(), 303);
    let landing = location(&confirmed).expect("location");
    assert!(landing.starts_with("/prospects/manage/"), "the new address's owner manages the record: {landing}");
    let (_, page) = get(&system, &landing).await;
    assert!(page.contains("Your new address is confirmed"), "{page}");
    eventually(Duration::from_secs(20), "the new address", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        (row.email.as_deref() == Some("new@example.com") && row.company_name.as_deref() == Some("New Ltd"))
            .then_some(())
    })
    .await
    .expect("changed");
    assert_eq!(post(&system, &confirm).await.status(), 404, "a used link does nothing more");
    assert_eq!(get(&system, &manage).await.0, 404, "the link mailed to the old address ended with the move");
    let landing = landing.trim_end_matches("?moved=1").to_owned();
    let tokens = [&manage, &confirm, &landing].map(|link| link.rsplit('/').next().expect("token").to_owned());

    // An address that belongs to another confirmed prospect is refused, and
    // the page says so.
    sign_up_and_confirm(&system, &form("Bo", "Taken", "taken@example.com", "")).await;
    let request = system
        .http
        .post(system.web_url(&landing))
        .form(&form("Ada", "Lovelace", "taken@example.com", "New Ltd"))
        .send()
        .await
        .expect("post");
    assert_eq!(request.status(), 303);
    let ask = system.mail_to("taken@example.com", "Please confirm your new address").await.expect("mail");
    let confirm = ask.link("/prospects/confirm-email/").expect("link").to_owned();
    let before = system.stored_events().await;
    let refused = post(&system, &confirm).await;
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.expect("body").contains("already belongs to another sign-up"));
    assert_eq!(system.stored_events().await, before, "nothing published");
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    e2e_tests::logs::assert_free_of(&e2e_tests::logs::captured(), &tokens, "the services' logs");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_manage_link_is_mailed_to_its_address_only() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let id = id_from_location(&system.post_form(&form("Ada", "Known", "known@example.com", "")).await.expect("post"))
        .expect("id");
    system.mails_to("known@example.com", 1).await.expect("the confirmation");
    system.saved(id).await.expect("saved");
    assert_eq!(get(&system, "/prospects/new-link").await.0, 200);

    let ask = |email: &str| {
        let request = system.http.post(system.web_url("/prospects/new-link")).form(&[("email", email)]);
        async move { request.send().await.expect("post") }
    };
    let bad = ask("not an address").await;
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.expect("body").contains("E-mail is not a valid e-mail address"));
    let before = system.stored_events().await;
    let unknown = ask("nobody@example.com").await;
    assert_eq!(unknown.status(), 303);
    assert_eq!(system.stored_events().await, before, "nothing to mail for an unknown address");
    let known = ask("KNOWN@example.com").await;
    assert_eq!(
        location(&known).expect("location"),
        location(&unknown).expect("location"),
        "the same answer either way"
    );
    let mail = system.mail_to("known@example.com", "Your link to change or erase your details").await.expect("mail");
    let (status, page) = get(&system, mail.link("/prospects/manage/").expect("link")).await;
    assert_eq!(status, 200);
    assert!(page.contains("value=\"known@example.com\""));
    assert!(page.contains("Confirm my sign-up"), "still pending, and the link proves the address");
    assert!(system.smtp.as_ref().expect("smtp").messages_to("nobody@example.com").is_empty());
    system.stop().await.expect("stop");
}

/// The path of a manage link for `token`'s page plus `suffix`.
fn path_of(link: &str, suffix: &str) -> String {
    format!("{link}{suffix}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_address_moves_every_link_mailed_to_the_old_one_is_dead() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let (id, mail) = sign_up_and_confirm(&system, &form("Ada", "Lovelace", "old.owner@example.com", "Old Ltd")).await;
    let first_manage = mail.link("/prospects/manage/").expect("manage link").to_owned();
    let first_confirm = mail.link("/prospects/confirm/").expect("confirmation link").to_owned();

    // The owner moves the record to a new address.
    let changed = system
        .http
        .post(system.web_url(&first_manage))
        .form(&form("Ada", "Lovelace", "new.owner@example.com", "New Ltd"))
        .send()
        .await
        .expect("post");
    assert_eq!(changed.status(), 303);
    let told = system.mail_to("old.owner@example.com", "Your sign-up's address is being changed").await.expect("told");
    let notice_manage = told.link("/prospects/manage/").expect("the notice's manage link").to_owned();
    // Until the new address is confirmed, the old one is still the record's.
    assert_eq!(get(&system, &notice_manage).await.0, 200, "the change is not confirmed yet");
    let ask = system.mail_to("new.owner@example.com", "Please confirm your new address").await.expect("ask");
    let confirm_email = ask.link("/prospects/confirm-email/").expect("link").to_owned();
    let confirmed = post(&system, &confirm_email).await;
    assert_eq!(confirmed.status(), 303);
    // The new address proved itself: its owner lands on the manage page.
    let landing = location(&confirmed).expect("location");
    assert!(landing.starts_with("/prospects/manage/") && landing.ends_with("?moved=1"), "{landing}");
    let landing = landing.trim_end_matches("?moved=1").to_owned();
    eventually(Duration::from_secs(20), "the new address", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        (row.email.as_deref() == Some("new.owner@example.com")).then_some(())
    })
    .await
    .expect("changed");

    // Every link mailed to the old address is dead: to view, change, erase,
    // confirm or move the record again.
    for link in [&first_manage, &notice_manage] {
        assert_eq!(get(&system, link).await.0, 404, "{link}");
        let moved = system
            .http
            .post(system.web_url(link))
            .form(&form("Mallory", "Old", "mallory@example.com", ""))
            .send()
            .await
            .expect("post");
        assert_eq!(moved.status(), 404, "a change through {link}");
        for action in ["/erase", "/confirm", "/new-link"] {
            assert_eq!(post(&system, &path_of(link, action)).await.status(), 404, "{link}{action}");
        }
    }
    assert_eq!(get(&system, &first_confirm).await.0, 404, "the old confirmation link");
    assert_eq!(post(&system, &first_confirm).await.status(), 404, "the old confirmation link");
    assert!(system.prospect(id).await.expect("row").expect("row").deleted_at.is_none(), "nothing was erased");
    let (status, page) = get(&system, &landing).await;
    assert_eq!(status, 200, "the new address's owner keeps access");
    assert!(page.contains("value=\"new.owner@example.com\""), "{page}");

    // Nor can the old address get a new link: nobody holds it now.
    let old_asks = system
        .http
        .post(system.web_url("/prospects/new-link"))
        .form(&[("email", "old.owner@example.com")])
        .send()
        .await
        .expect("post");
    assert_eq!(old_asks.status(), 303, "the same answer as for any address");

    // Asked for on the lost-link page (by anyone who knows the address), a
    // new link ends nothing: a stranger cannot cut the owner off.
    let anonymous = system
        .http
        .post(system.web_url("/prospects/new-link"))
        .form(&[("email", "new.owner@example.com")])
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 303);
    let lost = system
        .mail_to("new.owner@example.com", "Your link to change or erase your details")
        .await
        .expect("the lost link");
    let lost_link = lost.link("/prospects/manage/").expect("link").to_owned();
    assert_eq!(get(&system, &lost_link).await.0, 200);
    let requests = messages::streams::event_subject(id, messages::ManageLinkRequested::KIND);
    assert_eq!(system.events_on(&requests).await, 1, "the new address's request only, none for the old one");
    assert_eq!(get(&system, &landing).await.0, 200, "an anonymous request revokes nothing");

    // Someone who got hold of that link asks to move the record to their
    // own address; the owner, seeing it, asks for a new link.
    let hijack = system
        .http
        .post(system.web_url(&landing))
        .form(&form("Ada", "Lovelace", "hijacker@example.com", ""))
        .send()
        .await
        .expect("post");
    assert_eq!(hijack.status(), 303);
    let hijack_mail = system.mail_to("hijacker@example.com", "Please confirm your new address").await.expect("mail");
    let hijack_confirm = hijack_mail.link("/prospects/confirm-email/").expect("link").to_owned();

    // Asked for by the owner on the manage page, a new link ends every older
    // one, and drops an address change asked for before it.
    let renewed = post(&system, &path_of(&landing, "/new-link")).await;
    assert_eq!(renewed.status(), 303);
    let fresh = eventually(Duration::from_secs(20), "the owner's new link", || async {
        let smtp = system.smtp.as_ref()?;
        smtp.messages_to("new.owner@example.com")
            .iter()
            .filter_map(|m| Mail::parse(m, &system.web_url("")).ok())
            .filter(|m| m.subject == "Your link to change or erase your details")
            .filter_map(|m| m.link("/prospects/manage/").ok().map(str::to_owned))
            .find(|link| *link != lost_link)
    })
    .await
    .expect("mailed");
    eventually(Duration::from_secs(20), "the older links to end", || async {
        (get(&system, &landing).await.0 == 404).then_some(())
    })
    .await
    .expect("revoked");
    assert_eq!(get(&system, &lost_link).await.0, 404, "every older link ends");
    let (status, page) = get(&system, &fresh).await;
    assert_eq!(status, 200, "the new one works");
    assert!(!page.contains("hijacker@example.com"), "the change asked for before is dropped: {page}");
    assert_eq!(post(&system, &hijack_confirm).await.status(), 404, "and its link confirms nothing");
    let row = system.prospect(id).await.expect("row").expect("row");
    assert_eq!(row.email.as_deref(), Some("new.owner@example.com"));
    system.stop().await.expect("stop");
}

/// How many events the stream holds on `subject`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_is_confirmed_by_one_event_and_never_after_its_erasure() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let id =
        id_from_location(&system.post_form(&form("Ada", "Once", "once.only@example.com", "")).await.expect("post"))
            .expect("id");
    let mail = system.mail_to("once.only@example.com", "Please confirm your sign-up").await.expect("mail");
    let confirm = mail.link("/prospects/confirm/").expect("link").to_owned();
    system.saved(id).await.expect("saved");
    let subject = messages::streams::event_subject(id, ProspectConfirmed::KIND);

    // Pressed twice at once, then again and again once confirmed.
    let (a, b) = tokio::join!(post(&system, &confirm), post(&system, &confirm));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (303, 303));
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    for _ in 0..3 {
        assert_eq!(post(&system, &confirm).await.status(), 303, "the owner is told it is confirmed");
        let manage = mail.link("/prospects/manage/").expect("manage link");
        assert_eq!(post(&system, &format!("{manage}/confirm")).await.status(), 303);
    }
    assert_eq!(system.events_on(&subject).await, 1, "one confirmation event, however often pressed");

    // Erased: the link confirms nothing any more.
    let manage = mail.link("/prospects/manage/").expect("manage link");
    assert_eq!(post(&system, &format!("{manage}/erase")).await.status(), 303);
    eventually(Duration::from_secs(20), "the erasure", || async {
        system.prospect(id).await.ok().flatten()?.deleted_at.map(drop)
    })
    .await
    .expect("erased");
    // The confirmation (which can hold the confirming client) leaves the
    // stream with the rest of the prospect's history.
    eventually(Duration::from_secs(20), "the confirmation purged", || async {
        (system.events_on(&subject).await == 0).then_some(())
    })
    .await
    .expect("purged");
    let before = system.stored_events().await;
    assert_eq!(post(&system, &confirm).await.status(), 404, "nothing to confirm after an erasure");
    assert_eq!(get(&system, &confirm).await.0, 404);
    assert_eq!(system.stored_events().await, before, "nothing published");
    assert_eq!(system.events_on(&subject).await, 0);
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_link_request_is_answered_alike_for_a_known_and_an_unknown_address() {
    let mut system = System::start_without_saver().await.expect("system");
    // save-prospect only looks the stream up, so a deleted stream stays deleted.
    let mut settings = system.saver_settings();
    settings.nats.stream.manage = false;
    let js = jetstream::new(system.client.clone());
    bus::stream::ensure_dlq_stream(&js, &bus::settings::StreamSettings::default()).await.expect("dead-letter stream");
    system.start_saver_with(settings).await.expect("saver");
    let id =
        id_from_location(&system.post_form(&form("Ada", "Known", "known.alike@example.com", "")).await.expect("post"))
            .expect("id");
    system.saved(id).await.expect("saved");
    // JetStream stops taking events (the stream is gone); the prospects
    // service still answers who holds an address.
    js.delete_stream("PROSPECTS").await.expect("stream deleted");
    let ask = |email: &'static str| {
        let request = system.http.post(system.web_url("/prospects/new-link")).form(&[("email", email)]);
        async move { request.send().await.expect("post") }
    };
    let unknown = ask("nobody.alike@example.com").await;
    let known = ask("known.alike@example.com").await;
    assert_eq!(
        (known.status().as_u16(), location(&known).ok()),
        (unknown.status().as_u16(), location(&unknown).ok()),
        "the answer must not tell a known address from an unknown one"
    );
    assert_eq!(known.status(), 303);
    // The request is not lost: once JetStream takes events again it is stored.
    bus::ensure_stream(&js, &bus::settings::StreamSettings::default()).await.expect("stream back");
    let subject = messages::streams::event_subject(id, messages::ManageLinkRequested::KIND);
    eventually(Duration::from_secs(30), "the link request to be stored", || async {
        let stream = js.get_stream("PROSPECTS").await.ok()?;
        stream.get_last_raw_message_by_subject(&subject).await.ok().map(drop)
    })
    .await
    .expect("stored once the stream is back");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_of_mailed_links_are_never_cached() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let id = id_from_location(
        &system.post_form(&form("Ada", "Private", "private.page@example.com", "")).await.expect("post"),
    )
    .expect("id");
    let mail = system.mail_to("private.page@example.com", "Please confirm your sign-up").await.expect("mail");
    system.saved(id).await.expect("saved");
    let email_token = links().email_token(id, Uuid::now_v7(), Utc::now());
    for path in [
        mail.link("/prospects/confirm/").expect("link").to_owned(),
        mail.link("/prospects/manage/").expect("link").to_owned(),
        Purpose::ConfirmEmail.path(&email_token),
    ] {
        let response = system.http.get(system.web_url(&path)).send().await.expect("get");
        let cache = response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok());
        assert_eq!(cache, Some("no-store"), "{path} (status {})", response.status());
    }
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_visitor_typed_reaches_an_address_that_has_not_confirmed() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let lure = |first: &str, company: &str| form(first, "Lovelace", "lured@example.com", company);
    let typed = ["account is locked", "evil.example", "555 0100", "Lovelace", "urgent.example", "Mallory"];
    let clean = |mail: &Mail, what: &str| {
        for word in typed {
            assert!(!mail.text.contains(word) && !mail.html.contains(word), "{what} carries {word:?}:\n{}", mail.text);
        }
    };

    // A sign-up, for an address nobody has confirmed.
    let first = system
        .post_form(&lure("Your account is locked, visit https://evil.example", "Call +1 555 0100"))
        .await
        .expect("post");
    assert_eq!(first.status(), 303);
    let mail = system.mail_to("lured@example.com", "Please confirm your sign-up").await.expect("mail");
    clean(&mail, "the confirmation mail");
    // The details are shown behind the link, to whoever follows it.
    let id = id_from_location(&first).expect("id");
    system.saved(id).await.expect("saved");
    let (status, page) = get(&system, mail.link("/prospects/confirm/").expect("link")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Call +1 555 0100") && page.contains("Lovelace"), "the page shows what was typed: {page}");

    // A second sign-up with that address: its owner is asked, with none of the text.
    system.post_form(&lure("Mallory", "Visit urgent.example")).await.expect("post");
    let claim = system.mail_to("lured@example.com", "Someone signed up with your address").await.expect("mail");
    clean(&claim, "the mail about the second sign-up");

    // A change to a new address: the new address has not confirmed either.
    let confirm = mail.link("/prospects/confirm/").expect("link").to_owned();
    assert_eq!(post(&system, &confirm).await.status(), 303);
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(id).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");
    let manage = mail.link("/prospects/manage/").expect("link").to_owned();
    let moved = system
        .http
        .post(system.web_url(&manage))
        .form(&form("Mallory", "Lovelace", "elsewhere@example.com", "Visit urgent.example"))
        .send()
        .await
        .expect("post");
    assert_eq!(moved.status(), 303);
    let ask = system.mail_to("elsewhere@example.com", "Please confirm your new address").await.expect("mail");
    clean(&ask, "the new address's mail");
    let (_, page) = get(&system, ask.link("/prospects/confirm-email/").expect("link")).await;
    assert!(page.contains("Visit urgent.example"), "its page shows the details to apply: {page}");
    system.stop().await.expect("stop");
}
