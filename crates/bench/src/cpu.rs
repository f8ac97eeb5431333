//! The cpu phase: CPU time per accepted sign-up of every process, read from
//! `/proc`, beside the minimal pipeline's per event.

use std::collections::BTreeMap;

use std::time::Duration;

use anyhow::Context as _;

use uuid::Uuid;

use crate::sustained::System;
use crate::{load, mail, pipeline};

use crate::system::{Backends, Layout};

use crate::report::*;
use crate::{Cli, INDEX, SAVE, say, sign_ups};

/// The mail server's name among the processes measured.
pub(crate) const MAIL_SINK: &str = "SMTP server (aiosmtpd, not counted)";

pub(crate) async fn cpu(layout: &Layout, cli: &Cli) -> anyhow::Result<CpuPerSignUp> {
    let backends = Backends::start().await?;
    // The reference first, on the same servers with nothing else running.
    say(&format!("  the minimal pipeline: {} events published, pulled, inserted in batches, acked", cli.drain_events));
    let minimal = pipeline::minimal(&backends, &sign_ups(cli.drain_events)).await.context("the minimal pipeline")?;
    say(&format!(
        "  minimal pipeline: {:.1} µs of CPU per event ({:.0} events/s)",
        minimal.total_micros, minimal.per_sec
    ));
    let sink = test_support::SmtpServer::start().await?;
    let system = System::start(layout, &backends, "cpu", Some(&sink)).await?;
    let consumers = [SAVE, INDEX, mail::MAILER];
    let run_id = Uuid::now_v7().simple().to_string();
    load::wrk(&cli.wrk_script, &system.url, 2, cli.connections, &format!("warm{run_id}"), &[]).await?;
    backends.wait_drained(&consumers, Duration::from_secs(600)).await?;
    let mut processes: Vec<(String, u32)> =
        system.services.iter().map(|s| s.pid().map(|pid| (s.name.clone(), pid))).collect::<anyhow::Result<_>>()?;
    processes.push(("nats-server".to_owned(), backends.nats.pid().context("nats-server has exited")?));
    processes.push((MAIL_SINK.to_owned(), sink.pid().context("the SMTP server has exited")?));
    let before = cpu_ticks(&processes)?;
    let run = load::wrk(&cli.wrk_script, &system.url, cli.accept_secs, cli.connections, &run_id, &[]).await?;
    let drained = backends.wait_drained(&consumers, Duration::from_secs(900)).await?;
    let after = cpu_ticks(&processes)?;
    system.stop().await;
    let accepted = run.requests - run.error_count();
    anyhow::ensure!(accepted > 0, "no sign-up was accepted");
    let micros = micros_per(&before, &after, accepted);
    let services_micros = [SAVE, INDEX, "signup-web"].iter().filter_map(|n| micros.get(*n)).sum();
    let total_micros: f64 = micros.iter().filter(|(name, _)| name.as_str() != MAIL_SINK).map(|(_, m)| m).sum();
    Ok(CpuPerSignUp {
        seconds: cli.accept_secs,
        connections: cli.connections,
        accepted,
        accepted_per_sec: run.rate(),
        drained_after_secs: drained.as_secs_f64(),
        ratio: total_micros / minimal.total_micros,
        total_micros,
        services_micros,
        micros,
        minimal,
    })
}

/// Microseconds of CPU per item between two readings of [`cpu_ticks`].
pub(crate) fn micros_per(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    items: u64,
) -> BTreeMap<String, f64> {
    let per_tick = 1e6 / clock_ticks_per_sec() / items as f64;
    after
        .iter()
        .map(|(name, ticks)| {
            (name.clone(), ticks.saturating_sub(before.get(name).copied().unwrap_or(0)) as f64 * per_tick)
        })
        .collect()
}

/// User + system clock ticks used so far by each named process, and by all
/// the machine's Postgres processes together (`postgres`).
pub(crate) fn cpu_ticks(processes: &[(String, u32)]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut ticks = BTreeMap::new();
    for (name, pid) in processes {
        ticks.insert(name.clone(), process_ticks(*pid).with_context(|| format!("reading {name}'s CPU time"))?);
    }
    let mut postgres = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let is_postgres = std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "postgres");
        // A backend may end between the two reads: it is counted as far as it was read.
        if is_postgres && let Ok(used) = process_ticks(pid) {
            postgres += used;
        }
    }
    ticks.insert("postgres".to_owned(), postgres);
    Ok(ticks)
}

/// Fields 14 to 17 of `/proc/<pid>/stat` (utime, stime, cutime, cstime), in clock ticks.
pub(crate) fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')').context("malformed stat")?.1.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    // utime + stime, and the time of children it waited for (the
    // postmaster's ended backends).
    Ok(field(11)? + field(12)? + field(13)? + field(14)?)
}

/// `getconf CLK_TCK` (100 on Linux).
pub(crate) fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
