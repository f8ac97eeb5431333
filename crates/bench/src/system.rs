//! The system under test: service processes from the release build, a private
//! nats-server, and databases of their own on the machine's Postgres.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::async_nats::jetstream;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use test_support::{NatsServer, TestDatabase};
use tokio::process::{Child, Command};

/// Where the release binaries and the logs are.
#[derive(Clone)]
pub struct Layout {
    /// The folder holding the release binaries (next to this one).
    pub bin_dir: PathBuf,
    /// The repository's `config/` folder, as `scripts/run` uses it.
    pub config_dir: PathBuf,
    /// Where service logs go.
    pub log_dir: PathBuf,
}

impl Layout {
    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        anyhow::ensure!(path.is_file(), "{} is missing: build it with `cargo build --release`", path.display());
        Ok(path)
    }
}

/// A service process; killed when dropped.
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    /// Starts `name` with `args` and `env`, its output to `<log_dir>/<log>.log`.
    pub fn spawn(
        layout: &Layout,
        name: &str,
        log: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&layout.log_dir)?;
        let file = std::fs::File::create(layout.log_dir.join(format!("{log}.log")))?;
        let child = Command::new(layout.binary(name)?)
            .args(args)
            .env("SIGNUP_CONFIG_DIR", &layout.config_dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().with_context(|| format!("{} has exited", self.name))
    }

    /// Resident memory now and at its peak so far, in MiB.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
            let kib: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
            Ok(kib / 1024.0)
        };
        Ok(Memory { rss_mib: field("VmRSS:")?, peak_mib: field("VmHWM:")? })
    }

    /// Fails when the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM and a short wait, so it can finish cleanly.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

/// A private nats-server and a database of the run's own.
pub struct Backends {
    pub nats: NatsServer,
    pub database: TestDatabase,
    stream: jetstream::stream::Stream,
}

impl Backends {
    /// A fresh nats-server (JetStream, file store) and a created, migrated database.
    pub async fn start() -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = bus::async_nats::connect(nats.url()).await?;
        let js = jetstream::new(client);
        let stream = bus::ensure_stream(&js, &bus::StreamSettings::default()).await?;
        let database = migrated_database().await?;
        Ok(Self { nats, database, stream })
    }

    /// The environment every service gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SIGNUP__NATS__URL", self.nats.url()),
            ("SIGNUP__DATABASE__URL", self.database.url()),
            // Load comes from one address; health ports must not collide with a running stack.
            ("SIGNUP__WEB__RATE_LIMIT__PER_MINUTE", "0".to_owned()),
            ("SIGNUP__WEB__RATE_LIMIT__LOOKUPS_PER_MINUTE", "0".to_owned()),
            // The load posts bare forms; the accept phase measures the bot
            // check apart, with proofs (`bot_check_cost`).
            ("SIGNUP__WEB__BOT_CHECK__ENABLED", "false".to_owned()),
            ("SIGNUP__SAVE_PROSPECT__HTTP__PORT", "0".to_owned()),
        ]
    }

    /// Events of the stream not yet acked by `consumer` (0 when the consumer
    /// does not exist yet is an error).
    pub async fn backlog(&self, consumer: &str) -> anyhow::Result<u64> {
        let info = self.stream.consumer_info(consumer).await.with_context(|| format!("consumer {consumer}"))?;
        Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or_default())
    }

    /// Events stored in the stream.
    pub async fn stored(&self) -> anyhow::Result<u64> {
        Ok(self.stream.get_info().await?.state.messages)
    }

    /// Waits until `consumer` exists (its service is consuming).
    pub async fn wait_for_consumer(&self, consumer: &str, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        while self.backlog(consumer).await.is_err() {
            anyhow::ensure!(Instant::now() < until, "{consumer} did not start consuming within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until every consumer has no backlog; returns how long that took.
    pub async fn wait_drained(&self, consumers: &[&str], limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let mut left = 0;
            for consumer in consumers {
                left += self.backlog(consumer).await?;
            }
            if left == 0 {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(start.elapsed() < limit, "{left} events still pending after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A new database on the machine's Postgres, created and migrated the way
/// save-prospect does it.
pub async fn migrated_database() -> anyhow::Result<TestDatabase> {
    let database = TestDatabase::new();
    let plain = save_prospect::db::Connector::plain();
    save_prospect::db::create_database_if_missing(&database.url(), &plain).await?;
    let pool = save_prospect::db::pool(&database.url(), 1, &plain)?;
    save_prospect::db::migrate(&pool).await?;
    Ok(database)
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows in `prospects`.
pub async fn count_prospects(conn: &mut diesel_async::AsyncPgConnection) -> anyhow::Result<u64> {
    let count: Count = diesel::sql_query("SELECT count(*) AS n FROM prospects").get_result(conn).await?;
    Ok(u64::try_from(count.n)?)
}

/// Waits until `url` answers 200.
pub async fn wait_for_http(url: &str, limit: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let until = Instant::now() + limit;
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < until, "{url} did not answer 200 within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until something listens on `port`.
pub async fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < until, "nothing listens on {port} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A version string printed by `program --version`-like arguments.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
