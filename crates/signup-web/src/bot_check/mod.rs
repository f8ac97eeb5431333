//! The bot check on every way in to a sign-up: the form and the JSON API.
//!
//! A sign-up carries proof that whoever sent it spent some work or some time
//! on it, and each proof is accepted once:
//! - **proof of work** (`altcha`): the open ALTCHA protocol, v2, with its
//!   own crate. `GET /api/challenge` hands out a challenge signed with a key
//!   of the web's own (derived from `[links] secret`, so every replica
//!   shares it) that expires after `lifetime_secs`; the client tries key
//!   derivations (PBKDF2/SHA-256, `iterations` rounds each) until it finds
//!   the one the challenge asks for, about `difficulty` tries, and sends the
//!   challenge and its solution, base64 JSON, as the form field or JSON
//!   property `altcha`. Checking one costs the server a few HMACs (the
//!   challenge signs its derived key, ALTCHA's fast path).
//! - **the form without JavaScript** (`formToken`, `website`): the form
//!   holds a token signed at the time it was served; a sign-up with it must
//!   come at least `min_fill_secs` later and within `lifetime_secs`, and the
//!   honeypot field (`website`, off screen, a person leaves it empty) must
//!   be empty. The JSON API has no such way: clients solve the challenge.
//!
//! ALTCHA's crate checks a solution, not whether it was used before: that is
//! the server's part. Each accepted proof is recorded in the key-value
//! bucket `WEB_CHALLENGES` (shared by every replica, with `create`, so of
//! two replicas only one accepts it), kept as long as a proof lives; a
//! deployment makes it with `signup-web buckets` (the web's NATS user may
//! only use it). A sign-up without a valid proof gets 422 naming `altcha`,
//! and nothing is published.
//!
//! # Layout
//! - [`BotCheckSettings`], the settings of `[web.bot_check]`.
//! - [`BotCheck`]: makes challenges and form tokens, and checks a [`Proof`]
//!   ([`BotCheck::check`], CPU only).
//! - [`UsedProofs`]: the bucket that spends a proof once
//!   ([`UsedProofs::spend`]).

use std::time::Duration;

use base64::Engine as _;
use bus::async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

mod used;

pub use used::{SpendError, UsedProofs};

/// The bucket of proofs already used.
pub const USED_BUCKET: &str = "WEB_CHALLENGES";

/// The key-derivation function challenges ask for.
const ALGORITHM: &str = "PBKDF2/SHA-256";

/// `[web.bot_check]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BotCheckSettings {
    /// Check every sign-up (`SIGNUP__WEB__BOT_CHECK__ENABLED=false` for a
    /// trusted intranet and for load tests).
    pub enabled: bool,
    /// How many key derivations a solver needs at most: each challenge asks
    /// for one up to this, drawn evenly (unpredictably: the OS's random
    /// numbers), so a client tries half of it on average and no client can
    /// start anywhere but at the beginning.
    pub difficulty: u32,
    /// PBKDF2 rounds per try.
    pub iterations: u32,
    /// How long a challenge, and a served form, can be used, in seconds.
    pub lifetime_secs: u64,
    /// Let the form be sent without JavaScript: with its signed token, no
    /// sooner than `min_fill_secs` after it was served, with the honeypot
    /// field empty.
    pub without_javascript: bool,
    /// The least time between serving the form and a sign-up without
    /// JavaScript, in seconds.
    pub min_fill_secs: u64,
    /// The size limit of the bucket of used proofs (`WEB_CHALLENGES`), in MiB.
    pub bucket_max_mb: i64,
}

impl Default for BotCheckSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            difficulty: 2_000,
            iterations: 1_000,
            lifetime_secs: 600,
            without_javascript: true,
            min_fill_secs: 3,
            bucket_max_mb: 64,
        }
    }
}

