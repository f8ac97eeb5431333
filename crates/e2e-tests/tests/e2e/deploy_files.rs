//! The deployment files, read by a YAML parser into typed structures that
//! refuse unknown keys, and checked against each other and the workspace:
//! `deploy/compose.yaml`, `deploy/k8s/` (kustomize base), the proxy, the
//! Prometheus scrape configuration and the Dockerfiles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every YAML document of `text`, with `<<` merge keys applied.
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            let mut value = Value::deserialize(document).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
            value.apply_merge().unwrap_or_else(|e| panic!("{what}: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn typed<T: DeserializeOwned>(value: Value, what: &str) -> T {
    serde_norway::from_value(value).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Workspace crates that ship a binary as a container image: those with a
/// binary target, minus tools marked `[package.metadata.signup] image = false`.
fn shipped_crates() -> BTreeSet<String> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|package| {
            let has_binary = package["targets"].as_array().is_some_and(|targets| {
                targets.iter().any(|t| t["kind"].as_array().is_some_and(|k| k.contains(&"bin".into())))
            });
            has_binary && package["metadata"]["signup"]["image"] != false
        })
        .map(|package| package["name"].as_str().expect("name").to_owned())
        .collect()
}

// ---- compose ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Compose {
    name: String,
    #[serde(default)]
    include: Vec<String>,
    services: BTreeMap<String, ComposeService>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeService {
    image: String,
    build: Option<ComposeBuild>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    env_file: Option<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    depends_on: DependsOn,
    deploy: Option<ComposeDeploy>,
    healthcheck: Option<Value>,
    restart: Option<String>,
    #[serde(default)]
    profiles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeBuild {
    context: String,
    dockerfile: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeDeploy {
    mode: Option<String>,
    replicas: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    #[default]
    None,
    List(Vec<String>),
    Conditions(BTreeMap<String, Condition>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Condition {
    condition: String,
}

impl DependsOn {
    fn names(&self) -> Vec<&str> {
        match self {
            DependsOn::None => Vec::new(),
            DependsOn::List(names) => names.iter().map(String::as_str).collect(),
            DependsOn::Conditions(map) => map.keys().map(String::as_str).collect(),
        }
    }
}

fn compose() -> Compose {
    let mut docs = documents(&read("deploy/compose.yaml"), "deploy/compose.yaml");
    assert_eq!(docs.len(), 1, "one document");
    let mut root = docs.remove(0);
    // Extension fields (x-…) hold anchors only.
    if let Value::Mapping(map) = &mut root {
        map.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
    }
    let mut compose: Compose = typed(root, "deploy/compose.yaml");
    // The files it includes (the handlers' services) add services of their own.
    for included in &compose.include {
        let path = format!("deploy/{included}");
        let mut part = documents(&read(&path), &path).remove(0);
        let services = part.get_mut("services").map(std::mem::take).unwrap_or_default();
        let services: BTreeMap<String, ComposeService> = typed(services, &path);
        for (name, service) in services {
            assert!(compose.services.insert(name.clone(), service).is_none(), "{path}: {name} twice");
        }
    }
    compose
}

#[test]
fn compose_file_is_valid_and_consistent() {
    let compose = compose();
    assert_eq!(compose.name, "signup");
    let names: BTreeSet<&str> = compose.services.keys().map(String::as_str).collect();
    for expected in ["nats", "postgres", "streams", "proxy", "prometheus", "grafana"] {
        assert!(names.contains(expected), "compose has {expected}");
    }
    let generated = std::process::Command::new("bash")
        .arg(repo().join("scripts/compose-env"))
        .output()
        .expect("scripts/compose-env");
    let generated = String::from_utf8(generated.stdout).expect("utf-8");
    let compose_text = read("deploy/compose.yaml") + &read("deploy/compose.handlers.yaml");
    for (name, service) in &compose.services {
        for dependency in service.depends_on.names() {
            assert!(names.contains(dependency), "{name} depends on unknown service {dependency}");
        }
        if let DependsOn::Conditions(conditions) = &service.depends_on {
            for condition in conditions.values() {
                let known = ["service_started", "service_healthy", "service_completed_successfully"];
                assert!(known.contains(&condition.condition.as_str()), "{name}: {}", condition.condition);
            }
        }
        for volume in &service.volumes {
            let source = volume.split(':').next().expect("source");
            if source.starts_with('.') {
                assert!(repo().join("deploy").join(source).exists(), "{name} mounts missing {source}");
            } else {
                assert!(compose.volumes.contains_key(source), "{name} uses undeclared volume {source}");
            }
        }
        for profile in &service.profiles {
            // Monitoring, and the CRM forwarder, which needs an endpoint first.
            let expected = if name == "crm-webhook" { "crm" } else { "observability" };
            assert_eq!(profile, expected, "{name}");
        }
        if let Some(build) = &service.build {
            assert_eq!(build.context, "..", "{name} builds from the repository root");
            assert!(repo().join(&build.dockerfile).is_file(), "{name}: {} exists", build.dockerfile);
            assert!(service.image.starts_with("signup/"), "{name}: {}", service.image);
            assert_eq!(service.environment.get("SIGNUP_ENV").map(String::as_str), Some("production"), "{name}");
        }
        assert!(service.restart.is_some(), "{name} says how it restarts");
    }
    // Every required variable is one scripts/compose-env writes.
    for required in compose_text.split("${").skip(1).filter_map(|rest| rest.split_once(":?")).map(|(name, _)| name) {
        if !required.contains('}') {
            assert!(generated.contains(&format!("\n{required}=")), "scripts/compose-env writes {required}");
        }
    }
    // The dead-letter digests hold personal data: they go to an address the
    // operator names, never to a placeholder.
    let to = compose.services["dead-letter-notifier"].environment.get("SIGNUP__NOTIFIER__TO").cloned();
    assert!(to.as_deref().is_some_and(|to| to.starts_with("${OPERATOR_EMAIL:?")), "required: {to:?}");
    assert!(
        generated.contains("\nOPERATOR_EMAIL=\n"),
        "scripts/compose-env leaves OPERATOR_EMAIL for the operator to set"
    );
    let replicas = compose.services["save-prospect"].deploy.as_ref().map(|d| (d.mode.as_deref(), d.replicas));
    assert_eq!(replicas, Some((Some("replicated"), 2)), "two replicas, which podman-compose runs only when said");
    assert_eq!(compose.services["streams"].command.as_deref(), Some(&["streams".to_owned()][..]));
    assert_eq!(compose.services["proxy"].ports, ["8020:8020"]);
    // NATS checks every user's password: it reads them all from deploy/.env.
    assert_eq!(compose.services["nats"].env_file.as_deref(), Some(".env"));
    let healthchecks = ["nats", "postgres"];
    for name in healthchecks {
        assert!(compose.services[name].healthcheck.is_some(), "{name} has a health check");
    }
}

#[test]
fn every_crate_that_ships_a_binary_has_an_image_and_a_place_in_compose() {
    let shipped = shipped_crates();
    assert!(shipped.contains("signup-web") && shipped.contains("save-prospect"), "{shipped:?}");
    let dockerfiles: BTreeSet<String> = std::fs::read_dir(repo().join("docker"))
        .expect("docker/")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".Dockerfile").map(str::to_owned))
        .collect();
    assert_eq!(dockerfiles, shipped, "docker/<crate>.Dockerfile for exactly the crates that ship binaries");
    let built: BTreeSet<String> = compose()
        .services
        .values()
        .filter_map(|service| service.build.as_ref())
        .map(|build| build.dockerfile.trim_start_matches("docker/").trim_end_matches(".Dockerfile").to_owned())
        .collect();
    assert_eq!(built, shipped, "compose builds every shipped crate's image, and only those");
    for name in &shipped {
        let dockerfile = read(&format!("docker/{name}.Dockerfile"));
        for needed in ["cargo chef cook", "USER 10001", "HEALTHCHECK", "\"check\"]", "org.opencontainers.image.title"] {
            assert!(dockerfile.contains(needed), "docker/{name}.Dockerfile has {needed}");
        }
    }
}

#[test]
fn proxy_and_prometheus_point_at_compose_services() {
    let compose = compose();
    let nginx = read("deploy/proxy/nginx.conf");
    for line in nginx.lines().map(str::trim).filter(|l| l.starts_with("server ") && l.contains(':')) {
        let host = line.trim_start_matches("server ").split(':').next().expect("host");
        assert!(compose.services.contains_key(host), "nginx upstream {host} is a compose service");
    }
    for route in ["location /analytics", "location /api/analytics", "location / "] {
        assert!(nginx.contains(route), "the proxy routes {route}");
    }
    let prometheus: Value = documents(&read("deploy/prometheus/prometheus.yml"), "prometheus.yml").remove(0);
    let ports = BTreeMap::from([
        ("signup-web", 8080),
        ("analytics-indexer", 8081),
        ("save-prospect", 8082),
        ("dead-letter-notifier", 8083),
    ]);
    let jobs = prometheus["scrape_configs"].as_sequence().expect("scrape_configs");
    for (service, port) in &ports {
        let job = jobs.iter().find(|job| job["job_name"] == *service).unwrap_or_else(|| panic!("a job for {service}"));
        let text = serde_norway::to_string(job).expect("yaml");
        assert!(
            text.contains(&format!("{service}:{port}")) || text.contains(&format!("port: {port}")),
            "{service} scraped on {port}: {text}"
        );
    }
    // The folder is mounted whole: the alert rules and the handlers' targets
    // are found beside prometheus.yml.
    let mounted = &compose.services["prometheus"].volumes;
    assert!(mounted.iter().any(|v| v.starts_with("./prometheus:/etc/prometheus:ro")), "{mounted:?}");
    for rules in prometheus["rule_files"].as_sequence().expect("rule_files") {
        let file = rules.as_str().expect("a path");
        assert!(!file.starts_with('/'), "{file}: beside prometheus.yml");
        let groups: Value = documents(&read(&format!("deploy/prometheus/{file}")), file).remove(0);
        assert!(!groups["groups"].as_sequence().expect("groups").is_empty(), "{file} has rules");
    }
}

/// CI brings deploy/compose.yaml up for real (`scripts/compose-test`, after the
/// test suite), and the README names the command an operator repeats it with.
#[test]
fn ci_runs_the_compose_file_with_the_command_the_readme_names() {
    let ci = read(".ci/run");
    let runs = |line: &&str| !line.trim_start().starts_with('#') && !line.contains("section ");
    assert!(ci.lines().filter(runs).any(|line| line.contains("scripts/compose-test")), ".ci/run runs it");
    assert!(read("README.md").contains("sudo scripts/compose-test"), "the README's Deploy section names it");
    // What it runs, in its commands (not only in its header's comments).
    let script = read("scripts/compose-test");
    let commands: String =
        script.lines().filter(|line| !line.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    for uses in ["/deploy/compose.yaml", "/docker/smoke/compose.override.yaml", "/scripts/compose-env"] {
        assert!(commands.contains(uses), "scripts/compose-test runs {uses}");
    }
    // The override changes image names, and adds the mail catcher: nothing else.
    let override_file = documents(&read("docker/smoke/compose.override.yaml"), "override").remove(0);
    let compose = compose();
    for (name, service) in override_file["services"].as_mapping().expect("services") {
        let name = name.as_str().expect("a name");
        let keys: Vec<&str> = service.as_mapping().expect("a service").keys().filter_map(Value::as_str).collect();
        if compose.services.contains_key(name) {
            assert_eq!(keys, ["image"], "the override changes only {name}'s image");
        } else {
            assert_eq!(name, "smtp", "the override adds only the mail catcher");
        }
    }
}

/// The dashboard is one Grafana's provisioning loads: a schema the pinned
/// Grafana reads, every panel on the data source the provisioning file
/// names (by its uid), from the folder compose mounts. (That every query
/// names an exported metric is checked against live `/metrics` pages, in
/// `deployment::metrics_count_a_sign_up_in_every_service`.)
#[test]
fn the_grafana_dashboard_is_what_its_provisioning_loads() {
    let sources = documents(&read("deploy/grafana/provisioning/datasources/prometheus.yaml"), "datasources").remove(0);
    let sources = sources["datasources"].as_sequence().expect("datasources");
    assert_eq!(sources.len(), 1, "one data source");
    let (uid, kind) = (sources[0]["uid"].as_str().expect("uid"), sources[0]["type"].as_str().expect("type"));
    assert_eq!((kind, sources[0]["url"].as_str()), ("prometheus", Some("http://prometheus:9090")));
    let compose = compose();
    assert!(compose.services.contains_key("prometheus"), "the data source is a compose service");
    let providers = documents(&read("deploy/grafana/provisioning/dashboards/signup.yaml"), "providers").remove(0);
    let path = providers["providers"][0]["options"]["path"].as_str().expect("the provider's path").to_owned();
    let mounts = &compose.services["grafana"].volumes;
    assert!(mounts.contains(&format!("./grafana/dashboards:{path}:ro")), "{path} is mounted: {mounts:?}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/signup.json")).expect("dashboard JSON");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()) && dashboard["title"].is_string());
    // 36 made panels name their data source by uid; Grafana 11 writes 39.
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=39).contains(&schema), "schemaVersion {schema}: Grafana 11 reads 36 to 39");
    let image = compose.services["grafana"].image.clone();
    assert!(image.contains("grafana/grafana:11."), "the schema is checked for Grafana 11: {image}");
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    let nested = panels.iter().flat_map(|row| row["panels"].as_array().into_iter().flatten());
    for panel in panels.iter().chain(nested).filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().expect("a title");
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "{title}: its id is its own");
        assert_eq!(panel["datasource"]["uid"].as_str(), Some(uid), "{title}: the provisioned data source");
        assert_eq!(panel["datasource"]["type"].as_str(), Some(kind), "{title}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: queries"));
        for target in targets {
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}: a query");
            assert!(target["datasource"].is_null() || target["datasource"]["uid"] == uid, "{title}: {target}");
        }
    }
}

