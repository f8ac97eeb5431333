//! signup-web's answers to good, bad and hostile input, and to a NATS outage.
//! Real NATS; save-prospect is not needed (nothing here reads Postgres).

use std::time::Duration;

use crate::harness::{System, id_from_location};
use bus::async_nats::jetstream;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use test_support::eventually;

fn valid() -> Vec<(&'static str, String)> {
    vec![
        ("firstName", "Ada".into()),
        ("lastName", "Lovelace".into()),
        ("email", "ada@example.com".into()),
        ("companyName", "Analytical Engines".into()),
        ("country", "GB".into()),
        ("role", "EN".into()),
    ]
}

fn with(field: &str, value: &str) -> Vec<(&'static str, String)> {
    valid().into_iter().map(|(k, v)| (k, if k == field { value.to_owned() } else { v })).collect()
}

fn without(field: &str) -> Vec<(&'static str, String)> {
    valid().into_iter().filter(|(k, _)| *k != field).collect()
}

async fn post(system: &System, fields: &[(&'static str, String)]) -> (u16, String) {
    let response = system.http.post(system.web_url("/signup")).form(fields).send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_pages_render() {
    let system = System::start().await.expect("system");
    let home = system.http.get(system.web_url("/")).send().await.expect("home");
    assert_eq!(home.status(), 200);
    assert!(home.text().await.expect("body").contains("href=\"/signup\""));

    let form = system.http.get(system.web_url("/signup")).send().await.expect("form").text().await.expect("body");
    for field in ["firstName", "lastName", "email", "companyName", "country", "role"] {
        assert!(form.contains(&format!("<label for=\"{field}\"")), "label for {field}");
        assert!(form.contains(&format!("name=\"{field}\"")), "input {field}");
    }
    let first_option = |select: &str| {
        let start = form.find(&format!("<select id=\"{select}\"")).expect("select");
        let option = form[start..].find("<option").expect("option") + start;
        form[option..option + 60].to_owned()
    };
    assert!(first_option("country").contains("value=\"-\" selected>Not telling"), "{}", first_option("country"));
    assert!(first_option("role").contains("value=\"-\" selected>Not telling"));
    assert!(!form.contains("http://") && !form.contains("https://"), "no external resources");
    assert!(form.contains("name=\"viewport\""), "readable on a phone");

    let missing = system.http.get(system.web_url("/nowhere")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let bad_id = system.http.get(system.web_url("/signup/thanks/not-a-uuid")).send().await.expect("404");
    assert_eq!(bad_id.status(), 404);
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn every_form_validation_rule_is_answered_with_422_beside_the_field() {
    let system = System::start().await.expect("system");

    // Names in any script are welcome.
    for (first, last) in [("Zoë", "Ångström"), ("李", "小龍"), ("Ἀριστοτέλης", "Σταγειρίτης"), ("محمد", "الخوارزمي")]
    {
        let fields = with("firstName", first)
            .into_iter()
            .map(|(k, v)| (k, if k == "lastName" { last.to_owned() } else { v }))
            .collect::<Vec<_>>();
        let (status, _) = post(&system, &fields).await;
        assert_eq!(status, 303, "{first} {last}");
    }
    let accepted = system.stored_events().await;
    assert_eq!(accepted, 4);

    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (with("firstName", &"x".repeat(10 * 1024)), "First name must be at most 100 characters"),
        (with("lastName", "   "), "Last name is required"),
        (without("lastName"), "Last name is required"),
        (with("firstName", "Ada\u{0}"), "First name must not contain control characters"),
        (with("email", "not-an-address"), "E-mail is not a valid e-mail address"),
        (with("email", &format!("{}@example.com", "a".repeat(250))), "E-mail must be at most 254 characters"),
        (without("email"), "E-mail is required"),
        (with("companyName", &"c".repeat(201)), "Company must be at most 200 characters"),
        (with("country", "XX"), "Country is not a known country code"),
        (with("role", "CEO"), "Role is not a known role code"),
    ];
    for (fields, message) in cases {
        let (status, body) = post(&system, &fields).await;
        assert_eq!(status, 422, "{message}");
        assert!(body.contains(message), "{message} missing from the page");
        assert!(body.contains("aria-invalid=\"true\""), "the field is marked: {message}");
        // Every other value is kept in the re-rendered form.
        if !message.starts_with("Company") {
            assert!(body.contains("value=\"Analytical Engines\""), "company kept: {message}");
        }
    }

    // An empty body names every required field.
    let response = system
        .http
        .post(system.web_url("/signup"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 422);
    let body = response.text().await.expect("body");
    for message in ["First name is required", "Last name is required", "E-mail is required"] {
        assert!(body.contains(message), "{message}");
    }

    assert_eq!(system.stored_events().await, accepted, "nothing invalid was published");
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn markup_comes_back_as_text() {
    let system = System::start().await.expect("system");
    let script = "<script>alert('x')</script>";
    let mut fields = with("companyName", script);
    fields.retain(|(k, _)| *k != "email");
    fields.push(("email", format!("\"><img src=x onerror=alert(1)>{script}")));
    let (status, body) = post(&system, &fields).await;
    assert_eq!(status, 422);
    assert!(!body.contains("<script>alert"), "markup must not be echoed raw");
    assert!(!body.contains("<img src=x"), "markup must not be echoed raw");
    let kept = body.lines().find(|l| l.contains("id=\"companyName\"")).unwrap_or_default();
    assert!(kept.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;"), "escaped text kept: {kept}");
    system.stop().await.expect("stop");
}

/// Bytes that are not UTF-8 in a field (`firstName=%ff%fe`) were taken with a
/// 303 and stored as two U+FFFD: they are refused with a 422 naming the field,
/// on the form and the JSON API alike, and nothing is published.
#[tokio::test]
async fn text_that_is_not_utf8_is_refused_by_field_never_repaired() {
    let system = System::start().await.expect("system");
    let form = |body: &'static str| {
        system
            .http
            .post(system.web_url("/signup"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    for (body, message) in [
        (
            "firstName=%ff%fe&lastName=Lovelace&email=ada%40example.com&country=GB&role=EN",
            "First name must be valid UTF-8 text",
        ),
        (
            "firstName=Ada&lastName=Lovelace&email=ada%40example.com&companyName=Caf%e9&country=GB&role=EN",
            "Company must be valid UTF-8 text",
        ),
        (
            "firstName=Ada&lastName=Lovelace&email=ad%c3%28a%40example.com&country=GB&role=EN",
            "E-mail must be valid UTF-8 text",
        ),
    ] {
        let response = form(body).await.expect("post");
        assert_eq!(response.status(), 422, "{body}");
        let page = response.text().await.expect("page");
        assert!(page.contains(message), "{message} missing from the page for {body}");
        assert!(page.contains("aria-invalid=\"true\""), "the field is marked: {message}");
    }

    let url = system.web_url("/api/prospects");
    let mut body = br#"{"firstName":""#.to_vec();
    body.extend_from_slice(b"\xff\xfe");
    body.extend_from_slice(br#"","lastName":"Lovelace","email":"ada@example.com","country":"GB","role":"EN"}"#);
    let response =
        system.http.post(&url).header(CONTENT_TYPE, "application/json").body(body).send().await.expect("post");
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], "firstName", "{problem}");
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(1), "{problem}");

    assert_eq!(system.stored_events().await, 0, "nothing was published");
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn wrong_content_type_and_oversized_bodies_are_refused() {
    let system = System::start().await.expect("system");
    let response = system
        .http
        .post(system.web_url("/signup"))
        .header(CONTENT_TYPE, "text/plain")
        .body("firstName=Ada")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 415);

    let huge = vec![("firstName", "x".repeat(64 * 1024))];
    let response = system.http.post(system.web_url("/signup")).form(&huge).send().await.expect("post");
    assert_eq!(response.status(), 413);
    let response = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&json!({ "firstName": "x".repeat(64 * 1024) }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn the_json_api_accepts_and_explains() {
    let system = System::start().await.expect("system");
    let url = system.web_url("/api/prospects");
    let good = json!({
        "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
        "companyName": null, "country": "GB", "role": "EN"
    });
    let response = system.http.post(&url).json(&good).send().await.expect("post");
    assert_eq!(response.status(), 202);
    let id = id_from_location(&response).expect("Location");
    assert_eq!(response.headers()["location"], format!("/api/prospects/{id}").as_str());
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "prospectId": id.to_string() }));

    // The served OpenAPI document describes what was just answered.
    let doc: Value =
        system.http.get(system.web_url("/api/openapi.json")).send().await.expect("doc").json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let accepted = &doc["components"]["schemas"]["Accepted"];
    assert_eq!(
        accepted["properties"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["prospectId".to_owned()])
    );
    assert!(doc["paths"]["/api/prospects"]["post"]["responses"]["202"]["headers"]["Location"].is_object());
    // A method the document does not give a path (found by schemathesis:
    // it was the HTML 404 page).
    let response = system.http.delete(&url).send().await.expect("delete");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let response = system.http.put(system.web_url(&format!("/api/prospects/{id}"))).send().await.expect("put");
    assert_eq!((response.status().as_u16(), response.headers()["allow"].to_str().ok()), (405, Some("GET, HEAD")));
    // HEAD is a GET without the body (it was a 404 page, then a 405).
    let response = system.http.head(system.web_url("/api/countries")).send().await.expect("head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert!(response.bytes().await.expect("body").is_empty());

    let bad = json!({ "firstName": "", "lastName": 42, "email": "nope", "country": "ZZ", "role": "EN" });
    let response = system.http.post(&url).json(&bad).send().await.expect("post");
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["status"], 422);
    let fields: Vec<&str> =
        problem["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    assert_eq!(fields, vec!["lastName"], "a wrong type is reported first, by field");

    let bad = json!({ "firstName": "", "lastName": "Lovelace", "email": "nope", "country": "ZZ" });
    let problem: Value = system.http.post(&url).json(&bad).send().await.expect("post").json().await.expect("problem");
    let fields: Vec<&str> =
        problem["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    assert_eq!(fields, vec!["firstName", "email", "country", "role"]);

    for (content_type, body, status) in [
        ("application/json", "", 400),
        ("application/json", "[1,2]", 400),
        ("application/json", "{not json", 400),
        ("text/plain", "{}", 415),
        ("application/x-www-form-urlencoded", "firstName=Ada", 415),
    ] {
        let response = system.http.post(&url).header(CONTENT_TYPE, content_type).body(body).send().await.expect("post");
        assert_eq!(response.status().as_u16(), status, "{content_type} {body:?}");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
    assert_eq!(system.stored_events().await, 1, "only the valid sign-up was published");
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn a_nats_outage_is_a_503_and_recovery_needs_no_restart() {
    let mut system = System::start().await.expect("system");
    assert_eq!(system.http.get(system.web_url("/readyz")).send().await.expect("readyz").status(), 200);

    system.nats.stop().await.expect("stop nats");
    let readyz = system.web_url("/readyz");
    eventually(Duration::from_secs(10), "readyz to report the outage", || async {
        let response = system.http.get(&readyz).send().await.ok()?;
        (response.status() == 503).then_some(())
    })
    .await
    .expect("not ready");

    let (status, body) = post(&system, &valid()).await;
    assert_eq!(status, 503);
    assert!(body.contains("please try again"), "the 503 page asks to try again");
    assert!(body.contains("value=\"ada@example.com\""), "the visitor's values are kept");
    let api = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&json!({"firstName": "Ada"}))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 422, "validation still answers without NATS");
    let api = system
        .http
        .post(system.web_url("/api/prospects"))
        .json(&json!({"firstName": "Ada", "lastName": "L", "email": "a@example.com", "country": "GB", "role": "EN"}))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 503);
    assert!(api.headers().contains_key("retry-after"));

    system.nats.restart().await.expect("restart nats");
    system.wait_ready().await.expect("ready again without a restart");
    let response = system.http.post(system.web_url("/signup")).form(&valid()).send().await.expect("post");
    assert_eq!(response.status(), 303);
    id_from_location(&response).expect("id");
    assert_eq!(system.stored_events().await, 1, "the sign-up refused during the outage was not stored");
    system.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_stream_refuses_sign_ups_with_a_503_and_keeps_every_accepted_one() {
    let system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 0;
        settings.nats.stream.max_bytes_mb = 1;
    })
    .await
    .expect("system");
    let js = jetstream::new(system.client.clone());
    let limit = js.get_stream("PROSPECTS").await.expect("stream").cached_info().config.max_bytes;
    assert_eq!(limit, 1024 * 1024, "the limit is on the stream");
    let (mut accepted, mut refused) = (0u64, None);
    let company = "x".repeat(200);
    for i in 0..10_000 {
        let fields = with("email", &format!("full{i}@example.com"));
        let fields: Vec<_> =
            fields.into_iter().map(|(k, v)| (k, if k == "companyName" { company.clone() } else { v })).collect();
        let response = system.http.post(system.web_url("/signup")).form(&fields).send().await.expect("post");
        match response.status().as_u16() {
            303 => accepted += 1,
            503 => {
                assert!(response.headers().contains_key("retry-after"));
                refused = Some(response.text().await.expect("body"));
                break;
            }
            other => panic!("sign-up {i}: {other}"),
        }
    }
    let page = refused.expect("the full stream refused a sign-up");
    assert!(page.contains("please try again") && page.contains("value=\"full"), "the form is kept: {page}");
    assert!(accepted > 100, "it took a while to fill ({accepted})");
    assert_eq!(system.stored_events().await, accepted, "every sign-up answered 303 is stored, no old one dropped");
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn a_missing_or_short_link_secret_is_refused_at_start_up() {
    let nats = test_support::NatsServer::start().await.expect("nats-server");
    let mut settings = signup_web::Settings::default();
    settings.web.port = 0;
    settings.nats = crate::harness::nats_settings(&nats);
    let client = bus::connect(&settings.nats, "signup-web").await.expect("client");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = signup_web::Application::build(&settings, client.clone(), &shutdown).err().expect("refused");
    assert!(error.to_string().contains("links.secret is not set"), "{error}");
    settings.links.secret = Some(secrecy::SecretString::from("short"));
    let error = signup_web::Application::build(&settings, client, &shutdown).err().expect("refused");
    assert!(error.to_string().contains("at least 16 characters"), "{error}");
    shutdown.cancel();
}

#[tokio::test]
async fn posts_beyond_a_clients_rate_limit_get_429_with_retry_after() {
    let system = System::start_web_with(|settings| {
        settings.web.rate_limit.per_minute = 1;
        settings.web.rate_limit.burst = 2;
        settings.web.trust_forwarded_for = true;
    })
    .await
    .expect("system");
    let url = system.web_url("/api/prospects");
    let sign_up = |n: u32| json!({ "firstName": "Ada", "lastName": "Lovelace", "email": format!("ada{n}@example.com"), "country": "GB", "role": "EN" });
    for n in 0..2 {
        let response = system.http.post(&url).json(&sign_up(n)).send().await.expect("post");
        assert_eq!(response.status(), 202, "within the burst");
    }
    let refused = system.http.post(&url).json(&sign_up(2)).send().await.expect("post");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "one request per minute comes back within a minute: {retry_after}");
    assert_eq!(refused.headers()[CONTENT_TYPE], "application/problem+json");
    assert!(refused.headers().contains_key("content-security-policy"), "a 429 carries the security headers too");
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["status"], 429);

    // The form is limited too, with a plain answer for a person.
    let form = system.http.post(system.web_url("/signup")).form(&valid()).send().await.expect("post");
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));
    assert!(form.text().await.expect("body").contains("try again in"));

    // Status look-ups have an allowance of their own (each one asks the
    // prospects service, so a flood must stop here).
    let status = system.web_url(&format!("/api/prospects/{}", uuid::Uuid::now_v7()));
    let mut answers = Vec::new();
    for _ in 0..40 {
        answers.push(system.http.get(&status).send().await.expect("get").status().as_u16());
    }
    assert!(answers[..30].iter().all(|s| *s != 429), "the burst passes: {answers:?}");
    assert!(answers.contains(&429), "a flood of look-ups is refused: {answers:?}");

    // Reading pages is never limited, and another client has its own allowance.
    assert_eq!(system.http.get(system.web_url("/signup")).send().await.expect("get").status(), 200);
    let other = system.http.post(&url).header("x-forwarded-for", "203.0.113.7").json(&sign_up(3)).send().await;
    assert_eq!(other.expect("post").status(), 202, "a different client address");
    // The proxy's entry is the last one: what the client wrote before it, or
    // in a Forwarded header, does not buy a new allowance.
    for spoof in [("x-forwarded-for", "198.51.100.1, 127.0.0.1"), ("forwarded", "for=198.51.100.2")] {
        let again = system.http.post(&url).header(spoof.0, spoof.1).json(&sign_up(4)).send().await.expect("post");
        assert_eq!(again.status(), 429, "{spoof:?} still counts against 127.0.0.1's used-up allowance");
    }
    assert_eq!(system.stored_events().await, 3, "refused requests published nothing");
    system.stop().await.expect("stop");
}

/// The look-ups' allowance counts a request as the router sees it: a path
/// spelled with percent-escapes (`/api/%63hallenge` is routed to
/// `/api/challenge`) or a HEAD (a GET without the body, which still makes a
/// challenge or asks the prospects service) buys no new allowance.
#[tokio::test]
async fn look_ups_spelled_another_way_count_against_the_same_allowance() {
    let system = System::start_web_with(|settings| {
        settings.web.rate_limit.lookups_per_minute = 1;
        settings.web.rate_limit.lookups_burst = 2;
        settings.web.trust_forwarded_for = true;
    })
    .await
    .expect("system");
    let id = uuid::Uuid::now_v7();
    // Each round from a client address of its own, with an allowance of two.
    for (round, (method, paths)) in [
        (reqwest::Method::GET, ["/api/challenge", "/api/%63hallenge", "/api/ch%61llenge"]),
        (reqwest::Method::HEAD, ["/api/challenge", "/api/challenge", "/api/%63hallenge"]),
        (
            reqwest::Method::GET,
            [&*format!("/api/prospects/{id}"), &*format!("/api/%70rospects/{id}"), &*format!("/signup/%74hanks/{id}")],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let client = format!("203.0.113.{round}");
        let mut answers = Vec::new();
        for path in paths {
            let request = system.http.request(method.clone(), system.web_url(path)).header("x-forwarded-for", &client);
            answers.push(request.send().await.expect("request").status().as_u16());
        }
        assert_ne!(answers[0], 429, "{method} {paths:?}: {answers:?}");
        assert_eq!(answers.last(), Some(&429), "{method} {paths:?}: the third is over the allowance: {answers:?}");
    }
    system.stop().await.expect("stop");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let system = System::start().await.expect("system");
    for path in ["/", "/signup", "/nowhere", "/api/countries", "/static/site.css"] {
        let response = system.http.get(system.web_url(path)).send().await.expect("get");
        let headers = response.headers();
        let csp =
            headers.get("content-security-policy").unwrap_or_else(|| panic!("{path}: CSP")).to_str().expect("csp");
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin", "{path}");
    }
    let form = system.http.get(system.web_url("/signup")).send().await.expect("form").text().await.expect("body");
    assert!(!form.contains("<style") && !form.contains("style="), "no inline styles, which the policy would block");
    assert!(form.contains("href=\"/static/site.css\""));
    let css = system.http.get(system.web_url("/static/site.css")).send().await.expect("css");
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(css.text().await.expect("css").contains("--accent"));
    system.stop().await.expect("stop");
}
