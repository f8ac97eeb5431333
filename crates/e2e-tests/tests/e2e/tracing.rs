//! Where is my sign-up? Traces across every hop, exported over OTLP to a
//! real receiver, and the delivery ledger (`signup trace`), with the
//! services as their own processes against the test's own nats-server,
//! database and SMTP server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bus::async_nats::jetstream;
use bus::{EventContext, Publisher};
use diesel_async::RunQueryDsl;
use e2e_tests::faults::{ANALYTICS_TOKEN, FaultBed, sign_up};
use e2e_tests::processes::{burst, logs};
use test_support::otlp::{OtlpReceiver, ReceivedSpan};
use test_support::{NatsServer, SmtpServer, eventually, free_port};
use uuid::Uuid;

/// Posts the form once (with `traceparent`, if given); the prospect id.
async fn sign_up_by_form(bed: &FaultBed, email: &str, traceparent: Option<&str>) -> Uuid {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let fields = [("firstName", "Trace"), ("lastName", "Visitor"), ("email", email), ("country", "NL"), ("role", "EN")];
    let mut request = http.post(format!("{}/signup", bed.web_url)).form(&fields);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("the form answers");
    assert_eq!(response.status(), 303);
    e2e_tests::id_from_location(&response).expect("a thank-you location")
}

/// `signup trace <prospect> --json`, when it answers.
async fn ledger_json(bed: &FaultBed, prospect: &str) -> Option<serde_json::Value> {
    let json = bed.signup(&["trace", prospect, "--json"]).await.ok()?;
    serde_json::from_str(&json).ok()
}

/// The headers of the stored event on `subject`.
async fn stored_headers(bed: &FaultBed, subject: &str) -> bus::async_nats::HeaderMap {
    let stream = jetstream::new(bed.client.clone()).get_stream("PROSPECTS").await.expect("stream");
    stream.get_last_raw_message_by_subject(subject).await.expect("the event is stored").headers
}

