//! Connecting to NATS: retry the first connection in the background,
//! reconnect forever, log every connection event.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use secrecy::ExposeSecret;

use crate::settings::NatsSettings;

/// Connects to NATS as `name` (shown in the server's connection list).
///
/// Returns at once: when the server is not reachable yet the client keeps
/// trying in the background, so a service can start (and report not ready)
/// before NATS does. Fails only on settings that can never work, such as an
/// unreadable credentials file or a malformed URL.
pub async fn connect(settings: &NatsSettings, name: &str) -> anyhow::Result<Client> {
    let options = options(settings, name).await?.retry_on_initial_connect().max_reconnects(None);
    options.connect(servers(settings)?).await.context("connecting to NATS")
}

/// Connects once, without retrying, and waits for the server to answer: for
/// health checks (`<binary> check`).
pub async fn check(settings: &NatsSettings) -> anyhow::Result<()> {
    let client =
        options(settings, "check").await?.connect(servers(settings)?).await.context("NATS is not reachable")?;
    client.flush().await.context("NATS did not answer")?;
    Ok(())
}

fn servers(settings: &NatsSettings) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    settings
        .url
        .split(',')
        .map(|url| url.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing NATS url {:?}", settings.url))
}

async fn options(settings: &NatsSettings, name: &str) -> anyhow::Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(settings.inbox_prefix())
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .request_timeout(Some(settings.request_timeout()))
        .reconnect_delay_callback(|attempts| {
            // 0 ms, then 100 ms doubling up to 2 s: quick to recover, gentle when down for long.
            let exp = u32::try_from(attempts).unwrap_or(u32::MAX).min(5);
            if attempts == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(100 * 2u64.pow(exp - 1)).min(Duration::from_secs(2))
            }
        })
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("NATS connected"),
                Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                Event::ClientError(error) => tracing::warn!(%error, "NATS client error"),
                Event::ServerError(error) => tracing::warn!(%error, "NATS server error"),
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        });
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.expose_secret().to_owned());
    }
    let tls = &settings.tls;
    if tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
        (None, None) => {}
        _ => anyhow::bail!("nats.tls.cert_file and nats.tls.key_file must be set together"),
    }
    if let Some(path) = &settings.creds_file {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials file {}", path.display()))?;
    }
    Ok(options)
}

/// Whether the client is connected right now.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == State::Connected
}