#[test]
fn the_alert_rules_are_valid_and_fire_when_their_tests_say() {
    // Prometheus' own tool: the rules load, and each fires (or stays quiet)
    // on the series of deploy/prometheus/alerts.test.yml.
    let promtool = std::env::var("SIGNUP_PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into());
    let dir = repo().join("deploy/prometheus");
    for args in
        [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]]
    {
        let output = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{promtool} (scripts/test installs Debian's prometheus): {e}"));
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "promtool {}: {said}", args.join(" "));
        assert!(said.contains("SUCCESS"), "{said}");
        let command = format!("promtool {}", args.join(" "));
        assert!(read("README.md").contains(&command), "the README's Deploy section names `{command}`");
    }
    // Every alert says what to do, and is tested firing and quiet.
    let rules = documents(&read("deploy/prometheus/alerts.yml"), "alerts.yml").remove(0);
    let tests = documents(&read("deploy/prometheus/alerts.test.yml"), "alerts.test.yml").remove(0);
    let cases: Vec<&Value> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_sequence().expect("alert_rule_test"))
        .collect();
    let mut alerts = BTreeSet::new();
    for rule in
        rules["groups"].as_sequence().expect("groups").iter().flat_map(|g| g["rules"].as_sequence().expect("rules"))
    {
        let alert = rule["alert"].as_str().expect("an alert rule").to_owned();
        for annotation in ["summary", "runbook"] {
            assert!(rule["annotations"][annotation].as_str().is_some_and(|a| !a.is_empty()), "{alert}: {annotation}");
        }
        let of_alert = || cases.iter().filter(|case| case["alertname"] == alert.as_str());
        let fired = |case: &&&Value| case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
        assert!(of_alert().any(|case| fired(&case)), "{alert} is tested firing in alerts.test.yml");
        assert!(of_alert().any(|case| !fired(&case)), "{alert} is tested quiet in alerts.test.yml");
        alerts.insert(alert);
    }
    for alert in ["SignupConsumerLag", "SignupDeadLetters", "SignupConsumerPaused", "SignupTargetDown"]
        .into_iter()
        .chain(["SignupHttpErrors", "SignupMailBacklog", "SignupServiceRestarting", "SignupStreamFull"])
    {
        assert!(alerts.contains(alert), "alerts.yml has {alert}");
    }
}

