//! The shapes the OpenAPI document describes but no handler deserialises
//! or builds as such: the sign-up's fields (read field by field, so that a
//! field of the wrong type is reported against that field), a challenge, a
//! reference entry (the problem body is `runtime::ops::Problem`, every
//! service's). A leaf: the handlers' annotations name them, and the
//! document lists them.

use serde::Serialize;
use utoipa::ToSchema;

/// The sign-up fields (`POST /api/prospects`). Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignUp {
    /// Given name: 1–100 characters as sent, not blank, no control characters (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\ufffd][^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$"
    )]
    first_name: String,
    /// Family name: 1–100 characters as sent, not blank, no control characters (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\ufffd][^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$"
    )]
    last_name: String,
    /// E-mail address, at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// Company, optional: at most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$")]
    company_name: Option<String>,
    /// A country code from `GET /api/countries` (`-`: not telling), one of
    /// the codes listed here.
    country: String,
    /// A role code from `GET /api/roles` (`-`: not telling), one of the codes
    /// listed here.
    role: String,
    /// The bot check: a challenge from `GET /api/challenge` and its
    /// solution, as base64 of the JSON `{"challenge": …, "solution":
    /// {"counter": …, "derivedKey": "…"}}` (ALTCHA's payload, protocol v2).
    /// Each counts for one sign-up. Listed only while the check is on.
    #[schema(min_length = 1, max_length = 8192)]
    altcha: Option<String>,
}

/// A challenge of the bot check (ALTCHA, protocol v2): find the counter
/// whose key, derived from `nonce` and the counter, starts with
/// `keyPrefix`, then send it back with the challenge as `altcha`.
#[derive(Serialize, ToSchema)]
pub struct Challenge {
    /// What to solve; signed.
    parameters: ChallengeParameters,
    /// HMAC-SHA-256 of the parameters, hex: the challenge is ours, unaltered.
    signature: String,
}

/// The parameters of a [`Challenge`].
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeParameters {
    /// The key derivation, `PBKDF2/SHA-256`.
    algorithm: String,
    /// Its rounds per try.
    cost: u32,
    /// When the challenge expires, in Unix seconds.
    expires_at: i64,
    /// The derived key's length, in bytes.
    key_length: u32,
    /// What the derived key must start with, hex.
    key_prefix: String,
    /// The server's signature of the expected key (its fast check), hex.
    key_signature: String,
    /// Hex bytes: the password is these followed by the counter (4 bytes,
    /// big-endian).
    nonce: String,
    /// Hex bytes: the derivation's salt.
    salt: String,
}

/// A country or role the form offers.
#[derive(Serialize, ToSchema)]
pub struct Reference {
    /// The code to send.
    code: String,
    /// The name to show.
    name: String,
}
