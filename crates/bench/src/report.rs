//! The figures of a run (written as JSON) and the tables printed at the end,
//! each figure beside its target.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::load::WrkRun;
use crate::{mail, pipeline};

use crate::INDEX;

#[derive(Serialize, Default)]
pub(crate) struct Results {
    pub(crate) machine: HashMap<&'static str, String>,
    pub(crate) accept: Option<Accept>,
    pub(crate) drain: Option<Drain>,
    pub(crate) sustained: Option<Sustained>,
    pub(crate) latency: Option<Latency>,
    pub(crate) memory: Option<HashMap<String, MemoryFigures>>,
    pub(crate) mail: Option<mail::Mail>,
    pub(crate) cpu: Option<CpuPerSignUp>,
    pub(crate) first_run_secs: Option<f64>,
    pub(crate) first_run_build_secs: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct Accept {
    pub(crate) connections: u32,
    pub(crate) seconds: u64,
    pub(crate) sync_baseline: AcceptRun,
    pub(crate) signup_web: AcceptRun,
    /// signup-web / the synchronous baseline.
    pub(crate) ratio: f64,
    /// The least a publishing web tier does (`bare-publisher`).
    pub(crate) bare_publisher: AcceptRun,
    /// signup-web / the bare publisher.
    pub(crate) to_bare_publisher: f64,
    pub(crate) bot_check: BotCheckCost,
}

/// What the bot check costs signup-web: CPU per sign-up at the same paced
/// rate with the check off and on, and CPU per challenge served.
#[derive(Serialize)]
pub(crate) struct BotCheckCost {
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) off: PacedCpu,
    pub(crate) on: PacedCpu,
    /// Microseconds of CPU the check adds to a sign-up (on − off): checking
    /// the solution, spending it in WEB_CHALLENGES, the longer form.
    pub(crate) check_micros: f64,
    /// on / off.
    pub(crate) ratio: f64,
    /// `GET /api/challenge` at the default difficulty and iterations.
    pub(crate) challenges_per_sec: f64,
    pub(crate) challenge_micros: f64,
    pub(crate) difficulty: u32,
    pub(crate) iterations: u32,
}

#[derive(Serialize)]
pub(crate) struct PacedCpu {
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) p99_ms: f64,
    /// Microseconds of signup-web's CPU per accepted sign-up.
    pub(crate) web_micros: f64,
}

#[derive(Serialize)]
pub(crate) struct AcceptRun {
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    pub(crate) stored: u64,
    pub(crate) wrk: WrkRun,
}

