//! The sustained, latency and memory phases: the three services at rising
//! loads, then the time from a 303 to its row.

use std::collections::HashMap;

use std::time::{Duration, Instant};

use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hdrhistogram::Histogram;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::load::WrkRun;
use crate::system::{Backends, Layout, Memory, Service, wait_for_http};
use crate::{load, mail};

use crate::report::*;
use crate::{Cli, INDEX, SAVE, say, web_env};

/// web, save-prospect and analytics-indexer as `scripts/run` starts them,
/// consuming, on `backends`.
pub(crate) struct System {
    pub(crate) services: Vec<Service>,
    pub(crate) url: String,
    pub(crate) _index_dir: tempfile::TempDir,
}

impl System {
    /// The three services; with `mail`, the mailer too, sending to that
    /// server.
    pub(crate) async fn start(
        layout: &Layout,
        backends: &Backends,
        label: &str,
        mail: Option<&test_support::SmtpServer>,
    ) -> anyhow::Result<Self> {
        let index_dir = tempfile::tempdir()?;
        let (port, analytics_port) = (test_support::free_port()?, test_support::free_port()?);
        let mut env = web_env(backends, port);
        env.push(("SIGNUP__ANALYTICS__PORT", analytics_port.to_string()));
        env.push(("SIGNUP__ANALYTICS__INDEX_DIR", index_dir.path().display().to_string()));
        env.push(("SIGNUP__ANALYTICS__TOKEN", "bench-analytics-token".to_owned()));
        let mut services = vec![
            Service::spawn(layout, SAVE, &format!("{label}-save-prospect"), &["run"], &env)?,
            Service::spawn(layout, INDEX, &format!("{label}-analytics-indexer"), &["run"], &env)?,
            Service::spawn(layout, "signup-web", &format!("{label}-signup-web"), &["serve"], &env)?,
        ];
        if let Some(server) = mail {
            env.extend(mail::mailer_env(server));
            services.push(Service::spawn(layout, mail::MAILER, &format!("{label}-mailer"), &["run"], &env)?);
            backends.wait_for_consumer(mail::MAILER, Duration::from_secs(60)).await?;
        }
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{url}/readyz"), Duration::from_secs(30)).await?;
        backends.wait_for_consumer(SAVE, Duration::from_secs(60)).await?;
        backends.wait_for_consumer(INDEX, Duration::from_secs(60)).await?;
        Ok(Self { services, url, _index_dir: index_dir })
    }

    pub(crate) async fn stop(self) {
        for service in self.services {
            service.stop().await;
        }
    }
}

pub(crate) async fn sustained(
    layout: &Layout,
    cli: &Cli,
) -> anyhow::Result<(Sustained, Latency, HashMap<String, MemoryFigures>)> {
    let backends = Backends::start().await?;
    let System { mut services, url, _index_dir } = System::start(layout, &backends, "sustained", None).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_rest: Vec<Memory> = services.iter().map(Service::memory).collect::<anyhow::Result<_>>()?;

    let run_id = Uuid::now_v7().simple().to_string();
    let mut steps = Vec::new();
    for &rate in &cli.rates {
        backends.wait_drained(&[SAVE, INDEX], Duration::from_secs(120)).await?;
        // Connections that each pause 50 ms after an answer offer about
        // `rate`; what was accepted is measured.
        let connections = u32::try_from(rate / 20)?.max(2);
        let script = cli.wrk_script.with_file_name("signup-paced.lua");
        let step_id = format!("s{rate}.{run_id}");
        let run = load::wrk(&script, &url, cli.step_secs, connections, &step_id, &["50"]).await?;
        let (save, index) = (backends.backlog(SAVE).await?, backends.backlog(INDEX).await?);
        let caught_up = backends.wait_drained(&[SAVE, INDEX], Duration::from_secs(300)).await?;
        for service in &mut services {
            service.ensure_running()?;
        }
        let step = step(rate, &run, save, index, caught_up);
        say(&format!(
            "  offered {rate}/s: accepted {:.0}/s, p99 {:.1} ms, backlog {save}/{index}, caught up in {:.1} s{}",
            step.accepted_per_sec,
            step.p99_ms,
            step.caught_up_after_secs,
            if step.holds { "" } else { " — does not hold" }
        ));
        let holds = step.holds;
        steps.push(step);
        if !holds {
            break;
        }
    }
    let highest = steps.iter().filter(|s| s.holds).map(|s| s.accepted_per_sec).fold(0.0, f64::max);

    backends.wait_drained(&[SAVE, INDEX], Duration::from_secs(300)).await?;
    let latency = latency(&url, &backends, cli).await?;
    say(&format!(
        "  latency at {}/s: p50 {:.1} ms, p99 {:.1} ms",
        cli.latency_rate, latency.visible_p50_ms, latency.visible_p99_ms
    ));
    let mut memory = HashMap::new();
    for (service, rest) in services.iter().zip(at_rest) {
        let figures = MemoryFigures { at_rest_mib: rest.rss_mib, peak_under_load_mib: service.memory()?.peak_mib };
        memory.insert(service.name.clone(), figures);
    }
    for service in services {
        service.stop().await;
    }
    Ok((Sustained { step_secs: cli.step_secs, steps, highest_holding_per_sec: highest }, latency, memory))
}

