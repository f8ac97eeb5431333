//! Signed, expiring links to a prospect's pages.
//!
//! Proof of owning an address is the only thing that grants access to a
//! prospect's record, and that proof is a link mailed to the address. The
//! mailer makes the links; signup-web checks them. Both sides share this
//! crate and one secret (`[links] secret`), so a link is a capability that
//! cannot be forged, altered, used for another purpose, or used after it
//! expires.
//!
//! A token reads `<prospect id>[.<reference>].<issued, unix milliseconds>.<HMAC-SHA256,
//! base64url>`, where the MAC also covers the link's [`Purpose`]. The ids in
//! it are no personal data. A link expires its purpose's lifetime after it
//! was issued.
//!
//! **Proof ends with the address.** A link is issued at the time of the event
//! that mailed it (the sign-up, the link request, the address change). A
//! prospect's record says since when its links count
//! (`links_not_before`: moved when the record takes another address, or when
//! its owner asks for a new link and an end to the old ones), and a link
//! issued before that opens nothing ([`Claims::current`]). So a link mailed
//! to a previous address dies with the move, and a leaked link with the
//! owner's new one.
//!
//! # Layout
//! - [`LinkSettings`]: `[links]` — secret, public base URL, lifetimes.
//! - [`Purpose`]: what a link is for, and the page it opens.
//! - [`Links`]: makes and checks tokens and URLs.
//! - [`Claims`]: what a genuine token says, and whether it still stands for
//!   the record as it is now.
//! - [`Links::address_digest`]: the keyed digest kept in place of an
//!   address (the suppression list, the mailer's budgets).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: a short one makes every link forgeable.
pub const MIN_SECRET_LEN: usize = 16;

/// `[links]`: shared by signup-web, the mailer and save-prospect.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LinkSettings {
    /// The key links are signed with (`SIGNUP__LINKS__SECRET`, or a file
    /// with `SIGNUP_FILE__LINKS__SECRET`); at least 16 characters, the same
    /// for the web and the mailer.
    pub secret: Option<SecretString>,
    /// Where visitors reach signup-web, for the links in mails.
    pub base_url: String,
    /// How long a manage link stays valid, in days.
    pub manage_days: i64,
    /// How long a sign-up waits for its owner to confirm it, in seconds: the
    /// confirmation link's lifetime, after which save-prospect erases the
    /// sign-up as if its owner had asked (default 7 days).
    pub confirm_within_secs: i64,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            secret: None,
            base_url: "http://127.0.0.1:8080".to_owned(),
            manage_days: 30,
            confirm_within_secs: 7 * 24 * 3600,
        }
    }
}

impl LinkSettings {
    /// How long a sign-up may stay unconfirmed.
    pub fn confirm_within(&self) -> Duration {
        Duration::seconds(self.confirm_within_secs.max(1))
    }

    /// The confirmation window in whole days, for pages and mails (at least 1).
    pub fn confirm_within_days(&self) -> i64 {
        (self.confirm_within_secs / 86_400).max(1)
    }
}

/// What a link is for. A token made for one purpose never passes as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Confirms a sign-up (double opt-in): `/prospects/confirm/{token}`.
    Confirm,
    /// Opens the manage page (change, erase): `/prospects/manage/{token}`.
    Manage,
    /// Confirms a new e-mail address; its reference is the change request's
    /// event id: `/prospects/confirm-email/{token}`.
    ConfirmEmail,
    /// "It wasn't me", beside a sign-up's confirmation link: erases the
    /// pending sign-up and stops the mail about sign-ups to its address:
    /// `/prospects/not-me/{token}`.
    NotMe,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Confirm => "confirm",
            Purpose::Manage => "manage",
            Purpose::ConfirmEmail => "confirm-email",
            Purpose::NotMe => "not-me",
        }
    }

    /// The path of the page, with `{token}` where the token goes (the web
    /// tier routes these).
    pub fn route(self) -> &'static str {
        match self {
            Purpose::Confirm => "/prospects/confirm/{token}",
            Purpose::Manage => "/prospects/manage/{token}",
            Purpose::ConfirmEmail => "/prospects/confirm-email/{token}",
            Purpose::NotMe => "/prospects/not-me/{token}",
        }
    }

    /// The path of the page for `token`.
    pub fn path(self, token: &str) -> String {
        self.route().replace("{token}", token)
    }
}

