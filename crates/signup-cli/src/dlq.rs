//! `signup dlq list|show|replay|purge`: the dead letters (`bus::dlq`).

use std::io::Write;

use bus::dlq::{DeadLetter, DeadLetters};
use clap::{Args, Subcommand};

use crate::shown::shown;

#[derive(Subcommand)]
pub enum Dlq {
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
pub struct Selection {
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

/// Runs one dead-letter command.
pub async fn run(letters: &DeadLetters, command: Dlq, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Dlq::List { limit } => list(letters, limit, out).await,
        Dlq::Show { sequence } => show(letters, sequence, out).await,
        Dlq::Replay(selection) => replay(letters, &selection, out).await,
        Dlq::Purge(selection) => purge(letters, &selection, out).await,
    }
}

async fn list(letters: &DeadLetters, limit: usize, out: &mut impl Write) -> anyhow::Result<()> {
    let list = letters.list(limit).await?;
    writeln!(out, "{:>6}  {:<20}  {:<18}  {:>4}  {:<24}  REASON", "SEQ", "CONSUMER", "EVENT", "TRY", "TYPE")?;
    for letter in &list {
        writeln!(out, "{}", line(letter))?;
    }
    writeln!(out, "{} dead letter(s)", list.len())?;
    Ok(())
}

async fn show(letters: &DeadLetters, sequence: u64, out: &mut impl Write) -> anyhow::Result<()> {
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
    Ok(())
}

async fn replay(letters: &DeadLetters, selection: &Selection, out: &mut impl Write) -> anyhow::Result<()> {
    let sequences = selected(letters, selection).await?;
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
    Ok(())
}

async fn purge(letters: &DeadLetters, selection: &Selection, out: &mut impl Write) -> anyhow::Result<()> {
    let sequences = selected(letters, selection).await?;
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

async fn selected(letters: &DeadLetters, selection: &Selection) -> anyhow::Result<Vec<u64>> {
    if selection.all { letters.all_sequences().await } else { Ok(selection.sequences.clone()) }
}