impl AcceptRun {
    pub(crate) fn of(run: WrkRun, stored: u64) -> Self {
        Self {
            per_sec: run.rate(),
            p50_ms: run.p50_us as f64 / 1e3,
            p99_ms: run.p99_us as f64 / 1e3,
            errors: run.error_count(),
            stored,
            wrk: run,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Drain {
    pub(crate) events: usize,
    pub(crate) fill_per_sec: f64,
    pub(crate) drain_secs: f64,
    pub(crate) drain_per_sec: f64,
    pub(crate) raw_insert_secs: f64,
    pub(crate) raw_insert_per_sec: f64,
    pub(crate) ratio: f64,
}

#[derive(Serialize)]
pub(crate) struct Step {
    pub(crate) offered_per_sec: u64,
    pub(crate) accepted_per_sec: f64,
    pub(crate) accepted: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) backlog_save_prospect: u64,
    pub(crate) backlog_analytics_indexer: u64,
    pub(crate) caught_up_after_secs: f64,
    pub(crate) holds: bool,
}

#[derive(Serialize)]
pub(crate) struct Sustained {
    pub(crate) step_secs: u64,
    pub(crate) steps: Vec<Step>,
    pub(crate) highest_holding_per_sec: f64,
}

#[derive(Serialize)]
pub(crate) struct Latency {
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) sign_ups: u64,
    pub(crate) accepted_per_sec: f64,
    pub(crate) refused: u64,
    pub(crate) failed: u64,
    pub(crate) accept_p99_ms: f64,
    pub(crate) visible_p50_ms: f64,
    pub(crate) visible_p99_ms: f64,
    pub(crate) visible_max_ms: f64,
}

#[derive(Serialize, Clone, Copy)]
pub(crate) struct MemoryFigures {
    pub(crate) at_rest_mib: f64,
    pub(crate) peak_under_load_mib: f64,
}

/// CPU per accepted sign-up, by process: the whole system as `scripts/run`
/// starts it (web, save-prospect, analytics-indexer, the mailer), its
/// nats-server and the Postgres processes, over a load of distinct sign-ups
/// and until every handler caught up; next to the minimal pipeline
/// ([`pipeline`]) on the same servers in the same run. The SMTP server that
/// takes the mail (the tests' aiosmtpd) is measured too, but it stands for
/// the receivers out on the internet and is left out of the system's total.
#[derive(Serialize)]
pub(crate) struct CpuPerSignUp {
    pub(crate) seconds: u64,
    pub(crate) connections: u32,
    pub(crate) accepted: u64,
    pub(crate) accepted_per_sec: f64,
    pub(crate) drained_after_secs: f64,
    /// Microseconds of CPU (user + system) per accepted sign-up.
    pub(crate) micros: BTreeMap<String, f64>,
    /// web, save-prospect and analytics-indexer (the figure of earlier runs).
    pub(crate) services_micros: f64,
    /// The whole system: the four services, nats-server and Postgres.
    pub(crate) total_micros: f64,
    /// The reference, per event.
    pub(crate) minimal: pipeline::Minimal,
    /// total / the reference's.
    pub(crate) ratio: f64,
}

/// The "CPU per sign-up by process" table.
pub(crate) fn cpu_table(c: &CpuPerSignUp) -> String {
    let mut out = format!(
        "CPU per sign-up by process ({} accepted in {} s, {:.0}/s, handlers caught up {:.1} s later)\n\n| process | CPU per sign-up |\n|---|---|\n",
        c.accepted, c.seconds, c.accepted_per_sec, c.drained_after_secs
    );
    let mut by_cost: Vec<(&String, &f64)> = c.micros.iter().collect();
    by_cost.sort_by(|a, b| b.1.total_cmp(a.1));
    for (name, micros) in by_cost {
        out.push_str(&format!("| {name} | {micros:.0} µs |\n"));
    }
    out.push_str(&format!("| **total** (without the SMTP server) | **{:.0} µs** |\n", c.total_micros));
    let m = &c.minimal;
    out.push_str(&format!(
        "\nThe minimal pipeline in the same run ({} events, {:.0}/s): {:.1} µs per event ({}); the whole system: {:.1}×\n",
        m.events,
        m.per_sec,
        m.total_micros,
        m.micros.iter().map(|(name, micros)| format!("{name} {micros:.1}")).collect::<Vec<_>>().join(", "),
        c.ratio
    ));
    out
}

/// One row of the table: figure, measured, target, met.
type Row = [String; 4];

fn yes(ok: bool) -> String {
    if ok { "yes" } else { "NO" }.to_owned()
}

/// Every figure of the run beside its target, as a Markdown table.
pub(crate) fn table(r: &Results) -> String {
    let mut rows: Vec<Row> = Vec::new();
    if let Some(a) = &r.accept {
        accept_rows(a, &mut rows);
    }
    if let Some(d) = &r.drain {
        drain_rows(d, &mut rows);
    }
    load_rows(r, &mut rows);
    if let Some(m) = &r.mail {
        mail_rows(m, &mut rows);
    }
    if let Some(c) = &r.cpu {
        cpu_rows(c, &mut rows);
    }
    if let Some(secs) = r.first_run_secs {
        rows.push(first_run_row(secs, r.first_run_build_secs));
    }
    let header = ["figure".to_owned(), "measured".to_owned(), "target".to_owned(), "met".to_owned()];
    let mut out = String::new();
    for (i, row) in std::iter::once(&header).chain(&rows).enumerate() {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            out.push_str("|---|---|---|---|\n");
        }
    }
    out
}

fn accept_rows(a: &Accept, rows: &mut Vec<Row>) {
    let (w, s) = (&a.signup_web, &a.sync_baseline);
    rows.push([
        "accept: signup-web".into(),
        format!("{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors", w.per_sec, w.p50_ms, w.p99_ms, w.errors),
        "≥ 25,000/s, p99 ≤ 10 ms".into(),
        yes(w.per_sec >= 25_000.0 && w.p99_ms <= 10.0 && w.errors == 0),
    ]);
    rows.push([
        "accept: synchronous baseline".into(),
        format!("{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors", s.per_sec, s.p50_ms, s.p99_ms, s.errors),
        "—".into(),
        "—".into(),
    ]);
    rows.push(["accept: async / sync".into(), format!("{:.2}×", a.ratio), "≥ 2×".into(), yes(a.ratio >= 2.0)]);
    let b = &a.bare_publisher;
    rows.push([
        "accept: signup-web vs a bare actix-web handler awaiting the PubAck".into(),
        format!(
            "{:.0}/s vs {:.0}/s (p99 {:.2} ms) = {:.2}; signup-web's p99 {:.2} ms",
            w.per_sec, b.per_sec, b.p99_ms, a.to_bare_publisher, w.p99_ms
        ),
        "≥ 0.8, p99 ≤ 10 ms".into(),
        yes(a.to_bare_publisher >= 0.8 && w.p99_ms <= 10.0),
    ]);
    let b = &a.bot_check;
    rows.push([
        format!("bot check: signup-web CPU per sign-up at {}/s, off → on", b.rate),
        format!(
            "{:.1} → {:.1} µs (+{:.1} µs, {:.2}×; p99 {:.2} → {:.2} ms)",
            b.off.web_micros, b.on.web_micros, b.check_micros, b.ratio, b.off.p99_ms, b.on.p99_ms
        ),
        "—".into(),
        "—".into(),
    ]);
    rows.push([
        format!("bot check: a challenge (difficulty {}, {} iterations)", b.difficulty, b.iterations),
        format!("{:.0} µs of CPU ({:.0}/s)", b.challenge_micros, b.challenges_per_sec),
        "—".into(),
        "—".into(),
    ]);
}

