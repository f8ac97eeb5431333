//! The dependency rule that lets handlers be added without touching the
//! publisher: `messages` (the contract) depends on no workspace crate, and
//! `signup-web` (the publisher) reaches only `messages` and `bus` — never a
//! handler. Read from `cargo metadata`'s resolved graph, so a dependency
//! pulled in through another crate counts too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// Workspace crate name → the workspace crates it depends on (normal and
/// build dependencies; dev-dependencies do not ship).
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // This machine's platform only: other platforms' dependencies need not be
    // downloaded (the test runs offline).
    let rustc = std::process::Command::new("rustc").arg("-vV").output().expect("rustc -vV");
    let rustc = String::from_utf8_lossy(&rustc.stdout);
    let host = rustc.lines().find_map(|line| line.strip_prefix("host: ")).expect("rustc names its host");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", host])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let members: BTreeSet<&str> =
        metadata["workspace_members"].as_array().expect("members").iter().filter_map(Value::as_str).collect();
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .filter(|node| node["id"].as_str().is_some_and(|id| members.contains(id)))
        .map(|node| {
            let shipped = |dep: &&Value| {
                dep["dep_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k["kind"] != "dev"))
            };
            let deps = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(shipped)
                .filter_map(|dep| dep["pkg"].as_str())
                .filter(|id| members.contains(id))
                .map(|id| names[id].to_owned())
                .collect();
            (names[node["id"].as_str().expect("id")].to_owned(), deps)
        })
        .collect()
}

/// Every workspace crate `name` reaches, directly or through others.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(next) = todo.pop() {
        for dep in graph.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn the_contract_and_the_publisher_depend_on_no_handler() {
    let graph = workspace_graph();
    for handler in ["save-prospect", "analytics-indexer", "dead-letter-notifier", "mailer"] {
        assert!(graph.contains_key(handler), "{handler} is a workspace crate: {:?}", graph.keys());
        assert!(reaches(&graph, handler).contains("bus"), "{handler} is built on bus");
    }
    assert_eq!(reaches(&graph, "messages"), BTreeSet::new(), "messages depends on no workspace crate");
    // `links` is the other contract: the signed links the mailer makes and
    // the web honours.
    assert_eq!(reaches(&graph, "links"), BTreeSet::new(), "links depends on no workspace crate");
    let allowed: BTreeSet<String> = ["messages", "links", "bus", "runtime"].map(String::from).into();
    let web = reaches(&graph, "signup-web");
    let extra: Vec<&String> = web.difference(&allowed).collect();
    assert!(extra.is_empty(), "signup-web reaches {extra:?}; only messages, links, bus and runtime are allowed");
    assert!(reaches(&graph, "bus").is_subset(&["messages".to_owned()].into()), "bus builds on the contract only");
    assert_eq!(
        reaches(&graph, "runtime"),
        ["bus", "messages"].map(String::from).into(),
        "the runtime builds on the plumbing, never the other way"
    );
}

#[test]
fn the_plumbing_knows_nothing_of_http_or_the_runtime() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest = std::fs::read_to_string(root.join("crates/bus/Cargo.toml")).expect("bus's manifest");
    for runtime_only in ["actix-web", "metrics-exporter-prometheus", "tracing-subscriber", "clap", "config"] {
        assert!(
            !manifest.lines().any(|line| line.split(['.', ' ', '=']).next() == Some(runtime_only)),
            "bus depends on {runtime_only}: that is the runtime's"
        );
    }
}