// ---- Kubernetes ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: Value,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    /// Empty in a pod template.
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Vec<Value>,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentSpec {
    selector: Selector,
    template: PodTemplate,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct PodTemplate {
    metadata: Metadata,
    spec: PodSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    liveness_probe: Option<Probe>,
    readiness_probe: Option<Probe>,
    resources: Option<Resources>,
    security_context: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: HttpGet,
}

#[derive(Debug, Deserialize)]
struct HttpGet {
    path: String,
    port: Value,
}

#[derive(Debug, Deserialize)]
struct Resources {
    requests: BTreeMap<String, Value>,
    limits: BTreeMap<String, Value>,
}

fn kubernetes() -> (Kustomization, Vec<Object>) {
    let (mut kustomization, objects) = kustomize("deploy/k8s");
    assert!(kustomization.resources.iter().any(|r| r == "handlers"), "the base includes deploy/handlers.toml's");
    kustomization.resources.retain(|resource| resource.ends_with(".yaml"));
    (kustomization, objects)
}

/// A kustomization's objects, and the folders it includes (the handlers')
/// read the same way: their resources (as `folder/file`) and images join
/// the including one's.
fn kustomize(dir: &str) -> (Kustomization, Vec<Object>) {
    let mut kustomization: Kustomization =
        typed(documents(&read(&format!("{dir}/kustomization.yaml")), "kustomization").remove(0), "kustomization");
    assert_eq!(kustomization.kind, "Kustomization");
    assert!(kustomization.api_version.starts_with("kustomize.config.k8s.io/"));
    let mut objects = Vec::new();
    for resource in kustomization.resources.clone() {
        let path = format!("{dir}/{resource}");
        if repo().join(&path).is_dir() {
            let (inner, mut more) = kustomize(&path);
            kustomization.resources.extend(inner.resources.iter().map(|file| format!("{resource}/{file}")));
            kustomization.images.extend(inner.images);
            objects.append(&mut more);
            continue;
        }
        for document in documents(&read(&path), &path) {
            let object: Object = typed(document, &path);
            assert!(!object.api_version.is_empty() && !object.metadata.name.is_empty(), "{path}");
            objects.push(object);
        }
    }
    (kustomization, objects)
}

#[test]
fn kubernetes_base_is_valid_and_consistent() {
    let (kustomization, objects) = kubernetes();
    assert_eq!(kustomization.namespace, "signup");
    assert!(!kustomization.labels.is_empty());
    let listed: BTreeSet<&str> = kustomization.resources.iter().map(String::as_str).collect();
    let on_disk: BTreeSet<String> = ["", "handlers/"]
        .into_iter()
        .flat_map(|folder| {
            let entries = std::fs::read_dir(repo().join("deploy/k8s").join(folder)).expect("deploy/k8s");
            entries.filter_map(move |e| Some(format!("{folder}{}", e.ok()?.file_name().to_str()?)))
        })
        .filter(|name| name.ends_with(".yaml") && !name.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(on_disk.iter().map(String::as_str).collect::<BTreeSet<_>>(), listed, "every manifest is listed");
    let image_names: BTreeSet<String> =
        kustomization.images.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect();

    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o.kind == kind);
    let deployments: BTreeMap<&str, DeploymentSpec> =
        of_kind("Deployment").map(|o| (o.metadata.name.as_str(), typed(o.spec.clone(), &o.metadata.name))).collect();
    let shipped = shipped_crates();
    let services_shipped: BTreeSet<&str> = shipped.iter().map(String::as_str).filter(|c| *c != "signup-cli").collect();
    assert_eq!(deployments.keys().copied().collect::<BTreeSet<_>>(), services_shipped, "a Deployment per service");

    for (name, spec) in &deployments {
        let labels = &spec.template.metadata.labels;
        for (key, value) in &spec.selector.match_labels {
            assert_eq!(labels.get(key), Some(value), "{name}: the selector matches the pod labels");
        }
        let container = &spec.template.spec.containers[0];
        assert!(image_names.contains(container.image.split(':').next().expect("image")), "{name}: {}", container.image);
        let http = container.ports.iter().find(|p| p.name.as_deref() == Some("http"));
        let dockerfile = read(&format!("docker/{name}.Dockerfile"));
        let exposed = dockerfile.lines().find_map(|l| l.strip_prefix("EXPOSE ")?.trim().parse::<u16>().ok());
        assert_eq!(http.map(|p| p.container_port), exposed, "{name} serves HTTP (named http) on its image's port");
        let live = container.liveness_probe.as_ref().unwrap_or_else(|| panic!("{name} has a liveness probe"));
        let ready = container.readiness_probe.as_ref().unwrap_or_else(|| panic!("{name} has a readiness probe"));
        assert_eq!((live.http_get.path.as_str(), ready.http_get.path.as_str()), ("/healthz", "/readyz"), "{name}");
        assert_eq!(live.http_get.port, Value::from("http"), "{name}");
        let resources = container.resources.as_ref().unwrap_or_else(|| panic!("{name} has resources"));
        for key in ["cpu", "memory"] {
            assert!(resources.requests.contains_key(key) && resources.limits.contains_key(key), "{name}: {key}");
        }
        assert!(container.security_context.is_some(), "{name}: {}", container.name);
        // The arguments must be a subcommand the binary has: its image's CMD.
        let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("CMD");
        let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
        assert!(container.args.is_empty() || container.args == cmd, "{name}: args {:?}, CMD {cmd:?}", container.args);
    }

    let services: BTreeMap<&str, &Object> = of_kind("Service").map(|o| (o.metadata.name.as_str(), o)).collect();
    for (name, service) in &services {
        let selector: BTreeMap<String, String> = typed(service.spec["selector"].clone(), name);
        assert!(
            deployments.values().any(|d| selector.iter().all(|(k, v)| d.template.metadata.labels.get(k) == Some(v))),
            "Service {name} selects a Deployment's pods"
        );
    }
    for hpa in of_kind("HorizontalPodAutoscaler") {
        assert_eq!(hpa.api_version, "autoscaling/v2");
        let target = hpa.spec["scaleTargetRef"]["name"].as_str().expect("scaleTargetRef");
        assert!(deployments.contains_key(target), "HPA {} scales {target}", hpa.metadata.name);
    }
    assert!(of_kind("HorizontalPodAutoscaler").any(|h| h.spec["scaleTargetRef"]["name"] == "save-prospect"));
    for pdb in of_kind("PodDisruptionBudget") {
        let selector: BTreeMap<String, String> = typed(pdb.spec["selector"]["matchLabels"].clone(), &pdb.metadata.name);
        assert!(
            deployments.values().any(|d| selector.iter().all(|(k, v)| d.template.metadata.labels.get(k) == Some(v))),
            "PDB {} covers a Deployment",
            pdb.metadata.name
        );
    }
    let ingress = of_kind("Ingress").next().expect("an Ingress");
    let text = serde_norway::to_string(&ingress.spec).expect("yaml");
    for (path, service) in
        [("/analytics", "analytics-indexer"), ("/api/analytics", "analytics-indexer"), ("/", "signup-web")]
    {
        assert!(text.contains(&format!("path: {path}\n")), "the Ingress routes {path}");
        assert!(services.contains_key(service), "{service} has a Service");
    }
    assert!(of_kind("Job").any(|job| job.metadata.name == "signup-streams"), "the streams set-up job");
    // The NATS Helm values parse, and ask for a 3-node JetStream cluster.
    let values = documents(&read("deploy/k8s/nats/values.yaml"), "nats values").remove(0);
    assert_eq!(values["config"]["cluster"]["replicas"], Value::from(3));
    assert_eq!(values["config"]["jetstream"]["enabled"], Value::from(true));
}

/// `kubectl kustomize deploy/k8s`, as the operator applies it.
fn rendered_kubernetes() -> String {
    let output = std::process::Command::new("kubectl")
        .args(["kustomize", "deploy/k8s"])
        .current_dir(repo())
        .output()
        .expect("kubectl (scripts/test installs it)");
    assert!(output.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The validation the README's Deploy section gives, and this file runs.
const VALIDATE: &str = "kubernetes-validate --strict --kubernetes-version 1.37.0";

/// `kubernetes-validate --strict` for Kubernetes 1.37 on `manifests`: whether
/// it passed, and what it said.
fn validate_kubernetes(manifests: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), manifests).expect("manifests written");
    let tool = std::env::var("SIGNUP_KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let output = std::process::Command::new(&tool)
        .args(VALIDATE.split(' ').skip(1))
        .arg("--quiet")
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{tool} (scripts/test installs it into .local/venv): {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// What the operator applies passes the Kubernetes API's own schemas, with
/// no field they do not know; a misspelt field is refused, by name.
#[test]
fn the_rendered_kubernetes_manifests_pass_the_api_schemas_of_kubernetes_1_37() {
    let manifests = rendered_kubernetes();
    let (valid, said) = validate_kubernetes(&manifests);
    assert!(valid, "kubernetes-validate --strict: {said}");
    let command = format!("kubectl kustomize deploy/k8s | {VALIDATE} -");
    assert!(read("README.md").contains(&command), "the README's Deploy section names `{command}`");
    let broken = manifests.replacen("readOnlyRootFilesystem:", "readOnlyRootFilesytem:", 1);
    let (valid, said) = validate_kubernetes(&broken);
    assert!(!valid && said.contains("readOnlyRootFilesytem"), "a misspelt field is named: {said}");
}

/// Every container Kubernetes runs (the handlers' and the set-up job's too)
/// says what it needs and runs locked down: CPU and memory requested and
/// capped, not root, a read-only root filesystem, no privilege escalation,
/// no capabilities; every long-running one is probed on its service's
/// `/healthz` and `/readyz`, at a port it declares.
#[test]
fn every_kubernetes_container_has_resources_probes_and_a_locked_down_security_context() {
    let objects = documents(&rendered_kubernetes(), "kubectl kustomize deploy/k8s");
    let mut checked = 0;
    for object in &objects {
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("name");
        let pod = match kind {
            "Deployment" | "StatefulSet" | "Job" => &object["spec"]["template"]["spec"],
            _ => continue,
        };
        let containers = pod["containers"].as_sequence().expect("containers").iter();
        for container in containers.chain(pod["initContainers"].as_sequence().into_iter().flatten()) {
            let what = format!("{kind} {name}, container {}", container["name"].as_str().expect("name"));
            for (side, key) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
                assert!(!container["resources"][side][key].is_null(), "{what}: resources.{side}.{key}");
            }
            let security = &container["securityContext"];
            assert_eq!(security["runAsNonRoot"], Value::Bool(true), "{what}: runAsNonRoot");
            assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true), "{what}: readOnlyRootFilesystem");
            assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false), "{what}: allowPrivilegeEscalation");
            assert_eq!(security["capabilities"]["drop"][0], Value::from("ALL"), "{what}: capabilities");
            if kind == "Job" {
                continue;
            }
            let ports: Vec<&Value> =
                container["ports"].as_sequence().into_iter().flatten().map(|p| &p["name"]).collect();
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
                assert!(ports.contains(&&get["port"]), "{what}: {probe} on a declared port ({:?})", get["port"]);
            }
        }
        checked += 1;
    }
    assert!(checked >= 7, "the services and the streams job: {checked}");
}

