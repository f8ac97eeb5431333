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

mod accept;
mod cpu;
mod drain;
mod load;
mod mail;
mod pipeline;
mod report;
mod sustained;
mod system;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::{EventContext, Publisher};
use chrono::Utc;
use clap::Parser;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{StreamExt as _, TryStreamExt as _};

use messages::{Country, ProspectDetails, ProspectSignedUp, Role};

use uuid::Uuid;

pub(crate) use crate::cpu::{cpu_ticks, micros_per};
pub(crate) use crate::drain::raw_insert;
use crate::report::Results;
use crate::system::{Backends, Layout};

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
        results.accept = Some(accept::accept(&layout, &cli).await.context("accept phase")?);
    }
    if cli.phases.iter().any(|p| p == "drain") {
        say(&format!("drain: {} sign-ups on the stream, then save-prospect", cli.drain_events));
        results.drain = Some(drain::drain(&layout, cli.drain_events).await.context("drain phase")?);
    }
    if cli.phases.iter().any(|p| p == "sustained") {
        say("sustained, latency, memory: web + save-prospect + analytics-indexer");
        let (sustained, latency, memory) = sustained::sustained(&layout, &cli).await.context("sustained phase")?;
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
        results.cpu = Some(cpu::cpu(&layout, &cli).await.context("cpu phase")?);
    }
    let path = cli.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("\n{}", report::table(&results));
    if let Some(cpu) = &results.cpu {
        println!("{}", report::cpu_table(cpu));
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
                email: format!("d{i}.{run}@example.com").into(),
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
