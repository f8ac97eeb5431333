//! signup-bench: the benchmark behind `scripts/bench`.
//!
//! It measures the system as `scripts/run --release` starts it (the fully
//! optimised build the images hold, the repository's `config/`), against a
//! private nats-server (JetStream, file store) and databases of its own on
//! the machine's Postgres, in phases:
//!
//! - **accept**: wrk POSTs distinct valid forms to `/signup` on 64
//!   connections — first to `sync-baseline` (validates the same way, inserts
//!   the row inside the request), then to `signup-web` (publishes the event,
//!   waits for the PubAck), then to `bare-publisher` (the least a publishing
//!   handler does: the body as it came, published, PubAck awaited), all with
//!   the handlers stopped; then the bot check's cost: signup-web's CPU
//!   per sign-up at a paced rate with the check off and on (each sign-up
//!   with a solved challenge), and its CPU per challenge served;
//! - **drain**: 200,000 sign-ups put on the stream while save-prospect is
//!   stopped, then the time it takes to apply them all; and, in the same run,
//!   the rate at which the bench itself inserts the same rows in batches of
//!   500, one transaction per batch (the raw limit of the database);
//! - **sustained**: web + save-prospect + analytics-indexer at rising loads
//!   (wrk, each connection pausing 50 ms after an answer, so the offered
//!   rate is nominal and the accepted rate is what counts); a step holds when
//!   no request failed and both handlers' backlogs at the end are under one
//!   second of the accepted load;
//! - **latency**: at a steady 2,000 sign-ups/s, the time from each 303 to its
//!   row being visible in Postgres (polled every 2 ms);
//! - **memory**: each service's resident memory at rest and its peak under load;
//! - **mail**: the confirmation mails of a burst of sign-ups through the
//!   mailer to a real SMTP server, next to a plain SMTP client with as many
//!   connections on the same server, once answering at once and once as a
//!   slow relay ([`mail`]);
//! - **cpu**: first the minimal pipeline ([`pipeline`]: publish, JetStream,
//!   pull, batched insert, ack) on the same servers; then web +
//!   save-prospect + analytics-indexer + mailer under wrk (64 connections,
//!   distinct sign-ups) until every handler caught up: CPU time per accepted
//!   sign-up of each service, of nats-server and of the Postgres processes,
//!   read from `/proc`, and its ratio to the minimal pipeline's per event.
//!
//! It prints a table with the targets and writes every figure as JSON.

// The services' allocator (the runtime's mimalloc), for like-for-like figures.
use runtime as _;

mod load;
mod mail;
mod pipeline;
mod system;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::{EventContext, Publisher};
use chrono::Utc;
use clap::Parser;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::load::WrkRun;
use crate::system::{Backends, Layout, Memory, Service, migrated_database, wait_for_http, wait_for_port};

const SAVE: &str = "save-prospect";
const INDEX: &str = "analytics-indexer";
const TOKEN_SECRET: &str = "bench-token-secret-0123456789";

#[derive(Parser)]
#[command(about = "Signup benchmark: accept, drain, sustained, latency, memory")]
struct Cli {
    /// Folder for the JSON figures (results.json) and the service logs.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The wrk script of the accept phase.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk/signup.lua"))]
    wrk_script: PathBuf,
    /// The configuration folder the services read, as with scripts/run.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))]
    config_dir: PathBuf,
    /// Seconds of each measured accept run.
    #[arg(long, default_value_t = 10)]
    accept_secs: u64,
    /// wrk connections in the accept phase.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Sign-ups put on the stream for the drain phase.
    #[arg(long, default_value_t = 200_000)]
    drain_events: usize,
    /// Offered loads of the sustained phase, sign-ups per second.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,15000,20000,25000,30000")]
    rates: Vec<u64>,
    /// Seconds per sustained step.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// Rate of the latency phase.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 15)]
    latency_secs: u64,
    /// Sign-ups per second of the bot check's runs (accept phase), off and on.
    #[arg(long, default_value_t = 2_000)]
    bot_check_rate: u64,
    /// Sign-ups of the mail phase's burst (fast SMTP server).
    #[arg(long, default_value_t = 1_000)]
    mail_burst: usize,
    /// Sign-ups of the mail phase's burst at the slow relay.
    #[arg(long, default_value_t = 200)]
    slow_mail_burst: usize,
    /// Milliseconds the slow relay takes over each mail.
    #[arg(long, default_value_t = 100)]
    slow_relay_ms: u64,
    /// Phases to run (`first-run` is measured by scripts/bench, which
    /// passes its figure with `--first-run-secs`).
    #[arg(long, value_delimiter = ',', default_value = "first-run,accept,drain,sustained,mail,cpu")]
    phases: Vec<String>,
    /// Seconds from `scripts/run` on a fresh clone to the form answering,
    /// as scripts/bench measured it.
    #[arg(long)]
    first_run_secs: Option<f64>,
    /// Of those, the seconds `scripts/run` spent building (the rest is
    /// installing nats-server and MailDev and starting everything).
    #[arg(long, requires = "first_run_secs")]
    first_run_build_secs: Option<f64>,
}

