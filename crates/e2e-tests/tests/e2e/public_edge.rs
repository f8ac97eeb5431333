//! The public edge, end to end through the running services (signup-web,
//! save-prospect, the mailer, a real SMTP server, NATS and Postgres): what a
//! stranger can make the system mail, and how the owner of an address stops
//! it ("it wasn't me").

use std::time::Duration;

use bus::async_nats::jetstream;
use e2e_tests::{System, id_from_location, links, location};
use futures::StreamExt as _;
use links::Purpose;
use test_support::eventually;
use uuid::Uuid;

fn form(first: &str, last: &str, email: &str) -> Vec<(&'static str, String)> {
    vec![
        ("firstName", first.into()),
        ("lastName", last.into()),
        ("email", email.into()),
        ("country", "GB".into()),
        ("role", "EN".into()),
    ]
}

#[derive(diesel::QueryableByName)]
struct Due {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    prospect_id: Uuid,
}

async fn get(system: &System, path: &str) -> (u16, String) {
    let response = system.http.get(system.web_url(path)).send().await.expect("get");
    (response.status().as_u16(), response.text().await.expect("body"))
}

async fn post(system: &System, path: &str) -> reqwest::Response {
    system.http.post(system.web_url(path)).send().await.expect("post")
}

/// The keys and values of the suppression list.
async fn suppression_list(system: &System) -> Vec<(String, String)> {
    let js = jetstream::new(system.client.clone());
    let list = js.get_key_value(messages::streams::SUPPRESSED_BUCKET).await.expect("the suppression list");
    let mut keys = list.keys().await.expect("keys");
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.expect("a key");
        let value = list.get(&key).await.expect("read").map(|v| String::from_utf8_lossy(&v).into_owned());
        out.push((key, value.unwrap_or_default()));
    }
    out
}

