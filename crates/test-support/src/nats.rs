//! A private `nats-server` per test, and a three-node cluster of them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::{eventually, free_port, local_tool, wait_for_port};

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
    /// the file's and a command-line store). The files it includes are
    /// copied beside it.
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
        std::fs::write(&copy, &text)?;
        // The files it includes (the users), which nats-server finds beside it.
        let folder = config.parent().unwrap_or(Path::new("."));
        for included in text.lines().filter_map(|line| line.trim().strip_prefix("include ")) {
            let name = included.trim().trim_matches('"');
            std::fs::copy(folder.join(name), store.path().join(name))
                .with_context(|| format!("copying {name}, which {} includes", config.display()))?;
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server = Self { port, store, child: None, config: Some((copy, env)) };
        server.restart().await?;
        Ok(server)
    }

    /// The server's process id while it runs (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server's process where it is (SIGSTOP), connections open:
    /// a server that takes requests and does not answer them, as one does
    /// under heavy load. [`Self::thaw`] lets it go on.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the server is not running")?;
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid}: {status}");
        Ok(())
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
