//! `scripts/new-handler` end to end: scaffold a handler into a copy of the
//! workspace, build it there, and watch it receive a sign-up posted to the
//! unchanged signup-web (this workspace's own binary); then replay a history
//! that starts with version 1 sign-ups into it, save-prospect and
//! analytics-indexer, and find the state a version 2 history gives.
//!
//! The copy builds in `target/scaffold/` (or `SIGNUP_SCAFFOLD_TARGET`; kept
//! between runs, so only the first run compiles the dependencies; its lock file gains the new crate,
//! with every dependency already locked, so no network is needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bus::async_nats::jetstream;
use bus::settings::{NatsSettings, StreamSettings};
use bus::{EventContext, Publisher};
use chrono::{DateTime, Utc};
use diesel_async::RunQueryDsl;
use e2e_tests::faults::{ANALYTICS_TOKEN, FaultBed};
use e2e_tests::processes::Service;
use e2e_tests::test_support::{NatsServer, eventually, free_port};
use messages::{
    Consent, ConsentRecord, Country, ProspectConfirmed, ProspectDeleted, ProspectDetails, ProspectSignedUp,
    ProspectSignedUpV1, ProspectUpdated, Role,
};
use uuid::Uuid;

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

/// The scaffolded workspace copy and its handler's binary, made once per
/// run of this file's tests.
struct Scaffold {
    copy: PathBuf,
    said: String,
    binary: PathBuf,
    /// Every file of the copy as it was before the scaffold ran.
    before: BTreeMap<PathBuf, Vec<u8>>,
}

static SCAFFOLD: tokio::sync::OnceCell<Scaffold> = tokio::sync::OnceCell::const_new();

/// Scaffolds the handler into a fresh copy of the workspace, then builds and
/// tests it there, unedited (once; every test here shares it).
async fn scaffold() -> &'static Scaffold {
    SCAFFOLD
        .get_or_init(|| async {
            let _alone = crate::BUILD_OR_BURST.write().await;
            tokio::task::spawn_blocking(build_scaffold).await.expect("scaffold")
        })
        .await
}

fn build_scaffold() -> Scaffold {
    // Its own build folder (kept between runs); SIGNUP_SCAFFOLD_TARGET moves
    // it, as CI does to a cache that outlives a fresh clone. The copy sits
    // beside it, at one path, so that its build is found again.
    let target = std::env::var_os("SIGNUP_SCAFFOLD_TARGET")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| repo().join("target/scaffold"), PathBuf::from);
    let copy = target.join("workspace");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).expect("the previous copy removed");
    }
    std::fs::create_dir_all(&copy).expect("mkdir");
    copy_workspace(&repo(), &copy);
    let mut before = BTreeMap::new();
    read_files(&copy, Path::new(""), &mut before);
    let said = run(Command::new("bash").arg("scripts/new-handler").arg(HANDLER).current_dir(&copy), "new-handler");
    for step in ["build", "test"] {
        run(
            Command::new(env!("CARGO"))
                .args([step, "--offline", "-p", HANDLER])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&copy),
            &format!("cargo {step} of the scaffolded handler, unedited"),
        );
    }
    Scaffold { copy, said, binary: target.join("debug").join(HANDLER), before }
}

/// Every file under `relative` in `root`, with its contents.
fn read_files(root: &Path, relative: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(root.join(relative)).expect("read_dir") {
        let path = relative.join(entry.expect("entry").file_name());
        if root.join(&path).is_dir() {
            read_files(root, &path, files);
        } else {
            files.insert(path.clone(), std::fs::read(root.join(&path)).expect("read"));
        }
    }
}