/// What the mailer recorded for the sign-up `prospect_id`'s mail, once it
/// has: "sent", "suppressed", …
async fn mail_outcome(system: &System, prospect_id: Uuid) -> String {
    let js = jetstream::new(system.client.clone());
    let subject = messages::streams::event_subject(prospect_id, "signedup");
    let stored = js.get_stream("PROSPECTS").await.expect("stream").get_last_raw_message_by_subject(&subject).await;
    let stored = stored.expect("the sign-up is stored");
    let event_id = stored.headers.get(messages::cloudevents::ID).expect("ce-id").as_str().to_owned();
    let sent = js.get_key_value("MAILER_SENT").await.expect("the mailer's sent records");
    eventually(Duration::from_secs(20), "the mailer to settle the sign-up", || async {
        let value = sent.get(format!("{event_id}.mail")).await.ok()??;
        Some(String::from_utf8_lossy(&value).into_owned())
    })
    .await
    .expect("settled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_wasnt_me_erases_the_sign_up_and_stops_later_mails_to_that_address() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let victim = "not.me@example.com";

    // A stranger signs the address up.
    let first = system.post_form(&form("Mallory", "Stranger", victim)).await.expect("post");
    assert_eq!(first.status(), 303);
    let id = id_from_location(&first).expect("id");
    let mail = system.mail_to(victim, "Please confirm your sign-up").await.expect("mail");
    system.saved(id).await.expect("saved");
    let not_me = mail.link("/prospects/not-me/").expect("an \"it wasn't me\" link beside the confirmation").to_owned();

    // Following the link changes nothing (a mail scanner opens links): the
    // page shows what was signed up, and one button.
    let (status, page) = get(&system, &not_me).await;
    assert_eq!(status, 200);
    assert!(page.contains("Mallory") && page.contains(&format!("action=\"{not_me}\"")), "{page}");
    assert!(system.prospect(id).await.expect("row").expect("saved").deleted_at.is_none(), "nothing erased yet");
    assert!(suppression_list(&system).await.is_empty(), "nothing suppressed yet");

    // Only the genuine link does it: a confirmation or a manage token, one
    // altered to another sign-up, a broken signature are refused, and change
    // nothing.
    let confirm_token = mail.link("/prospects/confirm/").expect("link").rsplit('/').next().expect("token").to_owned();
    let not_me_token = not_me.rsplit('/').next().expect("token").to_owned();
    let (claims, signature) = not_me_token.rsplit_once('.').expect("parts");
    let (_, issued) = claims.split_once('.').expect("id and time");
    for forged in [
        Purpose::NotMe.path(&confirm_token),
        Purpose::NotMe.path(&format!("{}.{issued}.{signature}", Uuid::now_v7())),
        Purpose::NotMe.path(&format!("{claims}.{}", &signature[1..])),
        Purpose::NotMe.path(&links().manage_token(id, chrono::Utc::now())),
    ] {
        assert_eq!(post(&system, &forged).await.status(), 404, "{forged}");
    }
    assert!(suppression_list(&system).await.is_empty(), "a refused press suppresses nothing");

    // Pressing the button erases the sign-up at once, and suppresses the
    // address: a digest of it, never the address.
    let pressed = post(&system, &not_me).await;
    assert_eq!(pressed.status(), 303);
    assert_eq!(location(&pressed).expect("location"), "/prospects/disowned");
    let row = eventually(Duration::from_secs(20), "the erasure", || async {
        system.prospect(id).await.ok().flatten().filter(|row| row.deleted_at.is_some())
    })
    .await
    .expect("erased");
    assert_eq!((row.email, row.first_name), (None, None), "the stranger's details are gone");
    let list = suppression_list(&system).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].0, links().suppression_key(victim));
    assert!(list.iter().all(|(k, v)| !k.contains("not.me") && !v.contains("not.me")), "no address kept: {list:?}");
    assert_eq!(get(&system, &not_me).await.0, 404, "the link of an erased sign-up opens nothing");

    // A later sign-up with the address is answered as any other, and mails
    // nothing; another address still gets its mail.
    let again = system.post_form(&form("Mallory", "Again", "Not.Me@Example.com")).await.expect("post");
    let control = system.post_form(&form("Ada", "Lovelace", "control.me@example.com")).await.expect("post");
    assert_eq!((again.status(), control.status()), (reqwest::StatusCode::SEE_OTHER, reqwest::StatusCode::SEE_OTHER));
    let (again_page, control_page) = (location(&again).expect("location"), location(&control).expect("location"));
    assert!(again_page.starts_with("/signup/thanks/") && control_page.starts_with("/signup/thanks/"));
    let again_id = id_from_location(&again).expect("id");
    assert_eq!(mail_outcome(&system, again_id).await, "suppressed");
    system.mail_to("control.me@example.com", "Please confirm your sign-up").await.expect("the control's mail");
    let smtp = system.smtp.as_ref().expect("smtp");
    assert_eq!(smtp.messages_to(victim).len(), 1, "no second mail to the suppressed address");

    // An operator lifts it (the CLI computes the same digest); then the
    // address gets mail again.
    assert!(system.signup(&["suppression", "check", victim]).await.expect("check").starts_with("suppressed since"));
    let lifted = system.signup(&["suppression", "remove", victim]).await.expect("remove");
    assert!(lifted.contains("suppression lifted"), "{lifted}");
    assert_eq!(system.signup(&["suppression", "check", victim]).await.expect("check"), "not suppressed\n");
    assert!(suppression_list(&system).await.is_empty());
    let third = system.post_form(&form("Ada", "Herself", victim)).await.expect("post");
    assert_eq!(mail_outcome(&system, id_from_location(&third).expect("id")).await, "sent");
    assert_eq!(system.mails_to(victim, 2).await.expect("mails").len(), 2);
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_wasnt_me_on_a_claimed_address_erases_the_strangers_sign_up_and_never_the_holder() {
    let mut system = System::start().await.expect("system");
    system.start_mailer().await.expect("mailer");
    let owner = "claimed.owner@example.com";
    let holder = id_from_location(&system.post_form(&form("Ada", "Lovelace", owner)).await.expect("post")).expect("id");
    let mail = system.mail_to(owner, "Please confirm your sign-up").await.expect("mail");
    system.saved(holder).await.expect("saved");
    assert_eq!(post(&system, mail.link("/prospects/confirm/").expect("link")).await.status(), 303);
    eventually(Duration::from_secs(20), "the confirmation", || async {
        system.prospect(holder).await.ok().flatten()?.confirmed_at.map(drop)
    })
    .await
    .expect("confirmed");

    // A stranger's sign-up with the owner's address: the owner is asked,
    // with an "it wasn't me" link and no way into the stranger's sign-up.
    let stranger =
        id_from_location(&system.post_form(&form("Mallory", "Stranger", owner)).await.expect("post")).expect("id");
    let claim = system.mail_to(owner, "Someone signed up with your address").await.expect("mail");
    assert!(claim.link("/prospects/manage/").is_err(), "no manage link of the stranger's sign-up: {}", claim.text);
    system.saved(stranger).await.expect("saved");
    let not_me = claim.link("/prospects/not-me/").expect("link").to_owned();
    assert_eq!(post(&system, &not_me).await.status(), 303);
    eventually(Duration::from_secs(20), "the stranger's erasure", || async {
        system.prospect(stranger).await.ok().flatten()?.deleted_at.map(drop)
    })
    .await
    .expect("erased");
    // The holder is untouched, and confirmed sign-ups are not disowned.
    let kept = system.prospect(holder).await.expect("row").expect("the holder");
    assert_eq!((kept.email.as_deref(), kept.deleted_at), (Some(owner), None));
    let own_not_me = mail.link("/prospects/not-me/").expect("link");
    let refused = post(&system, own_not_me).await;
    assert_eq!(refused.status(), 409, "a confirmed sign-up is erased on its manage page, not here");
    // Nor will it be: the erasures an erasure calls for are noted in the
    // same transaction (the `erasures_due` outbox) and then published, and
    // neither holds one of the holder.
    let mut conn = system.db.connect().await.expect("db");
    let due: Vec<Due> =
        diesel_async::RunQueryDsl::load(diesel::sql_query("SELECT prospect_id FROM erasures_due"), &mut conn)
            .await
            .expect("the outbox");
    assert!(due.iter().all(|d| d.prospect_id != holder), "the holder's erasure is due");
    let js = jetstream::new(system.client.clone());
    let erasure = messages::streams::event_subject(holder, "deleted");
    let stream = js.get_stream("PROSPECTS").await.expect("stream");
    assert!(stream.get_last_raw_message_by_subject(&erasure).await.is_err(), "the holder's erasure was published");
    assert_eq!(suppression_list(&system).await.len(), 1);
    system.stop().await.expect("stop");
}

