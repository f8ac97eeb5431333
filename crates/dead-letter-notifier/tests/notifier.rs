//! The notifier against a real nats-server and a real SMTP server (aiosmtpd).

use std::time::Duration;

use bus::async_nats::{self, jetstream};
use bus::settings::{NatsSettings, StreamSettings};
use dead_letter_notifier::{CONSUMER_NAME, Notifier, NotifierSettings, Settings};
use futures::StreamExt;
use messages::{cloudevents as ce, dlq};
use runtime::{Context, Service as _};
use test_support::{NatsServer, SmtpServer, SmtpTls, eventually, free_port};
use tokio_util::sync::CancellationToken;

async fn nats() -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::start().await.expect("nats-server");
    let client = bus::connect(&NatsSettings { url: server.url(), ..NatsSettings::default() }, "notifier-test")
        .await
        .expect("connect");
    eventually(Duration::from_secs(5), "NATS", || async { bus::is_connected(&client).then_some(()) })
        .await
        .expect("up");
    let js = jetstream::new(client.clone());
    bus::stream::ensure_dlq_stream(&js, &StreamSettings::default()).await.expect("dlq stream");
    (server, client, js)
}

/// Publishes `count` dead letters as save-prospect would.
async fn dead_letters(js: &jetstream::Context, count: usize) {
    let acks: Vec<Result<(), _>> = futures::stream::iter(0..count)
        .map(|i| async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ce::ID, format!("00000000-0000-7000-8000-{i:012}").as_str());
            headers.insert(ce::TYPE, "io.signup.prospect.signedup.v1");
            headers.insert(ce::NATS_MSG_ID, format!("save-prospect:{i}").as_str());
            headers.insert(dlq::REASON, "database rejected the row");
            headers.insert(dlq::CONSUMER, "save-prospect");
            headers.insert(dlq::DELIVERIES, "5");
            headers.insert(dlq::STREAM_SEQ, (i + 1).to_string().as_str());
            headers.insert(dlq::SUBJECT, "events.prospect.signedup");
            let payload = format!(
                r#"{{"prospectId":"p{i}","firstName":"Ada","lastName":"Number{i}","email":"ada{i}@example.com","country":{{"code":"GB","name":"United Kingdom"}},"role":{{"code":"EN","name":"Engineer"}}}}"#
            );
            let ack = js.publish_with_headers("dlq.prospect.save-prospect.signedup", headers, payload.into()).await;
            ack.expect("publish").await.map(drop)
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert!(acks.iter().all(Result::is_ok), "every letter stored");
}

fn settings(nats: &NatsServer, smtp_port: u16, interval_secs: u64) -> Settings {
    Settings {
        nats: NatsSettings { url: nats.url(), ..NatsSettings::default() },
        notifier: NotifierSettings {
            smtp: smtp::SmtpSettings { port: smtp_port, tls: smtp::SmtpTls::None, ..smtp::SmtpSettings::default() },
            from: "signup@example.com".into(),
            to: "ops@example.com".into(),
            interval_secs,
            gather_secs: 2,
            retry_base_ms: 100,
            http: runtime::ops::OpsSettings::local(0),
            ..NotifierSettings::default()
        },
        ..Settings::default()
    }
}

