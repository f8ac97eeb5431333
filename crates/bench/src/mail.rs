//! The mail phase: how fast the confirmation mails of a burst of sign-ups
//! reach a real SMTP server, next to a plain SMTP client on the same server
//! in the same run.
//!
//! The server is the tests' aiosmtpd (`test_support::SmtpServer`: every
//! mail kept in a maildir), once answering at once and once as a slow relay
//! that answers each mail `slow_delay` after its data arrived. Against each:
//! - **plain client**: the same mails (the mailer's own confirmation mail,
//!   written the same way), sent by Python's smtplib over as many
//!   connections as the mailer has (`mailer.smtp.pool_size`, 4), each
//!   sending its share one after another: what SMTP itself allows on this
//!   machine;
//! - **mailer**: the release `mailer` and `save-prospect` (who holds an
//!   address) on a private nats-server; the sign-ups are published the way
//!   signup-web publishes them, and the clock runs from the first publish to
//!   the last mail kept. The budget of mails to unconfirmed addresses is
//!   off (`mailer.budget`): with it on, a burst at one domain is paced on
//!   purpose, which is not what this measures.
//!
//! Afterwards every address has exactly one mail: a mail sent twice fails
//! the phase.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use test_support::SmtpServer;

use crate::system::{Backends, Layout, Service};

/// The mailer's durable consumer.
pub const MAILER: &str = "mailer";

#[derive(Serialize)]
pub struct Mail {
    /// Mails of the burst against the fast server.
    pub burst: usize,
    pub fast: Pair,
    /// Mails of the burst against the slow relay.
    pub slow_burst: usize,
    /// How long the slow relay takes over each mail.
    pub slow_delay_ms: u64,
    pub slow: Pair,
    /// SMTP connections of each (the mailer's `pool_size`).
    pub connections: u32,
}

/// The plain client and the mailer on one server.
#[derive(Serialize)]
pub struct Pair {
    pub plain_client: Rate,
    pub mailer: Rate,
    /// mailer / plain client.
    pub ratio: f64,
}

#[derive(Serialize, Clone)]
pub struct Rate {
    pub mails: usize,
    pub secs: f64,
    pub per_sec: f64,
    /// The mailer's run only: microseconds of CPU per mail of the mailer,
    /// save-prospect (asked who holds each address), nats-server and
    /// Postgres, from the first publish until every mail was kept.
    pub cpu_micros: Option<BTreeMap<String, f64>>,
}

impl Rate {
    fn of(mails: usize, took: Duration) -> Self {
        let secs = took.as_secs_f64();
        Self { mails, secs, per_sec: mails as f64 / secs, cpu_micros: None }
    }
}

/// Runs the phase: `burst` mails at the fast server, `slow_burst` at a relay
/// answering after `slow_delay`.
pub async fn mail(layout: &Layout, burst: usize, slow_burst: usize, slow_delay: Duration) -> anyhow::Result<Mail> {
    let connections = smtp::SmtpSettings::default().pool_size;
    let fast = SmtpServer::start().await.context("the SMTP server")?;
    let fast = pair(layout, &fast, burst, "fast").await.context("the fast server")?;
    let slow = SmtpServer::start_slow(slow_delay).await.context("the slow relay")?;
    let slow = pair(layout, &slow, slow_burst, "slow").await.context("the slow relay")?;
    Ok(Mail { burst, fast, slow_burst, slow_delay_ms: u64::try_from(slow_delay.as_millis())?, slow, connections })
}

async fn pair(layout: &Layout, server: &SmtpServer, count: usize, label: &str) -> anyhow::Result<Pair> {
    let plain_client = plain_client(server, count).await?;
    crate::say(&format!(
        "  {label}: plain client, {count} mails in {:.2} s: {:.0} mails/s",
        plain_client.secs, plain_client.per_sec
    ));
    let mailer = mailer(layout, server, count, label).await?;
    let cpu = mailer.cpu_micros.iter().flatten().map(|(name, micros)| format!("{name} {micros:.0}"));
    crate::say(&format!(
        "  {label}: mailer, {count} confirmation mails in {:.2} s: {:.0} mails/s ({:.2} of the plain client); \
         CPU per mail, µs: {}",
        mailer.secs,
        mailer.per_sec,
        mailer.per_sec / plain_client.per_sec,
        cpu.collect::<Vec<_>>().join(", ")
    ));
    Ok(Pair { ratio: mailer.per_sec / plain_client.per_sec, plain_client, mailer })
}

/// The SMTP settings of a plain connection to `server`.
fn smtp_settings(server: &SmtpServer) -> smtp::SmtpSettings {
    smtp::SmtpSettings { port: server.port(), tls: smtp::SmtpTls::None, ..smtp::SmtpSettings::default() }
}

