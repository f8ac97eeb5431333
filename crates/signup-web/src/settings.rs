//! signup-web's settings (see `runtime::settings` for how they are layered).

use bus::settings::NatsSettings;
use links::LinkSettings;
use runtime::settings::ShutdownSettings;
use runtime::telemetry::LogSettings;
use serde::Deserialize;

use crate::limits::RateLimitSettings;

/// Everything signup-web reads from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[web]`: the HTTP server.
    pub web: WebSettings,
    /// `[nats]`: where events are published.
    pub nats: NatsSettings,
    /// `[log]`: log format and filter.
    pub log: LogSettings,
    /// `[links]`: the secret that signs the links mailed to prospects, and
    /// how long they last.
    pub links: LinkSettings,
    /// `[shutdown]`: how long in-flight requests may take to finish once
    /// stopping.
    pub shutdown: ShutdownSettings,
}
runtime::service_settings!(Settings);

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebSettings {
    /// Address to listen on (`0.0.0.0` in a container).
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long to wait for the `prospects` service, in milliseconds.
    pub service_timeout_ms: u64,
    /// How often reference data is refreshed from the service, in seconds.
    pub reference_ttl_secs: u64,
    /// `[web.rate_limit]`: POST requests allowed per client address.
    pub rate_limit: RateLimitSettings,
    /// Take the client address from `Forwarded`/`X-Forwarded-For` (set this
    /// only behind a proxy that writes those headers).
    pub trust_forwarded_for: bool,
    /// `[web.bot_check]`: the proof every sign-up brings (ALTCHA's proof of
    /// work, or the form's token without JavaScript).
    pub bot_check: crate::bot_check::BotCheckSettings,
    /// `[web.privacy]`: the notice signing up agrees to, and what the
    /// consent records.
    pub privacy: crate::privacy::PrivacySettings,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            body_limit_bytes: 32 * 1024,
            workers: 0,
            service_timeout_ms: 1_000,
            reference_ttl_secs: 300,
            rate_limit: RateLimitSettings::default(),
            trust_forwarded_for: false,
            bot_check: crate::bot_check::BotCheckSettings::default(),
            privacy: crate::privacy::PrivacySettings::default(),
        }
    }
}

// `config/default.toml` documents the built-in defaults (a test).
runtime::documented_defaults_test!(Settings);