/// What a genuine, unexpired token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The prospect the link opens.
    pub prospect_id: Uuid,
    /// For [`Purpose::ConfirmEmail`]: the change request it confirms.
    pub reference: Option<Uuid>,
    /// When the link was issued (to the millisecond): the time of the event
    /// that mailed it.
    pub issued_at: DateTime<Utc>,
}

impl Claims {
    /// Whether the link still counts for a record whose links count from
    /// `links_not_before` on (`None`: every link since the sign-up). A link
    /// of an earlier address, or older than the owner's last request for a
    /// new one, does not.
    pub fn current(&self, links_not_before: Option<DateTime<Utc>>) -> bool {
        links_not_before.is_none_or(|since| self.issued_at.timestamp_millis() >= since.timestamp_millis())
    }
}

/// Makes and checks links with one secret.
#[derive(Clone)]
pub struct Links {
    key: HmacSha256,
    base_url: String,
    manage_for: Duration,
    confirm_within: Duration,
}

impl Links {
    /// Links signed with `settings.secret` (which must be set and long
    /// enough).
    pub fn new(settings: &LinkSettings) -> anyhow::Result<Self> {
        let secret = settings.secret.as_ref().ok_or_else(|| {
            anyhow::anyhow!("links.secret is not set (SIGNUP__LINKS__SECRET): links in mails could not be checked")
        })?;
        Self::with_secret(settings, secret)
    }