pub(crate) fn step(offered: u64, run: &WrkRun, save: u64, index: u64, caught_up: Duration) -> Step {
    let accepted_per_sec = run.rate();
    // One second of load: a handler that keeps up is never further behind
    // than its lingering batch, the batch in hand and its commit (the
    // indexer gathers for 250 ms before each commit).
    let limit = accepted_per_sec as u64;
    Step {
        offered_per_sec: offered,
        accepted_per_sec,
        accepted: run.requests - run.error_count(),
        errors: run.error_count(),
        p50_ms: run.p50_us as f64 / 1e3,
        p99_ms: run.p99_us as f64 / 1e3,
        backlog_save_prospect: save,
        backlog_analytics_indexer: index,
        caught_up_after_secs: caught_up.as_secs_f64(),
        holds: run.error_count() == 0 && save <= limit && index <= limit,
    }
}

pub(crate) async fn latency(url: &str, backends: &Backends, cli: &Cli) -> anyhow::Result<Latency> {
    let (answered, arrivals) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_rows(backends.database.url(), arrivals));
    let run_id = format!("l{}", Uuid::now_v7().simple());
    let run = load::paced(url, cli.latency_rate, Duration::from_secs(cli.latency_secs), &run_id, Some(answered), None)
        .await?;
    let visible = watcher.await??;
    anyhow::ensure!(visible.len() == run.accepted, "{} rows seen for {} sign-ups", visible.len(), run.accepted);
    let ms = |q: f64| visible.value_at_quantile(q) as f64 / 1e3;
    Ok(Latency {
        rate: cli.latency_rate,
        seconds: cli.latency_secs,
        sign_ups: run.accepted,
        accepted_per_sec: run.achieved_rate(),
        refused: run.refused,
        failed: run.failed,
        accept_p99_ms: run.latency_us.value_at_quantile(0.99) as f64 / 1e3,
        visible_p50_ms: ms(0.5),
        visible_p99_ms: ms(0.99),
        visible_max_ms: visible.max() as f64 / 1e3,
    })
}

#[derive(diesel::QueryableByName)]
pub(crate) struct Id {
    #[diesel(sql_type = SqlUuid)]
    pub(crate) id: Uuid,
}

/// For every accepted sign-up, the time from its 303 until its row is
/// visible, polling Postgres every 2 ms.
pub(crate) async fn watch_rows(
    database_url: String,
    mut arrivals: mpsc::UnboundedReceiver<(Uuid, Instant)>,
) -> anyhow::Result<Histogram<u64>> {
    let mut conn = AsyncPgConnection::establish(&database_url).await?;
    let mut waiting: HashMap<Uuid, Instant> = HashMap::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut open = true;
    while open || !waiting.is_empty() {
        loop {
            match arrivals.try_recv() {
                Ok((id, at)) => {
                    waiting.insert(id, at);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !waiting.is_empty() {
            let ids: Vec<Uuid> = waiting.keys().copied().collect();
            let found: Vec<Id> = diesel::sql_query("SELECT id FROM prospects WHERE id = ANY($1)")
                .bind::<Array<SqlUuid>, _>(ids)
                .load(&mut conn)
                .await?;
            let seen = Instant::now();
            for Id { id } in found {
                if let Some(at) = waiting.remove(&id) {
                    histogram.saturating_record(u64::try_from(seen.duration_since(at).as_micros())?.max(1));
                }
            }
            let oldest = waiting.values().min().map(Instant::elapsed).unwrap_or_default();
            anyhow::ensure!(oldest < Duration::from_secs(60), "a sign-up was not saved within a minute");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(histogram)
}
