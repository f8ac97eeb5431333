//! Manage links: an HMAC-signed, expiring reference to a prospect id.
//!
//! A token reads `<prospect id>.<expiry, unix seconds>.<HMAC-SHA256,
//! base64url>`. The id is not secret (it is no personal data); the signature
//! makes the link a capability that cannot be forged, altered or reused after
//! it expires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks manage tokens with one secret.
#[derive(Clone)]
pub struct ManageTokens {
    key: HmacSha256,
    lifetime: Duration,
}

impl ManageTokens {
    /// Tokens signed with `secret`, valid for `lifetime` after issue.
    pub fn new(secret: &SecretString, lifetime: Duration) -> Self {
        let key = HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes keys of any length");
        Self { key, lifetime }
    }

    /// How long tokens stay valid, in whole days.
    pub fn lifetime_days(&self) -> i64 {
        self.lifetime.num_days()
    }

    /// A token for `prospect_id`, valid from `now` for the configured lifetime.
    pub fn issue(&self, prospect_id: Uuid, now: DateTime<Utc>) -> String {
        let claims = format!("{prospect_id}.{}", (now + self.lifetime).timestamp());
        let mut mac = self.key.clone();
        mac.update(claims.as_bytes());
        format!("{claims}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The prospect id of a genuine, unexpired token; `None` for anything else.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Uuid> {
        let (claims, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.key.clone();
        mac.update(claims.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let (id, expires) = claims.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        (now.timestamp() < expires).then_some(())?;
        id.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> ManageTokens {
        ManageTokens::new(&SecretString::from("test secret"), Duration::hours(1))
    }

    #[test]
    fn a_genuine_token_names_its_prospect_until_it_expires() {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let token = tokens().issue(id, now);
        assert_eq!(tokens().verify(&token, now), Some(id));
        assert_eq!(tokens().verify(&token, now + Duration::minutes(59)), Some(id));
        assert_eq!(tokens().verify(&token, now + Duration::hours(1)), None, "expired");
    }

    #[test]
    fn forged_or_altered_tokens_are_refused() {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let token = tokens().issue(id, now);
        let other = ManageTokens::new(&SecretString::from("another secret"), Duration::hours(1));
        assert_eq!(other.verify(&token, now), None, "another secret");

        let (claims, signature) = token.rsplit_once('.').expect("three parts");
        let (_, expiry) = claims.split_once('.').expect("id and expiry");
        let someone_else = format!("{}.{expiry}.{signature}", Uuid::now_v7());
        assert_eq!(tokens().verify(&someone_else, now), None, "signature for another prospect");
        let later = format!("{id}.{}.{signature}", expiry.parse::<i64>().expect("number") + 3600);
        assert_eq!(tokens().verify(&later, now), None, "extended expiry");
        for junk in ["", "abc", "a.b.c", &format!("{claims}."), &format!("{claims}.!!!")] {
            assert_eq!(tokens().verify(junk, now), None, "{junk:?}");
        }
    }
}