    /// Links signed with `secret` instead of the configured one.
    pub fn with_secret(settings: &LinkSettings, secret: &SecretString) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.expose_secret().len() >= MIN_SECRET_LEN,
            "links.secret must be at least {MIN_SECRET_LEN} characters (SIGNUP__LINKS__SECRET)"
        );
        let key = HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes keys of any length");
        Ok(Self {
            key,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            manage_for: Duration::days(settings.manage_days.max(1)),
            confirm_within: settings.confirm_within(),
        })
    }

    /// How long manage links stay valid, in whole days.
    pub fn manage_days(&self) -> i64 {
        self.manage_for.num_days()
    }

    /// A manage link's token, issued at `issued_at` (the time of the event
    /// that mails it), valid for `manage_days` from then.
    pub fn manage_token(&self, prospect_id: Uuid, issued_at: DateTime<Utc>) -> String {
        self.sign(Purpose::Manage, prospect_id, None, issued_at)
    }

    /// A confirmation link's token for a sign-up made at `signed_up_at`: it
    /// expires when the unconfirmed sign-up is erased.
    pub fn confirm_token(&self, prospect_id: Uuid, signed_up_at: DateTime<Utc>) -> String {
        self.sign(Purpose::Confirm, prospect_id, None, signed_up_at)
    }

    /// The token confirming the e-mail change `request_id` of a prospect,
    /// requested at `requested_at`.
    pub fn email_token(&self, prospect_id: Uuid, request_id: Uuid, requested_at: DateTime<Utc>) -> String {
        self.sign(Purpose::ConfirmEmail, prospect_id, Some(request_id), requested_at)
    }

    /// The "it wasn't me" token of a sign-up made at `signed_up_at`: it
    /// works as long as the sign-up's confirmation link.
    pub fn not_me_token(&self, prospect_id: Uuid, signed_up_at: DateTime<Utc>) -> String {
        self.sign(Purpose::NotMe, prospect_id, None, signed_up_at)
    }

    /// How long a link of `purpose` works after it was issued.
    fn lifetime(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::Manage => self.manage_for,
            Purpose::Confirm | Purpose::ConfirmEmail | Purpose::NotMe => self.confirm_within,
        }
    }

    /// A keyed digest of an e-mail address for one `use_` (hex HMAC-SHA256
    /// of the trimmed, lower-cased address, with the same secret as the
    /// links): what the system keeps where it must recognise an address
    /// without keeping it (the suppression list, the mailer's per-address
    /// budgets). Only a holder of the secret can tell whether a given
    /// address is behind a digest, and no link MAC equals one (their input
    /// starts with a purpose, this one with `address|`).
    pub fn address_digest(&self, use_: &str, address: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(b"address|");
        mac.update(use_.as_bytes());
        mac.update(b"|");
        mac.update(address.trim().to_lowercase().as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A secret for another use (`use_`), derived from the link secret
    /// (hex HMAC-SHA256 of `secret|<use_>`): so that one configured secret,
    /// shared by the replicas, keys everything the web signs, each use with
    /// a key of its own.
    pub fn derived_secret(&self, use_: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(b"secret|");
        mac.update(use_.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The suppression list's key for `address` (see
    /// [`Links::address_digest`]).
    pub fn suppression_key(&self, address: &str) -> String {
        self.address_digest("suppressed", address)
    }

    /// The full URL of `purpose`'s page for `token`.
    pub fn url(&self, purpose: Purpose, token: &str) -> String {
        format!("{}{}", self.base_url, purpose.path(token))
    }

    fn mac(&self, purpose: Purpose, claims: &str) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(purpose.label().as_bytes());
        mac.update(b"|");
        mac.update(claims.as_bytes());
        mac
    }

    fn sign(&self, purpose: Purpose, prospect_id: Uuid, reference: Option<Uuid>, issued_at: DateTime<Utc>) -> String {
        let issued = issued_at.timestamp_millis();
        let claims = match reference {
            Some(reference) => format!("{prospect_id}.{reference}.{issued}"),
            None => format!("{prospect_id}.{issued}"),
        };
        let signature = URL_SAFE_NO_PAD.encode(self.mac(purpose, &claims).finalize().into_bytes());
        format!("{claims}.{signature}")
    }

    /// What a genuine, unexpired token of `purpose` says; `None` for anything
    /// else (forged, altered, another purpose, expired, malformed). Whether
    /// it still counts for the record is [`Claims::current`].
    pub fn verify(&self, purpose: Purpose, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let (claims, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(purpose, claims).verify_slice(&signature).ok()?;
        let mut parts = claims.split('.');
        let prospect_id: Uuid = parts.next()?.parse().ok()?;
        let (reference, issued) = match (parts.next()?, parts.next(), parts.next()) {
            (issued, None, None) => (None, issued),
            (reference, Some(issued), None) => (Some(reference.parse().ok()?), issued),
            _ => return None,
        };
        let issued_at = DateTime::from_timestamp_millis(issued.parse().ok()?)?;
        (now < issued_at + self.lifetime(purpose)).then_some(())?;
        (reference.is_some() == (purpose == Purpose::ConfirmEmail)).then_some(Claims {
            prospect_id,
            reference,
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(secret: &str) -> Links {
        let settings = LinkSettings { manage_days: 1, confirm_within_secs: 3_600, ..LinkSettings::default() };
        Links::with_secret(&settings, &SecretString::from(secret)).expect("links")
    }

    #[test]
    fn a_genuine_token_names_its_prospect_until_it_expires() {
        let (id, now) = (Uuid::now_v7(), Utc::now());
        let links = links("a test secret of some length");
        let manage = links.manage_token(id, now);
        let issued_at = DateTime::from_timestamp_millis(now.timestamp_millis()).expect("a time");
        let claims = Claims { prospect_id: id, reference: None, issued_at };
        assert_eq!(links.verify(Purpose::Manage, &manage, now), Some(claims));
        assert_eq!(links.verify(Purpose::Manage, &manage, now + Duration::hours(23)), Some(claims));
        assert_eq!(links.verify(Purpose::Manage, &manage, now + Duration::days(1)), None, "expired");

        let confirm = links.confirm_token(id, now);
        assert_eq!(links.verify(Purpose::Confirm, &confirm, now + Duration::minutes(59)), Some(claims));
        assert_eq!(links.verify(Purpose::Confirm, &confirm, now + Duration::hours(1)), None, "expired");

        let request = Uuid::now_v7();
        let email = links.email_token(id, request, now);
        assert_eq!(
            links.verify(Purpose::ConfirmEmail, &email, now),
            Some(Claims { prospect_id: id, reference: Some(request), issued_at })
        );
        assert_eq!(links.url(Purpose::Confirm, "t"), "http://127.0.0.1:8080/prospects/confirm/t");

        let not_me = links.not_me_token(id, now);
        assert_eq!(links.verify(Purpose::NotMe, &not_me, now + Duration::minutes(59)), Some(claims));
        assert_eq!(links.verify(Purpose::NotMe, &not_me, now + Duration::hours(1)), None, "expired");
        assert_eq!(links.url(Purpose::NotMe, "t"), "http://127.0.0.1:8080/prospects/not-me/t");
    }

    #[test]
    fn an_address_digest_hides_the_address_and_depends_on_the_secret_and_the_use() {
        let links = links("a test secret of some length");
        let key = links.suppression_key("Ada@Example.com ");
        assert_eq!(key, links.suppression_key("ada@example.com"), "one address however it is typed");
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()) && !key.contains("ada"));
        assert_ne!(key, links.suppression_key("bob@example.com"));
        assert_ne!(key, links.address_digest("rate-limit", "ada@example.com"), "another use, another digest");
        assert_ne!(key, self::links("another secret, also long").suppression_key("ada@example.com"));
        let derived = links.derived_secret("bot-check");
        assert_eq!(derived.len(), 64);
        assert_ne!(derived, links.derived_secret("form-token"));
        assert_ne!(derived, self::links("another secret, also long").derived_secret("bot-check"));
    }

    #[test]
    fn forged_altered_or_misused_tokens_are_refused() {
        let (id, now) = (Uuid::now_v7(), Utc::now());
        let links = links("a test secret of some length");
        let token = links.manage_token(id, now);
        assert_eq!(self::links("another secret, also long").verify(Purpose::Manage, &token, now), None);
        assert_eq!(links.verify(Purpose::Confirm, &token, now), None, "a manage link does not confirm");
        assert_eq!(links.verify(Purpose::Manage, &links.confirm_token(id, now), now), None, "nor the other way");
        assert_eq!(links.verify(Purpose::NotMe, &links.confirm_token(id, now), now), None, "nor erases");
        assert_eq!(links.verify(Purpose::Confirm, &links.not_me_token(id, now), now), None, "nor confirms");
        assert_eq!(
            links.verify(Purpose::Confirm, &links.email_token(id, Uuid::now_v7(), now), now),
            None,
            "an e-mail link does not confirm a sign-up"
        );

        let (claims, signature) = token.rsplit_once('.').expect("parts");
        let (_, issued) = claims.split_once('.').expect("id and issue time");
        let someone_else = format!("{}.{issued}.{signature}", Uuid::now_v7());
        assert_eq!(links.verify(Purpose::Manage, &someone_else, now), None, "signature of another prospect");
        let later = format!("{id}.{}.{signature}", issued.parse::<i64>().expect("number") + 3_600_000);
        assert_eq!(links.verify(Purpose::Manage, &later, now), None, "issued later, so valid longer");
        for junk in ["", "abc", "a.b.c", &format!("{claims}."), &format!("{claims}.!!!")] {
            assert_eq!(links.verify(Purpose::Manage, junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn a_link_counts_only_when_issued_since_the_records_links_count() {
        let (id, now) = (Uuid::now_v7(), Utc::now());
        let links = links("a test secret of some length");
        let claims = links.verify(Purpose::Manage, &links.manage_token(id, now), now).expect("genuine");
        assert!(claims.current(None), "no revocation yet");
        assert!(claims.current(Some(now - Duration::days(1))), "issued after the last move");
        assert!(claims.current(Some(now)), "issued by the very event that moved it");
        assert!(!claims.current(Some(now + Duration::milliseconds(1))), "issued before the address moved");
        // The record's time comes from Postgres (microseconds): the same
        // event's time still matches.
        let stored = DateTime::from_timestamp_micros(now.timestamp_micros()).expect("a time");
        assert!(claims.current(Some(stored)));
    }

    #[test]
    fn a_token_of_the_older_format_opens_nothing() {
        let (id, now) = (Uuid::now_v7(), Utc::now());
        let links = links("a test secret of some length");
        // `<id>.<expiry in seconds>.<mac>`, as links were made before they had
        // an issue time: its MAC is over other claims, so it fails.
        let token = links.manage_token(id, now);
        let (claims, signature) = token.rsplit_once('.').expect("parts");
        let (prospect, _) = claims.split_once('.').expect("parts");
        let old = format!("{prospect}.{}.{signature}", (now + Duration::days(1)).timestamp());
        assert_eq!(links.verify(Purpose::Manage, &old, now), None);
    }

    #[test]
    fn a_short_or_missing_secret_is_refused() {
        let settings = LinkSettings::default();
        assert!(Links::new(&settings).is_err(), "no secret");
        assert!(Links::with_secret(&settings, &SecretString::from("short")).is_err());
    }
}
