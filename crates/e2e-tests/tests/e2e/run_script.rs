//! `scripts/run` as a user runs it (with this build's binaries instead of a
//! release build): a service that dies is restarted while the others keep
//! answering, and SIGTERM to the script's process group stops everything it
//! started, its own PostgreSQL included.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use e2e_tests::processes::binary;
use e2e_tests::test_support::{NatsServer, SmtpServer, eventually, free_port};
use tokio::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The processes of process group `group` whose executable is `exe`.
fn processes_in_group(group: u32, exe: Option<&Path>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // pid (comm) state ppid pgrp …: the comm may hold spaces, so count after its ')'.
            let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
            let same_exe = exe.is_none_or(|exe| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe));
            pgrp == Some(group) && same_exe
        })
        .collect()
}

/// On the way out, pass or fail: nothing the script started outlives the test.
struct Cleanup {
    group: u32,
    postgres: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.group)]).status();
        // PostgreSQL runs in a session of its own: stop it by its pid file.
        if let Some(pid) = std::fs::read_to_string(self.postgres.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            let _ = std::process::Command::new("kill").args(["-QUIT", &pid]).status();
        }
    }
}

async fn answers(url: &str) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_restarts_a_service_that_died_and_a_sigterm_to_its_group_stops_everything() {
    let nats = NatsServer::start().await.expect("nats-server");
    let smtp = SmtpServer::start().await.expect("smtp server");
    let dir = tempfile::tempdir().expect("tempdir");
    // The project-local PostgreSQL runs as the postgres user: it must reach its folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (web_port, analytics_port, pg_port) =
        (free_port().expect("port"), free_port().expect("port"), free_port().expect("port"));
    let bin_dir = binary("save-prospect").expect("built").parent().expect("target dir").to_owned();
    let saver = bin_dir.join("save-prospect").canonicalize().expect("save-prospect");
    let log = dir.path().join("run.log");
    let mut script = Command::new(repo().join("scripts/run"))
        .env("SIGNUP_RUN_BIN_DIR", &bin_dir)
        .env("SIGNUP__NATS__URL", nats.url())
        .env("SIGNUP_PG_PORT", pg_port.to_string())
        .env("SIGNUP_PG_DATA", dir.path().join("postgres"))
        .env("SIGNUP__WEB__PORT", web_port.to_string())
        .env("SIGNUP__ANALYTICS__PORT", analytics_port.to_string())
        .env("SIGNUP__ANALYTICS__INDEX_DIR", dir.path().join("index"))
        .env("SIGNUP__ANALYTICS__TOKEN", "a-token-for-this-test-only")
        .env("SIGNUP__LINKS__SECRET", "a-links-secret-for-this-test-only")
        .env("SIGNUP__SAVE_PROSPECT__HTTP__PORT", "0")
        .env("SIGNUP__MAILER__HTTP__PORT", "0")
        .env("SIGNUP__MAILER__SMTP__HOST", "127.0.0.1")
        .env("SIGNUP__MAILER__SMTP__PORT", smtp.port().to_string())
        .env("SIGNUP__MAILER__SMTP__TLS", "none")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("run.err")).expect("log"))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("scripts/run");
    let group = script.id().expect("pid");
    let _cleanup = Cleanup { group, postgres: dir.path().join("postgres") };
    let read_logs = || {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        out + &std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default()
    };

    let health = format!("http://127.0.0.1:{web_port}/healthz");
    let up =
        eventually(Duration::from_secs(90), "the web to answer", || async { answers(&health).await.then_some(()) })
            .await;
    assert!(up.is_ok(), "scripts/run did not come up:\n{}", read_logs());
    let first = eventually(Duration::from_secs(30), "save-prospect to run", || async {
        processes_in_group(group, Some(&saver)).first().copied()
    })
    .await
    .expect("save-prospect runs");

    // save-prospect dies: the web keeps answering, and save-prospect comes back.
    let killed = std::process::Command::new("kill").args(["-KILL", &first.to_string()]).status().expect("kill");
    assert!(killed.success());
    let second = eventually(Duration::from_secs(30), "save-prospect to be restarted", || async {
        assert!(answers(&health).await, "the web stopped answering when save-prospect died:\n{}", read_logs());
        processes_in_group(group, Some(&saver)).into_iter().find(|pid| *pid != first)
    })
    .await;
    assert!(second.is_ok(), "save-prospect was not restarted:\n{}", read_logs());
    assert!(read_logs().contains("save-prospect exited unexpectedly"), "no log line says why:\n{}", read_logs());
    assert!(answers(&health).await, "the web answers after the restart");

    // SIGTERM to the whole group, as a process manager or `kill -- -pgid` sends it.
    let signalled =
        std::process::Command::new("kill").args(["-TERM", "--", &format!("-{group}")]).status().expect("kill");
    assert!(signalled.success());
    let status = tokio::time::timeout(Duration::from_secs(60), script.wait()).await;
    assert!(status.is_ok(), "scripts/run did not stop on SIGTERM:\n{}", read_logs());
    let left = eventually(Duration::from_secs(20), "every process of the group to end", || async {
        processes_in_group(group, None).is_empty().then_some(())
    })
    .await;
    assert!(left.is_ok(), "still running after SIGTERM: {:?}", processes_in_group(group, None));
    let postgres_gone = eventually(Duration::from_secs(20), "the project-local PostgreSQL to stop", || async {
        let port_closed = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await.is_err();
        let pid_file_gone = !dir.path().join("postgres/postmaster.pid").exists();
        (port_closed && pid_file_gone).then_some(())
    })
    .await;
    assert!(postgres_gone.is_ok(), "the project-local PostgreSQL kept running:\n{}", read_logs());
}
