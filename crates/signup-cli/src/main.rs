//! `signup`: operator commands. `signup streams` creates or updates the
//! event and dead-letter streams (a deployment's set-up step, run with a NATS
//! user allowed to manage streams); `signup dlq …` lists, shows, replays and
//! purges dead letters (see `bus::dlq`); `signup trace <prospect id or
//! e-mail>` shows where each of a prospect's events stands with each handler
//! (see `bus::ledger`); `signup suppression check|remove <address>` tells
//! whether an address is on the suppression list ("it wasn't me") and lifts
//! it; `signup prospect export <id>` prints everything held about a
//! prospect (the manage page's "Download my data"); `signup check` tells whether NATS answers. NATS settings come from the same
//! configuration as the services (`SIGNUP__NATS__URL`, …), and the link
//! secret (`SIGNUP__LINKS__SECRET`) for the suppression list's digests.

use std::io::Write as _;

use anyhow::Context as _;
use bus::dlq::{DeadLetter, DeadLetters};
use bus::ledger::Ledger;
use bus::settings::{NatsSettings, StreamSettings};
use clap::{Args, Parser, Subcommand};
use messages::service::{AddressRef, ExportProspect, FindHolders, HeldBy, ProspectRef};
use serde::Deserialize;

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

#[derive(Subcommand)]
enum Prospect {
    /// Everything held about a prospect, as the JSON document the manage
    /// page's "Download my data" gives (for a request made by post): the
    /// record, its consent and pending change, the kinds and times of its
    /// events, the mails sent to it. Check who asks before you send it.
    Export {
        /// The prospect id (`signup trace <address>` finds it).
        prospect: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum Suppression {
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

#[derive(Subcommand)]
enum Dlq {
    /// One line per dead letter, oldest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// A dead letter in full: headers and payload.
    Show {
        /// The letter's sequence (first column of `list`).
        sequence: u64,
    },
    /// Republish letters to their original subjects (same ce-id), then remove them.
    Replay(Selection),
    /// Remove letters for good.
    Purge(Selection),
}

#[derive(Args)]
struct Selection {
    /// Letter sequences.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    sequences: Vec<u64>,
    /// Every letter.
    #[arg(long)]
    all: bool,
    /// Say what would happen, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    nats: NatsSettings,
    links: links::LinkSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = bus::settings::load().context("loading settings")?;
    bus::connection::check(&settings.nats).await?;
    let client = bus::connect(&settings.nats, "signup-cli").await?;
    // Connected, not only connecting: a request would otherwise be refused.
    client.flush().await.context("NATS did not answer")?;
    let letters = DeadLetters::new(client.clone(), &settings.nats.stream);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Streams => {
            let js = bus::async_nats::jetstream::new(client.clone());
            let stream = StreamSettings { manage: true, ..settings.nats.stream.clone() };
            for info in [bus::ensure_stream(&js, &stream).await?, bus::stream::ensure_dlq_stream(&js, &stream).await?] {
                let config = &info.cached_info().config;
                writeln!(
                    out,
                    "stream {} ready: subjects {:?}, replicas {}, at most {}, kept {}, when full: refuse new messages",
                    config.name,
                    config.subjects,
                    config.num_replicas,
                    match config.max_bytes {
                        bytes if bytes < 0 => "unlimited in size".to_owned(),
                        bytes => format!("{} MiB", bytes / (1024 * 1024)),
                    },
                    match config.max_age.as_secs() {
                        0 => "forever".to_owned(),
                        secs => format!("{} days", secs / 86_400),
                    },
                )?;
            }
        }
        // Connecting above already checked it.
        Command::Check => writeln!(out, "NATS is reachable")?,
        Command::Trace { prospect, json } => {
            let prospects = match prospect.trim().parse::<uuid::Uuid>() {
                Ok(id) => vec![(id, String::new())],
                Err(_) => {
                    // Every sign-up with the address: the holder, those merged
                    // into it, pending ones (a duplicate, a stranger's claim).
                    let address = AddressRef { email: prospect.trim().to_owned() };
                    let held = bus::request::ask::<FindHolders>(&client, &address, settings.nats.request_timeout())
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
        }
        Command::Prospect(Prospect::Export { prospect }) => {
            let export = bus::request::ask::<ExportProspect>(
                &client,
                &ProspectRef { prospect_id: prospect },
                settings.nats.request_timeout(),
            )
            .await
            .context("asking the prospects service for the export (an erased or unknown prospect has none)")?;
            writeln!(out, "{}", serde_json::to_string_pretty(&export)?)?;
        }
        Command::Suppression(command) => {
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
        }
        Command::Dlq(Dlq::List { limit }) => {
            let list = letters.list(limit).await?;
            writeln!(out, "{:>6}  {:<20}  {:<18}  {:>4}  {:<24}  REASON", "SEQ", "CONSUMER", "EVENT", "TRY", "TYPE")?;
            for letter in &list {
                writeln!(out, "{}", line(letter))?;
            }
            writeln!(out, "{} dead letter(s)", list.len())?;
        }
        Command::Dlq(Dlq::Show { sequence }) => {
            let letter = letters.get(sequence).await?;
            writeln!(
                out,
                "sequence: {}\ntime: {}\nsubject: {}",
                letter.sequence,
                letter.time,
                shown(&letter.original_subject)
            )?;
            for (name, values) in letter.headers.iter() {
                for value in values {
                    writeln!(out, "{}: {}", shown(AsRef::<str>::as_ref(name)), shown(value.as_str()))?;
                }
            }
            if letter.withheld {
                writeln!(out, "\n(payload withheld: the prospect was erased)")?;
            } else {
                writeln!(out, "\n{}", shown(&String::from_utf8_lossy(&letter.payload)))?;
            }
        }
        Command::Dlq(Dlq::Replay(selection)) => {
            let sequences = selected(&letters, &selection).await?;
            let mut refused = 0;
            for sequence in &sequences {
                let replayed = match letters.replay(*sequence, selection.dry_run).await {
                    Ok(replayed) => replayed,
                    Err(error) => {
                        writeln!(out, "{sequence}: {error:#}")?;
                        refused += 1;
                        continue;
                    }
                };
                let what = match (selection.dry_run, replayed.new_stream_sequence) {
                    (true, _) => "would be replayed".to_owned(),
                    (false, Some(seq)) => format!("replayed as stream sequence {seq}"),
                    (false, None) => "replayed (already replayed recently: stored once)".to_owned(),
                };
                writeln!(out, "{sequence}: {what} to {}", replayed.subject)?;
            }
            writeln!(out, "{} letter(s){}", sequences.len(), if selection.dry_run { " (dry run)" } else { "" })?;
            anyhow::ensure!(refused == 0, "{refused} letter(s) not replayed");
        }
        Command::Dlq(Dlq::Purge(selection)) => {
            let sequences = selected(&letters, &selection).await?;
            for sequence in &sequences {
                let existed = letters.purge(*sequence, selection.dry_run).await?;
                let what = match (existed, selection.dry_run) {
                    (false, _) => "no such letter",
                    (true, true) => "would be purged",
                    (true, false) => "purged",
                };
                writeln!(out, "{sequence}: {what}")?;
            }
            writeln!(out, "{} letter(s){}", sequences.len(), if selection.dry_run { " (dry run)" } else { "" })?;
        }
    }
    client.flush().await.ok();
    Ok(())
}

fn line(letter: &DeadLetter) -> String {
    let event: String = letter.event_id.chars().take(18).collect();
    let kind = letter.event_type.trim_start_matches("io.signup.");
    let line = format!(
        "{:>6}  {:<20}  {:<18}  {:>4}  {:<24}  {}",
        letter.sequence, letter.consumer, event, letter.deliveries, kind, letter.reason
    );
    shown(&line).into_owned()
}

/// `text` as a terminal may show it: every control character but the line
/// break, and every character that reorders or hides text (bidirectional
/// controls, zero-width ones), escaped (`\u{1b}`), so that a letter's
/// headers or payload, which whoever wrote the letter chose, cannot move the
/// cursor, clear the screen, set the window's title or disguise itself.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{061c}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| if unsafe_char(c) { c.escape_unicode().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

/// How a sign-up holds the address it was looked up by.
fn held_as(sign_up: &HeldBy) -> String {
    let status = if sign_up.confirmed { "confirmed" } else { "pending" };
    match sign_up.merged_into {
        Some(holder) => format!("{}: merged into {holder} (its alias)", sign_up.prospect_id),
        None => format!("{}: {status}", sign_up.prospect_id),
    }
}

async fn selected(letters: &DeadLetters, selection: &Selection) -> anyhow::Result<Vec<u64>> {
    if selection.all { letters.all_sequences().await } else { Ok(selection.sequences.clone()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::shown("plain\ntext"), "plain\ntext");
        assert_eq!(super::shown("\u{1b}[2Jx\u{7}\r"), "\\u{1b}[2Jx\\u{7}\\u{d}");
        assert_eq!(super::shown("abc\u{202e}fed"), "abc\\u{202e}fed", "a right-to-left override");
    }
}
