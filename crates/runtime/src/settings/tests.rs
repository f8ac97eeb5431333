//! The loader against config folders of the tests' own, and the documented
//! defaults against the built-in ones and docs/configuration.md.

use super::*;
use bus::settings::NatsSettings;
use secrecy::ExposeSecret;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Sample {
    nats: NatsSettings,
}

#[test]
fn defaults_then_files_then_environment() {
    let dir = std::env::temp_dir().join(format!("signup-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("default.toml"), "[nats]\nurl = \"nats://from-default:4222\"\nrequest_timeout_ms = 7\n")
        .expect("default.toml");
    std::fs::write(dir.join("staging.toml"), "[nats.stream]\nreplicas = 3\n").expect("staging.toml");
    std::fs::write(dir.join("development.toml"), "").expect("development.toml");

    let none: Sample = load_from(&dir, "development", HashMap::new()).expect("load");
    assert_eq!(none.nats.url, "nats://from-default:4222");
    assert_eq!(none.nats.request_timeout_ms, 7);
    assert_eq!(none.nats.connect_timeout_ms, 2_000, "built-in default");
    assert_eq!(none.nats.stream.replicas, 1);

    let env = HashMap::from([
        ("SIGNUP__NATS__URL".to_owned(), "nats://from-env:4222".to_owned()),
        ("SIGNUP__NATS__PASSWORD".to_owned(), "1234".to_owned()),
        ("SIGNUP__NATS__STREAM__DUPLICATE_WINDOW_SECS".to_owned(), "300".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ]);
    let layered: Sample = load_from(&dir, "staging", env).expect("load");
    assert_eq!(layered.nats.url, "nats://from-env:4222");
    assert_eq!(layered.nats.stream.replicas, 3, "profile file");
    assert_eq!(layered.nats.stream.duplicate_window_secs, 300);
    let password = layered.nats.password.as_ref().expect("password");
    assert_eq!(password.expose_secret(), "1234", "numeric-looking secrets stay strings");
    assert!(!format!("{:?}", layered.nats).contains("1234"), "secrets are never printed");

    let secret = dir.join("nats-password");
    std::fs::write(&secret, "from-a-file\n").expect("secret file");
    let env = HashMap::from([("SIGNUP_FILE__NATS__PASSWORD".to_owned(), secret.display().to_string())]);
    let from_file: Sample = load_from(&dir, "development", env).expect("load");
    assert_eq!(from_file.nats.password.expect("password").expose_secret(), "from-a-file");
    let missing = HashMap::from([("SIGNUP_FILE__NATS__TOKEN".to_owned(), "/nonexistent/token".to_owned())]);
    let error = load_from::<Sample>(&dir, "development", missing).expect_err("a missing secret file is an error");
    assert!(error.to_string().contains("SIGNUP_FILE__NATS__TOKEN"), "{error}");
    std::fs::remove_dir_all(&dir).ok();
}

fn config_dir(name: &str, default: &str, profiles: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signup-settings-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("default.toml"), default).expect("default.toml");
    for (profile, text) in profiles {
        std::fs::write(dir.join(format!("{profile}.toml")), text).expect("profile");
    }
    dir
}

fn error_of(result: Result<Sample, ConfigError>) -> String {
    result.expect_err("refused").to_string()
}

#[test]
fn an_unknown_key_is_refused_by_name_wherever_it_comes_from() {
    let dir = config_dir("unknown-key", "[nats]\nurll = \"nats://typo:4222\"\n", &[("development", "")]);
    let error = error_of(load_from(&dir, "development", HashMap::new()));
    assert!(error.contains("`nats.urll`") && error.contains("default.toml"), "{error}");

    let dir = config_dir("unknown-var", "", &[("development", "")]);
    let env = HashMap::from([("SIGNUP__NATS__STREAM__REPLICAZ".to_owned(), "3".to_owned())]);
    let error = error_of(load_from(&dir, "development", env));
    assert!(error.contains("`nats.stream.replicaz`") && error.contains("SIGNUP__NATS__STREAM__REPLICAZ"), "{error}");

    let env = HashMap::from([("SIGNUP__NATZ__URL".to_owned(), "nats://x:4222".to_owned())]);
    let error = error_of(load_from(Path::new(""), "development", env));
    assert!(error.contains("`natz`") && error.contains("SIGNUP__NATZ__URL"), "{error}");
}

#[test]
fn another_services_section_is_not_an_error() {
    let dir = config_dir(
        "foreign",
        "[mailer]\nfrom = \"a@b.c\"\n[my_new_handler]\nx = 1\n[web]\n# port = 8080\n",
        &[("development", "")],
    );
    let env = HashMap::from([("SIGNUP__WEB__PORT".to_owned(), "9000".to_owned())]);
    let loaded: Sample = load_from(&dir, "development", env).expect("other services' sections are theirs");
    assert_eq!(loaded.nats.url, NatsSettings::default().url);
    // A section no file has is nobody's: a mistake, named.
    let env = HashMap::from([("SIGNUP__WBE__PORT".to_owned(), "9000".to_owned())]);
    let refused = load_from::<Sample>(&dir, "development", env).expect_err("a section nobody has");
    assert!(refused.to_string().contains("SIGNUP__WBE__PORT"), "{refused}");
}

#[test]
fn an_unknown_profile_or_a_missing_folder_is_refused() {
    let dir = config_dir("profiles", "", &[("development", ""), ("production", "")]);
    let error = error_of(load_from(&dir, "prod", HashMap::new()));
    assert!(error.contains("SIGNUP_ENV=\"prod\"") && error.contains("development, production"), "{error}");
    let error = error_of(load_from(&dir.join("missing"), "development", HashMap::new()));
    assert!(error.contains("default.toml does not exist"), "{error}");
    let none: Sample = load_from(Path::new(""), "anything", HashMap::new()).expect("no files: built-in defaults");
    assert_eq!(none.nats.connect_timeout_ms, 2_000);
}

#[test]
fn documented_defaults_are_checked_against_the_built_in_ones() {
    let dir = config_dir("documented", "", &[]);
    let file = dir.join("default.toml");
    std::fs::write(
        &file,
        "[nats]\n# url = \"nats://127.0.0.1:4222\" # a comment\n# user = \"\"\n# [nats.stream]\n# replicas = 1\n",
    )
    .expect("write");
    check_documented_defaults::<Sample>(&file).expect("in step");
    std::fs::write(&file, "[nats]\n# connect_timeout_ms = 2500\n").expect("write");
    let error = check_documented_defaults::<Sample>(&file).expect_err("drifted");
    assert!(error.contains("2500") && error.contains("2000"), "{error}");
    std::fs::write(&file, "[nats]\n# shutdown_timeout_secs = 10\n").expect("write");
    let error = check_documented_defaults::<Sample>(&file).expect_err("no such key");
    assert!(error.contains("`nats.shutdown_timeout_secs`"), "{error}");
}

/// The configuration table in docs/configuration.md gives the same defaults
/// as `config/default.toml` (which each service checks against its own).
#[test]
fn the_configuration_page_gives_the_documented_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let page = std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
    let documented = std::fs::read_to_string(root.join("config/default.toml")).expect("default.toml");
    let documented: HashMap<String, config::Value> = config::Config::builder()
        .add_source(config::File::from_str(&documented_defaults(&documented), config::FileFormat::Toml))
        .build()
        .expect("documented defaults")
        .try_deserialize::<HashMap<String, config::Value>>()
        .expect("a table");
    let lookup = |path: &str| -> Option<String> {
        let mut parts = path.split('.');
        let mut value = documented.get(parts.next()?)?.clone();
        for part in parts {
            value = value.into_table().ok()?.remove(part)?;
        }
        value.into_string().ok()
    };
    // Each row: its keys (`__X` is a sibling of the first key's last part)
    // and their defaults, in order; a default in backticks is compared, one
    // in words ("none", "the system's roots") is not.
    let mut wrong = Vec::new();
    let mut compared = std::collections::BTreeSet::new();
    for row in page.lines().filter(|line| line.starts_with("| `SIGNUP__")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let keys: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").map(|k| k.trim_matches('`')).collect();
        let defaults: Vec<&str> = cells[1].split(" (").next().unwrap_or_default().split(" / ").map(str::trim).collect();
        let Some(first) = keys[0].strip_prefix("SIGNUP__") else { continue };
        let section: Vec<&str> = first.split("__").collect();
        let plain = |d: &&str| d.starts_with('`') && d.ends_with('`') && d.matches('`').count() == 2;
        // One word for several keys ("none") is for all of them; a value
        // in backticks is given per key.
        assert!(
            keys.len() == defaults.len() || !defaults.iter().any(plain),
            "a row of docs/configuration.md gives a default per key: {row}"
        );
        for (key, default) in keys.iter().zip(&defaults) {
            let path = match key.strip_prefix("__") {
                Some(last) => [&section[..section.len() - 1], &[last]].concat(),
                None => section.clone(),
            };
            let path = path.join(".").to_lowercase();
            if !plain(default) {
                continue;
            }
            let default = default.trim_matches('`');
            match lookup(&path) {
                Some(value) if value == default => {
                    compared.insert(path);
                }
                other => wrong.push(format!("{path}: docs/configuration.md says {default:?}, default.toml {other:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "docs/configuration.md and config/default.toml disagree:\n{}", wrong.join("\n"));
    assert!(compared.len() > 40, "only {} defaults compared: has the table's format changed?", compared.len());
    // And the other way: every default config/default.toml documents has a
    // row that gives it, compared above.
    fn leaves(prefix: &str, value: config::Value, out: &mut Vec<String>) {
        match value.clone().into_table() {
            Ok(table) => {
                for (key, value) in table {
                    leaves(&format!("{prefix}{key}."), value, out);
                }
            }
            Err(_) => out.push(prefix.trim_end_matches('.').to_owned()),
        }
    }
    let mut documented_keys = Vec::new();
    for (section, value) in documented.clone() {
        leaves(&format!("{section}."), value, &mut documented_keys);
    }
    // A text too long for a table cell: the page points at the file.
    const IN_WORDS: &[&str] = &["web.privacy.notice"];
    let missing: Vec<&String> =
        documented_keys.iter().filter(|key| !compared.contains(*key) && !IN_WORDS.contains(&key.as_str())).collect();
    assert!(
        missing.is_empty(),
        "config/default.toml documents defaults that docs/configuration.md does not give (in backticks): {missing:?}"
    );
}
