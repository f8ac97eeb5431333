//! The analytics-indexer binary: `run` (default), `reindex`, `check`.

use analytics_indexer::{Application, Settings};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Indexes prospect events for search and analytics, and serves the dashboard")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Index events and serve the dashboard until SIGTERM or Ctrl-C (the default).
    Run,
    /// Drop the index and its durable consumer, then rebuild by replaying the stream (and keep running).
    Reindex,
    /// Exit 0 when NATS is reachable, 1 otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = bus::settings::load().context("loading settings")?;
    bus::telemetry::init(&settings.log);
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Check = command {
        bus::connection::check(&settings.nats).await?;
        tracing::info!("NATS is reachable");
        return Ok(());
    }
    let shutdown = bus::shutdown::on_signal();
    let client = bus::connect(&settings.nats, analytics_indexer::CONSUMER_NAME).await?;
    if let Command::Reindex = command {
        bus::connection::check(&settings.nats).await.context("reindexing needs NATS")?;
        analytics_indexer::drop_index(&settings, &client).await?;
        tracing::info!("index and consumer dropped; replaying the stream");
    }
    let app = Application::build(&settings, client.clone())?;
    tracing::info!(port = app.port(), "analytics-indexer listening; the dashboard is at /analytics");
    if let Some(result) =
        bus::shutdown::bounded(app.run_until_stopped(shutdown.clone()), &shutdown, settings.shutdown.timeout()).await
    {
        result?;
    }
    client.drain().await.context("draining NATS")?;
    Ok(())
}
