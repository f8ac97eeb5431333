//! `signup prospect export <id>`: everything held about a prospect.

use std::io::Write;

use anyhow::Context as _;
use bus::async_nats::Client;
use clap::Subcommand;
use messages::service::{ExportProspect, ProspectRef};

use crate::Settings;

#[derive(Subcommand)]
pub enum Prospect {
    /// Everything held about a prospect, as the JSON document the manage
    /// page's "Download my data" gives (for a request made by post): the
    /// record, its consent and pending change, the kinds and times of its
    /// events, the mails sent to it. Check who asks before you send it.
    Export {
        /// The prospect id (`signup trace <address>` finds it).
        prospect: uuid::Uuid,
    },
}

/// Prints the export as JSON, as the manage page's "Download my data" gives it.
pub async fn run(client: &Client, settings: &Settings, command: Prospect, out: &mut impl Write) -> anyhow::Result<()> {
    let Prospect::Export { prospect } = command;
    let export = bus::request::ask::<ExportProspect>(
        client,
        &ProspectRef { prospect_id: prospect },
        settings.nats.request_timeout(),
    )
    .await
    .context("asking the prospects service for the export (an erased or unknown prospect has none)")?;
    // Names and the like are what visitors typed: shown safely.
    writeln!(out, "{}", crate::shown::shown(&serde_json::to_string_pretty(&export)?))?;
    Ok(())
}
