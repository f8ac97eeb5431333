//! `signup suppression check|remove <address>`: the "it wasn't me" list.

use std::io::Write;

use anyhow::Context as _;
use bus::async_nats::Client;
use clap::Subcommand;

use crate::Settings;

#[derive(Subcommand)]
pub enum Suppression {
    /// Whether the address is suppressed (exit 0 either way).
    Check {
        /// The e-mail address.
        address: String,
    },
    /// Lift the address's suppression: mail about its sign-ups goes again.
    Remove {
        /// The e-mail address.
        address: String,
    },
}

/// Tells whether the address is suppressed, or lifts its suppression.
pub async fn run(
    client: &Client,
    settings: &Settings,
    command: Suppression,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let links = links::Links::new(&settings.links)?;
    let js = bus::async_nats::jetstream::new(client.clone());
    let bucket = messages::streams::SUPPRESSED_BUCKET;
    let list = js
        .get_key_value(bucket)
        .await
        .with_context(|| format!("opening the key-value bucket {bucket} (mailer buckets makes it)"))?;
    let (Suppression::Check { address } | Suppression::Remove { address }) = &command;
    let key = links.suppression_key(address);
    let entry = list.entry(&key).await.context("reading the suppression list")?;
    let suppressed = entry.as_ref().filter(|e| e.operation == bus::async_nats::jetstream::kv::Operation::Put);
    let since = suppressed
        .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis);
    let since = since.map_or_else(String::new, |at| format!(" since {}", at.format("%Y-%m-%d %H:%M UTC")));
    match (command, suppressed.is_some()) {
        (Suppression::Check { .. }, true) => writeln!(out, "suppressed{since}")?,
        (_, false) => writeln!(out, "not suppressed")?,
        (Suppression::Remove { .. }, true) => {
            // A purge: the entry's history goes too.
            list.purge(&key).await.context("lifting the suppression")?;
            writeln!(out, "suppression lifted (it was suppressed{since})")?;
        }
    }
    Ok(())
}