/// What one NATS user may do: subjects it may publish, subjects it may
/// subscribe to, and whether it may answer requests.
type Grants = (BTreeSet<String>, BTreeSet<String>, bool);

/// Each user's grants in `deploy/nats/users.conf`.
fn conf_users(conf: &str) -> BTreeMap<String, Grants> {
    let mut users: BTreeMap<String, Grants> = BTreeMap::new();
    let (mut current, mut subscribing) = (None::<String>, false);
    for line in conf.lines().map(|l| l.split('#').next().unwrap_or_default().trim()) {
        if let Some(user) = line.strip_prefix("user:") {
            (current, subscribing) = (Some(user.trim().to_owned()), false);
        }
        let Some(user) = &current else { continue };
        subscribing = (subscribing || line.starts_with("subscribe")) && !line.starts_with("publish");
        let grants = users.entry(user.clone()).or_default();
        grants.2 |= line == "allow_responses: true";
        let subjects = line.split('"').skip(1).step_by(2).map(str::to_owned);
        if subscribing { grants.1.extend(subjects) } else { grants.0.extend(subjects) }
    }
    users
}

#[test]
fn kubernetes_nats_users_grant_exactly_what_the_server_configuration_grants() {
    assert!(read("deploy/nats/nats-server.conf").contains("\n  include ./users.conf\n"), "the server reads the users");
    let conf = conf_users(&read("deploy/nats/users.conf"));
    for user in ["web", "save-prospect", "analytics-indexer", "dead-letter-notifier", "admin"] {
        assert!(conf.contains_key(user), "{user} has a NATS user: {conf:?}");
    }
    assert!(conf["web"].1.contains("_INBOX_web.>") && !conf["web"].0.contains("_INBOX_web.>"), "{conf:?}");
    // What only admin may do, whatever the lists say: everything, the whole
    // JetStream API, and making or changing streams (and so buckets).
    for (user, (publish, subscribe, responses)) in conf.iter().filter(|(user, _)| user.as_str() != "admin") {
        assert!(!responses && !subscribe.contains(">"), "{user}: {subscribe:?}");
        for subject in publish {
            let api = ["$JS.API.>", "$JS.API.STREAM.CREATE.", "$JS.API.STREAM.UPDATE.", "$JS.API.STREAM.DELETE."];
            assert!(subject != ">" && !api.iter().any(|a| subject.starts_with(a)), "{user} may publish {subject}");
        }
        // Replies reach a user on its own inboxes alone (the prospects
        // service also takes its requests).
        if user != "prospects" {
            assert_eq!(subscribe, &BTreeSet::from([format!("_INBOX_{user}.>")]), "{user} subscribes");
        }
    }
    let values = documents(&read("deploy/k8s/nats/users.yaml"), "nats users").remove(0);
    let users = values["config"]["merge"]["authorization"]["users"].as_sequence().expect("users");
    let mut helm = BTreeMap::new();
    for user in users {
        let name = user["user"].as_str().expect("user").to_owned();
        let permissions = &user["permissions"];
        let side = |side: &str| -> BTreeSet<String> {
            let allowed = permissions[side]["allow"].as_sequence().cloned().unwrap_or_default();
            allowed.iter().map(|subject| subject.as_str().expect("subject").to_owned()).collect()
        };
        helm.insert(name, (side("publish"), side("subscribe"), permissions["allow_responses"] == true));
    }
    assert_eq!(helm, conf, "deploy/k8s/nats/users.yaml and deploy/nats/users.conf differ");
}

