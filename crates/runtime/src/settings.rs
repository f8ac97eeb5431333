//! Layered configuration: the strict loader every service reads its
//! settings with, the check of the documented defaults, and the stop's
//! settings ([`ShutdownSettings`]). The NATS settings are `bus::settings`'.
//!
//! Layers, later ones winning: built-in defaults (each struct's `Default`) →
//! `config/default.toml` → `config/{SIGNUP_ENV}.toml` (`development` unless
//! set) → environment variables prefixed `SIGNUP__` with `__` between levels
//! (`SIGNUP__NATS__URL`). `SIGNUP_CONFIG_DIR` moves the folder; set to an
//! empty value, no file is read (built-in defaults and variables only).
//!
//! Loading is strict, so a mistake is never silently ignored: a missing
//! folder or `default.toml`, an unknown profile, a key no setting has (in a
//! file or as a `SIGNUP__` variable) are errors that name it. A whole
//! section this service does not read is accepted when it belongs to another
//! service, that is when the files have it as a table (`default.toml` has
//! every service's): the files and the environment are shared by every
//! service, and the runtime names none of them.
//!
//! Secrets can come from files instead (container secrets): a variable
//! `SIGNUP_FILE__NATS__PASSWORD=/run/secrets/nats-password` sets
//! `nats.password` to that file's contents, without a trailing newline.
//!
//! The defaults are the structs' `Default`s, and only there:
//! `config/default.toml` documents them in commented `key = value` lines,
//! which each service's tests check with [`check_documented_defaults`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::ConfigError;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads a service's settings from the layers described in the module docs.
pub fn load<T: DeserializeOwned>() -> Result<T, ConfigError> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let dir = vars.get("SIGNUP_CONFIG_DIR").map_or_else(|| PathBuf::from("config"), PathBuf::from);
    let profile = vars.get("SIGNUP_ENV").cloned().unwrap_or_else(|| "development".to_owned());
    load_from(&dir, &profile, vars)
}

/// [`load`] with the folder (empty: no files), profile and environment
/// given explicitly.
pub fn load_from<T: DeserializeOwned>(
    dir: &Path,
    profile: &str,
    environment: HashMap<String, String>,
) -> Result<T, ConfigError> {
    let files = if dir.as_os_str().is_empty() { Vec::new() } else { layer_files(dir, profile)? };
    let mut builder = config::Config::builder();
    for file in &files {
        builder = builder.add_source(config::File::from(file.as_path()));
    }
    strict(builder, &files, BTreeSet::new(), environment)
}

