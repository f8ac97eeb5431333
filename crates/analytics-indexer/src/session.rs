//! The dashboard's login session: after a browser logs in with the token
//! (`POST /analytics/login`), a cookie that says until when the session
//! lasts, signed (HMAC-SHA256, the cookie crate's signed jar) with a key
//! derived from the token, so it is neither the token nor forgeable, and
//! changing the token ends every session. It is sent to the dashboard only
//! (`Path=/analytics`), never to scripts (`HttpOnly`) nor from other sites
//! (`SameSite=Strict`), only over HTTPS when the public URL is HTTPS
//! (`Secure`), and it expires (`Max-Age`, checked here as well); logging out
//! clears it.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite, time};
use chrono::Utc;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha512};

/// The cookie's name.
pub const COOKIE: &str = "signup_analytics";

/// The path the cookie is sent to: the dashboard.
pub const PATH: &str = "/analytics";

/// Issues and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Key,
    lifetime_secs: i64,
    secure: bool,
}

impl Sessions {
    /// Sessions of `lifetime_secs`, signed with a key derived from `token`;
    /// `secure` when the public URL is HTTPS.
    pub fn new(token: &SecretString, lifetime_secs: u64, secure: bool) -> Self {
        let mut derived = Sha512::new();
        derived.update(b"signup-analytics-session|");
        derived.update(token.expose_secret().as_bytes());
        Self {
            key: Key::from(derived.finalize().as_slice()),
            lifetime_secs: i64::try_from(lifetime_secs.max(1)).unwrap_or(i64::MAX),
            secure,
        }
    }

    fn cookie(&self, value: String, max_age: i64) -> Cookie<'static> {
        Cookie::build(COOKIE, value)
            .path(PATH)
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .max_age(time::Duration::seconds(max_age))
            .finish()
    }

    /// A new session's cookie, from now.
    pub fn issue(&self) -> Cookie<'static> {
        let until = Utc::now().timestamp().saturating_add(self.lifetime_secs);
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.key).add(self.cookie(until.to_string(), self.lifetime_secs));
        jar.get(COOKIE).cloned().map_or_else(|| self.cookie(String::new(), 0), |c| c.into_owned())
    }

    /// The cookie that ends a session (empty, expired).
    pub fn end(&self) -> Cookie<'static> {
        self.cookie(String::new(), 0)
    }

    /// Whether the request carries a genuine session that has not expired.
    pub fn valid(&self, request: &HttpRequest) -> bool {
        let Some(presented) = request.cookie(COOKIE) else { return false };
        let mut jar = CookieJar::new();
        jar.add_original(presented.into_owned());
        let Some(session) = jar.signed(&self.key).get(COOKIE) else { return false };
        session.value().parse::<i64>().is_ok_and(|until| Utc::now().timestamp() < until)
    }
}