/// A gauge's value on the mailer's `/metrics`.
async fn gauge(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `Date:` of a raw mail, in seconds.
fn sent_at(raw: &str) -> i64 {
    let (headers, _) = mailparse::parse_headers(raw.as_bytes()).expect("headers");
    let date = headers.iter().find(|h| h.get_key_ref().eq_ignore_ascii_case("date")).expect("a Date").get_value();
    mailparse::dateparse(&date).expect("a valid Date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_budget_waits_its_turn_in_order_and_is_then_delivered_completely() {
    let mut system = System::start().await.expect("system");
    let smtp = test_support::SmtpServer::start().await.expect("smtp");
    let mut settings = system.mailer_settings(smtp.port());
    // Two mails per domain and four in all per four seconds: a turn every
    // two seconds per domain, every second in all.
    settings.mailer.budget = mailer::budget::BudgetSettings { per_domain: 2, total: 4, window_secs: 4 };
    let metrics = test_support::free_port().expect("port");
    settings.mailer.http.port = Some(metrics);
    system.smtp = Some(smtp);
    system.start_mailer_with(settings).await.expect("mailer");

    // A burst of sign-ups nobody has confirmed: six at one domain, then two
    // at another.
    let flooded: Vec<String> = (0..6).map(|i| format!("burst{i}@flooded.example")).collect();
    let other: Vec<String> = (0..2).map(|i| format!("calm{i}@other.example")).collect();
    for address in flooded.iter().chain(&other) {
        assert_eq!(system.post_form(&form("Ada", "Lovelace", address)).await.expect("post").status(), 303);
    }
    // Some of them wait, and the gauge says so.
    eventually(Duration::from_secs(20), "mails waiting for the budget", || async {
        gauge(metrics, "signup_mails_waiting_for_budget").await.filter(|n| *n > 0.0)
    })
    .await
    .expect("a backlog shown");

    // Every one arrives, once.
    let mut mails = Vec::new();
    for address in flooded.iter().chain(&other) {
        let received = system.mails_to(address, 1).await.expect("delivered in the end");
        assert_eq!(received.len(), 1, "{address}");
        mails.push(system.smtp.as_ref().expect("smtp").messages_to(address).remove(0));
    }
    // In their order, and no faster than the budget: at one domain, two at
    // once, then one per turn (two seconds; `Date` counts whole seconds).
    let times: Vec<i64> = mails[..6].iter().map(|m| sent_at(m)).collect();
    for (k, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(gap >= 0, "in order: {times:?}");
        if k >= 1 {
            assert!(gap >= 1, "a turn apart: {times:?}");
        }
    }
    assert!(times[5] - times[0] >= 7, "four turns after the first two: {times:?}");
    // The other domain waited for the total, not for the flooded domain's
    // turns: it went before the flooded domain's last.
    let calm = sent_at(&mails[7]);
    assert!(calm <= times[5], "the other domain is not held behind the flooded one: {calm} vs {times:?}");
    eventually(Duration::from_secs(20), "the backlog to clear", || async {
        gauge(metrics, "signup_mails_waiting_for_budget").await.filter(|n| *n == 0.0)
    })
    .await
    .expect("nothing waits");
    system.stop().await.expect("stop");
}

/// A system whose web tier checks every sign-up, with challenges quick to
/// solve, and a mailer.
async fn checked_system(configure: impl FnOnce(&mut signup_web::Settings)) -> System {
    let mut system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 0;
        settings.web.rate_limit.lookups_per_minute = 0;
        settings.web.bot_check = quick_bot_check();
        configure(settings);
    })
    .await
    .expect("system");
    system.start_saver().await.expect("saver");
    system.start_mailer().await.expect("mailer");
    system
}

