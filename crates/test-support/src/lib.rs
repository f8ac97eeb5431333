//! Helpers for Signup's integration tests, which talk to real servers only.
//!
//! - [`NatsServer`]: a private `nats-server` with JetStream on a free port and
//!   a temporary store, which a test can stop and restart (same port, same
//!   store) to exercise outages.
//! - [`TestDatabase`]: a uniquely named Postgres database on the machine's
//!   server, dropped when the test ends.
//! - [`otlp::OtlpReceiver`]: an OTLP/HTTP trace receiver the services export
//!   their spans to, as to a collector.
//! - [`bot_check::solve`]: a bot-check challenge solved, as a client sends it.
//!
//! `NATS_SERVER_BIN` picks the `nats-server` binary (default: the project's
//! own in `.local/venv/bin`, then from `PATH`, then `/usr/sbin/nats-server`);
//! `SIGNUP_TEST_POSTGRES_URL` the Postgres server (default
//! `postgres://postgres@127.0.0.1:5432`).

pub mod bot_check;
pub mod mail;
pub mod otlp;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::process::{Child, Command};

/// A `nats-server` owned by one test.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and waits until it
    /// accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut server = Self { port, store: tempfile::tempdir()?, child: None, config: None };
        server.restart().await?;
        Ok(server)
    }

    /// Starts a server from a configuration file (users, permissions) with
    /// these environment variables (the passwords it refers to). The test's
    /// own port and monitoring port override the file's, and its JetStream
    /// `store_dir` is replaced by a temporary one (nats-server refuses both
    /// the file's and a command-line store).
    pub async fn start_with_config(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = tempfile::tempdir()?;
        let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
        let jetstream = store.path().join("jetstream");
        let text: String = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("store_dir") {
                    format!("  store_dir: \"{}\"\n", jetstream.display())
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let copy = store.path().join("nats-server.conf");
        std::fs::write(&copy, text)?;
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server = Self { port, store, child: None, config: Some((copy, env)) };
        server.restart().await?;
        Ok(server)
    }

    /// The server's process id while it runs (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would). Its store is kept.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing nats-server")?;
        }
        Ok(())
    }

    /// (Re)starts the server on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let mut command = Command::new(nats_server_bin());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        match &self.config {
            Some((config, env)) => {
                command.arg("-c").arg(config).args(["-m", &free_port()?.to_string()]).envs(env.iter().cloned())
            }
            None => command.args(["-js", "-sd"]).arg(self.store.path()),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (install it, or set NATS_SERVER_BIN)")?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10)).await
    }
}

/// A JetStream cluster of real `nats-server` processes on loopback: each
/// node with its own client, route and monitoring port and its own store,
/// routes to every other node. Nodes can be killed (as a crash), stopped
/// (SIGTERM, as an orderly restart does) and started again with their store.
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

struct ClusterNode {
    name: String,
    port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream has a meta leader
    /// (every node answers its health check).
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> =
            (0..size).map(|_| Ok((free_port()?, free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports.iter().map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}")).collect();
        let mut nodes = Vec::new();
        for (i, (port, route, monitor_port)) in ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{ store_dir: \"{}\", max_file_store: 10G }}\n\
                     cluster {{ name: signup-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )?;
            nodes.push(ClusterNode { name, port, monitor_port, config, child: None });
        }
        let mut cluster = Self { nodes, _dir: dir };
        for i in 0..size {
            cluster.start_node(i)?;
        }
        for i in 0..size {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    /// The seed list the services connect with: every node's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The node called `name` (`n1`, `n2`, ...), as the servers name it in
    /// stream and consumer information.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILL to node `i`: a crash, nothing flushed or handed over.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().await.with_context(|| format!("killing {}", self.nodes[i].name))?;
        }
        Ok(())
    }

    /// SIGTERM to node `i`, then waits for it to exit: the orderly stop of a
    /// rolling restart (the node hands its leaderships over first).
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            let pid = child.id().context("the node already exited")?;
            let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .with_context(|| format!("{} did not stop within 30 s", self.nodes[i].name))??;
        }
        Ok(())
    }

    /// Starts node `i` again with its store, and waits until it is healthy:
    /// back in the cluster and caught up on its streams and consumers.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_node(i)?;
        self.wait_healthy(i).await
    }

    fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (install it, or set NATS_SERVER_BIN)")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits (up to a minute) until node `i` answers 200 on `/healthz`: the
    /// server is up, JetStream has a meta leader, and the node's streams
    /// and consumers are current.
    pub async fn wait_healthy(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let what = format!("{} to be healthy", node.name);
        eventually(Duration::from_secs(60), &what, || http_ok(node.monitor_port, "/healthz")).await
    }
}

/// `Some(())` when `GET path` on 127.0.0.1:`port` answers 200.
async fn http_ok(port: u16, path: &str) -> Option<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    (&head[9..12] == b"200").then_some(())
}

/// The project's own tools folder (`.local/venv/bin`), where `scripts/test`
/// installs a current `nats-server` and a Python with aiosmtpd.
fn local_tool(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local/venv/bin").join(name);
    path.is_file().then_some(path)
}

