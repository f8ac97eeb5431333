//! The crm-webhook binary: `run` (default) and `check`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crm_webhook::{CrmWebhook, Settings};

#[derive(Parser)]
#[command(version, about = "Forwards new, changed and erased prospects to a CRM webhook")]
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
    /// Exit 0 when the endpoint settings are valid and NATS is reachable, 1 otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings: Settings = bus::settings::load().context("loading settings")?;
    bus::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Run { from_start: false }) {
        Command::Run { from_start } => {
            settings.crm_webhook.consumer.from_start |= from_start;
            let handler = CrmWebhook::new(&settings.crm_webhook)?;
            let shutdown = bus::shutdown::on_signal();
            let client = bus::connect(&settings.nats, crm_webhook::CONSUMER_NAME).await?;
            let bound = settings.shutdown.timeout();
            let work = crm_webhook::run(settings, client.clone(), handler, shutdown.clone());
            if let Some(result) = bus::shutdown::bounded(work, &shutdown, bound).await {
                result?;
            }
            client.drain().await.context("draining NATS")?;
        }
        Command::Check => {
            CrmWebhook::new(&settings.crm_webhook)?;
            bus::connection::check(&settings.nats).await?;
        }
    }
    Ok(())
}
