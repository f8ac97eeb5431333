//! crm-webhook against a real nats-server and a real HTTPS endpoint started
//! by the test (an actix-web server behind TLS with a certificate made for
//! the test): events published the way signup-web publishes them arrive
//! signed, failures are retried with growing delays, and an endpoint that
//! keeps failing gets the event dead-lettered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bus::dlq::DeadLetters;
use bus::settings::{ConsumerSettings, NatsSettings};
use bus::{EventContext, Published, Publisher};
use chrono::Utc;
use crm_webhook::{CrmWebhook, Settings};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use messages::{Country, ProspectDeleted, ProspectDetails, ProspectSignedUp, ProspectUpdated, Role};
use runtime::{Context, Service as _};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use standardwebhooks::Webhook;
use test_support::{NatsServer, eventually};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What the endpoint saw, and the statuses it answers with (the front of
/// `plan` first, then `otherwise`).
#[derive(Default)]
struct Log {
    received: Vec<Received>,
    plan: VecDeque<u16>,
    otherwise: u16,
}

/// An HTTPS endpoint on 127.0.0.1: actix-web behind a TLS listener with a
/// self-signed certificate for `127.0.0.1`.
struct Endpoint {
    url: String,
    ca_file: tempfile::NamedTempFile,
    log: Arc<Mutex<Log>>,
    stop: CancellationToken,
}

async fn record(request: HttpRequest, body: web::Bytes, log: web::Data<Mutex<Log>>) -> HttpResponse {
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).expect("header name");
        headers.append(name, HeaderValue::from_bytes(value.as_bytes()).expect("header value"));
    }
    let mut log = log.lock().expect("log");
    log.received.push(Received { at: Instant::now(), headers, body: body.to_vec() });
    let status = log.plan.pop_front().unwrap_or(log.otherwise);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
}

impl Endpoint {
    /// Answers `plan`'s statuses in turn, then `otherwise`.
    async fn start(plan: &[u16], otherwise: u16) -> Self {
        let log = Arc::new(Mutex::new(Log { received: Vec::new(), plan: plan.iter().copied().collect(), otherwise }));
        let data = web::Data::from(Arc::clone(&log));
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(record)))
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind");
        let plain = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);

        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let ca_file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca_file.path(), certified.cert.pem()).expect("write the certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://127.0.0.1:{}/hooks/signup", listener.local_addr().expect("addr").port());
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        () = stop.cancelled() => break,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((tcp, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    // TLS here, HTTP in actix-web: bytes are passed through.
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let Ok(mut backend) = TcpStream::connect(plain).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
                    });
                }
                handle.stop(false).await;
            }
        });
        Self { url, ca_file, log, stop }
    }

    /// From now on, answers `status` (after any plan left).
    fn answer(&self, status: u16) {
        self.log.lock().expect("log").otherwise = status;
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").received.clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(Duration::from_secs(30), &format!("{count} requests at the endpoint"), || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
        .expect("requests")
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// crm-webhook running against `nats` and `endpoint`.
struct Running {
    client: bus::async_nats::Client,
    settings: Settings,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(nats: &NatsServer, endpoint: &Endpoint, trust_endpoint: bool, max_deliver: i64) -> Self {
        let mut settings =
            Settings { nats: NatsSettings { url: nats.url(), ..NatsSettings::default() }, ..Settings::default() };
        let webhook = &mut settings.crm_webhook;
        webhook.url = Some(endpoint.url.clone());
        webhook.secret = Some(SecretString::from(SECRET));
        webhook.ca_file = trust_endpoint.then(|| endpoint.ca_file.path().to_owned());
        webhook.timeout_ms = 2_000;
        webhook.consumer = ConsumerSettings {
            idle_wait_ms: 300,
            retry_base_ms: 300,
            outage_backoff_max_ms: 1_000,
            max_deliver,
            // The stream is the test's own: no need to wait for the consumer
            // before publishing.
            from_start: true,
            ..crm_webhook::WebhookSettings::default().consumer
        };
        webhook.http.port = Some(0);
        let client = bus::connect(&settings.nats, crm_webhook::CONSUMER_NAME).await.expect("connect");
        bus::ensure_stream(&bus::async_nats::jetstream::new(client.clone()), &settings.nats.stream)
            .await
            .expect("stream");
        CrmWebhook::new(&settings.crm_webhook).expect("handler");
        let shutdown = CancellationToken::new();
        let context = Context::new(crm_webhook::CONSUMER_NAME, client.clone(), shutdown.clone());
        let task = tokio::spawn(CrmWebhook::run(settings.clone(), context));
        Self { client, settings, shutdown, task }
    }

    async fn publish<E: messages::Event>(&self, event: &E) -> Published {
        let publisher = Publisher::new(self.client.clone(), "/signup-web", Duration::from_secs(2));
        publisher.publish(event, &EventContext::new()).await.expect("published")
    }

    fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.client.clone(), &self.settings.nats.stream)
    }

    /// Waits until the dead-letter stream holds something; returns it.
    async fn wait_for_dead_letters(&self) -> Vec<bus::dlq::DeadLetter> {
        eventually(Duration::from_secs(30), "a dead letter", || async {
            Some(self.dead_letters().list(10).await.ok()?).filter(|letters| !letters.is_empty())
        })
        .await
        .expect("dead-lettered")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("stops cleanly");
    }
}