impl BotCheckSettings {
    fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs.max(1))
    }

    /// The bucket of used proofs: each kept a little longer than a proof
    /// lives, so no proof outlives its record.
    pub fn bucket(&self, replicas: usize) -> kv::Config {
        kv::Config {
            bucket: USED_BUCKET.to_owned(),
            description: "signup-web's bot check: proofs already used".to_owned(),
            history: 1,
            max_age: self.lifetime() + Duration::from_secs(60),
            max_bytes: self.bucket_max_mb.saturating_mul(1024 * 1024),
            num_replicas: replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }
}

/// What a sign-up brings as proof.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proof<'a> {
    /// The ALTCHA payload (`altcha`): base64 JSON of the challenge and its
    /// solution.
    pub altcha: Option<&'a str>,
    /// The served form's token (`formToken`, the form only).
    pub form_token: Option<&'a str>,
    /// The honeypot field (`website`, the form only).
    pub honeypot: Option<&'a str>,
}

/// Why a proof is refused, worded for whoever sent it (the field is
/// `altcha`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No proof at all.
    #[error("is missing: let the page finish its check, or solve a challenge from GET /api/challenge")]
    Missing,
    /// Not a solution of a challenge of ours (forged, altered, wrong).
    #[error("is not a valid solution of a challenge from GET /api/challenge")]
    Invalid,
    /// The challenge, or the served form, is too old.
    #[error("has expired: reload the page (or ask GET /api/challenge for a new challenge) and send again")]
    Expired,
    /// Used for a sign-up already.
    #[error("was used already: each solution counts for one sign-up")]
    Replayed,
    /// A form without JavaScript sent sooner than a person fills it in.
    #[error("could not be checked this quickly: please wait a few seconds and send the form again")]
    TooSoon,
}

impl Refused {
    /// The outcome's name in metrics.
    fn name(self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Invalid => "invalid",
            Refused::Expired => "expired",
            Refused::Replayed => "replayed",
            Refused::TooSoon => "too_soon",
        }
    }
}

/// A proof that passed [`BotCheck::check`], to be spent once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Its key in the bucket of used proofs.
    key: String,
    /// Which way it came (`altcha`, `form`), for the metrics.
    way: &'static str,
}

/// The bot check of one web tier: its settings and keys.
pub struct BotCheck {
    settings: BotCheckSettings,
    /// Signs challenges.
    challenge_secret: String,
    /// Signs a challenge's derived key (ALTCHA's fast path).
    key_secret: String,
    /// Signs form tokens.
    form_key: Hmac<Sha256>,
}

impl BotCheck {
    /// The bot check for `settings`, with keys derived from `links`' secret.
    pub fn new(settings: &BotCheckSettings, links: &links::Links) -> Self {
        let form_key = Hmac::<Sha256>::new_from_slice(links.derived_secret("form-token").as_bytes())
            .expect("HMAC takes keys of any length");
        Self {
            settings: settings.clone(),
            challenge_secret: links.derived_secret("altcha-challenge"),
            key_secret: links.derived_secret("altcha-key"),
            form_key,
        }
    }

    /// Whether sign-ups are checked.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Whether the form may be sent without JavaScript.
    pub fn without_javascript(&self) -> bool {
        self.settings.without_javascript
    }

    /// The least time, in seconds, a form without JavaScript takes.
    pub fn min_fill_secs(&self) -> u64 {
        self.settings.min_fill_secs
    }

    /// A new challenge, valid for the lifetime from `now`.
    pub fn challenge(&self, now: DateTime<Utc>) -> anyhow::Result<altcha::Challenge> {
        let difficulty = self.settings.difficulty.max(1);
        let expires_at = now.timestamp() + i64::try_from(self.settings.lifetime_secs.max(1)).unwrap_or(600);
        let challenge = altcha::create_challenge(altcha::CreateChallengeOptions {
            algorithm: ALGORITHM.to_owned(),
            cost: self.settings.iterations.max(1),
            // The counter the solver must find (ALTCHA's deterministic mode).
            counter: Some(rand::random_range(1..=difficulty)),
            expires_at: Some(expires_at),
            hmac_signature_secret: Some(self.challenge_secret.clone()),
            hmac_key_signature_secret: Some(self.key_secret.clone()),
            ..Default::default()
        })?;
        Ok(challenge)
    }