/// The files that list handlers and NATS users are what `scripts/render-deploy`
/// writes from `deploy/nats/users.toml` and `deploy/handlers.toml`; and a
/// change to a list that was not rendered again is found, naming the file.
#[test]
fn the_deployments_lists_of_users_and_handlers_are_rendered_from_one_place() {
    let check = |root: &Path| {
        let output = std::process::Command::new("python3")
            .arg(root.join("scripts/render-deploy"))
            .arg("--check")
            .output()
            .expect("scripts/render-deploy");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (fresh, said) = check(&repo());
    assert!(fresh, "{said}");

    let copy = tempfile::tempdir().expect("tempdir");
    for file in ["scripts/render-deploy", "scripts/handler-template/compose.yaml", "deploy/handlers.toml"]
        .into_iter()
        .chain(["deploy/nats/users.toml", "deploy/nats/users.conf", "deploy/k8s/nats/users.yaml"])
        .chain(["deploy/compose.handlers.yaml", "deploy/k8s/handlers/kustomization.yaml"])
        .chain(["deploy/prometheus/handlers.json"])
    {
        std::fs::create_dir_all(copy.path().join(file).parent().expect("folder")).expect("mkdir");
        std::fs::copy(repo().join(file), copy.path().join(file)).expect("copy");
    }
    let users = copy.path().join("deploy/nats/users.toml");
    let text = std::fs::read_to_string(&users).expect("users.toml");
    std::fs::write(&users, text.replace("\"prospects.export\",", "")).expect("users.toml");
    let (fresh, said) = check(copy.path());
    assert!(!fresh && said.contains("deploy/nats/users.conf") && said.contains("deploy/k8s/nats/users.yaml"), "{said}");
    assert!(!said.contains("compose.handlers.yaml"), "{said}");
    let handlers = copy.path().join("deploy/handlers.toml");
    let listed =
        std::fs::read_to_string(&handlers).expect("handlers.toml") + "[[handler]]\nname = \"x\"\nport = 8090\n";
    std::fs::write(&handlers, listed).expect("handlers.toml");
    let (fresh, said) = check(copy.path());
    for rendered in ["compose.handlers.yaml", "handlers/kustomization.yaml", "prometheus/handlers.json"] {
        assert!(!fresh && said.contains(rendered), "{rendered}: {said}");
    }

    // A list written as a string would be read one character at a time,
    // ">" among them: refused, as are an unknown key and a port that is no port.
    let refused = |file: &Path, from: &str, to: &str, reason: &str| {
        let text = std::fs::read_to_string(file).expect("list");
        assert!(text.contains(from), "{from}");
        std::fs::write(file, text.replacen(from, to, 1)).expect("list");
        let (fresh, said) = check(copy.path());
        assert!(!fresh && said.contains(reason), "{to}: {said}");
        std::fs::write(file, text).expect("list");
    };
    refused(&users, "subscribe = [\">\"]", "subscribe = \">\"", "admin.subscribe is not a list of subjects");
    refused(&users, "subscribe = [\">\"]", "subcribe = [\">\"]", "admin: a user has handler, publish and subscribe");
    refused(&users, "\"prospects.status\",", "\"prospects status\",", "'prospects status' is not a subject");
    refused(&handlers, "port = 8090", "port = true", "its port is not a number from 1024 to 65535");
}

#[test]
fn every_secret_key_a_manifest_reads_is_in_the_documented_secret() {
    let readme = read("deploy/k8s/README.md");
    let kustomization = read("deploy/k8s/kustomization.yaml");
    let mut keys = BTreeSet::new();
    let mut texts: Vec<String> = ["deploy/k8s", "deploy/k8s/handlers"]
        .into_iter()
        .flat_map(|folder| std::fs::read_dir(repo().join(folder)).expect("deploy/k8s"))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| std::fs::read_to_string(path).expect("manifest"))
        .collect();
    texts.push(read("deploy/k8s/nats/values.yaml"));
    texts.push(read("deploy/k8s/nats/users.yaml"));
    for text in &texts {
        let files = text.split("/run/secrets/signup/").skip(1);
        let refs = text.split("secretKeyRef:").skip(1).filter_map(|rest| rest.split("key: ").nth(1));
        for rest in files.chain(refs) {
            keys.insert(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>());
        }
    }
    assert!(keys.contains("nats-web-password") && keys.contains("crm-webhook-secret"), "{keys:?}");
    // The NATS passwords: one per user scripts/render-deploy lists, in a loop.
    let output = std::process::Command::new("python3")
        .args([repo().join("scripts/render-deploy").as_os_str(), "--users".as_ref()])
        .output()
        .expect("scripts/render-deploy --users");
    let users = String::from_utf8(output.stdout).expect("utf-8");
    let nats_keys: BTreeSet<String> = users.lines().map(|user| format!("nats-{user}-password")).collect();
    let each_user = "users=\"$(scripts/render-deploy --users)\" && [ -n \"$users\" ] &&";
    let each_password = "echo \"--from-literal=nats-$user-password=$(pw)\"; done)";
    for (what, text) in [("deploy/k8s/README.md", &readme), ("deploy/k8s/kustomization.yaml", &kustomization)] {
        assert!(
            text.contains(each_user) && text.contains(each_password),
            "{what}'s secret command sets every NATS user's"
        );
        for key in keys.iter().filter(|key| !nats_keys.contains(*key)) {
            assert!(text.contains(&format!("--from-literal={key}=")), "{what}'s secret command sets {key}");
        }
    }
}

