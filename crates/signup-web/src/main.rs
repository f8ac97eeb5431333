//! The signup-web binary: `serve` (default) or `check`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use signup_web::{Application, Settings};

#[derive(Parser)]
#[command(version, about = "The Signup web tier: sign-up form and JSON API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Exit 0 when NATS is reachable, 1 otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = bus::settings::load().context("loading settings")?;
    bus::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = bus::shutdown::on_signal();
            let client = bus::connect(&settings.nats, "signup-web").await?;
            let app = Application::build(&settings, client.clone(), &shutdown)?;
            tracing::info!(port = app.port(), "signup-web listening; the form is at /signup");
            app.run_until_stopped(shutdown).await.context("serving HTTP")?;
            client.flush().await.ok();
            client.drain().await.context("draining NATS")?;
        }
        Command::Check => {
            bus::connection::check(&settings.nats).await?;
            tracing::info!("NATS is reachable");
        }
    }
    Ok(())
}
