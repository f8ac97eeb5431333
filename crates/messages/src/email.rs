//! [`EmailAddress`]: an e-mail address as it was typed, and the
//! case-insensitive key that says whether two are the same address.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An e-mail address as typed (trimmed), carrying its case-insensitive key,
/// made once when the address is read. Two addresses are the same (`==`,
/// `Hash`, [`EmailAddress::key`]) when their keys are: `Ada@Example.com`
/// and `ada@example.com` are one address, as every part of the system
/// counts them (a prospect's address is unique case-insensitively). It
/// travels as the plain string typed, and shows as it (`Display`,
/// [`EmailAddress::as_str`]).
///
/// The key lowercases the whole address: the local part is case-sensitive
/// by the letter of RFC 5321, but no receiver of note treats it so, and one
/// person must not hold two records by changing a letter's case. (In SQL,
/// save-prospect compares with the table's own key, `lower(email)`.)
#[derive(Clone)]
pub struct EmailAddress {
    typed: String,
    /// The key when it differs from the address as typed (most addresses
    /// are typed in lower case already: no second string for them).
    key: Option<String>,
}

impl EmailAddress {
    /// The address `typed` (kept as it is: the web trims and checks it).
    pub fn new(typed: impl Into<String>) -> Self {
        let typed = typed.into();
        let lower = typed.is_ascii() && !typed.bytes().any(|b| b.is_ascii_uppercase());
        let key = (!lower).then(|| typed.to_lowercase());
        Self { typed, key }
    }

    /// The address as typed.
    pub fn as_str(&self) -> &str {
        &self.typed
    }

    /// The case-insensitive key: equal for the same address however it was
    /// typed.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.typed)
    }
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for EmailAddress {}

impl std::hash::Hash for EmailAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for EmailAddress {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EmailAddress {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.typed, f)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.typed)
    }
}

impl std::ops::Deref for EmailAddress {
    type Target = str;

    fn deref(&self) -> &str {
        &self.typed
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.typed
    }
}

impl From<String> for EmailAddress {
    fn from(typed: String) -> Self {
        Self::new(typed)
    }
}

impl From<&str> for EmailAddress {
    fn from(typed: &str) -> Self {
        Self::new(typed)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.typed)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl schemars::JsonSchema for EmailAddress {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "EmailAddress".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <String as schemars::JsonSchema>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn one_address_however_it_is_typed_and_shown_as_typed() {
        let typed = EmailAddress::new("Ada.Lovelace@Example.COM");
        let lower = EmailAddress::from("ada.lovelace@example.com");
        assert_eq!(typed, lower, "the same address");
        assert_eq!(typed.key(), "ada.lovelace@example.com");
        assert_eq!(typed.to_string(), "Ada.Lovelace@Example.COM", "shown as typed");
        assert_ne!(typed, EmailAddress::new("ada.lovelace@example.org"));
        let set: std::collections::HashSet<EmailAddress> = [typed.clone(), lower].into();
        assert_eq!(set.len(), 1, "hashed by the key");
        let json = serde_json::to_string(&typed).expect("json");
        assert_eq!(json, "\"Ada.Lovelace@Example.COM\"", "travels as typed");
        let back: EmailAddress = serde_json::from_str(&json).expect("read");
        assert_eq!(back.as_str(), typed.as_str());
        assert_eq!(back.key(), typed.key());
        // Beyond ASCII too.
        assert_eq!(EmailAddress::new("ÉLODIE@Exemple.fr"), EmailAddress::new("élodie@exemple.fr"));
        assert_eq!(EmailAddress::new("élodie@exemple.fr").key(), "élodie@exemple.fr");
    }
}
