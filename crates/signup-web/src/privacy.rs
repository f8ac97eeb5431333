//! The privacy notice the sign-up form shows, and the consent a sign-up
//! records: signing up means agreeing to the notice, so every sign-up
//! carries the notice's version (a hash of what the form showed) and the
//! time, and, where the operator chose to, where it came from.

use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use messages::{ClientContext, Consent, ConsentRecord};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `[web.privacy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrivacySettings {
    /// The notice shown on the form, above its button.
    pub notice: String,
    /// The operator's full privacy policy, linked from the notice; empty:
    /// no link.
    pub policy_url: String,
    /// Keep the client's address and `User-Agent` with the consent: proof
    /// of where it was given, and personal data of its own (kept with the
    /// sign-up, erased with it). Off by default.
    pub record_client: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self { notice: DEFAULT_NOTICE.to_owned(), policy_url: String::new(), record_client: false }
    }
}

/// The notice shown when the operator sets none.
pub const DEFAULT_NOTICE: &str = "We keep what you enter here to confirm your address and to write to you about \
     this sign-up. The mail we send has a link where you can see, change or erase it at any time.";

/// The longest `User-Agent` kept; longer ones are cut (at a character).
const USER_AGENT_MAX: usize = 256;

/// The notice as the form shows it, with its version.
#[derive(Debug, Clone)]
pub struct PrivacyNotice {
    /// The text.
    pub text: String,
    /// The link to the full policy, if any.
    pub policy_url: Option<String>,
    /// `sha256:` and the first 16 hex digits of the SHA-256 of the text, the
    /// link and whether the client is recorded: what a sign-up agreed to.
    pub version: String,
    record_client: bool,
    trust_forwarded_for: bool,
}

impl PrivacyNotice {
    /// The notice of `settings`; an empty text, or a link that is not an
    /// absolute `http(s)` URL, is refused at start-up.
    pub fn new(settings: &PrivacySettings, trust_forwarded_for: bool) -> anyhow::Result<Self> {
        let text = settings.notice.trim().to_owned();
        anyhow::ensure!(!text.is_empty(), "web.privacy.notice is empty: the form must say what signing up agrees to");
        let policy_url = match settings.policy_url.trim() {
            "" => None,
            url => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("web.privacy.policy_url is not a URL ({e}): {url:?}"))?;
                anyhow::ensure!(
                    matches!(parsed.scheme(), "http" | "https"),
                    "web.privacy.policy_url must be an http(s) URL: {url:?}"
                );
                Some(url.to_owned())
            }
        };
        // Each part with its length first, so no two notices hash alike by
        // moving text between the parts.
        let mut digest = Sha256::new();
        let record = if settings.record_client { "client recorded" } else { "" };
        for part in [text.as_str(), policy_url.as_deref().unwrap_or_default(), record] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        let hex: String = digest.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            text,
            policy_url,
            version: format!("sha256:{hex}"),
            record_client: settings.record_client,
            trust_forwarded_for,
        })
    }

    /// The consent of a sign-up made at `at` through `request`.
    pub fn consent(&self, at: DateTime<Utc>, request: &HttpRequest) -> Consent {
        Consent::Recorded(ConsentRecord {
            notice_version: self.version.clone(),
            agreed_at: at,
            client: self.client(request),
        })
    }

    /// The client `request` came from, when the operator records it
    /// (`web.privacy.record_client`): for a sign-up's consent, and for the
    /// confirmation that repeats it.
    pub fn client(&self, request: &HttpRequest) -> Option<ClientContext> {
        let client = self.record_client.then(|| ClientContext {
            client_address: crate::limits::client_ip(request, self.trust_forwarded_for).map(|ip| ip.to_string()),
            user_agent: request
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(USER_AGENT_MAX).collect()),
        });
        client.filter(|c| !c.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_follows_the_text_and_the_link() {
        let notice = |text: &str, url: &str| {
            let settings =
                PrivacySettings { notice: text.into(), policy_url: url.into(), ..PrivacySettings::default() };
            PrivacyNotice::new(&settings, false).expect("notice").version
        };
        let base = notice("We keep it.", "");
        assert!(base.starts_with("sha256:") && base.len() == "sha256:".len() + 16, "{base}");
        assert_eq!(base, notice("  We keep it.\n", ""), "surrounding space is not part of the text");
        assert_ne!(base, notice("We keep it!", ""));
        assert_ne!(base, notice("We keep it.", "https://example.com/privacy"));
        let recording =
            PrivacySettings { notice: "We keep it.".into(), record_client: true, ..PrivacySettings::default() };
        assert_ne!(
            base,
            PrivacyNotice::new(&recording, false).expect("notice").version,
            "recording the client is agreed to"
        );
    }

    #[test]
    fn an_empty_notice_or_a_link_that_is_not_a_web_address_is_refused() {
        for (text, url) in [("  ", ""), ("We keep it.", "javascript:alert(1)"), ("We keep it.", "/privacy")] {
            let settings =
                PrivacySettings { notice: text.into(), policy_url: url.into(), ..PrivacySettings::default() };
            assert!(PrivacyNotice::new(&settings, false).is_err(), "{text:?} {url:?}");
        }
    }
}
