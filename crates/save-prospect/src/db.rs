//! The database: connection pool, creation when missing, embedded migrations.

use std::time::Duration;

use anyhow::Context as _;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::settings::DatabaseSettings;

/// A pending e-mail change: its prospect and the request's sequence.
#[derive(diesel::QueryableByName)]
pub(crate) struct Change {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub(crate) id: uuid::Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) seq: i64,
}

/// The connection pool every query goes through.
pub type Pool = DeadPool<AsyncPgConnection>;

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!();

/// Arbitrary, fixed key of the advisory lock that serialises migrations
/// when several instances start at once.
const MIGRATION_LOCK: i64 = 0x5349_474e_5550; // "SIGNUP"

/// How connections are opened: plain, or over TLS. With TLS on, a connection
/// is refused unless it is encrypted (the URL's `sslmode` may only turn TLS
/// off with `disable`; `prefer`, the default, is treated as `require`, since
/// it could be silently downgraded), and the server's certificate and name
/// are always verified against the system's roots or the configured CA file.
#[derive(Clone)]
pub struct Connector {
    tls: Option<MakeRustlsConnect>,
    connect_timeout: Duration,
    statement_timeout: Duration,
}

impl Connector {
    /// Plain connections only (a URL asking for `sslmode=require` fails),
    /// with the default timeouts.
    pub fn plain() -> Self {
        let defaults = DatabaseSettings::default();
        Self {
            tls: None,
            connect_timeout: Duration::from_millis(defaults.connect_timeout_ms),
            statement_timeout: Duration::from_millis(defaults.statement_timeout_ms),
        }
    }