fn details(company: Option<&str>) -> ProspectDetails {
    ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@example.com".into(),
        company_name: company.map(str::to_owned),
        country: Country { code: "GB".into(), name: "United Kingdom".into() },
        role: Role { code: "EN".into(), name: "Engineer".into() },
    }
}

fn signed_up() -> ProspectSignedUp {
    ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: details(None),
        signed_up_at: Utc::now(),
        consent: messages::Consent::NotRecorded,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_changed_and_erased_prospects_reach_the_endpoint_signed() {
    let nats = NatsServer::start().await.expect("nats-server");
    let endpoint = Endpoint::start(&[], 204).await;
    let running = Running::start(&nats, &endpoint, true, 3).await;

    let signed_up = signed_up();
    let id = signed_up.prospect_id;
    let updated =
        ProspectUpdated { prospect_id: id, details: details(Some("Analytical Engines")), updated_at: Utc::now() };
    let deleted = ProspectDeleted { prospect_id: id, deleted_at: Utc::now(), disowned: false };
    let published =
        [running.publish(&signed_up).await, running.publish(&updated).await, running.publish(&deleted).await];

    let received = endpoint.wait_for(3).await;
    assert_eq!(received.len(), 3, "one request per event");
    let verifier = Webhook::new(SECRET).expect("secret");
    let expected = [
        ("io.signup.prospect.signedup.v2", signed_up.signed_up_at),
        ("io.signup.prospect.updated.v1", updated.updated_at),
        ("io.signup.prospect.deleted.v1", deleted.deleted_at),
    ];
    for ((request, published), (kind, at)) in received.iter().zip(&published).zip(expected) {
        verifier.verify(&request.body, &request.headers).expect("a valid Standard Webhooks signature");
        assert_eq!(request.header("webhook-id"), published.event_id.to_string(), "the event id, for de-duplication");
        assert!(request.header("webhook-signature").starts_with("v1,"));
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        assert_eq!(body["type"], kind);
        assert_eq!(body["sequence"], published.stream_sequence);
        assert_eq!(body["timestamp"].as_str().map(|t| t.parse::<chrono::DateTime<Utc>>().ok()), Some(Some(at)));
        assert_eq!(body["data"]["prospectId"], id.to_string());
    }
    let data = |i: usize| received[i].json()["data"].clone();
    assert_eq!((data(0)["email"].as_str(), data(0)["country"]["code"].as_str()), (Some("ada@example.com"), Some("GB")));
    assert_eq!(data(0).get("companyName"), None);
    assert_eq!(data(0)["consent"], serde_json::json!({"recorded": false}), "the sign-up as version 2");
    assert_eq!(data(1)["companyName"], "Analytical Engines", "the change carries the details as they are now");
    assert_eq!(data(2).get("email"), None, "an erasure carries no personal data");

    // The signature covers the body and needs the secret.
    let mut tampered = received[1].body.clone();
    tampered.extend_from_slice(b" ");
    assert!(verifier.verify(&tampered, &received[1].headers).is_err(), "a changed body fails");
    let other = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    assert!(other.verify(&received[1].body, &received[1].headers).is_err(), "another secret fails");
    assert!(running.dead_letters().list(10).await.expect("list").is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_with_growing_delays_until_it_answers() {
    let nats = NatsServer::start().await.expect("nats-server");
    // Answers that refuse the event (not "away": see the pause test below).
    let endpoint = Endpoint::start(&[500, 400, 500], 200).await;
    let running = Running::start(&nats, &endpoint, true, 5).await;
    let published = running.publish(&signed_up()).await;

    let received = endpoint.wait_for(4).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == published.event_id.to_string()), "the same event each time: {ids:?}");
    // 300 ms, then 600, then 1200 (each ±20%).
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(230), "waited before retrying: {gaps:?}");
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "each wait longer than the one before: {gaps:?}");
    let verifier = Webhook::new(SECRET).expect("secret");
    for request in &received {
        verifier.verify(&request.body, &request.headers).expect("every attempt is signed afresh");
    }
    assert!(running.dead_letters().list(10).await.expect("list").is_empty(), "delivered, not dead-lettered");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_gets_the_event_dead_lettered() {
    let nats = NatsServer::start().await.expect("nats-server");
    let endpoint = Endpoint::start(&[], 500).await;
    let running = Running::start(&nats, &endpoint, true, 3).await;
    let published = running.publish(&signed_up()).await;

    let letters = running.wait_for_dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.consumer, crm_webhook::CONSUMER_NAME);
    assert_eq!(letter.event_id, published.event_id.to_string());
    assert_eq!(letter.deliveries, "3", "after the whole budget");
    assert!(letter.reason.contains("500"), "the reason says what the endpoint answered: {}", letter.reason);
    assert_eq!(endpoint.received().len(), 3, "one request per delivery");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_certificate_is_not_trusted_gets_nothing() {
    let nats = NatsServer::start().await.expect("nats-server");
    let endpoint = Endpoint::start(&[], 200).await;
    // The system's roots do not include the test's certificate.
    let running = Running::start(&nats, &endpoint, false, 2).await;
    running.publish(&signed_up()).await;

    let letters = running.wait_for_dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("request failed"), "{}", letters[0].reason);
    assert!(endpoint.received().is_empty(), "no request got through TLS: {:?}", endpoint.received());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_away_pauses_the_consumer_and_uses_up_no_delivery() {
    let nats = NatsServer::start().await.expect("nats-server");
    // A CRM behind a gateway that says it is unavailable.
    let endpoint = Endpoint::start(&[], 503).await;
    // Two deliveries would dead-letter an event that failed twice.
    let running = Running::start(&nats, &endpoint, true, 2).await;
    let mut published = Vec::new();
    for _ in 0..3 {
        published.push(running.publish(&signed_up()).await.event_id.to_string());
    }
    let js = bus::async_nats::jetstream::new(running.client.clone());
    let stream = js.get_stream(&running.settings.nats.stream.name).await.expect("stream");
    let consumer_info = || async { stream.consumer_info(crm_webhook::CONSUMER_NAME).await.ok() };
    // The runner keeps trying, past what two deliveries per event would allow...
    endpoint.wait_for(7).await;
    // ... and on NATS 2.11 and later every replica stops fetching meanwhile:
    // the consumer is paused on the server. (On 2.10 only the runner holds.)
    let version = running.client.server_info().version;
    let pausable = !version.starts_with("2.10.");
    if pausable {
        let paused = || async { consumer_info().await?.paused.then_some(()) };
        eventually(Duration::from_secs(30), "the consumer paused", paused)
            .await
            .expect("paused while the endpoint is away");
    }

    // The CRM is back: everything arrives, nothing was dead-lettered or
    // redelivered, and the consumer runs again.
    endpoint.answer(200);
    let delivered = eventually(Duration::from_secs(30), "every event delivered", || async {
        let received = endpoint.received();
        let last = received.len().checked_sub(3)?;
        let ids: Vec<String> = received[last..].iter().map(|r| r.header("webhook-id").to_owned()).collect();
        (ids == published).then_some(received.len())
    })
    .await
    .expect("delivered in order once the endpoint answers");
    assert!(running.dead_letters().list(10).await.expect("list").is_empty(), "an absent CRM dead-letters nothing");
    let info = eventually(Duration::from_secs(10), "the consumer resumed", || async {
        consumer_info().await.filter(|info| !info.paused && info.num_ack_pending == 0)
    })
    .await
    .expect("resumed");
    assert_eq!(info.num_redelivered, 0, "held by the runner, never handed out again");
    println!(
        "endpoint away (nats-server {version}, paused: {pausable}): {delivered} requests, \
         3 events delivered once it answered, 0 dead letters"
    );
    running.stop().await;
}
