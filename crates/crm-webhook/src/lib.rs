//! crm-webhook: forwards every new, confirmed, changed and erased prospect to a CRM's
//! HTTPS endpoint as a signed webhook. Built with `scripts/new-handler`.
//!
//! Its durable consumer `crm-webhook` receives [`ProspectEvent`]s (signed up,
//! updated, deleted) in stream order and POSTs each as JSON:
//!
//! ```json
//! {"type": "io.signup.prospect.updated.v1", "timestamp": "2026-11-22T10:00:00Z",
//!  "sequence": 42, "data": {"prospectId": "…", "firstName": "Ada", …, "updatedAt": "…"}}
//! ```
//!
//! `data` is the event's payload as the contract (`messages`) defines it,
//! `timestamp` when it happened, and `sequence` its position in the stream,
//! which orders the events about one prospect even when a retry delivers an
//! older one late.
//!
//! Requests are signed as [Standard Webhooks](https://www.standardwebhooks.com/)
//! describe, so a receiver can check them with any of that project's
//! libraries: `webhook-id` is the event id (the same on every retry — the key
//! for de-duplication), `webhook-timestamp` the sending time, and
//! `webhook-signature` `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with
//! the shared `whsec_…` secret.
//!
//! Delivery is at least once. Any answer but 2xx, a timeout or a connection or
//! TLS failure fails the event; the consumer runner retries it with a growing
//! delay (2 s doubling to 5 min, about 13 minutes in all by default) and after
//! `max_deliver` attempts copies it to the dead-letter stream, where
//! `signup dlq` lists and replays it.
//!
//! # Layout
//! - [`Settings`]: `[nats]`, `[log]`, `[shutdown]` and `[crm_webhook]`.
//! - [`CrmWebhook`]: the handler.
//! - its [`Service`]: the binary (`run [--from-start]`, `check`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bus::settings::{ConsumerSettings, NatsSettings};
use bus::{Delivery, Handler, HandlerError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use messages::ProspectEvent;
use runtime::ops::OpsSettings;
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use runtime::{Context, NoCommands, Service};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook};

/// The durable consumer's name: this crate's name.
pub const CONSUMER_NAME: &str = "crm-webhook";

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = 8084;

/// Everything this handler reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[crm_webhook]`: the endpoint and this handler's knobs.
    pub crm_webhook: WebhookSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
}
runtime::service_settings!(Settings);

/// `[crm_webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// The endpoint (`SIGNUP__CRM_WEBHOOK__URL`): `https://…`; plain `http://`
    /// only to this machine (`localhost`, `127.0.0.1`, `::1`), for
    /// development.
    pub url: Option<String>,
    /// The signing secret shared with the receiver, `whsec_` + base64 of at
    /// least 24 random bytes (`SIGNUP__CRM_WEBHOOK__SECRET`, or a file with
    /// `SIGNUP_FILE__CRM_WEBHOOK__SECRET`).
    pub secret: Option<SecretString>,
    /// Trust only this CA (PEM) for the endpoint's certificate instead of
    /// the system's roots: for a CRM behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, in milliseconds.
    pub timeout_ms: u64,
    /// Batch size, waits, the retry schedule and the retry budget; a new
    /// consumer starts at new events unless `from_start` (or
    /// `run --from-start`) asks for the whole history.
    pub consumer: ConsumerSettings,
    /// `[crm_webhook.http]`: where `/healthz`, `/readyz` and `/metrics` are
    /// served (port [`HTTP_PORT`] unless set).
    pub http: OpsSettings,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            ca_file: None,
            timeout_ms: 10_000,
            consumer: ConsumerSettings {
                // Requests go out one at a time, in order: small batches keep
                // a batch well inside the ack wait even when every request
                // takes its whole timeout.
                batch_size: 10,
                ack_wait_secs: 150,
                // A CRM outage lasts minutes, not seconds: 2 s doubling to
                // 5 min, ten attempts (about 13 minutes) before dead-lettering.
                retry_base_ms: 2_000,
                retry_max_ms: 300_000,
                max_deliver: 10,
                from_start: false,
                ..ConsumerSettings::default()
            },
            http: OpsSettings::local(HTTP_PORT),
        }
    }
}

/// Checks an endpoint: HTTPS, or HTTP to this machine only.
pub fn endpoint(url: &str) -> anyhow::Result<url::Url> {
    let parsed: url::Url = url.parse().with_context(|| format!("crm_webhook.url {url:?} is not a URL"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        "http" => anyhow::bail!("crm_webhook.url must use https:// (plain http:// only to localhost): {url}"),
        other => anyhow::bail!("crm_webhook.url must be an https:// URL, not {other}://"),
    }
}

/// The handler: one signed POST per event.
#[derive(Clone)]
pub struct CrmWebhook {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    timeout: Duration,
    signer: std::sync::Arc<Webhook>,
}

impl std::fmt::Debug for CrmWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("CrmWebhook").field("url", &self.url.to_string()).finish_non_exhaustive()
    }
}

