//! The accept phase: wrk against the synchronous baseline, signup-web and the
//! bare publisher, then what the bot check costs signup-web.

use std::time::Duration;

use anyhow::Context as _;

use chrono::Utc;

use uuid::Uuid;

use crate::cpu::{clock_ticks_per_sec, process_ticks};
use crate::{load, system};

use crate::system::{Backends, Layout, Service, migrated_database, wait_for_http, wait_for_port};

use crate::report::*;
use crate::{Cli, TOKEN_SECRET, challenge_script, say, web_env};

pub(crate) async fn accept(layout: &Layout, cli: &Cli) -> anyhow::Result<Accept> {
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
pub(crate) async fn bot_check_cost(layout: &Layout, cli: &Cli, backends: &Backends) -> anyhow::Result<BotCheckCost> {
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