fn header<'a>(headers: &'a bus::async_nats::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.as_str()).unwrap_or_else(|| panic!("the event has no {name} header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_form_sign_up_is_one_trace_from_the_request_to_every_handler() {
    let nats = NatsServer::start().await.expect("nats-server");
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let endpoint = receiver.endpoint();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let bed = FaultBed::start(nats.url(), &otel).await;
    let _saver = bed.saver(&[]);
    let index = tempfile::tempdir().expect("index folder");
    let _indexer = bed.indexer(index.path(), free_port().expect("port"), &[]);
    bed.consumers_ready(&["save-prospect", "analytics-indexer"]).await;

    let email = format!("trace.{}@example.com", Uuid::now_v7().simple());
    let prospect = sign_up_by_form(&bed, &email, None).await;
    bed.all_saved(&[prospect].into()).await;
    let subject = format!("events.prospect.{prospect}.signedup");
    let headers = stored_headers(&bed, &subject).await;
    let event_id = header(&headers, "ce-id").to_owned();
    let traceparent = header(&headers, "traceparent").to_owned();

    let handlers = ["analytics-indexer", "save-prospect"];
    let (request, publish, applied, batches) =
        eventually(Duration::from_secs(30), "the sign-up's spans from all three services", || async {
            let spans = receiver.spans();
            let publish = spans
                .iter()
                .find(|s| s.attribute("messaging.destination.name") == Some(&subject) && s.kind == "producer")?;
            let request = spans.iter().find(|s| s.span_id == publish.parent_span_id)?;
            let applied: BTreeMap<String, ReceivedSpan> = spans
                .iter()
                .filter(|s| s.kind == "consumer" && s.parent_span_id == publish.span_id)
                .map(|s| (s.service.clone(), s.clone()))
                .collect();
            let batches: BTreeMap<String, ReceivedSpan> = spans
                .iter()
                .filter(|s| s.links.contains(&(publish.trace_id.clone(), publish.span_id.clone())))
                .map(|s| (s.service.clone(), s.clone()))
                .collect();
            (applied.keys().map(String::as_str).eq(handlers) && batches.keys().map(String::as_str).eq(handlers))
                .then(|| (request.clone(), publish.clone(), applied, batches))
        })
        .await
        .unwrap_or_else(|_| panic!("no complete trace; received: {:#?}", receiver.spans()));

    // The web's request span is the root: the visitor sent no traceparent.
    let trace = &request.trace_id;
    assert_eq!(request.service, "signup-web");
    assert_eq!((request.kind, request.name.as_str()), ("server", "POST /signup"));
    assert_eq!(request.parent_span_id, "", "a trace started by signup-web");
    assert_eq!(request.attribute("http.route"), Some("/signup"));
    assert_eq!(request.attribute("http.response.status_code"), Some("303"));
    // The publish is its child, and the event carries the publish's context.
    assert_eq!((publish.service.as_str(), &publish.trace_id), ("signup-web", trace));
    assert_eq!(traceparent, format!("00-{trace}-{}-01", publish.span_id));
    let messaging = |span: &ReceivedSpan| {
        assert_eq!(span.attribute("messaging.system"), Some("nats"), "{span:?}");
        assert_eq!(span.attribute("messaging.destination.name"), Some(subject.as_str()), "{span:?}");
        assert_eq!(span.attribute("messaging.message.id"), Some(event_id.as_str()), "{span:?}");
    };
    messaging(&publish);
    assert!(publish.attribute("messaging.nats.stream_sequence").is_some(), "the PubAck's sequence");
    // Each handler applies it in a span of the same trace, under the publish,
    // and its batch span links to it.
    for handler in handlers {
        let span = &applied[handler];
        assert_eq!(&span.trace_id, trace, "{handler} continues the sign-up's trace");
        messaging(span);
        assert_eq!(span.attribute("messaging.consumer.group.name"), Some(handler));
        assert_eq!(span.attribute("messaging.operation.type"), Some("process"));
        let batch = &batches[handler];
        assert_eq!((batch.kind, batch.attribute("messaging.consumer.group.name")), ("consumer", Some(handler)));
        assert_eq!(batch.attribute("messaging.system"), Some("nats"));
    }
    // Logs and traces join: the web's access log line names the trace.
    let logs = logs();
    assert!(
        logs.lines().any(|line| line.contains(trace.as_str()) && line.contains("303 POST /signup")),
        "no access log line with trace_id {trace}"
    );
    // The operator's question, by address: both handlers applied it.
    let ledger = bed.signup(&["trace", &email]).await.expect("signup trace");
    println!("{ledger}");
    for handler in handlers {
        assert!(
            ledger.lines().any(|line| line.trim_start().starts_with(handler) && line.contains("applied")),
            "{handler} not applied in:\n{ledger}"
        );
    }
    println!("trace {trace}:");
    for span in [&request, &publish].into_iter().chain(applied.values()).chain(batches.values()) {
        println!("  {:<18} {:<9} {:<58} parent {}", span.service, span.kind, span.name, span.parent_span_id);
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_requests_trace_even_with_traces_off() {
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;

    // The caller's trace is continued, under a span of the web's own.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let prospect =
        sign_up_by_form(&bed, &format!("caller.{}@example.com", Uuid::now_v7().simple()), Some(caller)).await;
    let headers = stored_headers(&bed, &format!("events.prospect.{prospect}.signedup")).await;
    let carried = bus::trace::TraceParent::parse(header(&headers, "traceparent")).expect("a valid traceparent");
    assert_eq!(carried.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(carried.header(), caller, "a span of the web's own");

    // A request without one starts a trace, which its events carry and its
    // log line names.
    let prospect = sign_up_by_form(&bed, &format!("fresh.{}@example.com", Uuid::now_v7().simple()), None).await;
    let headers = stored_headers(&bed, &format!("events.prospect.{prospect}.signedup")).await;
    let started = bus::trace::TraceParent::parse(header(&headers, "traceparent")).expect("a trace started by the web");
    assert_ne!(started.trace_id(), carried.trace_id());
    let trace = started.trace_id();
    eventually(Duration::from_secs(10), "the access log line naming the trace", || async {
        logs().lines().any(|line| line.contains(&trace) && line.contains("303 POST /signup")).then_some(())
    })
    .await
    .expect("logs and traces join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_shows_a_dead_letter_beside_the_handlers_that_applied_it_until_it_is_replayed() {
    let nats = NatsServer::start().await.expect("nats-server");
    let smtp = SmtpServer::start().await.expect("SMTP server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[]);
    let index = tempfile::tempdir().expect("index folder");
    let analytics_port = free_port().expect("port");
    let _indexer = bed.indexer(index.path(), analytics_port, &[]);
    let _mailer = bed.mailer(smtp.port(), &[]);
    let handlers = ["analytics-indexer", "mailer", "save-prospect"];
    bed.consumers_ready(&handlers).await;
    // save-prospect has made its tables once a first sign-up is saved.
    let first = burst(bed.web_url.clone(), 1, 1, Arc::default()).await;
    bed.all_saved(&first.accepted).await;

    // The fault: save-prospect's database refuses the row; the others apply it.
    let mut conn = bed.refuse_company("ledger_test", "Broken Ltd").await;
    let event = sign_up(0, "Broken Ltd");
    let prospect = event.prospect_id.to_string();
    let publisher = Publisher::new(bed.client.clone(), "/ledger-test", Duration::from_secs(5));
    publisher.publish(&event, &EventContext::new()).await.expect("publish");

    let states = |ledger: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        ledger["events"][0]["handlers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| (h["handler"].as_str().unwrap_or_default().to_owned(), h.clone()))
            .collect()
    };
    let before = eventually(Duration::from_secs(60), "applied, applied, dead-lettered", || async {
        let ledger = ledger_json(&bed, &prospect).await?;
        let states = states(&ledger);
        let state = |h: &str| states.get(h).and_then(|s| s["state"].as_str()).unwrap_or_default().to_owned();
        (state("analytics-indexer") == "applied"
            && state("mailer") == "applied"
            && state("save-prospect") == "deadLettered")
            .then_some(states)
    })
    .await
    .expect("the ledger");
    let dead = &before["save-prospect"];
    let letter = dead["letter"].as_u64().expect("the letter's number");
    let reason = dead["reason"].as_str().expect("a reason");
    assert!(reason.contains("ledger_test"), "the reason names the refusal: {reason}");
    println!("{}", bed.signup(&["trace", &prospect]).await.expect("signup trace"));

    // The fix, the replay: applied everywhere.
    diesel::sql_query("ALTER TABLE prospects DROP CONSTRAINT ledger_test").execute(&mut conn).await.expect("fix");
    bed.signup(&["dlq", "replay", &letter.to_string()]).await.expect("signup dlq replay");
    let after = eventually(Duration::from_secs(60), "applied everywhere after the replay", || async {
        let ledger = ledger_json(&bed, &prospect).await?;
        let states = states(&ledger);
        (states.len() == handlers.len() && states.values().all(|s| s["state"] == "applied")).then_some(ledger)
    })
    .await
    .expect("applied everywhere");
    assert_eq!(after["events"][0]["replays"].as_array().map(Vec::len), Some(1), "one replayed copy");
    bed.all_saved(&[event.prospect_id].into()).await;
    println!("{}", bed.signup(&["trace", &prospect]).await.expect("signup trace"));

    // The same view for operators on the analytics side, behind its token.
    let url = format!("http://127.0.0.1:{analytics_port}/api/analytics/delivery/{prospect}");
    let http = reqwest::Client::new();
    let refused = http.get(&url).send().await.expect("answer");
    assert_eq!(refused.status(), 401);
    let view: serde_json::Value =
        http.get(&url).bearer_auth(ANALYTICS_TOKEN).send().await.expect("answer").json().await.expect("json");
    assert_eq!(states(&view).len(), handlers.len());
    assert!(states(&view).values().all(|s| s["state"] == "applied"), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_answer_that_quotes_the_address_reaches_no_log_span_or_dead_letter() {
    let nats = NatsServer::start().await.expect("nats-server");
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let endpoint = receiver.endpoint();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let bed = FaultBed::start(nats.url(), &otel).await;
    let smtp = SmtpServer::start().await.expect("smtp server");
    let _saver = bed.saver(&[]);
    let _mailer = bed.mailer(smtp.port(), &[("SIGNUP__MAILER__CONSUMER__RETRY_BASE_MS", "100")]);
    bed.consumers_ready(&["save-prospect", "mailer"]).await;

    // The server refuses the recipient for good, quoting the address, and
    // one more refuses it for now, quoting it too, before taking the mail.
    let tag = Uuid::now_v7().simple().to_string();
    let refused = format!("refused.{tag}@example.com");
    let later = format!("later-1.{tag}@example.com");
    let prospect = sign_up_by_form(&bed, &refused, None).await;
    sign_up_by_form(&bed, &later, None).await;
    let letters = jetstream::new(bed.client.clone()).get_stream("PROSPECTS_DLQ").await.expect("dead letters");
    let subject = format!("dlq.prospect.mailer.{prospect}.signedup");
    let letter = eventually(Duration::from_secs(30), "the mailer's dead letter", || async {
        letters.get_last_raw_message_by_subject(&subject).await.ok()
    })
    .await
    .expect("dead-lettered");
    eventually(Duration::from_secs(30), "the second mail, after a retry", || async { smtp.messages_to(&later).pop() })
        .await
        .expect("taken on the second try");
    let reason = header(&letter.headers, "x-dlq-reason").to_owned();
    assert!(reason.contains("550") && reason.contains("5.1.1"), "the reason keeps the server's codes: {reason}");
    // Where the address was quoted, nothing of it is left.
    let spans = eventually(Duration::from_secs(30), "the dead letter's span", || async {
        let spans = receiver.spans();
        spans.iter().any(|s| s.service == "mailer" && s.status_message.contains("dead-lettered")).then_some(spans)
    })
    .await
    .expect("the span with its error status");
    let span_texts: Vec<String> =
        spans.iter().map(|s| format!("{} {} {:?}", s.name, s.status_message, s.attributes)).collect();
    for address in [refused.as_str(), later.as_str()] {
        assert!(!reason.contains(address), "dead letter: {reason}");
        let logged = logs();
        assert!(logged.contains("event dead-lettered"), "the mailer's logs were read");
        if let Some(line) = logged.lines().find(|line| line.contains(address)) {
            panic!("a log line holds the address: {line}");
        }
        if let Some(span) = span_texts.iter().find(|text| text.contains(address)) {
            panic!("a span holds the address: {span}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_tools_trust_no_header_print_no_raw_bytes_and_find_every_sign_up_of_an_address() {
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[]);
    let index = tempfile::tempdir().expect("index folder");
    let _indexer = bed.indexer(index.path(), free_port().expect("port"), &[]);
    bed.consumers_ready(&["analytics-indexer", "save-prospect"]).await;
    let links = links::Links::new(&links::LinkSettings {
        secret: Some(secrecy::SecretString::from(e2e_tests::faults::LINKS_SECRET)),
        ..links::LinkSettings::default()
    })
    .expect("links");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let confirm = |id: Uuid| {
        let url =
            format!("{}{}", bed.web_url, links::Purpose::Confirm.path(&links.confirm_token(id, chrono::Utc::now())));
        let http = http.clone();
        async move { assert_eq!(http.post(url).send().await.expect("confirm").status(), 303) }
    };
    let bed = &bed;
    let confirmed = |id: Uuid| async move {
        eventually(Duration::from_secs(30), "the confirmation", || async {
            use diesel::QueryDsl as _;
            let mut conn = bed.connect().await?;
            let at: Option<chrono::DateTime<chrono::Utc>> = save_prospect::schema::prospects::table
                .find(id)
                .select(save_prospect::schema::prospects::confirmed_at)
                .first(&mut conn)
                .await
                .ok()?;
            at.map(drop)
        })
        .await
        .expect("confirmed");
    };

    // One address, three sign-ups: the holder, one confirmed into it (an
    // alias), and a stranger's pending claim.
    let email = format!("many.{}@example.com", Uuid::now_v7().simple());
    let holder = sign_up_by_form(bed, &email, None).await;
    bed.all_saved(&[holder].into()).await;
    confirm(holder).await;
    confirmed(holder).await;
    let alias = sign_up_by_form(bed, &email.to_uppercase(), None).await;
    let claim = sign_up_by_form(bed, &email, None).await;
    bed.all_saved(&[claim].into()).await;
    confirm(alias).await;
    eventually(Duration::from_secs(30), "the alias to be merged", || async {
        let text = bed.signup(&["trace", &email]).await.ok()?;
        text.contains(&alias.to_string()).then_some(())
    })
    .await
    .expect("the trace by address names the merged sign-up");
    let by_address = bed.signup(&["trace", &email]).await.expect("signup trace");
    for id in [holder, alias, claim] {
        assert!(by_address.contains(&id.to_string()), "{id} is missing from:\n{by_address}");
    }

    // A letter on the indexer's subject that names save-prospect in its
    // header, with escape sequences in its reason and payload.
    let stream = jetstream::new(bed.client.clone()).get_stream("PROSPECTS").await.expect("stream");
    let subject = format!("events.prospect.{holder}.signedup");
    let original = stream.get_last_raw_message_by_subject(&subject).await.expect("the sign-up");
    let mut headers = bus::async_nats::HeaderMap::new();
    headers.insert(messages::dlq::CONSUMER, "save-prospect");
    headers.insert(messages::dlq::SUBJECT, format!("{subject}\u{1b}]0;title\u{7}").as_str());
    headers.insert(messages::dlq::STREAM_SEQ, original.sequence.to_string().as_str());
    headers.insert(messages::dlq::REASON, "\u{1b}[2J\u{1b}[31mall is well\u{1b}[0m\u{202e}");
    headers.insert(messages::cloudevents::ID, Uuid::now_v7().to_string().as_str());
    let letter = messages::dlq::subject("analytics-indexer", &subject);
    let js = jetstream::new(bed.client.clone());
    let stored = js
        .publish_with_headers(letter, headers, "{\"x\":\"\u{1b}]0;pwned\u{7}\"}".into())
        .await
        .expect("sent")
        .await
        .expect("stored");
    let ledger = ledger_json(bed, &holder.to_string()).await.expect("the ledger");
    let states: BTreeMap<String, String> = ledger["events"][0]["handlers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (h["handler"].as_str().unwrap_or_default().to_owned(), h["state"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        states.get("save-prospect").map(String::as_str),
        Some("applied"),
        "the header names save-prospect; the subject does not: {states:?}"
    );
    assert_eq!(states.get("analytics-indexer").map(String::as_str), Some("deadLettered"), "{states:?}");
    for args in
        [vec!["dlq", "show", &stored.sequence.to_string()], vec!["dlq", "list"], vec!["trace", &holder.to_string()]]
    {
        let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
        let printed = bed.signup(&args).await.expect("signup");
        assert!(printed.contains("all is well"), "{args:?} shows the reason: {printed}");
        assert!(
            !printed.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{args:?} printed raw control bytes: {printed:?}"
        );
    }
}