    /// The token a form served at `now` carries: `<unix ms>.<nonce>.<MAC>`.
    pub fn form_token(&self, now: DateTime<Utc>) -> String {
        let claims = format!("{}.{:016x}", now.timestamp_millis(), rand::random::<u64>());
        format!("{claims}.{}", self.form_mac(&claims))
    }

    fn form_mac(&self, claims: &str) -> String {
        let mut mac = self.form_key.clone();
        mac.update(claims.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks `proof` at `now` (CPU only): the ticket to spend, or why it is
    /// refused. An ALTCHA solution counts first; without one, the form's
    /// token (when the form may be sent without JavaScript).
    pub fn check(&self, proof: &Proof<'_>, now: DateTime<Utc>) -> Result<Ticket, Refused> {
        let (way, outcome) = match (proof.altcha.filter(|a| !a.trim().is_empty()), proof.form_token) {
            (Some(payload), _) => ("altcha", self.check_altcha(payload)),
            (None, Some(token)) if self.settings.without_javascript => {
                ("form", self.check_form(token, proof.honeypot, now))
            }
            (None, _) => ("altcha", Err(Refused::Missing)),
        };
        if let Err(refused) = outcome {
            count(way, refused.name());
        }
        outcome
    }

    fn check_altcha(&self, payload: &str) -> Result<Ticket, Refused> {
        let json = base64::engine::general_purpose::STANDARD.decode(payload.trim()).map_err(|_| Refused::Invalid)?;
        let payload: altcha::Payload = serde_json::from_slice(&json).map_err(|_| Refused::Invalid)?;
        let verified = altcha::verify_solution(altcha::VerifySolutionOptions {
            hmac_key_signature_secret: Some(self.key_secret.clone()),
            ..altcha::VerifySolutionOptions::new(&payload.challenge, &payload.solution, &self.challenge_secret)
        })
        .map_err(|_| Refused::Invalid)?;
        match (verified.verified, verified.expired) {
            (true, _) => {
                // Genuine: its signature is ours, so it names the challenge.
                let signature = payload.challenge.signature.unwrap_or_default();
                Ok(Ticket { key: format!("altcha.{signature}"), way: "altcha" })
            }
            (false, true) => Err(Refused::Expired),
            (false, false) => Err(Refused::Invalid),
        }
    }

    fn check_form(&self, token: &str, honeypot: Option<&str>, now: DateTime<Utc>) -> Result<Ticket, Refused> {
        let (claims, mac) = token.trim().rsplit_once('.').ok_or(Refused::Invalid)?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refused::Invalid)?;
        let mut expected = self.form_key.clone();
        expected.update(claims.as_bytes());
        expected.verify_slice(&mac).map_err(|_| Refused::Invalid)?;
        let served: i64 = claims.split_once('.').and_then(|(ms, _)| ms.parse().ok()).ok_or(Refused::Invalid)?;
        let age = now.timestamp_millis() - served;
        let min_fill = i64::try_from(self.settings.min_fill_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let lifetime = i64::try_from(self.settings.lifetime().as_millis()).unwrap_or(i64::MAX);
        if age > lifetime {
            return Err(Refused::Expired);
        }
        // A person leaves the field they cannot see empty; a bot that fills
        // every field gets the same answer as one that is too quick, so it
        // learns nothing about which it was.
        if age < min_fill || honeypot.is_some_and(|h| !h.is_empty()) {
            return Err(Refused::TooSoon);
        }
        Ok(Ticket { key: format!("form.{}", self.form_mac(claims)), way: "form" })
    }
}

fn count(way: &'static str, outcome: &'static str) {
    bus::metrics::counter!("signup_bot_check_total", "way" => way, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests;
