//! The save-prospect binary: `run` (default), `migrate`, `check`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use save_prospect::{Settings, db};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(version, about = "Saves prospects from NATS JetStream to PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events until SIGTERM or Ctrl-C (the default).
    Run,
    /// Create the database if missing and run pending migrations, then exit.
    Migrate,
    /// Exit 0 when Postgres and NATS are reachable, 1 otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = bus::settings::load().context("loading settings")?;
    bus::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = bus::shutdown::on_signal();
            let client = bus::connect(&settings.nats, save_prospect::CONSUMER_NAME).await?;
            let bound = settings.shutdown.timeout();
            if let Some(result) =
                bus::shutdown::bounded(save_prospect::run(settings, client.clone(), shutdown.clone()), &shutdown, bound)
                    .await
            {
                result?;
            }
            client.flush().await.ok();
            client.drain().await.context("draining NATS")?;
        }
        Command::Migrate => {
            let url = settings.database.url.expose_secret();
            let connector = db::Connector::from_settings(&settings.database)?;
            db::create_database_if_missing(url, &connector).await?;
            let ran = db::migrate(&db::pool(url, 1, &connector)?).await?;
            tracing::info!(migrations = ?ran, "database is up to date");
        }
        Command::Check => {
            let connector = db::Connector::from_settings(&settings.database)?;
            let _conn =
                connector.connect(settings.database.url.expose_secret()).await.context("Postgres is not reachable")?;
            bus::connection::check(&settings.nats).await?;
            tracing::info!("Postgres and NATS are reachable");
        }
    }
    Ok(())
}