/// `count` confirmation mails written as the mailer writes them, sent by a
/// plain SMTP client (Python's smtplib, `python/plain_smtp_client.py`) over
/// `pool_size` connections, each sending its share one after another.
async fn plain_client(server: &SmtpServer, count: usize) -> anyhow::Result<Rate> {
    let settings = smtp_settings(server);
    let sender = smtp::Sender::new("Signup <signup@localhost>".parse()?, &settings, "bench.smtp")?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let folder = tempfile::tempdir()?;
    for i in 0..count {
        let to = format!("plain{i}.{run}@example.com");
        let email = mailer::email::Email {
            kind: mailer::email::Kind::Confirm,
            to: to.clone(),
            confirm_url: Some(format!("https://signup.example/prospects/confirm/{run}{i}")),
            manage_url: Some(format!("https://signup.example/prospects/manage/{run}{i}")),
            not_me_url: Some(format!("https://signup.example/prospects/not-me/{run}{i}")),
            new_email: None,
            confirm_days: 7,
            manage_days: 30,
        };
        let message = email.message(&sender, &format!("{run}{i}"))?;
        std::fs::write(folder.path().join(format!("{to}.eml")), message.formatted())?;
    }
    let before = server.received();
    let output = tokio::process::Command::new(test_support::test_python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/plain_smtp_client.py"))
        .args([server.port().to_string(), settings.pool_size.to_string()])
        .arg(folder.path())
        .output()
        .await
        .context("running the plain SMTP client")?;
    anyhow::ensure!(output.status.success(), "the plain client failed: {}", String::from_utf8_lossy(&output.stderr));
    let secs: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().context("the plain client's time")?;
    anyhow::ensure!(server.received() == before + count, "the server kept {} of {count}", server.received() - before);
    Ok(Rate::of(count, Duration::from_secs_f64(secs)))
}

/// What the mailer gets besides the backends' environment: plain SMTP to
/// `server`, the links' secret, and no budget of mails to unconfirmed
/// addresses (a burst at one domain would be paced on purpose).
pub fn mailer_env(server: &SmtpServer) -> [(&'static str, String); 6] {
    [
        ("SIGNUP__LINKS__SECRET", crate::TOKEN_SECRET.to_owned()),
        ("SIGNUP__MAILER__SMTP__PORT", server.port().to_string()),
        ("SIGNUP__MAILER__SMTP__TLS", "none".to_owned()),
        ("SIGNUP__MAILER__HTTP__PORT", "0".to_owned()),
        ("SIGNUP__MAILER__BUDGET__PER_DOMAIN", "0".to_owned()),
        ("SIGNUP__MAILER__BUDGET__TOTAL", "0".to_owned()),
    ]
}

/// The release mailer (with save-prospect, which it asks who holds an
/// address) on a fresh nats-server: from publishing `count` sign-ups to the
/// last of their mails kept by `server`.
async fn mailer(layout: &Layout, server: &SmtpServer, count: usize, label: &str) -> anyhow::Result<Rate> {
    let backends = Backends::start().await?;
    let saver =
        Service::spawn(layout, "save-prospect", &format!("mail-{label}-save-prospect"), &["run"], &backends.env())?;
    let mut env = backends.env();
    env.extend(mailer_env(server));
    let mut mailer = Service::spawn(layout, "mailer", &format!("mail-{label}-mailer"), &["run"], &env)?;
    backends.wait_for_consumer(MAILER, Duration::from_secs(60)).await?;
    backends.wait_for_consumer(crate::SAVE, Duration::from_secs(60)).await?;
    let events = crate::sign_ups(count);
    let processes = vec![
        ("mailer".to_owned(), mailer.pid()?),
        ("save-prospect".to_owned(), saver.pid()?),
        ("nats-server".to_owned(), backends.nats.pid().context("nats-server has exited")?),
    ];
    let ticks = crate::cpu_ticks(&processes)?;
    let before = server.received();
    let start = Instant::now();
    crate::publish_all(&backends, &events).await?;
    let limit = Duration::from_secs(600);
    while server.received() < before + count {
        mailer.ensure_running()?;
        anyhow::ensure!(start.elapsed() < limit, "{} of {count} mails after {limit:?}", server.received() - before);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let cpu_micros = crate::micros_per(&ticks, &crate::cpu_ticks(&processes)?, count as u64);
    backends.wait_drained(&[MAILER], Duration::from_secs(60)).await?;
    mailer.stop().await;
    saver.stop().await;
    let kept = server.received() - before;
    anyhow::ensure!(kept == count, "{kept} mails for {count} sign-ups: some were sent twice");
    Ok(Rate { cpu_micros: Some(cpu_micros), ..Rate::of(count, took) })
}
