//! Logging and tracing set-up, done once per process.
//!
//! Logs go to standard output, as text or JSON ([`LogSettings`]). Traces are
//! off by default: when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, every `tracing` span at the
//! log filter's level also becomes an OpenTelemetry span, exported over OTLP
//! (HTTP/protobuf) in batches. The exporter reads the other standard
//! variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_SCHEDULE_DELAY`, …). `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn it off again. The spans themselves and
//! the `traceparent` they carry across NATS are in `bus::trace`.

use std::sync::OnceLock;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for development.
    #[default]
    Pretty,
    /// One JSON object per line, for production log collectors.
    Json,
}

/// Logging settings (`[log]`; `SIGNUP__LOG__FORMAT`, `SIGNUP__LOG__FILTER`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,save_prospect=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, filter: "info".to_owned() }
    }
}

/// The tracer provider, when traces are exported.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (the OpenTelemetry layer is installed).
pub fn exporting() -> bool {
    bus::trace::exporting()
}

/// Where traces go, as the standard variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traces {
    /// Not exported (no OTLP endpoint, or turned off).
    Off,
    /// Exported over OTLP/HTTP to this endpoint (the variable that named it).
    Otlp(String),
}

impl Traces {
    /// Reads the standard OpenTelemetry variables through `var`. A value
    /// this build cannot honour (gRPC, JSON, another exporter) is an error
    /// that names the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(Self::Off),
            Some(other) => anyhow::bail!("OTEL_TRACES_EXPORTER={other}: only `otlp` and `none` are built in"),
        }
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(protocol) = set(name) {
                anyhow::ensure!(
                    protocol == "http/protobuf",
                    "{name}={protocol}: only `http/protobuf` is built in (point it at a collector's port 4318)"
                );
                break;
            }
        }
        let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .into_iter()
            .find_map(|name| set(name).map(|value| (name, value)));
        Ok(match endpoint {
            None => Self::Off,
            Some((name, value)) => {
                anyhow::ensure!(
                    value.starts_with("http://") || value.starts_with("https://"),
                    "{name}={value}: an OTLP/HTTP endpoint is an http:// or https:// URL"
                );
                anyhow::ensure!(
                    !value.starts_with("https://"),
                    "{name}={value}: TLS to the collector is not built in; export to a collector beside the service over http://"
                );
                Self::Otlp(value)
            }
        })
    }
}

/// Installs the global subscriber: logs, and the OpenTelemetry layer when
/// [`Traces::from_env`] says so (spans then name `service` unless
/// `OTEL_SERVICE_NAME` does). Calling it again (as tests do) is harmless.
/// Must run outside the Tokio runtime (the exporter has its own thread).
pub fn init(settings: &LogSettings, service: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Colours only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let logs = match settings.format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let mut exporting_to = None;
    let traces = match Traces::from_env(|name| std::env::var(name).ok())? {
        Traces::Off => None,
        Traces::Otlp(_) if PROVIDER.get().is_some() => None,
        Traces::Otlp(endpoint) => {
            let provider = provider(service).with_context(|| format!("setting up the OTLP exporter to {endpoint}"))?;
            let tracer = provider.tracer(service.to_owned());
            let _first = PROVIDER.set(provider);
            bus::trace::set_exporting();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            exporting_to = Some(endpoint);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    let _already_set = tracing_subscriber::registry().with(filter).with(logs).with(traces).try_init();
    if let Some(endpoint) = exporting_to {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    Ok(())
}

fn provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// Sends the spans still buffered and stops the exporter (at the end of
/// `main`, outside the Tokio runtime).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "could not send the last spans");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(vars: &[(&str, &str)]) -> anyhow::Result<Traces> {
        Traces::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_named() {
        assert_eq!(traces(&[]).unwrap(), Traces::Off);
        assert_eq!(traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(), Traces::Off);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert_eq!(traces(&on).unwrap(), Traces::Otlp("http://127.0.0.1:4318".into()));
        let traces_only = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")];
        assert_eq!(traces(&traces_only).unwrap(), Traces::Otlp("http://c:4318/v1/traces".into()));
        assert_eq!(traces(&[on[0], ("OTEL_SDK_DISABLED", "true")]).unwrap(), Traces::Off);
        assert_eq!(traces(&[on[0], ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), Traces::Off);
    }

    #[test]
    fn what_is_not_built_in_is_refused_by_name() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for (vars, named) in [
            (vec![on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (vec![on, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")], "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            (vec![on, ("OTEL_TRACES_EXPORTER", "zipkin")], "OTEL_TRACES_EXPORTER"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ] {
            let error = traces(&vars).expect_err("refused").to_string();
            assert!(error.starts_with(named), "{error}");
        }
    }
}
