//! The contracts as other tools read them, checked by those tools against the
//! running services:
//! - the OpenAPI documents (signup-web's and the indexer's) with
//!   openapi-spec-validator, the AsyncAPI document with the official parser
//!   (`@asyncapi/parser` on Node.js), the served AsyncAPI document equal to
//!   the checked-in one;
//! - schemathesis fuzzing both APIs against their documents (every check:
//!   no 500, every answer as documented, nothing accepted that the document
//!   refuses), its counts printed;
//! - every event type read off NATS by the CloudEvents SDK for Python.
//!
//! The tools come from `scripts/test` (`require_contract_tools` in
//! scripts/lib.sh): `SIGNUP_TEST_PYTHON` is a Python with schemathesis,
//! openapi-spec-validator, cloudevents and nats-py; `SIGNUP_TEST_NODE_PATH`
//! holds `@asyncapi/parser` (both default to the project's `.local/`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use e2e_tests::faults::{ANALYTICS_TOKEN, FaultBed};
use e2e_tests::{System, id_from_location, links, manage_path};
use links::Purpose;
use messages::ProspectEvent;
use serde_json::Value;
use test_support::{NatsServer, eventually, free_port};
use tokio::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("SIGNUP_TEST_PYTHON").map_or_else(|| root().join(".local/venv/bin/python"), PathBuf::from)
}

fn node_path() -> PathBuf {
    std::env::var_os("SIGNUP_TEST_NODE_PATH").map_or_else(|| root().join(".local/asyncapi/node_modules"), PathBuf::from)
}

