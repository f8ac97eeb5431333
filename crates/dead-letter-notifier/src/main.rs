//! The dead-letter-notifier binary: `run` (default) or `check`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dead_letter_notifier::Settings;

#[derive(Parser)]
#[command(version, about = "E-mails an operator a digest of new dead letters")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the dead-letter stream until SIGTERM or Ctrl-C (the default).
    Run,
    /// Exit 0 when NATS is reachable, 1 otherwise.
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
            let client = bus::connect(&settings.nats, dead_letter_notifier::CONSUMER_NAME).await?;
            let bound = settings.shutdown.timeout();
            let work = dead_letter_notifier::run(settings, client.clone(), shutdown.clone());
            if let Some(result) = bus::shutdown::bounded(work, &shutdown, bound).await {
                result?;
            }
            client.drain().await.context("draining NATS")?;
        }
        Command::Check => bus::connection::check(&settings.nats).await?,
    }
    Ok(())
}