/// Starts the scaffolded handler on `nats` from the stream's start.
fn start_handler(binary: &Path, nats: &str, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .args(["run", "--from-start"])
        .env("SIGNUP_CONFIG_DIR", "")
        .env("SIGNUP__LOG__FILTER", "error")
        .env("SIGNUP__NATS__URL", nats)
        .env("SIGNUP__PROBE_HANDLER__HTTP__PORT", port.to_string())
        .env("SIGNUP__PROBE_HANDLER__CONSUMER__IDLE_WAIT_MS", "300")
        .kill_on_drop(true)
        .spawn()
        .expect("the scaffolded handler")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_handler_builds_and_receives_what_the_unchanged_web_publishes() {
    let Scaffold { copy, said, binary, before } = scaffold().await;
    assert!(said.contains(&format!("crates/{HANDLER}")), "{said}");
    for added in
        ["crates/probe-handler/src/lib.rs", "docker/probe-handler.Dockerfile", "deploy/k8s/handlers/probe-handler.yaml"]
    {
        assert!(copy.join(added).is_file(), "{added} was created");
    }
    let listed = std::fs::read_to_string(copy.join("deploy/handlers.toml")).expect("handlers.toml");
    assert!(listed.contains("name = \"probe-handler\""), "listed: {listed}");
    let compose = std::fs::read_to_string(copy.join("deploy/compose.handlers.yaml")).expect("compose");
    assert!(compose.contains("  probe-handler:\n"), "added to the compose stack");
    let users = std::fs::read_to_string(copy.join("deploy/nats/users.conf")).expect("users.conf");
    assert!(
        users.contains("user: probe-handler\n") && users.contains("\"$JS.ACK.PROSPECTS.probe-handler.>\""),
        "{users}"
    );
    // No file was patched: of the files that were there, only the list of
    // handlers, the files rendered from it and the lock file changed (the
    // publisher's crate among those untouched).
    let mut after = BTreeMap::new();
    read_files(copy, Path::new(""), &mut after);
    let changed: Vec<PathBuf> =
        before.iter().filter(|(path, bytes)| after.get(*path) != Some(*bytes)).map(|(path, _)| path.clone()).collect();
    let expected = ["Cargo.lock", "deploy/compose.handlers.yaml", "deploy/handlers.toml"]
        .into_iter()
        .chain(["deploy/k8s/handlers/kustomization.yaml", "deploy/k8s/nats/users.yaml", "deploy/nats/users.conf"])
        .chain(["deploy/prometheus/handlers.json"]);
    assert_eq!(changed, expected.map(PathBuf::from).collect::<Vec<_>>());

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
    let _handler = start_handler(binary, &nats.url(), handler_port);

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

/// The sign-ups of the replayed history: five people, at fixed times.
fn person(i: usize) -> ProspectDetails {
    let (country, role) = [("GB", "EN"), ("FR", "DV"), ("US", "EN"), ("DE", "DV"), ("GB", "EN")][i];
    let names = |code: &str| match code {
        "GB" => "United Kingdom",
        "FR" => "France",
        "US" => "United States",
        "DE" => "Germany",
        "EN" => "Engineer",
        _ => "Developer",
    };
    ProspectDetails {
        first_name: format!("Person{i}"),
        last_name: format!("Replayed{i}"),
        email: format!("person{i}@replay.example.com").into(),
        company_name: Some(format!("Company {i}")),
        country: Country { code: country.into(), name: names(country).into() },
        role: Role { code: role.into(), name: names(role).into() },
    }
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + minutes * 60, 0).expect("time")
}

/// Writes one history onto the stream of `nats`: five sign-ups (the first
/// two as version 1 events, as the code before consent records wrote them,
/// when `v1_first`; else all version 2, with consent recorded), then
/// confirmations, updates and erasures.
async fn write_history(nats: &str, ids: &[Uuid; 5], v1_first: bool) {
    let client = bus::connect(&NatsSettings { url: nats.to_owned(), ..NatsSettings::default() }, "replay-test")
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await.expect("stream");
    bus::stream::ensure_dlq_stream(&js, &StreamSettings::default()).await.expect("dead-letter stream");
    let publisher = Publisher::new(client, "/replay-test", Duration::from_secs(5));
    let context = EventContext::new;
    for (i, id) in ids.iter().enumerate() {
        let (details, signed_up_at) = (person(i), at(i as i64));
        if v1_first && i < 2 {
            let v1 = ProspectSignedUpV1 { prospect_id: *id, details, signed_up_at };
            publisher.publish(&v1, &context()).await.expect("v1 sign-up");
        } else {
            let consent = Consent::Recorded(ConsentRecord {
                notice_version: "sha256:0123456789abcdef".into(),
                agreed_at: signed_up_at,
                client: None,
            });
            let v2 = ProspectSignedUp { prospect_id: *id, details, signed_up_at, consent };
            publisher.publish(&v2, &context()).await.expect("v2 sign-up");
        }
    }
    for i in [0, 2] {
        let confirmed = ProspectConfirmed { prospect_id: ids[i], confirmed_at: at(10), client: Default::default() };
        publisher.publish(&confirmed, &context()).await.expect("confirmation");
    }
    for i in [0, 1, 3] {
        let details = ProspectDetails { company_name: Some(format!("Renamed {i}")), ..person(i) };
        let updated = ProspectUpdated { prospect_id: ids[i], details, updated_at: at(20) };
        publisher.publish(&updated, &context()).await.expect("update");
    }
    for i in [1, 4] {
        let erased = ProspectDeleted { prospect_id: ids[i], deleted_at: at(30), disowned: false };
        publisher.publish(&erased, &context()).await.expect("erasure");
    }
}

/// Waits until the durable consumer `name` has taken every event of its
/// subjects (pending counts them from its creation on).
async fn caught_up(client: &bus::async_nats::Client, name: &str) {
    let js = jetstream::new(client.clone());
    eventually(Duration::from_secs(60), &format!("{name} to take every event"), || async {
        let info = js.get_stream("PROSPECTS").await.ok()?.consumer_info(name).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("caught up");
}

/// Where the three handlers end after replaying one history.
#[derive(Debug)]
struct EndState {
    /// save-prospect: each row (id, details, confirmed, erased), and whether
    /// it holds a consent record.
    rows: Vec<(String, bool)>,
    /// analytics-indexer: the summary without its consent count, that count,
    /// and every live prospect the search finds.
    summary: serde_json::Value,
    before_consent_records: u64,
    search: serde_json::Value,
    /// The scaffolded handler: sign-ups applied.
    handled: u64,
    /// Dead letters of every handler.
    dead_letters: u64,
}

/// Replays the history on `nats` into fresh copies of the scaffolded
/// handler and analytics-indexer, then save-prospect (whose erasures purge
/// the stream, so it goes last and the others see one and the same stream).
async fn replay(nats: &NatsServer, binary: &Path) -> EndState {
    let bed = FaultBed::start(nats.url(), &[]).await;
    let index = tempfile::tempdir().expect("index dir");
    let (indexer_port, handler_port) = (free_port().expect("port"), free_port().expect("port"));
    let _handler = start_handler(binary, &nats.url(), handler_port);
    let _indexer = bed.indexer(index.path(), indexer_port, &[]);
    caught_up(&bed.client, HANDLER).await;
    caught_up(&bed.client, "analytics-indexer").await;
    let _saver = bed.saver(&[]);
    caught_up(&bed.client, "save-prospect").await;

    let mut conn = bed.db.connect().await.expect("db");
    let rows: Vec<(String, bool)> = diesel::sql_query(
        "SELECT concat_ws('|', id, email, first_name, last_name, company_name, country_code, role_code, \
                signed_up_at, confirmed_at IS NOT NULL, deleted_at IS NOT NULL) AS line, \
                consent_agreed_at IS NOT NULL AS consent FROM prospects ORDER BY id",
    )
    .load::<Row>(&mut conn)
    .await
    .expect("rows")
    .into_iter()
    .map(|r| (r.line, r.consent))
    .collect();
    let http = reqwest::Client::new();
    let api = |path: &str| format!("http://127.0.0.1:{indexer_port}{path}");
    let mut summary: serde_json::Value = http
        .get(api("/api/analytics/summary"))
        .bearer_auth(ANALYTICS_TOKEN)
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("JSON");
    let before_consent_records = summary["beforeConsentRecords"].as_u64().expect("the consent count");
    summary.as_object_mut().expect("object").remove("beforeConsentRecords");
    let search: serde_json::Value = http
        .get(api("/api/analytics/search"))
        .bearer_auth(ANALYTICS_TOKEN)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("JSON");
    let metrics = http.get(format!("http://127.0.0.1:{handler_port}/metrics")).send().await.expect("metrics");
    let applied = format!("signup_handler_events_applied_total{{consumer=\"{HANDLER}\"}} ");
    let handled = metrics
        .text()
        .await
        .expect("text")
        .lines()
        .find_map(|line| line.strip_prefix(applied.as_str())?.parse().ok())
        .expect("the handler's count");
    let js = jetstream::new(bed.client.clone());
    let dead_letters = js.get_stream("PROSPECTS_DLQ").await.expect("dlq").info().await.expect("info").state.messages;
    EndState { rows, summary, before_consent_records, search, handled, dead_letters }
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    consent: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_starts_in_version_1_replays_to_the_same_state_as_one_written_in_version_2() {
    let Scaffold { binary, .. } = scaffold().await;
    let ids: [Uuid; 5] = std::array::from_fn(|_| Uuid::now_v7());
    let (mixed, current) = (NatsServer::start().await.expect("nats"), NatsServer::start().await.expect("nats"));
    write_history(&mixed.url(), &ids, true).await;
    write_history(&current.url(), &ids, false).await;
    let from_mixed = replay(&mixed, binary).await;
    let from_current = replay(&current, binary).await;

    // save-prospect: the same rows; consent recorded apart from the two
    // version 1 sign-ups (one of them erased, so no record either way).
    let rows = |state: &EndState| state.rows.iter().map(|(row, _)| row.clone()).collect::<Vec<_>>();
    assert_eq!(rows(&from_mixed), rows(&from_current));
    assert_eq!(from_mixed.rows.len(), 5);
    let recorded = |state: &EndState| -> Vec<bool> {
        let mut by_id: Vec<(Uuid, bool)> = state
            .rows
            .iter()
            .map(|(row, consent)| (row.split('|').next().expect("id").parse().expect("uuid"), *consent))
            .collect();
        by_id.sort();
        ids.iter().map(|id| by_id.iter().find(|(row, _)| row == id).expect("row").1).collect()
    };
    assert_eq!(recorded(&from_current), [true, false, true, true, false], "live rows hold a record; erased ones none");
    assert_eq!(recorded(&from_mixed), [false, false, true, true, false], "the version 1 sign-up: not recorded");

    // analytics-indexer: the same counts and documents; the sign-up from
    // before consent records counted apart.
    assert_eq!(from_mixed.summary, from_current.summary);
    assert_eq!(from_mixed.summary["total"], 3);
    assert_eq!((from_mixed.before_consent_records, from_current.before_consent_records), (1, 0));
    assert_eq!(from_mixed.search, from_current.search);

    // The scaffolded handler, unedited: every sign-up, version 1 or 2.
    assert_eq!((from_mixed.handled, from_current.handled), (5, 5));
    assert_eq!((from_mixed.dead_letters, from_current.dead_letters), (0, 0), "nothing misread or refused");
}