fn drain_rows(d: &Drain, rows: &mut Vec<Row>) {
    rows.push([
        format!("drain: save-prospect, {} events", d.events),
        format!("{:.0} events/s ({:.2} s)", d.drain_per_sec, d.drain_secs),
        "—".into(),
        "—".into(),
    ]);
    rows.push([
        "drain: raw batched insert, same rows".into(),
        format!("{:.0} rows/s ({:.2} s)", d.raw_insert_per_sec, d.raw_insert_secs),
        "—".into(),
        "—".into(),
    ]);
    rows.push(["drain: handler / raw".into(), format!("{:.0}%", d.ratio * 100.0), "≥ 60%".into(), yes(d.ratio >= 0.6)]);
}

/// The sustained, latency and memory figures.
fn load_rows(r: &Results, rows: &mut Vec<Row>) {
    if let Some(s) = &r.sustained {
        rows.push([
            "sustained: all three services".into(),
            format!("{:.0}/s", s.highest_holding_per_sec),
            "≥ 14,000/s".into(),
            yes(s.highest_holding_per_sec >= 14_000.0),
        ]);
    }
    if let Some(l) = &r.latency {
        rows.push([
            format!("latency: 303 → row, at {}/s", l.rate),
            format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", l.visible_p50_ms, l.visible_p99_ms, l.visible_max_ms),
            "p99 ≤ 100 ms".into(),
            yes(l.visible_p99_ms <= 100.0),
        ]);
    }
    if let Some(m) = &r.memory {
        for name in ["signup-web", "save-prospect", "analytics-indexer"] {
            if let Some(f) = m.get(name) {
                rows.push([
                    format!("memory: {name}"),
                    format!("{:.1} MiB at rest, {:.1} MiB peak", f.at_rest_mib, f.peak_under_load_mib),
                    "≤ 64 MiB, ≤ 256 MiB".into(),
                    yes(f.at_rest_mib <= 64.0 && f.peak_under_load_mib <= 256.0),
                ]);
            }
        }
    }
}

fn mail_rows(m: &mail::Mail, rows: &mut Vec<Row>) {
    for (pair, what) in [
        (&m.fast, format!("mail: confirmations of a burst of {}", m.burst)),
        (&m.slow, format!("mail: the same, {} at a relay taking {} ms a mail", m.slow_burst, m.slow_delay_ms)),
    ] {
        rows.push([
            what,
            format!(
                "{:.0} mails/s vs a plain client with {} connections on the same server: {:.0} mails/s = {:.2}",
                pair.mailer.per_sec, m.connections, pair.plain_client.per_sec, pair.ratio
            ),
            "≥ 0.5".into(),
            yes(pair.ratio >= 0.5),
        ]);
    }
}

fn cpu_rows(c: &CpuPerSignUp, rows: &mut Vec<Row>) {
    let micros = |name: &str| c.micros.get(name).copied().unwrap_or_default();
    rows.push([
        "CPU per sign-up: web + save-prospect + analytics-indexer".into(),
        format!("{:.0} µs ({:.0} µs with nats-server and Postgres)", c.services_micros, c.total_micros),
        "≤ 125 µs".into(),
        yes(c.services_micros <= 125.0),
    ]);
    rows.push([
        "CPU per sign-up: the whole system (four services, nats-server, Postgres)".into(),
        format!(
            "{:.0} µs vs the minimal pipeline in the same run: {:.1} µs per event = {:.1}×",
            c.total_micros, c.minimal.total_micros, c.ratio
        ),
        "≤ 4×".into(),
        yes(c.ratio <= 4.0),
    ]);
    rows.push([
        "CPU per event: analytics-indexer".into(),
        format!("{:.0} µs", micros(INDEX)),
        "≤ 25 µs".into(),
        yes(micros(INDEX) <= 25.0),
    ]);
    rows.push([
        "CPU per accepted sign-up: signup-web".into(),
        format!("{:.0} µs", micros("signup-web")),
        "≤ 30 µs".into(),
        yes(micros("signup-web") <= 30.0),
    ]);
}

fn first_run_row(secs: f64, build_secs: Option<f64>) -> Row {
    let minutes = |secs: f64| format!("{}:{:02} min", secs.round() as u64 / 60, secs.round() as u64 % 60);
    let split = match build_secs {
        Some(build) => format!(" (build {}, installs and start-up {})", minutes(build), minutes(secs - build)),
        None => String::new(),
    };
    [
        "first scripts/run on a fresh clone, to the form answering".into(),
        format!("{}{split}", minutes(secs)),
        "≤ 5 min".into(),
        yes(secs <= 300.0),
    ]
}