#[derive(Serialize, Default)]
struct Results {
    machine: HashMap<&'static str, String>,
    accept: Option<Accept>,
    drain: Option<Drain>,
    sustained: Option<Sustained>,
    latency: Option<Latency>,
    memory: Option<HashMap<String, MemoryFigures>>,
    mail: Option<mail::Mail>,
    cpu: Option<CpuPerSignUp>,
    first_run_secs: Option<f64>,
    first_run_build_secs: Option<f64>,
}

#[derive(Serialize)]
struct Accept {
    connections: u32,
    seconds: u64,
    sync_baseline: AcceptRun,
    signup_web: AcceptRun,
    /// signup-web / the synchronous baseline.
    ratio: f64,
    /// The least a publishing web tier does (`bare-publisher`).
    bare_publisher: AcceptRun,
    /// signup-web / the bare publisher.
    to_bare_publisher: f64,
    bot_check: BotCheckCost,
}

/// What the bot check costs signup-web: CPU per sign-up at the same paced
/// rate with the check off and on, and CPU per challenge served.
#[derive(Serialize)]
struct BotCheckCost {
    rate: u64,
    seconds: u64,
    off: PacedCpu,
    on: PacedCpu,
    /// Microseconds of CPU the check adds to a sign-up (on − off): checking
    /// the solution, spending it in WEB_CHALLENGES, the longer form.
    check_micros: f64,
    /// on / off.
    ratio: f64,
    /// `GET /api/challenge` at the default difficulty and iterations.
    challenges_per_sec: f64,
    challenge_micros: f64,
    difficulty: u32,
    iterations: u32,
}

#[derive(Serialize)]
struct PacedCpu {
    accepted: u64,
    failed: u64,
    p99_ms: f64,
    /// Microseconds of signup-web's CPU per accepted sign-up.
    web_micros: f64,
}

#[derive(Serialize)]
struct AcceptRun {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    stored: u64,
    wrk: WrkRun,
}