/// `User-Agent` of the requests.
const AGENT: &str = concat!("signup-crm-webhook/", env!("CARGO_PKG_VERSION"));

impl CrmWebhook {
    /// Checks the settings and builds the HTTPS client.
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Self> {
        // An empty value (a compose variable left blank) counts as not set.
        let url = settings.url.as_deref().map(str::trim).filter(|url| !url.is_empty());
        let url = endpoint(url.context("crm_webhook.url is not set (SIGNUP__CRM_WEBHOOK__URL)")?)?;
        let secret = settings.secret.as_ref().context("crm_webhook.secret is not set (SIGNUP__CRM_WEBHOOK__SECRET)")?;
        let secret = secret.expose_secret();
        anyhow::ensure!(secret.starts_with("whsec_"), "crm_webhook.secret must look like whsec_<base64>");
        let signer = Webhook::new(secret).map_err(|_| anyhow::anyhow!("crm_webhook.secret is not whsec_<base64>"))?;
        let tls = bus::tls::client_config(settings.ca_file.as_deref(), "crm_webhook.ca_file")?;
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        // hyper follows no redirects: a 3xx is a failure, and personal data is
        // never re-sent somewhere else.
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            http,
            url: url.as_str().parse().context("crm_webhook.url")?,
            timeout: Duration::from_millis(settings.timeout_ms),
            signer: std::sync::Arc::new(signer),
        })
    }

    /// Sends one event (if it is one a CRM gets); `Err` says why it did not
    /// arrive.
    async fn send(&self, delivery: &Delivery<ProspectEvent>) -> Result<(), NotDelivered> {
        let Some(payload) = Payload::of(delivery) else { return Ok(()) };
        let refused = |e: anyhow::Error| NotDelivered::Refused(e);
        let body = serde_json::to_vec(&payload).map_err(|e| refused(e.into()))?;
        let id = delivery.meta.event_id.to_string();
        let now = Utc::now().timestamp();
        let signature = self.signer.sign(&id, now, &body).map_err(|e| refused(anyhow::anyhow!("signing: {e:?}")))?;
        let request = http::Request::post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(AGENT))
            .header(HEADER_WEBHOOK_ID, id)
            .header(HEADER_WEBHOOK_TIMESTAMP, now.to_string())
            .header(HEADER_WEBHOOK_SIGNATURE, signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| refused(e.into()))?;
        let answered = tokio::time::timeout(self.timeout, async {
            let response = self.http.request(request).await?;
            let status = response.status();
            // Read the (ignored) answer, so the connection can be reused.
            response.into_body().collect().await?;
            anyhow::Ok(status)
        })
        .await;
        let status = match answered {
            Ok(Ok(status)) => Some(status),
            Ok(Err(_)) | Err(_) => None,
        };
        let outcome = match status {
            Some(status) if status.is_success() => "2xx",
            Some(status) if status.is_client_error() => "4xx",
            Some(_) => "5xx",
            None => "error",
        };
        bus::metrics::counter!("signup_webhook_requests_total", "outcome" => outcome).increment(1);
        match answered {
            Err(_) => Err(NotDelivered::Down(anyhow::anyhow!("request failed: no answer within {:?}", self.timeout))),
            Ok(Err(error)) if unreachable(&error) => {
                Err(NotDelivered::Down(anyhow::anyhow!("request failed: {error:#}")))
            }
            // TLS refused (an untrusted certificate), a malformed answer, …
            Ok(Err(error)) => Err(NotDelivered::Refused(anyhow::anyhow!("request failed: {error:#}"))),
            Ok(Ok(status)) if status.is_success() => Ok(()),
            // Overloaded, or a gateway in front of a receiver that is away.
            Ok(Ok(
                status @ (StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT),
            )) => Err(NotDelivered::Down(anyhow::anyhow!("the endpoint answered {status}"))),
            Ok(Ok(status)) => Err(NotDelivered::Refused(anyhow::anyhow!("the endpoint answered {status}"))),
        }
    }
}

/// Whether a failed request means the receiver is away: the connection
/// was refused, reset or timed out (and not, say, a TLS handshake that
/// found a certificate it cannot trust).
fn unreachable(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind as Kind;
    error.chain().filter_map(|cause| cause.downcast_ref::<std::io::Error>()).any(|io| {
        matches!(
            io.kind(),
            Kind::ConnectionRefused
                | Kind::ConnectionReset
                | Kind::ConnectionAborted
                | Kind::TimedOut
                | Kind::NotConnected
                | Kind::HostUnreachable
                | Kind::NetworkUnreachable
                | Kind::BrokenPipe
        )
    })
}

/// Why a webhook did not arrive.
enum NotDelivered {
    /// The receiver is away: no answer, or 429/502/503/504. Nothing is wrong
    /// with the event; the runner holds the batch and pauses the consumer
    /// until the receiver answers again, without using up deliveries.
    Down(anyhow::Error),
    /// The receiver answered and did not take it (another status), or the
    /// request could not be made: retried, then dead-lettered.
    Refused(anyhow::Error),
}

