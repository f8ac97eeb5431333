//! Connecting to NATS: retry the first connection in the background,
//! reconnect forever, log every connection event.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use secrecy::ExposeSecret;

use crate::backoff::Backoff;
use crate::settings::NatsSettings;

/// The pause before the second and later reconnect attempts.
static RECONNECT: std::sync::LazyLock<Backoff> =
    std::sync::LazyLock::new(|| Backoff::new(Duration::from_millis(100), Duration::from_secs(2)));

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
            match u32::try_from(attempts) {
                Ok(0) => Duration::ZERO,
                attempts => RECONNECT.delay_after(attempts.unwrap_or(u32::MAX) - 1),
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

/// The oldest nats-server release Signup supports: key-value buckets with
/// direct gets, consumer settings and metadata of 2.10. Features of later
/// releases (consumer pause, 2.11) are used when the server has them.
pub const MIN_SERVER_VERSION: &str = "2.10.0";

/// Refuses a server older than [`MIN_SERVER_VERSION`], saying which it is
/// (the server the client is connected to, so only once connected).
pub fn require_supported_server(client: &Client) -> anyhow::Result<()> {
    let Some(info) = client.try_server_info() else { anyhow::bail!("not connected to NATS yet") };
    supported(&info.version)
}

fn supported(version: &str) -> anyhow::Result<()> {
    let minimum = semver::Version::parse(MIN_SERVER_VERSION).expect("a valid minimum");
    let found = semver::Version::parse(version.trim_start_matches('v'))
        .with_context(|| format!("the NATS server announces an unreadable version {version:?}"))?;
    // A pre-release of the minimum (2.10.0-RC.1) is older than it.
    anyhow::ensure!(
        found >= minimum,
        "the NATS server is nats-server {version}; Signup needs {MIN_SERVER_VERSION} or later (see \"NATS support \
         policy\" in docs/operations.md): upgrade it, or point SIGNUP__NATS__URL at a current one"
    );
    Ok(())
}

/// Whether the client is connected right now.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == State::Connected
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn servers_older_than_2_10_are_refused_by_name() {
        let refused = supported("2.9.10").expect_err("2.9 is too old").to_string();
        assert!(refused.contains("nats-server 2.9.10") && refused.contains("2.10.0 or later"), "{refused}");
        assert!(supported("2.10.0-RC.3").is_err(), "a release candidate of 2.10 is older than 2.10.0");
        assert!(supported("not a version").is_err());
        for version in ["2.10.0", "2.10.26", "2.11.0", "2.15.1", "3.0.0"] {
            supported(version).unwrap_or_else(|e| panic!("{version}: {e}"));
        }
    }
}