    /// The same, with other timeouts: opening a connection (and waiting for
    /// one from a pool), and running one statement.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, statement: Duration) -> Self {
        (self.connect_timeout, self.statement_timeout) = (connect, statement);
        self
    }

    /// From `[database]`: TLS when `tls` is on; `ca_file` replaces the
    /// system's roots.
    pub fn from_settings(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let plain = Self::plain().with_timeouts(
            Duration::from_millis(settings.connect_timeout_ms),
            Duration::from_millis(settings.statement_timeout_ms),
        );
        if !settings.tls {
            return Ok(plain);
        }
        let config = bus::tls::client_config(settings.ca_file.as_deref(), "database.ca_file")?;
        Ok(Self { tls: Some(MakeRustlsConnect::new(config)), ..plain })
    }

    /// Opens one connection, within the connect timeout, and bounds its
    /// statements by the statement timeout.
    pub async fn connect(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let mut conn = tokio::time::timeout(self.connect_timeout, self.open(url)).await.map_err(|_| {
            ConnectionError::BadConnection(format!("no connection to Postgres within {:?}", self.connect_timeout))
        })??;
        let timeout = format!("SET statement_timeout = {}", self.statement_timeout.as_millis().max(1));
        diesel::sql_query(timeout).execute(&mut conn).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    async fn open(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let Some(tls) = &self.tls else { return AsyncPgConnection::establish(url).await };
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
        if config.get_ssl_mode() == SslMode::Prefer {
            config.ssl_mode(SslMode::Require);
        }
        let (client, connection) =
            config.connect(tls.clone()).await.map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// Builds a pool of at most `size` connections, opened through `connector`
/// (its TLS and timeouts). Waiting for a connection is bounded by the
/// connect timeout too. Connections are opened lazily, so this succeeds
/// while Postgres is down.
pub fn pool(url: &str, size: usize, connector: &Connector) -> anyhow::Result<Pool> {
    let mut config = ManagerConfig::default();
    let setup = connector.clone();
    config.custom_setup = Box::new(move |url| {
        let connector = setup.clone();
        let url = url.to_owned();
        Box::pin(async move { connector.connect(&url).await })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    DeadPool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(connector.connect_timeout))
        .create_timeout(Some(connector.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the connection pool")
}

/// Creates the database named in `url` unless it exists, connecting to the
/// server's `postgres` database to do so. Two instances racing are fine.
/// The connector's statement timeout does not apply here.
pub async fn create_database_if_missing(url: &str, connector: &Connector) -> anyhow::Result<()> {
    let mut admin_url = url::Url::parse(url).context("parsing the database URL")?;
    let name = admin_url.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(!name.is_empty(), "the database URL names no database");
    admin_url.set_path("/postgres");
    let mut admin =
        connector.connect(admin_url.as_str()).await.context("connecting to Postgres to check the database exists")?;
    // `CREATE DATABASE` copies a template and may wait for a checkpoint: on
    // a busy server that outlasts a timeout meant for queries. Like the
    // migrations, it runs once, at start-up, with no statement timeout.
    diesel::sql_query("SET statement_timeout = 0")
        .execute(&mut admin)
        .await
        .context("preparing to create the database")?;

    if database_exists(&mut admin, &name).await? {
        return Ok(());
    }
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(create).execute(&mut admin).await {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another instance may have created it between our check and our
        // CREATE (Postgres then reports a unique violation in its catalog).
        Err(_) if database_exists(&mut admin, &name).await? => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating database {name}")),
    }
}

async fn database_exists(admin: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        #[allow(dead_code)]
        found: i32,
    }
    let found = diesel::sql_query("SELECT 1 AS found FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_results::<Found>(admin)
        .await
        .context("looking up the database")?;
    Ok(!found.is_empty())
}

/// Checks that the database was built from the stream `identity` names
/// (`bus::stream::identity`), recording it the first time. Against another
/// stream — recreated, restored, another server's — the answer is an error
/// that says what to do: its sequences start again, so every newer event
/// would look older than what the database holds and be ignored.
pub async fn check_stream_origin(pool: &Pool, identity: &str) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Origin {
        #[diesel(sql_type = diesel::sql_types::Text)]
        identity: String,
    }
    let mut conn = pool.get().await.context("connecting to check the stream's origin")?;
    diesel::sql_query("INSERT INTO stream_origin (identity) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::Text, _>(identity)
        .execute(&mut conn)
        .await?;
    let recorded: Origin = diesel::sql_query("SELECT identity FROM stream_origin").get_result(&mut conn).await?;
    anyhow::ensure!(
        recorded.identity == identity,
        "this database was built from the events of stream {:?}, but NATS now has {identity:?}: the stream was \
         recreated, restored, or belongs to another server, and its sequences start again, so newer events would \
         look older and be ignored. Point SIGNUP__NATS__URL at the stream this database was built from, or rebuild: \
         drop the database (save-prospect creates it again) and let it replay the stream",
        recorded.identity
    );
    Ok(())
}

/// Runs pending migrations under an advisory lock; returns the versions run.
/// Needs the multi-threaded Tokio runtime (diesel's migrations are blocking,
/// and run on a blocking thread).
pub async fn migrate(pool: &Pool) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.get().await.context("connecting to run migrations")?;
    // A migration may rewrite a large table: no statement timeout here.
    diesel::sql_query("SET statement_timeout = 0").execute(&mut conn).await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(&mut conn).await?;
    // diesel's migrations are blocking: on a blocking thread of their own,
    // never in place on a worker (diesel-async's harness would block the
    // whole task, and a `join!` beside it hung holding the lock).
    let (result, mut conn) = tokio::task::spawn_blocking(move || {
        let mut harness = AsyncMigrationHarness::new(conn);
        let result = harness
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.into_iter().map(|v| v.to_string()).collect::<Vec<_>>())
            .map_err(|e| anyhow::anyhow!(e).context("running migrations"));
        (result, harness.into_inner())
    })
    .await
    .context("the migrations' thread")?;
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn).await?;
    // Not back into the pool: it has no statement timeout.
    drop(deadpool::managed::Object::take(conn));
    result
}
