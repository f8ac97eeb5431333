//! The database: connection pool, creation when missing, embedded migrations.

use anyhow::Context as _;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The connection pool every query goes through.
pub type Pool = DeadPool<AsyncPgConnection>;

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!();

/// Arbitrary, fixed key of the advisory lock that serialises migrations
/// when several instances start at once.
const MIGRATION_LOCK: i64 = 0x5349_474e_5550; // "SIGNUP"

/// Builds a pool of at most `size` connections. Connections are opened
/// lazily, so this succeeds while Postgres is down.
pub fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    DeadPool::builder(manager).max_size(size.max(1)).build().context("building the connection pool")
}

/// Creates the database named in `url` unless it exists, connecting to the
/// server's `postgres` database to do so. Two instances racing are fine.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let mut admin_url = url::Url::parse(url).context("parsing the database URL")?;
    let name = admin_url.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(!name.is_empty(), "the database URL names no database");
    admin_url.set_path("/postgres");
    let mut admin = AsyncPgConnection::establish(admin_url.as_str())
        .await
        .context("connecting to Postgres to check the database exists")?;

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

/// Runs pending migrations under an advisory lock; returns the versions run.
/// Needs the multi-threaded Tokio runtime (diesel's migrations are blocking).
pub async fn migrate(pool: &Pool) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.get().await.context("connecting to run migrations")?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(&mut conn).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let result = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.into_iter().map(|v| v.to_string()).collect::<Vec<_>>())
        .map_err(|e| anyhow::anyhow!(e).context("running migrations"));
    let mut conn = harness.into_inner();
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn).await?;
    result
}