/// The NATS the deployments run is the release line the tests run on, and
/// at least the oldest one supported; Kubernetes describes the same
/// three-node cluster the cluster tests use, with the streams at three
/// replicas.
#[test]
fn deployments_run_a_current_nats_and_kubernetes_a_three_node_cluster() {
    let compose = read("deploy/compose.yaml");
    let compose_tag = compose
        .lines()
        .find_map(|line| line.trim().strip_prefix("image: docker.io/library/nats:"))
        .expect("compose names the nats image")
        .to_owned();
    let values = documents(&read("deploy/k8s/nats/values.yaml"), "nats values").remove(0);
    let helm_tag = values["container"]["image"]["tag"].as_str().expect("the chart's image tag").to_owned();
    assert_eq!(compose_tag, helm_tag, "compose and Kubernetes run the same NATS");
    let version = compose_tag.trim_end_matches("-alpine");
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|n| n.parse().expect("a number")).collect() };
    let minimum = bus::connection::MIN_SERVER_VERSION;
    assert!(parse(version) >= parse(minimum), "{version} is older than the supported {minimum}");
    // The tests' server is the same release line (major.minor).
    let tested =
        std::process::Command::new(test_support::nats_server_bin()).arg("--version").output().expect("version");
    let tested = String::from_utf8_lossy(&tested.stdout);
    let line = |v: &str| parse(v)[..2].to_vec();
    let tested_version = tested.split_whitespace().find_map(|w| w.strip_prefix('v')).expect("nats-server: vX.Y.Z");
    assert_eq!(line(tested_version), line(version), "the deployments run {version}, the tests {tested_version}");

    assert_eq!(values["config"]["cluster"]["enabled"], Value::Bool(true));
    assert_eq!(values["config"]["cluster"]["replicas"].as_u64(), Some(3), "three NATS nodes");
    assert_eq!(values["config"]["jetstream"]["enabled"], Value::Bool(true));
    // One server per node, so a node lost costs one replica of each stream.
    let spread = &values["podTemplate"]["topologySpreadConstraints"]["kubernetes.io/hostname"];
    assert_eq!((spread["maxSkew"].as_u64(), spread["whenUnsatisfiable"].as_str()), (Some(1), Some("DoNotSchedule")));
    assert_eq!(values["natsBox"]["enabled"], Value::Bool(false), "no nats-box: it would have no credentials");
    // Closed without users.yaml: the stand-in user's password is a variable
    // nothing sets (nats-server refuses to start), and users.yaml replaces it.
    let stand_in = &values["config"]["merge"]["authorization"]["users"];
    assert_eq!(stand_in.as_sequence().map(Vec::len), Some(1), "{stand_in:?}");
    let password = stand_in[0]["password"].as_str().expect("a password");
    let variable = password.trim_matches(|c| c == '<' || c == '>' || c == ' ').trim_start_matches('$');
    assert!(!read("deploy/k8s/nats/users.yaml").contains(variable), "{variable} is set nowhere");
    for side in ["publish", "subscribe"] {
        let denied = &stand_in[0]["permissions"][side]["deny"];
        assert_eq!(
            denied.as_sequence().map(Vec::as_slice),
            Some(&[Value::from(">")][..]),
            "the stand-in may {side} nothing"
        );
    }
    let users = documents(&read("deploy/k8s/nats/users.yaml"), "nats users").remove(0);
    assert!(users["config"]["merge"]["authorization"]["users"].as_sequence().is_some_and(|u| u.len() > 5));
    let config = read("deploy/k8s/config.yaml");
    assert!(config.contains("SIGNUP__NATS__STREAM__REPLICAS: \"3\""), "the streams at three replicas: {config}");
}

