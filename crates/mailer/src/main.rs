//! The mailer binary: `run` (default) and `check`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mailer::{Mailer, Settings};

#[derive(Parser)]
#[command(version, about = "Mails confirmation and manage links for Signup (double opt-in)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events until SIGTERM or Ctrl-C (the default).
    Run {
        /// When the durable consumer is created, start at the first event of
        /// the stream (replay the history) instead of at new events.
        #[arg(long)]
        from_start: bool,
    },
    /// Exit 0 when the settings are valid and NATS and the SMTP server are
    /// reachable, 1 otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings: Settings = bus::settings::load().context("loading settings")?;
    bus::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Run { from_start: false }) {
        Command::Run { from_start } => {
            settings.mailer.consumer.from_start |= from_start;
            let shutdown = bus::shutdown::on_signal();
            let client = bus::connect(&settings.nats, mailer::CONSUMER_NAME).await?;
            let handler = Mailer::new(&settings, client.clone())?;
            let bound = settings.shutdown.timeout();
            let work = mailer::run(settings, client.clone(), handler, shutdown.clone());
            if let Some(result) = bus::shutdown::bounded(work, &shutdown, bound).await {
                result?;
            }
            client.drain().await.context("draining NATS")?;
        }
        Command::Check => {
            bus::connection::check(&settings.nats).await?;
            let client = bus::connect(&settings.nats, mailer::CONSUMER_NAME).await?;
            Mailer::new(&settings, client)?.smtp_reachable().await?;
        }
    }
    Ok(())
}