/// Adds a line to `target/contract-report.txt`, which `scripts/test` prints
/// after the suite (a passing test's own output is not shown).
fn report(line: &str) {
    use std::io::Write as _;
    println!("{line}");
    let path = root().join("target/contract-report.txt");
    let written = std::fs::create_dir_all(root().join("target"))
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&path))
        .and_then(|mut file| writeln!(file, "{line}"));
    written.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Runs a tool to its end; its output is printed (cargo shows it for a
/// failed test, `--nocapture` always) and returned with whether it succeeded.
async fn run(what: &str, command: &mut Command) -> (bool, String) {
    let output = command.kill_on_drop(true).output().await.unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("----- {what} -----\n{text}");
    (output.status.success(), text)
}

async fn fetch(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(response.status(), 200, "{url}");
    assert!(response.headers()["content-type"].to_str().expect("type").starts_with("application/json"), "{url}");
    response.json().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The figures of a schemathesis run's summary: operations tested, cases
/// generated, unique failures found. Its summary reads
/// `Tested: 6` and `3068 generated, 3068 passed` or
/// `145 generated, 4 found 4 unique failures, 6 skipped`.
fn schemathesis_counts(output: &str) -> (usize, usize, usize) {
    let tested = output.lines().find_map(|l| l.trim().strip_prefix("Tested:")?.trim().parse().ok());
    let cases = output.lines().find(|l| l.contains(" generated")).unwrap_or_default();
    let generated = cases.split_whitespace().next().and_then(|n| n.parse().ok());
    let failures = match cases.split(" found ").nth(1) {
        Some(rest) => rest.split_whitespace().next().and_then(|n| n.parse().ok()),
        None => Some(0),
    };
    match (tested, generated, failures) {
        (Some(tested), Some(generated), Some(failures)) => (tested, generated, failures),
        _ => panic!("schemathesis printed no summary:\n{output}"),
    }
}

/// schemathesis against a served document, with every check; returns its
/// counts after printing them.
async fn schemathesis(name: &str, document: &str, headers: &[String]) -> (usize, usize, usize) {
    let tool = python().with_file_name("schemathesis");
    // It keeps a cache of what it found in its working folder.
    let workdir = tempfile::tempdir().expect("a folder for schemathesis");
    let mut command = Command::new(&tool);
    command.current_dir(workdir.path());
    command.args(["run", document, "--checks", "all", "--max-examples", "60", "--seed", "21", "--no-color"]);
    for header in headers {
        command.args(["--header", header]);
    }
    let (ok, output) = run(&format!("schemathesis {name}"), &mut command).await;
    let counts = schemathesis_counts(&output);
    report(&format!("schemathesis {name}: {} operations, {} cases, {} failures", counts.0, counts.1, counts.2));
    assert!(ok, "schemathesis found problems in {name}'s API (see its report above)");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_documents_pass_the_official_tools_and_schemathesis_finds_nothing() {
    let nats = NatsServer::start().await.expect("nats-server");
    let bed = FaultBed::start(nats.url(), &[]).await;
    let _saver = bed.saver(&[]);
    let index = tempfile::tempdir().expect("index folder");
    let indexer_port = free_port().expect("port");
    let _indexer = bed.indexer(index.path(), indexer_port, &[]);
    let indexer_url = format!("http://127.0.0.1:{indexer_port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(60), "the indexer to be ready", || async {
        (http.get(format!("{indexer_url}/readyz")).send().await.ok()?.status() == 200).then_some(())
    })
    .await
    .expect("indexer ready");

    let web_openapi = fetch(&http, &format!("{}/api/openapi.json", bed.web_url)).await;
    let asyncapi = fetch(&http, &format!("{}/api/asyncapi.json", bed.web_url)).await;
    let indexer_openapi = fetch(&http, &format!("{indexer_url}/api/analytics/openapi.json")).await;
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("crates/messages/asyncapi.json")).expect("asyncapi.json"),
    )
    .expect("checked-in JSON");
    assert_eq!(asyncapi, checked_in, "the served AsyncAPI document is the checked-in one");

    let dir = tempfile::tempdir().expect("folder");
    let file = |name: &str, document: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(document).expect("json")).expect("write");
        path
    };
    let (web_file, indexer_file, asyncapi_file) =
        (file("web.json", &web_openapi), file("indexer.json", &indexer_openapi), file("asyncapi.json", &asyncapi));

    let (ok, output) = run(
        "openapi-spec-validator",
        Command::new(python()).args(["-m", "openapi_spec_validator"]).arg(&web_file).arg(&indexer_file),
    )
    .await;
    assert!(ok && output.matches(": OK").count() == 2, "both OpenAPI documents are valid");
    let (ok, output) = run(
        "@asyncapi/parser",
        Command::new("node")
            .env("NODE_PATH", node_path())
            .arg(root().join("scripts/contracts/validate-asyncapi.mjs"))
            .arg(&asyncapi_file),
    )
    .await;
    assert!(ok && output.contains("valid AsyncAPI 3.0.0"), "the AsyncAPI document is valid");

    let web = schemathesis("signup-web", &format!("{}/api/openapi.json", bed.web_url), &[]).await;
    let indexer = schemathesis(
        "analytics-indexer",
        &format!("{indexer_url}/api/analytics/openapi.json"),
        &[format!("Authorization: Bearer {ANALYTICS_TOKEN}")],
    )
    .await;
    for (name, document, (operations, cases, failures)) in
        [("signup-web", &web_openapi, web), ("analytics-indexer", &indexer_openapi, indexer)]
    {
        let documented: usize = document["paths"]
            .as_object()
            .map_or(0, |paths| paths.values().filter_map(Value::as_object).map(serde_json::Map::len).sum());
        // schemathesis leaves out the route of the document it reads.
        assert_eq!(operations, documented - 1, "schemathesis tested every other operation of {name}");
        assert!(cases > operations * 10, "{name}: {cases} cases");
        assert_eq!(failures, 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_a_cloudevent_the_official_sdk_reads() {
    let port = free_port().expect("port");
    let mut system = System::start_web_with(|settings| {
        settings.web.port = port;
        settings.links.base_url = format!("http://127.0.0.1:{port}");
        settings.web.rate_limit.per_minute = 0;
        settings.web.rate_limit.lookups_per_minute = 0;
    })
    .await
    .expect("system");
    system.start_saver().await.expect("saver");
    let form = |email: &str, company: &str| {
        vec![
            ("firstName", "Grace".to_owned()),
            ("lastName", "Hopper".to_owned()),
            ("email", email.to_owned()),
            ("companyName", company.to_owned()),
            ("country", "US".to_owned()),
            ("role", "EN".to_owned()),
        ]
    };

    // Each event type, made the way a person makes it.
    let signed_up = system.post_form(&form("grace@example.com", "Navy")).await.expect("sign up"); // signedup
    let id = id_from_location(&signed_up).expect("id");
    system.saved(id).await.expect("saved");
    let confirm = Purpose::Confirm.path(&links().confirm_token(id, Utc::now()));
    let answer = system.http.post(system.web_url(&confirm)).send().await.expect("confirm"); // confirmed
    assert_eq!(answer.status(), 303);
    let manage = system.web_url(&manage_path(id));
    let answer =
        system.http.post(&manage).form(&form("grace@example.com", "Remington Rand")).send().await.expect("update");
    assert_eq!(answer.status(), 303); // updated
    let answer =
        system.http.post(&manage).form(&form("hopper@example.com", "Remington Rand")).send().await.expect("move");
    assert_eq!(answer.status(), 303); // emailchange
    eventually(Duration::from_secs(20), "the update to be saved", || async {
        let row = system.prospect(id).await.ok().flatten()?;
        (row.company_name.as_deref() == Some("Remington Rand")).then_some(())
    })
    .await
    .expect("updated");
    let answer =
        system.http.post(system.web_url("/prospects/new-link")).form(&[("email", "grace@example.com")]).send().await;
    assert_eq!(answer.expect("new link").status(), 303); // linkrequested
    // Someone else erases their sign-up (an erasure purges the personal
    // events of its own prospect from the stream).
    let other = system.post_form(&form("ada@example.com", "")).await.expect("sign up");
    let other = id_from_location(&other).expect("id");
    system.saved(other).await.expect("saved");
    let answer = system.http.post(format!("{}/erase", system.web_url(&manage_path(other)))).send().await;
    assert_eq!(answer.expect("erase").status(), 303); // deleted
    eventually(Duration::from_secs(20), "the erasure to be saved", || async {
        system.prospect(other).await.ok().flatten()?.deleted_at.map(|_| ())
    })
    .await
    .expect("erased");

    // A version 1 sign-up, as the stream holds them from before consent was
    // recorded, from a publisher set up as signup-web's was.
    let client = bus::async_nats::connect(system.nats.url()).await.expect("connect");
    let publisher = bus::Publisher::new(client, "/signup-web", Duration::from_secs(5))
        .with_dataschema(&format!("http://127.0.0.1:{port}"));
    let v1 = messages::ProspectSignedUpV1 {
        prospect_id: uuid::Uuid::now_v7(),
        details: messages::ProspectDetails {
            first_name: "Grace".into(),
            last_name: "Hopper".into(),
            email: "grace.v1@example.com".into(),
            company_name: None,
            country: messages::Country { code: "US".into(), name: "United States".into() },
            role: messages::Role { code: "EN".into(), name: "Engineer".into() },
        },
        signed_up_at: Utc::now(),
    };
    publisher.publish(&v1, &bus::EventContext::new()).await.expect("publish v1");

    let every_type = [ProspectEvent::TYPES.as_slice(), ProspectEvent::OLDER_TYPES.as_slice()].concat();
    let (ok, output) = run(
        "the CloudEvents SDK",
        Command::new(python())
            .arg(root().join("scripts/contracts/check_cloudevents.py"))
            .args(["--nats", &system.nats.url(), "--stream", messages::streams::PROSPECTS_STREAM, "--types"])
            .arg(every_type.join(",")),
    )
    .await;
    assert!(ok, "every event passes the SDK's reading and the checks");
    for ce_type in every_type {
        assert!(output.contains(&format!("{ce_type}: ")), "{ce_type} was read");
    }
    assert!(output.contains(" 0 failures"), "{output}");
    report(output.lines().find(|l| l.starts_with("cloudevents:")).expect("the SDK check's summary"));
    system.stop().await.expect("stop");
}