/// The log lines a proxy writes for requests: a link's token (in the path or
/// a referer) and a search's words (in the query) must never be in them.
fn assert_logs_redacted_paths(format: &str, map: &str, what: &str) {
    for variable in ["$request ", "$request\"", "$request'", "$request_uri", "$args", "$query_string", "$http_referer"]
    {
        assert!(!format.contains(variable), "{what}: the access log has {variable}: {format}");
    }
    let (from, to) = map
        .split("map ")
        .nth(1)
        .and_then(|rest| rest.split_once('{'))
        .map(|(head, _)| {
            let mut names = head.split_whitespace();
            (names.next().unwrap_or_default().to_owned(), names.next().unwrap_or_default().to_owned())
        })
        .unwrap_or_default();
    assert_eq!(from, "$uri", "{what}: the logged path is made from $uri (no query string): {map}");
    assert!(format.contains(&to) && !to.is_empty(), "{what}: the access log writes {to}: {format}");
    // The map's pattern, applied as nginx applies it, to every kind of link.
    let pattern = map.split('"').nth(1).expect("the map's pattern").trim_start_matches('~');
    let replacement = map.split('"').nth(3).expect("the map's replacement");
    let pattern = regex::Regex::new(pattern).expect("a pattern");
    let links = links::Links::with_secret(
        &links::LinkSettings::default(),
        &secrecy::SecretString::from("a secret for this test"),
    )
    .expect("links");
    let (id, now) = (uuid::Uuid::now_v7(), chrono::Utc::now());
    for token in
        [links.manage_token(id, now), links.confirm_token(id, now), links.email_token(id, uuid::Uuid::now_v7(), now)]
    {
        for path in [
            format!("/prospects/manage/{token}"),
            format!("/prospects/manage/{token}/erase"),
            format!("/prospects/confirm/{token}"),
        ] {
            let logged = pattern.replace(&path, replacement).into_owned();
            assert!(!logged.contains(&token) && logged.contains("[redacted]"), "{what}: {path} is logged as {logged}");
        }
    }
    let plain = "/signup/thanks/0192f0c1-7a3b-7cde-8f01-23456789abcd";
    assert!(!pattern.is_match(plain), "{what}: an ordinary path stays as it is");
}