async fn all_acked(js: &jetstream::Context) {
    eventually(Duration::from_secs(30), "every letter acked", || async {
        let stream = js.get_stream("PROSPECTS_DLQ").await.ok()?;
        let info = stream.consumer_info(dead_letter_notifier::CONSUMER_NAME).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_dead_letters_is_one_digest() {
    let (nats, client, js) = nats().await;
    let smtp = SmtpServer::start().await.expect("smtp server");
    dead_letters(&js, 10_000).await;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Notifier::run(
        settings(&nats, smtp.port(), 3_600),
        Context::new(CONSUMER_NAME, client, shutdown.clone()),
    ));
    let mails = eventually(Duration::from_secs(60), "the digest", || async {
        let mails = smtp.messages();
        (!mails.is_empty()).then_some(mails)
    })
    .await
    .expect("mail");
    all_acked(&js).await;
    shutdown.cancel();
    task.await.expect("join").expect("notifier");

    assert_eq!(smtp.messages().len(), 1, "one digest, not one mail per letter");
    println!("fault: a storm of 10000 dead letters | mails received {}", smtp.messages().len());
    let mail = &mails[0];
    assert!(mail.contains("Subject: Signup: 10000 dead letters"), "{}", &mail[..mail.len().min(500)]);
    assert!(mail.contains("To: ops@example.com"));
    assert!(mail.contains("10000  save-prospect: database rejected the row"));
    assert!(mail.contains("Ada Number0 <ada0@example.com>"), "prospect details");
    assert!(mail.contains("and 9950 more"));
    // What receivers require, on the sender's domain.
    let from = settings(&nats, smtp.port(), 3_600).notifier.from;
    let domain = from.rsplit('@').next().expect("a domain").trim_end_matches('>');
    test_support::mail::assert_acceptable(mail, domain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_wait_while_smtp_fails_and_are_mailed_when_it_is_back() {
    let (nats, client, js) = nats().await;
    let port = free_port().expect("port");
    dead_letters(&js, 3).await;
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(Notifier::run(settings(&nats, port, 1), Context::new(CONSUMER_NAME, client, shutdown.clone())));

    // No SMTP server: the send fails (after its retries) and the letters stay.
    let stream = js.get_stream("PROSPECTS_DLQ").await.expect("stream");
    eventually(Duration::from_secs(30), "the letters to be held", || async {
        let info = stream.consumer_info(dead_letter_notifier::CONSUMER_NAME).await.ok()?;
        (info.num_ack_pending == 3).then_some(())
    })
    .await
    .expect("held, not acked");

    let smtp = SmtpServer::start_on(port).await.expect("smtp server");
    let mails = eventually(Duration::from_secs(60), "the digest after recovery", || async {
        let mails = smtp.messages();
        (!mails.is_empty()).then_some(mails)
    })
    .await
    .expect("mail");
    all_acked(&js).await;
    shutdown.cancel();
    task.await.expect("join").expect("notifier");
    assert!(mails[0].contains("Subject: Signup: 3 dead letters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_go_over_starttls_to_a_server_whose_certificate_is_checked() {
    let (nats, client, js) = nats().await;
    let smtp = SmtpServer::start_tls(SmtpTls::StartTls).await.expect("smtp server that requires STARTTLS");
    dead_letters(&js, 2).await;
    let mut settings = settings(&nats, smtp.port(), 1);
    settings.notifier.smtp.host = "localhost".into();
    settings.notifier.smtp.tls = smtp::SmtpTls::Starttls;
    settings.notifier.smtp.ca_file = Some(smtp.certificate());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Notifier::run(settings, Context::new(CONSUMER_NAME, client, shutdown.clone())));
    let mails = eventually(Duration::from_secs(60), "the digest over TLS", || async {
        let mails = smtp.messages();
        (!mails.is_empty()).then_some(mails)
    })
    .await
    .expect("mail");
    all_acked(&js).await;
    shutdown.cancel();
    task.await.expect("join").expect("notifier");
    assert!(mails[0].contains("Subject: Signup: 2 dead letters"));

    // Plain SMTP to another machine is refused before anything is sent.
    let mut plain = self::settings(&nats, smtp.port(), 1);
    plain.notifier.smtp.host = "smtp.example.com".into();
    let client = bus::connect(&plain.nats, "notifier-test").await.expect("connect");
    let error =
        Notifier::run(plain, Context::new(CONSUMER_NAME, client, CancellationToken::new())).await.expect_err("refused");
    assert!(error.to_string().contains("notifier.smtp.tls"), "{error}");
}
