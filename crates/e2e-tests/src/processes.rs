//! The services as real processes, for fault tests: they can be killed with
//! SIGKILL, stopped with SIGTERM, and restarted.
//!
//! The binaries are the workspace's debug builds next to the running test
//! (`scripts/test` builds them first). Their logs (at `info`) go to files in
//! a folder of this test process ([`logs`] reads them all), or to the
//! terminal with `FAULT_LOGS=1`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The path of a workspace binary next to this test executable.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).context("no target folder")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    Ok(path)
}

/// Runs the operator CLI (`signup …`) against the NATS at `nats_url`, with
/// these environment variables besides (and no configuration files), and
/// returns what it printed; fails when it fails.
pub async fn signup_cli(nats_url: &str, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary("signup")?)
        .args(args)
        .env("SIGNUP_CONFIG_DIR", "")
        .env("SIGNUP__NATS__URL", nats_url)
        .envs(env.iter().copied())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "signup {}: {}\n{stdout}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// The folder the service processes of this test process log into.
fn log_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a folder for the services' logs"))
}

/// Everything the service processes of this test process have logged.
pub fn logs() -> String {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(log_dir().path()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
}

/// A service process.
pub struct Service {
    name: String,
    child: Child,
}

impl Service {
    /// Starts `binary` with `args` and these environment variables (and no
    /// configuration files). `FAULT_LOGS=1` shows its logs.
    pub fn spawn(name: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        let show_logs = std::env::var_os("FAULT_LOGS").is_some();
        let output = || -> anyhow::Result<Stdio> {
            if show_logs {
                return Ok(Stdio::inherit());
            }
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let file = log_dir().path().join(format!("{name}-{}.log", NEXT.fetch_add(1, Ordering::Relaxed)));
            Ok(std::fs::File::create(file)?.into())
        };
        let child = Command::new(binary(name)?)
            .args(args)
            .env("SIGNUP_CONFIG_DIR", "")
            .env("SIGNUP__LOG__FILTER", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(output()?)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill_9(mut self) -> anyhow::Result<()> {
        self.child.kill().await.with_context(|| format!("killing {}", self.name))
    }

    /// SIGTERM, then waits up to `bound` for the exit.
    pub async fn terminate(mut self, bound: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(bound, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {bound:?} of SIGTERM", self.name))?
            .map_err(Into::into)
    }
}

/// What a burst of sign-ups got.
#[derive(Debug, Default)]
pub struct Burst {
    /// Prospect ids of the sign-ups answered 303.
    pub accepted: BTreeSet<Uuid>,
    /// Sign-ups answered 503.
    pub refused: usize,
    /// Any other answer (status, or 0 for no answer).
    pub other: Vec<u16>,
}

/// Posts `count` distinct sign-ups to `/signup`, `concurrency` at a time;
/// `progress` counts the answers so far.
pub async fn burst(web_url: String, count: usize, concurrency: usize, progress: Arc<AtomicUsize>) -> Burst {
    sign_ups(web_url, futures::stream::iter(0..count).boxed(), concurrency, progress).await
}

/// Posts distinct sign-ups to `/signup`, `concurrency` at a time, until
/// `stop` is cancelled (the ones in flight then still get their answer): a
/// steady load for faults that take a while.
pub async fn steady_load(
    web_url: String,
    concurrency: usize,
    stop: tokio_util::sync::CancellationToken,
    progress: Arc<AtomicUsize>,
) -> Burst {
    let until = futures::stream::iter(0..).take_until(stop.cancelled_owned()).boxed();
    sign_ups(web_url, until, concurrency, progress).await
}

async fn sign_ups(
    web_url: String,
    numbers: futures::stream::BoxStream<'static, usize>,
    concurrency: usize,
    progress: Arc<AtomicUsize>,
) -> Burst {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client");
    let run = Uuid::now_v7().simple().to_string();
    let answers: Vec<(u16, Option<Uuid>)> = numbers
        .map(|i| {
            let (http, url, run, progress) =
                (http.clone(), format!("{web_url}/signup"), run.clone(), Arc::clone(&progress));
            async move {
                let email = format!("burst{i}.{run}@example.com");
                let fields = [
                    ("firstName", "Burst"),
                    ("lastName", "Visitor"),
                    ("email", &email),
                    ("country", "NL"),
                    ("role", "EN"),
                ];
                let answer = match http.post(url).form(&fields).send().await {
                    Ok(response) => {
                        let id = crate::id_from_location(&response).ok();
                        (response.status().as_u16(), id)
                    }
                    Err(_) => (0, None),
                };
                progress.fetch_add(1, Ordering::Relaxed);
                answer
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut burst = Burst::default();
    for (status, id) in answers {
        match (status, id) {
            (303, Some(id)) => {
                burst.accepted.insert(id);
            }
            (503, _) => burst.refused += 1,
            (other, _) => burst.other.push(other),
        }
    }
    burst
}
