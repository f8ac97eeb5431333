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
mod tests;
