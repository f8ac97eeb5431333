//! save-prospect's settings (see `runtime::settings` for how they are layered).

use bus::settings::{ConsumerSettings, NatsSettings};
use runtime::ops::OpsSettings;
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use secrecy::SecretString;
use serde::Deserialize;

/// Default port of the health and metrics server.
pub const HTTP_PORT: u16 = 8082;

/// Everything save-prospect reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[database]`: the Postgres database this service owns.
    pub database: DatabaseSettings,
    /// `[nats]`: where the events are.
    pub nats: NatsSettings,
    /// `[save_prospect]`: this handler's own knobs.
    pub save_prospect: SaveProspectSettings,
    /// `[log]`: log format and filter.
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    pub shutdown: ShutdownSettings,
    /// `[links]`: only `confirm_within_secs`, how long a sign-up may stay
    /// unconfirmed before it is erased.
    pub links: links::LinkSettings,
}
runtime::service_settings!(Settings);

/// The database connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Postgres URL (`SIGNUP__DATABASE__URL`); may hold a password, so it is
    /// never logged.
    pub url: SecretString,
    /// Most connections in the pool the handler writes through.
    pub pool_size: usize,
    /// Connections of the `prospects` request-reply service, a pool of its
    /// own: a flood of status requests cannot starve the writes.
    pub service_pool_size: usize,
    /// Longest wait for a connection (opening one, or a free one from the
    /// pool), in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest a statement may run, in milliseconds (Postgres cancels it
    /// then); migrations are not bounded.
    pub statement_timeout_ms: u64,
    /// Create the database when it does not exist (needs the CREATEDB right).
    pub create_if_missing: bool,
    /// Connect over TLS only (unless the URL says `sslmode=disable`); the
    /// server's certificate and name are always verified.
    pub tls: bool,
    /// PEM file of the certificate authorities to trust instead of the
    /// system's (a managed database's CA bundle).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/signup"),
            pool_size: 8,
            service_pool_size: 2,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 15_000,
            create_if_missing: true,
            tls: false,
            ca_file: None,
        }
    }
}

/// The handler's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SaveProspectSettings {
    /// Run pending migrations at start-up (on in development; production
    /// can run `save-prospect migrate` as a separate step and turn this off).
    pub migrate_on_start: bool,
    /// Batch size, waits and retries of the durable consumer.
    pub consumer: ConsumerSettings,
    /// How often to look for sign-ups past their confirmation time, in
    /// seconds.
    pub expiry_check_secs: u64,
    /// `[save_prospect.http]`: where `/healthz`, `/readyz` and `/metrics` are
    /// served (port [`HTTP_PORT`] unless set).
    pub http: OpsSettings,
    /// `[save_prospect.service]`: the NATS identity the `prospects`
    /// request-reply service answers with.
    pub service: ServiceIdentity,
}

/// The NATS identity of the `prospects` service: a user of its own, so that
/// its answers go only where that user may publish (the requesters'
/// inboxes). The requester picks the reply subject; answered with
/// save-prospect's own rights, a reply could land on an erasure's subject or
/// the JetStream API. Unset (development, a server without users): the
/// service shares save-prospect's connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceIdentity {
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (`SIGNUP__SAVE_PROSPECT__SERVICE__PASSWORD`, or a file with
    /// `SIGNUP_FILE__SAVE_PROSPECT__SERVICE__PASSWORD`).
    pub password: Option<SecretString>,
    /// Path of a `.creds` file (JWT + NKey), instead of a user and password.
    pub creds_file: Option<std::path::PathBuf>,
}

impl ServiceIdentity {
    /// The NATS settings of the service's own connection, when it has one:
    /// `nats` with this identity in place of save-prospect's.
    pub fn nats(&self, nats: &NatsSettings) -> Option<NatsSettings> {
        (self.user.is_some() || self.creds_file.is_some()).then(|| NatsSettings {
            user: self.user.clone(),
            password: self.password.clone(),
            token: None,
            creds_file: self.creds_file.clone(),
            inbox_prefix: None,
            ..nats.clone()
        })
    }
}

impl Default for SaveProspectSettings {
    fn default() -> Self {
        // Two batches in flight: one is applied while the other commits.
        Self {
            migrate_on_start: true,
            expiry_check_secs: 60,
            consumer: ConsumerSettings { concurrency: 2, ..ConsumerSettings::default() },
            http: OpsSettings::local(HTTP_PORT),
            service: ServiceIdentity::default(),
        }
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