#[test]
fn the_proxies_log_no_token_no_query_and_no_referer() {
    let nginx = read("deploy/proxy/nginx.conf");
    let format = nginx.lines().find(|l| l.trim_start().starts_with("log_format")).expect("a log format");
    let map_start = nginx.find("map $uri").expect("the proxy's map");
    let map = &nginx[map_start..map_start + nginx[map_start..].find("default").expect("the map's end")];
    assert_logs_redacted_paths(format, map, "deploy/proxy/nginx.conf");
    assert!(nginx.contains("error_log /dev/stderr crit;"), "nginx's error lines quote the request line and referer");

    // ingress-nginx, installed with the values Signup ships.
    let values = documents(&read("deploy/k8s/ingress-nginx/values.yaml"), "ingress-nginx values").remove(0);
    let config = &values["controller"]["config"];
    let format = config["log-format-upstream"].as_str().expect("log-format-upstream");
    let map = config["http-snippet"].as_str().expect("the http-snippet with the map");
    assert_logs_redacted_paths(format, map, "deploy/k8s/ingress-nginx/values.yaml");
    assert_eq!(
        config["error-log-level"].as_str(),
        Some("crit"),
        "nginx's error lines quote the request line and referer"
    );
    let readme = read("deploy/k8s/README.md");
    assert!(readme.contains("-f deploy/k8s/ingress-nginx/values.yaml"), "the README installs the controller with them");
}

/// docs/security.md backs each "cannot" with a test, named `module::test`
/// (a module file under some crate's `tests/`), or `crate module::test` where
/// two crates have a module of that name: every one it names must be a test
/// there, so the page cannot drift from the tests.
#[test]
fn the_security_page_names_only_tests_that_exist() {
    let page = read("docs/security.md");
    // Each test module file, by crate and by its name.
    let mut files: Vec<(String, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(repo().join("crates")).expect("crates/") {
        let krate = entry.expect("entry").path();
        let name = krate.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let mut folders = vec![krate.join("tests")];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                    && path.extension().is_some_and(|e| e == "rs")
                {
                    files.push((name.clone(), stem.to_owned(), path));
                }
            }
        }
    }
    let mut checked = 0;
    for name in page.split('`').skip(1).step_by(2) {
        let Some((file, test)) = name.split_once("::") else { continue };
        if test.is_empty()
            || test.contains("::")
            || !test.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let (krate, module) = file.split_once(' ').map_or((None, file), |(k, m)| (Some(k), m));
        let candidates: Vec<&PathBuf> = files
            .iter()
            .filter(|(c, m, _)| m == module && krate.is_none_or(|k| k == c))
            .map(|(_, _, path)| path)
            .collect();
        // A Rust path such as `links::Claims` names no test module; a module
        // the page names must exist.
        if candidates.is_empty() && (krate.is_some() || !is_rust_path(file)) {
            panic!("docs/security.md names {name}, and no crate has a test module {file}");
        }
        if candidates.is_empty() {
            continue;
        }
        let found = candidates.iter().any(|path| {
            let text = std::fs::read_to_string(path).expect("a test file");
            text.find(&format!("fn {test}(")).is_some_and(|at| {
                let before: String = text[..at].lines().rev().take(3).collect();
                before.contains("#[test]") || before.contains("#[tokio::test")
            })
        });
        assert!(found, "docs/security.md names {name}, which no test of {candidates:?} is");
        checked += 1;
    }
    assert!(checked >= 20, "the page names its tests ({checked} found)");
}

/// Whether `first` is the first part of a Rust path the page may name (a
/// crate of the workspace), not a test module.
fn is_rust_path(first: &str) -> bool {
    repo().join("crates").join(first.replace('_', "-")).is_dir()
}
