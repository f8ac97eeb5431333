//! `signup`: operator commands. `signup streams` creates or updates the
//! event and dead-letter streams (a deployment's set-up step, run with a NATS
//! user allowed to manage streams); `signup dlq …` lists, shows, replays and
//! purges dead letters (see `bus::dlq`); `signup trace <prospect id or
//! e-mail>` shows where each of a prospect's events stands with each handler
//! (see `bus::ledger`); `signup suppression check|remove <address>` tells
//! whether an address is on the suppression list ("it wasn't me") and lifts
//! it; `signup prospect export <id>` prints everything held about a
//! prospect (the manage page's "Download my data"); `signup check` tells
//! whether NATS answers. NATS settings come from the same configuration as
//! the services (`SIGNUP__NATS__URL`, …), and the link secret
//! (`SIGNUP__LINKS__SECRET`) for the suppression list's digests.
//!
//! # Layout
//! - here: the command line and the dispatch.
//! - one module per command: [`streams`], [`trace`], [`prospect`],
//!   [`suppression`], [`dlq`]; [`shown`]: outside text made safe for a
//!   terminal.

mod dlq;
mod prospect;
mod shown;
mod streams;
mod suppression;
mod trace;

use std::io::Write as _;

use anyhow::Context as _;
use bus::dlq::DeadLetters;
use bus::settings::NatsSettings;
use clap::{Parser, Subcommand};
use dlq::Dlq;
use prospect::Prospect;
use serde::Deserialize;
use suppression::Suppression;

#[derive(Parser)]
#[command(name = "signup", version, about = "Signup operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the event and dead-letter streams, or update them to the
    /// configured settings ([nats.stream]), then exit.
    Streams,
    /// Exit 0 when NATS is reachable, non-zero otherwise.
    Check,
    /// Dead letters: events a handler gave up on.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Where is a sign-up? Each event of one prospect and, for each
    /// handler, applied, pending, in flight or dead-lettered.
    Trace {
        /// The prospect id, or the e-mail address it signed up with (asked
        /// of the prospects service, so only for a saved prospect).
        prospect: String,
        /// The ledger as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One prospect's data.
    #[command(subcommand)]
    Prospect(Prospect),
    /// The suppression list: addresses whose owners said "it wasn't me",
    /// kept as digests (never the address) for `mailer.suppress_days`.
    #[command(subcommand)]
    Suppression(Suppression),
}

/// What the commands read from configuration.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[nats]`.
    pub nats: NatsSettings,
    /// `[links]`: the secret of the suppression list's digests.
    pub links: links::LinkSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = runtime::settings::load().context("loading settings")?;
    bus::connection::check(&settings.nats).await?;
    let client = bus::connect(&settings.nats, "signup-cli").await?;
    // Connected, not only connecting: a request would otherwise be refused.
    client.flush().await.context("NATS did not answer")?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Streams => streams::run(&client, &settings, &mut out).await?,
        // Connecting above already checked it.
        Command::Check => writeln!(out, "NATS is reachable")?,
        Command::Trace { prospect, json } => trace::run(&client, &settings, &prospect, json, &mut out).await?,
        Command::Prospect(command) => prospect::run(&client, &settings, command, &mut out).await?,
        Command::Suppression(command) => suppression::run(&client, &settings, command, &mut out).await?,
        Command::Dlq(command) => {
            let letters = DeadLetters::new(client.clone(), &settings.nats.stream);
            dlq::run(&letters, command, &mut out).await?;
        }
    }
    client.flush().await.ok();
    Ok(())
}