/// The JSON body of a webhook.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: DateTime<Utc>,
    sequence: u64,
    data: Data<'a>,
}

/// The event's own payload.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    SignedUp(&'a messages::ProspectSignedUp),
    Updated(&'a messages::ProspectUpdated),
    Deleted(&'a messages::ProspectDeleted),
    Confirmed(&'a messages::ProspectConfirmed),
}

impl<'a> Payload<'a> {
    /// The webhook of an event that changes a prospect; `None` for the
    /// events that only ask for a mail (an e-mail change waiting for its new
    /// address, a new manage link): they change nothing a CRM holds.
    fn of(delivery: &'a Delivery<ProspectEvent>) -> Option<Self> {
        let data = match &delivery.event {
            ProspectEvent::SignedUp(e) => Data::SignedUp(e),
            ProspectEvent::Updated(e) => Data::Updated(e),
            ProspectEvent::Deleted(e) => Data::Deleted(e),
            ProspectEvent::Confirmed(e) => Data::Confirmed(e),
            ProspectEvent::EmailChangeRequested(_) | ProspectEvent::ManageLinkRequested(_) => return None,
        };
        let timestamp = delivery.event.occurred_at();
        Some(Self { kind: delivery.event.ce_type(), timestamp, sequence: delivery.meta.stream_sequence, data })
    }
}

impl Handler for CrmWebhook {
    type Event = ProspectEvent;

    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        // In stream order, one at a time, so a receiver sees a prospect's
        // events in the order they happened (retries aside; see `sequence`).
        for delivery in batch {
            match self.send(delivery).await {
                Ok(()) => {}
                Err(NotDelivered::Down(error)) => return Err(HandlerError::Unavailable(error)),
                Err(NotDelivered::Refused(error)) => {
                    tracing::warn!(event_id = %delivery.meta.event_id, prospect_id = %delivery.event.prospect_id(),
                        error = %format!("{error:#}"), "webhook not delivered; it will be retried");
                    return Err(HandlerError::Transient(error));
                }
            }
            tracing::debug!(event_id = %delivery.meta.event_id, "webhook delivered");
        }
        Ok(())
    }
}

impl Service for CrmWebhook {
    const NAME: &'static str = CONSUMER_NAME;
    const ABOUT: &'static str = "Forwards new, changed and erased prospects to a CRM webhook";
    const OFFERS_FROM_START: bool = true;
    type Settings = Settings;
    type Command = NoCommands;

    async fn run(settings: Settings, context: Context) -> anyhow::Result<()> {
        let webhook = &settings.crm_webhook;
        let handler = CrmWebhook::new(webhook)?;
        context.consume(&settings.nats.stream, &webhook.consumer, &webhook.http, HTTP_PORT, handler).await
    }

    async fn check(settings: &Settings) -> anyhow::Result<()> {
        CrmWebhook::new(&settings.crm_webhook).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_except_on_this_machine() {
        assert!(endpoint("https://crm.example.com/hooks/signup").is_ok());
        assert!(endpoint("http://localhost:9000/hook").is_ok());
        assert!(endpoint("http://127.0.0.1:9000/hook").is_ok());
        assert!(endpoint("http://[::1]:9000/hook").is_ok());
        let refused = endpoint("http://crm.example.com/hook").expect_err("plain http elsewhere");
        assert!(refused.to_string().contains("https://"), "{refused}");
        assert!(endpoint("http://10.0.0.5/hook").is_err());
        assert!(endpoint("ftp://crm.example.com/").is_err());
        assert!(endpoint("crm.example.com").is_err());
    }

    #[test]
    fn the_settings_must_name_an_endpoint_and_a_well_formed_secret() {
        let mut settings = WebhookSettings::default();
        let error = CrmWebhook::new(&settings).expect_err("no url");
        assert!(error.to_string().contains("crm_webhook.url is not set"), "{error}");
        settings.url = Some(" ".into());
        let error = CrmWebhook::new(&settings).expect_err("a blank url");
        assert!(error.to_string().contains("crm_webhook.url is not set"), "{error}");
        settings.url = Some("https://crm.example.com/hook".into());
        let error = CrmWebhook::new(&settings).expect_err("no secret");
        assert!(error.to_string().contains("crm_webhook.secret"), "{error}");
        for bad in ["plain-text-secret", "whsec_not base64!"] {
            settings.secret = Some(SecretString::from(bad));
            let error = CrmWebhook::new(&settings).expect_err("bad secret");
            assert!(error.to_string().contains("whsec_"), "{error}");
        }
        settings.secret = Some(SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let handler = CrmWebhook::new(&settings).expect("valid settings");
        assert!(!format!("{handler:?}").contains("MfKQ9r8"), "Debug shows no secret");
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