impl AcceptRun {
    fn of(run: WrkRun, stored: u64) -> Self {
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
struct Drain {
    events: usize,
    fill_per_sec: f64,
    drain_secs: f64,
    drain_per_sec: f64,
    raw_insert_secs: f64,
    raw_insert_per_sec: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Step {
    offered_per_sec: u64,
    accepted_per_sec: f64,
    accepted: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    backlog_save_prospect: u64,
    backlog_analytics_indexer: u64,
    caught_up_after_secs: f64,
    holds: bool,
}

#[derive(Serialize)]
struct Sustained {
    step_secs: u64,
    steps: Vec<Step>,
    highest_holding_per_sec: f64,
}

#[derive(Serialize)]
struct Latency {
    rate: u64,
    seconds: u64,
    sign_ups: u64,
    accepted_per_sec: f64,
    refused: u64,
    failed: u64,
    accept_p99_ms: f64,
    visible_p50_ms: f64,
    visible_p99_ms: f64,
    visible_max_ms: f64,
}

#[derive(Serialize, Clone, Copy)]
struct MemoryFigures {
    at_rest_mib: f64,
    peak_under_load_mib: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = std::env::current_exe()?.parent().context("no binary folder")?.to_owned();
    let layout = Layout { bin_dir, config_dir: cli.config_dir.clone(), log_dir: cli.out.join("logs") };
    std::fs::create_dir_all(&cli.out)?;
    let mut results = Results {
        machine: machine(&layout).await,
        first_run_secs: cli.first_run_secs,
        first_run_build_secs: cli.first_run_build_secs,
        ..Results::default()
    };
    let started = Instant::now();
    if cli.phases.iter().any(|p| p == "accept") {
        say("accept: synchronous baseline, then signup-web (wrk, 64 connections)");
        results.accept = Some(accept(&layout, &cli).await.context("accept phase")?);
    }
    if cli.phases.iter().any(|p| p == "drain") {
        say(&format!("drain: {} sign-ups on the stream, then save-prospect", cli.drain_events));
        results.drain = Some(drain(&layout, cli.drain_events).await.context("drain phase")?);
    }
    if cli.phases.iter().any(|p| p == "sustained") {
        say("sustained, latency, memory: web + save-prospect + analytics-indexer");
        let (sustained, latency, memory) = sustained(&layout, &cli).await.context("sustained phase")?;
        (results.sustained, results.latency, results.memory) = (Some(sustained), Some(latency), Some(memory));
    }
    if cli.phases.iter().any(|p| p == "mail") {
        say(&format!(
            "mail: {} confirmation mails, then {} at a relay taking {} ms a mail; mailer vs a plain SMTP client",
            cli.mail_burst, cli.slow_mail_burst, cli.slow_relay_ms
        ));
        let slow = Duration::from_millis(cli.slow_relay_ms);
        results.mail =
            Some(mail::mail(&layout, cli.mail_burst, cli.slow_mail_burst, slow).await.context("mail phase")?);
    }
    if cli.phases.iter().any(|p| p == "cpu") {
        say(
            "cpu: the minimal pipeline, then web + save-prospect + analytics-indexer + mailer under wrk (64 connections, distinct sign-ups), CPU per process",
        );
        results.cpu = Some(cpu(&layout, &cli).await.context("cpu phase")?);
    }
    let path = cli.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("\n{}", table(&results));
    if let Some(cpu) = &results.cpu {
        println!("{}", cpu_table(cpu));
    }
    say(&format!("figures written to {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64()));
    Ok(())
}

fn say(text: &str) {
    eprintln!("==> {text}");
}

async fn machine(layout: &Layout) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    out.insert("cores", std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_default());
    out.insert("nats_server", system::version_of(&test_support::nats_server_bin(), &["--version"]));
    out.insert("wrk", system::version_of(std::path::Path::new("wrk"), &["-v"]).lines().next().unwrap_or("").into());
    out.insert("date", Utc::now().to_rfc3339());
    out.insert("binaries", layout.bin_dir.display().to_string());
    let server =
        std::env::var("SIGNUP_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    if let Ok(mut conn) = AsyncPgConnection::establish(&format!("{}/postgres", server.trim_end_matches('/'))).await {
        #[derive(diesel::QueryableByName)]
        struct Version {
            #[diesel(sql_type = Text)]
            version: String,
        }
        if let Ok(v) = diesel::sql_query("SELECT version()").get_result::<Version>(&mut conn).await {
            out.insert("postgres", v.version);
        }
    }
    out
}

fn web_env(backends: &Backends, port: u16) -> Vec<(&'static str, String)> {
    let mut env = backends.env();
    env.push(("SIGNUP__WEB__PORT", port.to_string()));
    env.push(("SIGNUP__LINKS__SECRET", TOKEN_SECRET.to_owned()));
    env
}

async fn accept(layout: &Layout, cli: &Cli) -> anyhow::Result<Accept> {
    let run_id = Uuid::now_v7().simple().to_string();
    // The design being replaced.
    let database = migrated_database().await?;
    let port = test_support::free_port()?;
    let baseline = Service::spawn(
        layout,
        "sync-baseline",
        "accept-sync-baseline",
        &["--port", &port.to_string(), "--database-url", &database.url()],
        &[],
    )?;
    wait_for_port(port, Duration::from_secs(30)).await?;
    let url = format!("http://127.0.0.1:{port}");
    load::wrk(&cli.wrk_script, &url, 2, cli.connections, &format!("warm{run_id}"), &[]).await?;
    let sync = load::wrk(&cli.wrk_script, &url, cli.accept_secs, cli.connections, &run_id, &[]).await?;
    baseline.stop().await;
    let rows = system::count_prospects(&mut database.connect().await?).await?;
    anyhow::ensure!(rows >= sync.requests - sync.error_count(), "the baseline answered more sign-ups than it saved");
    say(&format!("  sync baseline: {:.0}/s, p99 {:.1} ms", sync.rate(), sync.p99_us as f64 / 1e3));

    // signup-web alone: accept means stored in JetStream.
    let backends = Backends::start().await?;
    let port = test_support::free_port()?;
    let web = Service::spawn(layout, "signup-web", "accept-signup-web", &["serve"], &web_env(&backends, port))?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_http(&format!("{url}/readyz"), Duration::from_secs(30)).await?;
    load::wrk(&cli.wrk_script, &url, 2, cli.connections, &format!("warm{run_id}"), &[]).await?;
    let before = backends.stored().await?;
    let web_run = load::wrk(&cli.wrk_script, &url, cli.accept_secs, cli.connections, &run_id, &[]).await?;
    web.stop().await;
    let stored = backends.stored().await? - before;
    anyhow::ensure!(stored >= web_run.requests - web_run.error_count(), "signup-web answered more than it stored");
    say(&format!("  signup-web: {:.0}/s, p99 {:.1} ms", web_run.rate(), web_run.p99_us as f64 / 1e3));

    // The least a publishing web tier does, on the same nats-server.
    let port = test_support::free_port()?;
    let args = ["--port".to_owned(), port.to_string(), "--nats-url".to_owned(), backends.nats.url()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bare = Service::spawn(layout, "bare-publisher", "accept-bare-publisher", &args, &[])?;
    wait_for_port(port, Duration::from_secs(30)).await?;
    let url = format!("http://127.0.0.1:{port}");
    load::wrk(&cli.wrk_script, &url, 2, cli.connections, &format!("warm{run_id}"), &[]).await?;
    let before = backends.stored().await?;
    let bare_run = load::wrk(&cli.wrk_script, &url, cli.accept_secs, cli.connections, &run_id, &[]).await?;
    bare.stop().await;
    let bare_stored = backends.stored().await? - before;
    anyhow::ensure!(bare_stored >= bare_run.requests - bare_run.error_count(), "the bare publisher lost events");
    say(&format!("  bare publisher: {:.0}/s, p99 {:.1} ms", bare_run.rate(), bare_run.p99_us as f64 / 1e3));
    let bot_check = bot_check_cost(layout, cli, &backends).await.context("the bot check's cost")?;
    Ok(Accept {
        connections: cli.connections,
        seconds: cli.accept_secs,
        ratio: web_run.rate() / sync.rate(),
        to_bare_publisher: web_run.rate() / bare_run.rate(),
        sync_baseline: AcceptRun::of(sync, rows),
        signup_web: AcceptRun::of(web_run, stored),
        bare_publisher: AcceptRun::of(bare_run, bare_stored),
        bot_check,
    })
}

/// signup-web's CPU per sign-up at `cli.bot_check_rate` with the bot check
/// off, then on (the default settings; each sign-up brings a challenge
/// solved beforehand), and its CPU per challenge served.
async fn bot_check_cost(layout: &Layout, cli: &Cli, backends: &Backends) -> anyhow::Result<BotCheckCost> {
    let settings = signup_web::bot_check::BotCheckSettings::default();
    let (rate, secs) = (cli.bot_check_rate, cli.accept_secs);
    // What the server does with a solution (two HMACs, the bucket) does not
    // depend on the work the client did: the proofs are made with the
    // server's keys (the same secret) at the least difficulty, so that
    // solving them does not take the bench minutes.
    let links = links::Links::new(&links::LinkSettings {
        secret: Some(secrecy::SecretString::from(TOKEN_SECRET)),
        ..links::LinkSettings::default()
    })?;
    let cheap = signup_web::bot_check::BotCheckSettings { difficulty: 1, iterations: 1, ..settings.clone() };
    let keys = signup_web::bot_check::BotCheck::new(&cheap, &links);
    let count = usize::try_from(rate * (secs + 1))?;
    say(&format!("  bot check: solving {count} challenges for the run with the check on"));
    let proofs = (0..count)
        .map(|_| {
            let payload = test_support::bot_check::solve(keys.challenge(Utc::now())?);
            // Form-encoded: base64's own characters are the only ones to escape.
            Ok(payload.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"))
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let mut runs = Vec::new();
    for (on, name) in [(false, "accept-bot-check-off"), (true, "accept-bot-check-on")] {
        let port = test_support::free_port()?;
        let mut env = web_env(backends, port);
        env.push(("SIGNUP__WEB__BOT_CHECK__ENABLED", on.to_string()));
        let web = Service::spawn(layout, "signup-web", name, &["serve"], &env)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{url}/readyz"), Duration::from_secs(30)).await?;
        let run_id = Uuid::now_v7().simple().to_string();
        let (warm, measured) = if on { proofs.split_at(usize::try_from(rate)?) } else { (&[][..], &[][..]) };
        load::paced(&url, rate, Duration::from_secs(1), &format!("w{run_id}"), None, on.then_some(warm)).await?;
        let pid = web.pid()?;
        let before = process_ticks(pid)?;
        let run = load::paced(&url, rate, Duration::from_secs(secs), &run_id, None, on.then_some(measured)).await?;
        let used = process_ticks(pid)?.saturating_sub(before);
        anyhow::ensure!(run.failed == 0 && run.accepted > 0, "{name}: {} of the sign-ups failed", run.failed);
        let web_micros = used as f64 * 1e6 / clock_ticks_per_sec() / run.accepted as f64;
        let paced = PacedCpu {
            accepted: run.accepted,
            failed: run.failed,
            p99_ms: run.latency_us.value_at_quantile(0.99) as f64 / 1e3,
            web_micros,
        };
        say(&format!(
            "  bot check {}: {web_micros:.1} µs of signup-web CPU per sign-up",
            if on { "on" } else { "off" }
        ));
        let challenges = if on {
            let before = process_ticks(pid)?;
            let served = load::wrk(&challenge_script(), &url, 5, 16, &run_id, &[]).await?;
            let used = process_ticks(pid)?.saturating_sub(before);
            anyhow::ensure!(served.error_count() == 0, "challenges failed: {:?}", served.errors);
            Some((served.rate(), used as f64 * 1e6 / clock_ticks_per_sec() / served.requests as f64))
        } else {
            None
        };
        web.stop().await;
        runs.push((paced, challenges));
    }
    let (on, challenges) = runs.pop().context("the run with the check on")?;
    let (off, _) = runs.pop().context("the run with the check off")?;
    let (challenges_per_sec, challenge_micros) = challenges.context("the challenges' run")?;
    say(&format!("  bot check: {challenge_micros:.0} µs of CPU per challenge served"));
    Ok(BotCheckCost {
        rate,
        seconds: secs,
        check_micros: on.web_micros - off.web_micros,
        ratio: on.web_micros / off.web_micros,
        off,
        on,
        challenges_per_sec,
        challenge_micros,
        difficulty: settings.difficulty,
        iterations: settings.iterations,
    })
}

/// The wrk script that asks for challenges, beside the sign-up one.
fn challenge_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/wrk/challenge.lua"))
}

/// `count` distinct sign-ups as the web would publish them.
fn sign_ups(count: usize) -> Vec<ProspectSignedUp> {
    let run = Uuid::now_v7().simple().to_string();
    (0..count)
        .map(|i| ProspectSignedUp {
            prospect_id: Uuid::now_v7(),
            details: ProspectDetails {
                first_name: "Drain".into(),
                last_name: "Visitor".into(),
                email: format!("d{i}.{run}@example.com"),
                company_name: Some("Acme".into()),
                country: Country { code: "NL".into(), name: "Netherlands".into() },
                role: Role { code: "EN".into(), name: "Engineer".into() },
            },
            signed_up_at: Utc::now(),
            consent: messages::Consent::NotRecorded,
        })
        .collect()
}

/// Publishes `events` to `backends`' stream as signup-web does (each with
/// its PubAck), a thousand under way at a time.
async fn publish_all(backends: &Backends, events: &[ProspectSignedUp]) -> anyhow::Result<()> {
    let client = bus::async_nats::connect(backends.nats.url()).await?;
    let publisher = Publisher::new(client, "/signup-bench", Duration::from_secs(30));
    futures::stream::iter(events)
        .map(|event| {
            let publisher = &publisher;
            async move { publisher.publish(event, &EventContext::new()).await }
        })
        .buffer_unordered(1_000)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(())
}

async fn drain(layout: &Layout, count: usize) -> anyhow::Result<Drain> {
    let backends = Backends::start().await?;
    let events = sign_ups(count);
    let start = Instant::now();
    publish_all(&backends, &events).await?;
    let fill_per_sec = count as f64 / start.elapsed().as_secs_f64();
    say(&format!("  stream filled at {fill_per_sec:.0}/s"));

    let mut service = Service::spawn(layout, "save-prospect", "drain-save-prospect", &["run"], &backends.env())?;
    let start = Instant::now();
    backends.wait_for_consumer(SAVE, Duration::from_secs(60)).await?;
    loop {
        service.ensure_running()?;
        if backends.backlog(SAVE).await? == 0 {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "save-prospect did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = start.elapsed().as_secs_f64();
    service.stop().await;
    let rows = system::count_prospects(&mut backends.database.connect().await?).await?;
    anyhow::ensure!(rows == count as u64, "{rows} rows after the drain, expected {count}");
    say(&format!("  drained in {drain_secs:.2} s: {:.0} events/s", count as f64 / drain_secs));

    // The same rows, inserted directly: batches of 500, one transaction each.
    let raw = migrated_database().await?;
    let mut conn = raw.connect().await?;
    let start = Instant::now();
    for chunk in events.chunks(500) {
        conn.transaction(async |conn| raw_insert(conn, chunk).await).await?;
    }
    let raw_insert_secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(system::count_prospects(&mut conn).await? == count as u64, "raw insert lost rows");
    say(&format!("  raw batched insert: {:.0} rows/s", count as f64 / raw_insert_secs));
    Ok(Drain {
        events: count,
        fill_per_sec,
        drain_secs,
        drain_per_sec: count as f64 / drain_secs,
        raw_insert_secs,
        raw_insert_per_sec: count as f64 / raw_insert_secs,
        ratio: raw_insert_secs / drain_secs,
    })
}

async fn raw_insert(conn: &mut AsyncPgConnection, chunk: &[ProspectSignedUp]) -> diesel::QueryResult<usize> {
    let column = |f: fn(&ProspectSignedUp) -> String| chunk.iter().map(f).collect::<Vec<String>>();
    diesel::sql_query(
        "INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                                signed_up_at, updated_at, last_event_seq) \
         SELECT id, email, first_name, last_name, company_name, country_code, role_code, at, at, 0 \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::timestamptz[]) AS u(id, email, first_name, last_name, company_name, country_code, role_code, at)",
    )
    .bind::<Array<SqlUuid>, _>(chunk.iter().map(|e| e.prospect_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|e| e.details.email.clone()))
    .bind::<Array<Text>, _>(column(|e| e.details.first_name.clone()))
    .bind::<Array<Text>, _>(column(|e| e.details.last_name.clone()))
    .bind::<Array<Nullable<Text>>, _>(chunk.iter().map(|e| e.details.company_name.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|e| e.details.country.code.clone()))
    .bind::<Array<Text>, _>(column(|e| e.details.role.code.clone()))
    .bind::<Array<Timestamptz>, _>(chunk.iter().map(|e| e.signed_up_at).collect::<Vec<_>>())
    .execute(conn)
    .await
}

/// web, save-prospect and analytics-indexer as `scripts/run` starts them,
/// consuming, on `backends`.
struct System {
    services: Vec<Service>,
    url: String,
    _index_dir: tempfile::TempDir,
}

impl System {
    /// The three services; with `mail`, the mailer too, sending to that
    /// server.
    async fn start(
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

    async fn stop(self) {
        for service in self.services {
            service.stop().await;
        }
    }
}

async fn sustained(layout: &Layout, cli: &Cli) -> anyhow::Result<(Sustained, Latency, HashMap<String, MemoryFigures>)> {
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

/// CPU per accepted sign-up, by process: the whole system as `scripts/run`
/// starts it (web, save-prospect, analytics-indexer, the mailer), its
/// nats-server and the Postgres processes, over a load of distinct sign-ups
/// and until every handler caught up; next to the minimal pipeline
/// ([`pipeline`]) on the same servers in the same run. The SMTP server that
/// takes the mail (the tests' aiosmtpd) is measured too, but it stands for
/// the receivers out on the internet and is left out of the system's total.
#[derive(Serialize)]
struct CpuPerSignUp {
    seconds: u64,
    connections: u32,
    accepted: u64,
    accepted_per_sec: f64,
    drained_after_secs: f64,
    /// Microseconds of CPU (user + system) per accepted sign-up.
    micros: BTreeMap<String, f64>,
    /// web, save-prospect and analytics-indexer (the figure of earlier runs).
    services_micros: f64,
    /// The whole system: the four services, nats-server and Postgres.
    total_micros: f64,
    /// The reference, per event.
    minimal: pipeline::Minimal,
    /// total / the reference's.
    ratio: f64,
}

/// The mail server's name among the processes measured.
const MAIL_SINK: &str = "SMTP server (aiosmtpd, not counted)";

async fn cpu(layout: &Layout, cli: &Cli) -> anyhow::Result<CpuPerSignUp> {
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
fn micros_per(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, items: u64) -> BTreeMap<String, f64> {
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
fn cpu_ticks(processes: &[(String, u32)]) -> anyhow::Result<BTreeMap<String, u64>> {
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
fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')').context("malformed stat")?.1.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    // utime + stime, and the time of children it waited for (the
    // postmaster's ended backends).
    Ok(field(11)? + field(12)? + field(13)? + field(14)?)
}

/// `getconf CLK_TCK` (100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn step(offered: u64, run: &WrkRun, save: u64, index: u64, caught_up: Duration) -> Step {
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

async fn latency(url: &str, backends: &Backends, cli: &Cli) -> anyhow::Result<Latency> {
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
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// For every accepted sign-up, the time from its 303 until its row is
/// visible, polling Postgres every 2 ms.
async fn watch_rows(
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

/// The "CPU per sign-up by process" table.
fn cpu_table(c: &CpuPerSignUp) -> String {
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

fn table(r: &Results) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let yes = |ok: bool| if ok { "yes" } else { "NO" }.to_owned();
    if let Some(a) = &r.accept {
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
    if let Some(d) = &r.drain {
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
        rows.push([
            "drain: handler / raw".into(),
            format!("{:.0}%", d.ratio * 100.0),
            "≥ 60%".into(),
            yes(d.ratio >= 0.6),
        ]);
    }
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
    if let Some(m) = &r.mail {
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
    if let Some(c) = &r.cpu {
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
    if let Some(secs) = r.first_run_secs {
        let minutes = |secs: f64| format!("{}:{:02} min", secs.round() as u64 / 60, secs.round() as u64 % 60);
        let split = match r.first_run_build_secs {
            Some(build) => format!(" (build {}, installs and start-up {})", minutes(build), minutes(secs - build)),
            None => String::new(),
        };
        rows.push([
            "first scripts/run on a fresh clone, to the form answering".into(),
            format!("{}{split}", minutes(secs)),
            "≤ 5 min".into(),
            yes(secs <= 300.0),
        ]);
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
