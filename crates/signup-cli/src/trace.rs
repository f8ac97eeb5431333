//! `signup trace <prospect id or address>`: where each of a prospect's
//! events stands with each handler (the delivery ledger, `bus::ledger`).

use std::io::Write;

use anyhow::Context as _;
use bus::async_nats::Client;
use bus::ledger::Ledger;
use messages::service::{AddressRef, FindHolders, HeldBy};

use crate::Settings;
use crate::shown::shown;

/// Prints the ledger of the prospect, or of every sign-up holding the
/// address, as text or JSON.
pub async fn run(
    client: &Client,
    settings: &Settings,
    prospect: &str,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let prospects = match prospect.trim().parse::<uuid::Uuid>() {
        Ok(id) => vec![(id, String::new())],
        Err(_) => {
            // Every sign-up with the address: the holder, those merged
            // into it, pending ones (a duplicate, a stranger's claim).
            let address = AddressRef { email: prospect.trim().into() };
            let held = bus::request::ask::<FindHolders>(client, &address, settings.nats.request_timeout())
                .await
                .context("asking the prospects service who holds that address")?;
            anyhow::ensure!(
                !held.sign_ups.is_empty(),
                "no saved prospect holds that address; give the prospect id (the thank-you page's, or a dead letter's subject)"
            );
            held.sign_ups.iter().map(|s| (s.prospect_id, held_as(s))).collect()
        }
    };
    let js = bus::async_nats::jetstream::new(client.clone());
    let mut ledgers = Vec::new();
    for (prospect_id, _) in &prospects {
        ledgers.push(Ledger::read(&js, &settings.nats.stream, *prospect_id).await?);
    }
    if json {
        // One prospect: its ledger; an address: every sign-up's.
        let text = match ledgers.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            all => serde_json::to_string_pretty(all)?,
        };
        writeln!(out, "{text}")?;
    } else {
        for ((_, held), ledger) in prospects.iter().zip(&ledgers) {
            if !held.is_empty() {
                writeln!(out, "# {held}")?;
            }
            write!(out, "{}", shown(&ledger.render()))?;
        }
    }
    Ok(())
}

/// How a sign-up holds the address it was looked up by.
fn held_as(sign_up: &HeldBy) -> String {
    let status = if sign_up.confirmed { "confirmed" } else { "pending" };
    match sign_up.merged_into {
        Some(holder) => format!("{}: merged into {holder} (its alias)", sign_up.prospect_id),
        None => format!("{}: {status}", sign_up.prospect_id),
    }
}
