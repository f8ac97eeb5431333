//! `scripts/new-handler` end to end: scaffold a handler into a copy of the
//! workspace, build it there, and watch it receive a sign-up posted to the
//! unchanged signup-web (this workspace's own binary).
//!
//! The copy builds in `target/scaffold/` (or `SIGNUP_SCAFFOLD_TARGET`; kept
//! between runs, so only the first run compiles the dependencies; its lock file gains the new crate,
//! with every dependency already locked, so no network is needed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::processes::Service;
use e2e_tests::test_support::{NatsServer, eventually, free_port};

const HANDLER: &str = "probe-handler";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Copies the workspace's sources: everything but the top-level build
/// output, local servers' data and history.
fn copy_workspace(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        if [".git", "target", ".local", "data"].iter().any(|skip| entry.file_name() == *skip) {
            continue;
        }
        copy_tree(&entry.path(), &to.join(entry.file_name()));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).expect("copy");
    }
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_handler_builds_and_receives_what_the_unchanged_web_publishes() {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_workspace(&repo(), copy.path());
    let said =
        run(Command::new("bash").arg("scripts/new-handler").arg(HANDLER).current_dir(copy.path()), "new-handler");
    assert!(said.contains(&format!("crates/{HANDLER}")), "{said}");
    for added in ["crates/probe-handler/src/lib.rs", "docker/probe-handler.Dockerfile", "deploy/k8s/probe-handler.yaml"]
    {
        assert!(copy.path().join(added).is_file(), "{added} was created");
    }
    let compose = std::fs::read_to_string(copy.path().join("deploy/compose.yaml")).expect("compose");
    assert!(compose.contains("  probe-handler:\n"), "added to the compose stack");
    // The publisher's crate is untouched by the scaffold.
    let web_before = std::fs::read_to_string(repo().join("crates/signup-web/Cargo.toml")).expect("web manifest");
    let web_after = std::fs::read_to_string(copy.path().join("crates/signup-web/Cargo.toml")).expect("web manifest");
    assert_eq!(web_before, web_after);

    // Its own build folder (kept between runs); SIGNUP_SCAFFOLD_TARGET moves
    // it, as CI does to a cache that outlives a fresh clone.
    let target = std::env::var_os("SIGNUP_SCAFFOLD_TARGET")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| repo().join("target/scaffold"), PathBuf::from);
    for step in ["build", "test"] {
        run(
            Command::new(env!("CARGO"))
                .args([step, "--offline", "-p", HANDLER])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(copy.path()),
            &format!("cargo {step} of the scaffolded handler, unedited"),
        );
    }

    let nats = NatsServer::start().await.expect("nats-server");
    let (web_port, handler_port) = (free_port().expect("port"), free_port().expect("port"));
    let _web = Service::spawn(
        "signup-web",
        &["serve"],
        &[
            ("SIGNUP__WEB__PORT".into(), web_port.to_string()),
            ("SIGNUP__NATS__URL".into(), nats.url()),
            ("SIGNUP__LINKS__SECRET".into(), "scaffold-test-secret-long-enough".into()),
            // What this test is about is the new handler, not the public
            // edge's bot check (public_edge.rs covers that).
            ("SIGNUP__WEB__BOT_CHECK__ENABLED".into(), "false".into()),
        ],
    )
    .expect("signup-web");
    let handler_binary = target.join("debug").join(HANDLER);
    let _handler = tokio::process::Command::new(&handler_binary)
        .args(["run", "--from-start"])
        .env("SIGNUP_CONFIG_DIR", "")
        .env("SIGNUP__LOG__FILTER", "error")
        .env("SIGNUP__NATS__URL", nats.url())
        .env("SIGNUP__PROBE_HANDLER__HTTP__PORT", handler_port.to_string())
        .env("SIGNUP__PROBE_HANDLER__CONSUMER__IDLE_WAIT_MS", "300")
        .kill_on_drop(true)
        .spawn()
        .expect("the scaffolded handler");

    let web_ready = format!("http://127.0.0.1:{web_port}/readyz");
    eventually(Duration::from_secs(30), "signup-web ready", || async {
        (reqwest::get(&web_ready).await.ok()?.status() == 200).then_some(())
    })
    .await
    .expect("ready");
    let fields = [
        ("firstName", "Grace"),
        ("lastName", "Hopper"),
        ("email", "grace@example.com"),
        ("country", "US"),
        ("role", "EN"),
    ];
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let posted = http.post(format!("http://127.0.0.1:{web_port}/signup")).form(&fields).send().await.expect("post");
    assert_eq!(posted.status(), 303);

    let metrics = format!("http://127.0.0.1:{handler_port}/metrics");
    let applied = format!("signup_handler_events_applied_total{{consumer=\"{HANDLER}\"}} 1");
    eventually(Duration::from_secs(30), "the scaffolded handler to apply the sign-up", || async {
        reqwest::get(&metrics).await.ok()?.text().await.ok()?.lines().any(|line| line == applied).then_some(())
    })
    .await
    .expect("the new handler received the event");
}