fn quick_bot_check() -> signup_web::bot_check::BotCheckSettings {
    signup_web::bot_check::BotCheckSettings {
        enabled: true,
        difficulty: 20,
        iterations: 10,
        ..signup_web::bot_check::BotCheckSettings::default()
    }
}

fn sign_up_json(email: &str, altcha: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "firstName": "Ada", "lastName": "Lovelace", "email": email, "country": "GB", "role": "EN"
    });
    if let Some(altcha) = altcha {
        body["altcha"] = altcha.into();
    }
    body
}

/// A 422 problem naming `altcha`; returns what it says of it.
async fn refused_for_altcha(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.expect("problem");
    let errors = problem["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{problem}");
    assert_eq!(errors[0]["field"], "altcha", "{problem}");
    errors[0]["detail"].as_str().expect("detail").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_without_a_valid_solution_is_refused_and_nothing_is_published_or_mailed() {
    let system = checked_system(|_| {}).await;
    let api = system.web_url("/api/prospects");
    let before = system.stored_events().await;
    let refused_addresses = ["none@example.com", "wrong@example.com", "forged@example.com", "expired@example.com"];

    // No solution.
    let none = system.http.post(&api).json(&sign_up_json(refused_addresses[0], None)).send().await.expect("post");
    assert!(refused_for_altcha(none).await.contains("missing"));

    // A wrong one: a challenge of ours, the derived key altered.
    let challenge: altcha::Challenge =
        system.http.get(system.web_url("/api/challenge")).send().await.expect("get").json().await.expect("json");
    let mut solution =
        altcha::solve_challenge(altcha::SolveChallengeOptions::new(&challenge)).expect("solvable").expect("in time");
    solution.derived_key = "00".repeat(32);
    let wrong = test_support::bot_check::encode(challenge, solution);
    let answer = system.http.post(&api).json(&sign_up_json(refused_addresses[1], Some(&wrong))).send().await;
    assert!(refused_for_altcha(answer.expect("post")).await.contains("not a valid solution"));

    // A forged one: solved, but signed by someone else.
    let forged = altcha::create_challenge(altcha::CreateChallengeOptions {
        algorithm: "PBKDF2/SHA-256".into(),
        cost: 10,
        counter: Some(5),
        expires_at: Some(chrono::Utc::now().timestamp() + 600),
        hmac_signature_secret: Some("a secret that is not the server's".into()),
        hmac_key_signature_secret: Some("another one".into()),
        ..Default::default()
    })
    .expect("challenge");
    let forged = e2e_tests::solve(forged);
    let answer = system.http.post(&api).json(&sign_up_json(refused_addresses[2], Some(&forged))).send().await;
    assert!(refused_for_altcha(answer.expect("post")).await.contains("not a valid solution"));

    // An expired one: genuine (made with the server's keys, from the same
    // link secret), but issued an hour ago.
    let keys = signup_web::bot_check::BotCheck::new(&quick_bot_check(), &links());
    let old = keys.challenge(chrono::Utc::now() - chrono::Duration::hours(1)).expect("challenge");
    let expired = e2e_tests::solve(old);
    let answer = system.http.post(&api).json(&sign_up_json(refused_addresses[3], Some(&expired))).send().await;
    assert!(refused_for_altcha(answer.expect("post")).await.contains("expired"));

    // The form refuses alike, re-rendered with the answers kept and the
    // check named.
    let refused = system.post_form(&form("Ada", "Lovelace", "none@example.com")).await.expect("post");
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.expect("page");
    assert!(page.contains("id=\"altcha-error\"") && page.contains("value=\"none@example.com\""), "{page}");

    // A solved one signs up, once: replayed, through the API, the form, or
    // another replica, it is refused.
    let solved = e2e_tests::solved_challenge(&system.http, &system.web_url("")).await.expect("solved");
    let accepted = system.http.post(&api).json(&sign_up_json("solved@example.com", Some(&solved))).send().await;
    assert_eq!(accepted.expect("post").status(), 202);
    let replayed = system.http.post(&api).json(&sign_up_json("replay@example.com", Some(&solved))).send().await;
    assert!(refused_for_altcha(replayed.expect("post")).await.contains("used already"));
    let mut fields = form("Ada", "Lovelace", "replay@example.com");
    fields.push(("altcha", solved.clone()));
    assert_eq!(system.post_form(&fields).await.expect("post").status(), 422);
    let replica = second_replica(&system).await;
    let elsewhere = system
        .http
        .post(format!("{}/api/prospects", replica.url))
        .json(&sign_up_json("replay@example.com", Some(&solved)))
        .send()
        .await;
    assert!(refused_for_altcha(elsewhere.expect("post")).await.contains("used already"), "a replica refuses it too");

    // Nothing refused was published, so nothing was mailed: the one stored
    // sign-up is mailed, and only it.
    assert_eq!(system.stored_events().await, before + 1, "only the solved sign-up is stored");
    system.mail_to("solved@example.com", "Please confirm your sign-up").await.expect("its mail");
    let smtp = system.smtp.as_ref().expect("smtp");
    for address in refused_addresses.iter().chain(&["replay@example.com"]) {
        assert!(smtp.messages_to(address).is_empty(), "{address} was mailed");
    }
    replica.stop().await;
    system.stop().await.expect("stop");
}

/// A second signup-web on the same NATS: another replica.
struct Replica {
    url: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Replica {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served");
    }
}

async fn second_replica(system: &System) -> Replica {
    let mut settings = signup_web::Settings::default();
    settings.web.port = 0;
    settings.web.workers = 1;
    settings.web.rate_limit.per_minute = 0;
    settings.web.bot_check = quick_bot_check();
    settings.links.secret = Some(secrecy::SecretString::from(e2e_tests::TOKEN_SECRET));
    settings.nats = e2e_tests::nats_settings(&system.nats);
    let client = bus::connect(&settings.nats, "signup-web").await.expect("client");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = signup_web::Application::build(&settings, client, &shutdown).expect("replica");
    let url = format!("http://127.0.0.1:{}", app.port());
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    eventually(Duration::from_secs(15), "the replica to be ready", || async {
        (reqwest::get(format!("{url}/readyz")).await.ok()?.status() == 200).then_some(())
    })
    .await
    .expect("ready");
    Replica { url, shutdown, task }
}

/// The form's token, from the sign-up page.
async fn form_token(system: &System) -> String {
    let (status, page) = get(system, "/signup").await;
    assert_eq!(status, 200);
    let start = page.find("name=\"formToken\" value=\"").expect("a form token") + "name=\"formToken\" value=\"".len();
    page[start..].split('"').next().expect("its value").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_form_signs_up_after_its_fill_time_and_never_with_the_honeypot_filled() {
    let system = checked_system(|settings| settings.web.bot_check.min_fill_secs = 1).await;
    let before = system.stored_events().await;
    let with = |email: &str, token: &str, honeypot: &str| {
        let mut fields = form("Ada", "Lovelace", email);
        fields.push(("formToken", token.to_owned()));
        fields.push(("website", honeypot.to_owned()));
        fields
    };
    // The page explains the way without JavaScript.
    let (_, page) = get(&system, "/signup").await;
    assert!(page.contains("<noscript>") && page.contains("at least 1 seconds"), "{page}");

    let older = form_token(&system).await;
    let token = form_token(&system).await;
    // Sent at once, the token is too quick.
    let page =
        system.post_form(&with("quick@example.com", &token, "")).await.expect("post").text().await.expect("page");
    assert!(page.contains("id=\"altcha-error\"") && page.contains("please wait a few seconds"), "{page}");
    // Past its fill time, the same token signs up, once.
    let signed_up = eventually(Duration::from_secs(20), "the fill time to pass", || async {
        let answer = system.post_form(&with("patient@example.com", &token, "")).await.ok()?;
        (answer.status() == 303).then_some(answer)
    })
    .await
    .expect("signed up");
    assert!(location(&signed_up).expect("location").starts_with("/signup/thanks/"));
    let again = system.post_form(&with("again@example.com", &token, "")).await.expect("post");
    assert_eq!(again.status(), 422);
    assert!(again.text().await.expect("page").contains("used already"));
    // A bot that fills every field, the honeypot too, is refused though its
    // token is past the fill time (it is older than the one above), with the
    // answer a quick one gets; the same token without it signs up.
    let trapped = system.post_form(&with("trap@example.com", &older, "https://spam.example")).await.expect("post");
    assert_eq!(trapped.status(), 422);
    assert!(trapped.text().await.expect("page").contains("please wait a few seconds"));
    let clean = system.post_form(&with("clean@example.com", &older, "")).await.expect("post");
    assert_eq!(clean.status(), 303, "the honeypot alone refused it");
    // The JSON API has no such way.
    let answer = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&serde_json::json!({"firstName": "Ada", "lastName": "Lovelace", "email": "api@example.com",
            "country": "GB", "role": "EN", "formToken": form_token(&system).await}))
        .send()
        .await
        .expect("post");
    assert!(refused_for_altcha(answer).await.contains("missing"));
    assert_eq!(system.stored_events().await, before + 2, "the patient and the clean one only");
    system.mail_to("patient@example.com", "Please confirm your sign-up").await.expect("mailed");
    for address in ["trap@example.com", "quick@example.com", "again@example.com", "api@example.com"] {
        assert!(system.smtp.as_ref().expect("smtp").messages_to(address).is_empty(), "{address}");
    }
    system.stop().await.expect("stop");
}

/// Another implementation solves our challenges: `scripts/solve-challenge`
/// (ALTCHA's own Python library, as a client in another language would)
/// solves one at the default difficulty and signs up with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_altchas_own_python_library_solves_a_challenge_and_signs_up() {
    let system = checked_system(|settings| {
        settings.web.bot_check.difficulty = signup_web::bot_check::BotCheckSettings::default().difficulty;
    })
    .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/solve-challenge");
    let solved = tokio::process::Command::new("bash")
        .arg(script)
        .arg(system.web_url(""))
        .output()
        .await
        .expect("scripts/solve-challenge");
    assert!(solved.status.success(), "{}", String::from_utf8_lossy(&solved.stderr));
    let altcha = String::from_utf8(solved.stdout).expect("text").trim().to_owned();
    let answer = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&sign_up_json("python@example.com", Some(&altcha)))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap_or_default());
    system.mail_to("python@example.com", "Please confirm your sign-up").await.expect("mailed");
    system.stop().await.expect("stop");
}