/// The `nats-server` binary the tests start: `NATS_SERVER_BIN`, else the
/// project's own (`.local/venv/bin/nats-server`, a current release), else
/// from `PATH`, else `/usr/sbin/nats-server`. The system needs 2.10 or later.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    if let Some(bin) = local_tool("nats-server") {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// The Python the tests' mail tools run on (aiosmtpd, dkimpy):
/// `SIGNUP_TEST_PYTHON`, else the project's `.local/venv`, else `python3`.
pub fn test_python() -> PathBuf {
    std::env::var_os("SIGNUP_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| local_tool("python"))
        .unwrap_or_else(|| "python3".into())
}

/// A real SMTP server (Python's aiosmtpd) that stores what it receives in a
/// maildir. `SIGNUP_TEST_PYTHON` names a Python with aiosmtpd installed;
/// default the project's own (`.local/venv/bin/python`, which `scripts/test`
/// prepares), else `python3`. It refuses some
/// recipients as real servers do (`python/signup_smtp.py`): `refused…@` with
/// a permanent 550, `later-N…@` with a transient 451 on its first N tries.
/// A slow one ([`SmtpServer::start_slow`]) answers each mail after a delay,
/// and every one tells how many mails it held at once
/// ([`SmtpServer::peak_transactions`]).
pub struct SmtpServer {
    port: u16,
    maildir: tempfile::TempDir,
    child: Option<Child>,
}

/// How an [`SmtpServer`] takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP.
    Plain,
    /// Plain first, then TLS after `STARTTLS` (required before mail).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

impl SmtpServer {
    /// Starts a plain server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port()?).await
    }

    /// Starts a plain server on `port`.
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::launch(port, SmtpTls::Plain, Duration::ZERO).await
    }

    /// Starts a plain server on a free port that answers each mail `delay`
    /// after its data arrived: a slow relay.
    pub async fn start_slow(delay: Duration) -> anyhow::Result<Self> {
        Self::launch(free_port()?, SmtpTls::Plain, delay).await
    }

    /// Starts a server on a free port speaking `tls`, with a self-signed
    /// certificate for `localhost` and `127.0.0.1` ([`SmtpServer::certificate`]).
    pub async fn start_tls(tls: SmtpTls) -> anyhow::Result<Self> {
        Self::launch(free_port()?, tls, Duration::ZERO).await
    }

    async fn launch(port: u16, tls: SmtpTls, delay: Duration) -> anyhow::Result<Self> {
        // (The Python with aiosmtpd: `test_python`.)
        let maildir = tempfile::tempdir()?;
        let mut command = Command::new(test_python());
        command
            .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
            .env("SIGNUP_SMTP_DELAY_MS", delay.as_millis().to_string())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "signup_smtp.Maildir"]);
        if tls != SmtpTls::Plain {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
            let (cert, key) = (maildir.path().join("cert.pem"), maildir.path().join("key.pem"));
            std::fs::write(&cert, certified.cert.pem())?;
            std::fs::write(&key, certified.signing_key.serialize_pem())?;
            let (cert_flag, key_flag) =
                if tls == SmtpTls::StartTls { ("--tlscert", "--tlskey") } else { ("--smtpscert", "--smtpskey") };
            command.arg(cert_flag).arg(&cert).arg(key_flag).arg(&key);
        }
        let child = command
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting aiosmtpd (pip install aiosmtpd, or set SIGNUP_TEST_PYTHON)")?;
        let server = Self { port, maildir, child: Some(child) };
        wait_for_port(port, Duration::from_secs(15)).await?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The PEM file of its certificate (a TLS server's only), to trust it.
    pub fn certificate(&self) -> PathBuf {
        self.maildir.path().join("cert.pem")
    }

    /// The most mails it held at once so far (their data received, not yet
    /// answered): 1 when every client sent one mail at a time.
    pub fn peak_transactions(&self) -> usize {
        std::fs::read_to_string(self.maildir.path().join("mail.peak"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many messages it received so far (without reading them or the
    /// maildir: cheap enough to poll often).
    pub fn received(&self) -> usize {
        std::fs::read_to_string(self.maildir.path().join("mail.count"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let mut files: Vec<_> =
            std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
    }

    /// The raw messages received so far for `address` (a `To:` header that
    /// names it, in any case).
    pub fn messages_to(&self, address: &str) -> Vec<String> {
        let address = address.to_lowercase();
        self.messages()
            .into_iter()
            .filter(|m| {
                // The header as a reader sees it: unfolded, decoded.
                mailparse::parse_headers(m.as_bytes()).is_ok_and(|(headers, _)| {
                    headers
                        .iter()
                        .filter(|h| h.get_key_ref().eq_ignore_ascii_case("to"))
                        .any(|h| h.get_value().to_lowercase().contains(&address))
                })
            })
            .collect()
    }

    /// Stops the server.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
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

/// A Postgres database of its own for one test; dropped with the value.
pub struct TestDatabase {
    name: String,
    server: String,
}

impl TestDatabase {
    /// A fresh, unique database name on the test server. The database itself
    /// is created by whoever connects first (save-prospect creates missing
    /// databases), or by [`TestDatabase::create`].
    pub fn new() -> Self {
        let server = std::env::var("SIGNUP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("signup_test_{}", uuid::Uuid::now_v7().simple());
        Self { name, server: server.trim_end_matches('/').to_owned() }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Opens a connection to the database.
    pub async fn connect(&self) -> anyhow::Result<AsyncPgConnection> {
        AsyncPgConnection::establish(&self.url()).await.context("connecting to the test database")
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow, so the clean-up
        // gets a small runtime of its own on a plain thread.
        let admin = format!("{}/postgres", self.server);
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin).await.ok()?;
                diesel::sql_query(statement).execute(&mut conn).await.ok()
            })
        });
        let _ = cleanup.join();
    }
}