/// `default.toml` and the profile's file, both required.
fn layer_files(dir: &Path, profile: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let default = dir.join("default.toml");
    if !default.is_file() {
        return Err(message(format!(
            "{} does not exist: set SIGNUP_CONFIG_DIR to the folder that holds default.toml \
             (or to an empty value to use only the built-in defaults and SIGNUP__ variables)",
            default.display()
        )));
    }
    let chosen = dir.join(format!("{profile}.toml"));
    if profile.is_empty() || profile == "default" || !chosen.is_file() {
        let known: BTreeSet<String> = std::fs::read_dir(dir)
            .map_err(|e| message(format!("reading {}: {e}", dir.display())))?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_owned))
            .filter(|name| name != "default")
            .collect();
        return Err(message(format!(
            "unknown profile SIGNUP_ENV={profile:?}: there is no {}; the profiles in {} are {}",
            chosen.display(),
            dir.display(),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(vec![default, chosen])
}

/// Adds the environment to `builder`, deserializes, and refuses any key the
/// settings do not have.
fn strict<T: DeserializeOwned>(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    files: &[PathBuf],
    mut foreign: BTreeSet<String>,
    mut environment: HashMap<String, String>,
) -> Result<T, ConfigError> {
    let from_files: Vec<(String, String)> = environment
        .iter()
        .filter_map(|(key, path)| Some((key.strip_prefix("SIGNUP_FILE__")?, path)))
        .map(|(key, path)| {
            let value = std::fs::read_to_string(path)
                .map_err(|e| message(format!("reading SIGNUP_FILE__{key} ({path}): {e}")))?;
            Ok((format!("SIGNUP__{key}"), value.trim_end_matches(['\r', '\n']).to_owned()))
        })
        .collect::<Result<_, ConfigError>>()?;
    let file_variables: BTreeSet<String> =
        environment.keys().filter_map(|key| key.strip_prefix("SIGNUP_FILE__")).map(str::to_owned).collect();
    environment.extend(from_files);
    let config = builder
        .add_source(
            config::Environment::with_prefix("SIGNUP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(environment.clone())),
        )
        .build()?;
    let mut ignored = Vec::new();
    let settings: T = serde_ignored::deserialize(config, |path| ignored.push(path.to_string()))?;
    // Another service's section is one the files have as a table (every
    // service's is in `default.toml`): the runtime lists no service.
    // The files are read again for their tables only when a section is not
    // this service's (`foreign` holds those of a text checked on its own).
    if ignored.iter().any(|path| !path.contains('.')) {
        foreign.extend(files.iter().flat_map(|file| tables_of(config::File::from(file.as_path()))));
    }
    let unknown: Vec<String> = ignored
        .into_iter()
        .map(|path| path.split('.').filter(|part| *part != "?").collect::<Vec<_>>().join("."))
        .filter(|path| path.contains('.') || !foreign.contains(path))
        .map(|path| {
            let variable: String = path.split('.').map(str::to_uppercase).collect::<Vec<_>>().join("__");
            let source = if file_variables.contains(&variable) {
                format!("SIGNUP_FILE__{variable}")
            } else if let Some(name) = environment.keys().find(|name| {
                name.strip_prefix("SIGNUP__")
                    .is_some_and(|key| key == variable || key.starts_with(&format!("{variable}__")))
            }) {
                name.clone()
            } else {
                files
                    .iter()
                    .filter(|file| {
                        config::Config::builder()
                            .add_source(config::File::from(file.as_path()))
                            .build()
                            .is_ok_and(|c| c.get::<config::Value>(&path).is_ok())
                    })
                    .map(|file| file.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("`{path}` (from {source})")
        })
        .collect();
    if !unknown.is_empty() {
        return Err(message(format!("unknown setting {}: no such key; check its spelling", unknown.join(", "))));
    }
    Ok(settings)
}

/// Checks the defaults `file` (a `config/default.toml`) documents in its
/// commented `key = value` lines against `T`'s `Default`: every documented
/// value must be the default, and every documented key a setting (of `T`, or
/// in a section of another service). Empty strings stand for "not set" and
/// are skipped. For each service's tests.
pub fn check_documented_defaults<T: DeserializeOwned + Default + std::fmt::Debug>(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let documented = documented_defaults(&text);
    let builder = config::Config::builder().add_source(config::File::from_str(&documented, config::FileFormat::Toml));
    // Every table of the file is some service's.
    let tables = tables_of(config::File::from_str(&documented, config::FileFormat::Toml));
    let loaded: T = strict(builder, &[], tables, HashMap::new()).map_err(|e| format!("{}: {e}", file.display()))?;
    let (loaded, built_in) = (format!("{loaded:#?}"), format!("{:#?}", T::default()));
    if loaded == built_in {
        return Ok(());
    }
    let (loaded, built_in): (Vec<&str>, Vec<&str>) = (loaded.lines().collect(), built_in.lines().collect());
    let first = loaded.iter().zip(&built_in).position(|(a, b)| a != b).unwrap_or(loaded.len().min(built_in.len()));
    let around = |lines: &[&str]| lines[first.saturating_sub(3)..(first + 2).min(lines.len())].join("\n");
    Err(format!(
        "{} disagrees with the built-in defaults:\ndocumented:\n{}\n\nbuilt in:\n{}",
        file.display(),
        around(&loaded),
        around(&built_in)
    ))
}

/// The top-level tables of one configuration source (none when it cannot be
/// read: the load reports that itself).
fn tables_of<S: config::Source + Send + Sync + 'static>(source: S) -> BTreeSet<String> {
    config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|tables| tables.try_deserialize::<HashMap<String, config::Value>>())
        .map(|table| table.into_keys().collect())
        .unwrap_or_default()
}

/// The commented `key = value` lines and `[section]` headers of a
/// `default.toml`, uncommented, as TOML.
fn documented_defaults(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim();
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        // Drop a trailing comment (values hold no `#`).
        let body = body.split(" #").next().unwrap_or_default().trim();
        if body.starts_with('[') && body.ends_with(']') && !body.contains(' ') {
            out.push_str(body);
            out.push('\n');
        } else if commented
            && let Some((key, value)) = body.split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && value != "\"\""
        {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

fn message(text: String) -> ConfigError {
    ConfigError::Message(text)
}

/// How long a service may take to stop (`[shutdown]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// Seconds to finish the work in hand after SIGTERM or Ctrl-C.
    pub timeout_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { timeout_secs: 20 }
    }
}

impl ShutdownSettings {
    /// The bound as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

#[cfg(test)]
mod tests {
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
        std::fs::write(
            dir.join("default.toml"),
            "[nats]\nurl = \"nats://from-default:4222\"\nrequest_timeout_ms = 7\n",
        )
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
        assert!(
            error.contains("`nats.stream.replicaz`") && error.contains("SIGNUP__NATS__STREAM__REPLICAZ"),
            "{error}"
        );

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
        let mut checked = 0;
        let mut wrong = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for row in page.lines().filter(|line| line.starts_with("| `SIGNUP__")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let keys: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").map(|k| k.trim_matches('`')).collect();
            let Some(first) = keys[0].strip_prefix("SIGNUP__") else { continue };
            let section: Vec<&str> = first.split("__").collect();
            for key in &keys {
                let path = match key.strip_prefix("__") {
                    Some(last) => [&section[..section.len() - 1], &[last]].concat(),
                    None => section.clone(),
                };
                named.insert(path.join(".").to_lowercase());
            }
        }
        for row in page.lines().filter(|line| line.starts_with("| `SIGNUP__")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let keys: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").map(|k| k.trim_matches('`')).collect();
            let defaults: Vec<&str> =
                cells[1].split(" (").next().unwrap_or_default().split(" / ").map(str::trim).collect();
            let plain = |d: &&str| d.starts_with('`') && d.ends_with('`') && d.matches('`').count() == 2;
            if keys.len() != defaults.len() || !defaults.iter().all(plain) {
                continue;
            }
            let Some(first) = keys[0].strip_prefix("SIGNUP__") else { continue };
            let section: Vec<&str> = first.split("__").collect();
            for (key, default) in keys.iter().zip(&defaults) {
                let path = match key.strip_prefix("__") {
                    Some(last) => [&section[..section.len() - 1], &[last]].concat(),
                    None => section.clone(),
                };
                let path = path.join(".").to_lowercase();
                let default = default.trim_matches('`');
                match lookup(&path) {
                    Some(value) if value == default => checked += 1,
                    other => {
                        wrong.push(format!("{path}: docs/configuration.md says {default:?}, default.toml {other:?}"))
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "docs/configuration.md and config/default.toml disagree:\n{}", wrong.join("\n"));
        assert!(checked > 40, "only {checked} defaults checked: has the table's format changed?");
        // And the other way: every default config/default.toml documents has
        // its row.
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
        let missing: Vec<&String> = documented_keys.iter().filter(|key| !named.contains(*key)).collect();
        assert!(
            missing.is_empty(),
            "config/default.toml documents keys docs/configuration.md has no row for: {missing:?}"
        );
    }
}
