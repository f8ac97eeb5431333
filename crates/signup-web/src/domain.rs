//! Parsing a submitted sign-up into a [`NewProspect`] whose parts are valid
//! by construction (parse, don't validate).

use std::fmt;

use email_address::{EmailAddress as Parsed, Options};
use messages::{Country, EmailAddress, ProspectDetails, Role};
use serde::Deserialize;

use crate::catalog::Catalog;

/// A sign-up exactly as submitted: every field optional, nothing checked.
/// Kept to re-render the form with the visitor's values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignupInput {
    /// `firstName`.
    pub first_name: Option<String>,
    /// `lastName`.
    pub last_name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `companyName`.
    pub company_name: Option<String>,
    /// `country` (a code).
    pub country: Option<String>,
    /// `role` (a code).
    pub role: Option<String>,
}

/// The fields of the sign-up form, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `firstName`
    FirstName,
    /// `lastName`
    LastName,
    /// `email`
    Email,
    /// `companyName`
    CompanyName,
    /// `country`
    Country,
    /// `role`
    Role,
    /// `altcha`: the sign-up's proof of not being a bot (see
    /// `crate::bot_check`), not one of the prospect's details.
    Altcha,
}

impl Field {
    /// Every field, in form order.
    pub const ALL: [Field; 6] =
        [Field::FirstName, Field::LastName, Field::Email, Field::CompanyName, Field::Country, Field::Role];

    /// The field's name in forms and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Field::FirstName => "firstName",
            Field::LastName => "lastName",
            Field::Email => "email",
            Field::CompanyName => "companyName",
            Field::Country => "country",
            Field::Role => "role",
            Field::Altcha => "altcha",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem with one field, worded for the visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field at fault.
    pub field: Field,
    /// What is wrong, e.g. "must be at most 100 characters".
    pub message: String,
}

/// A name: 1–100 characters as sent, no control characters, not blank;
/// stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Longest accepted name, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Parses a submitted name.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let value = required(raw)?;
        check_text(raw.unwrap_or_default(), Self::MAX_CHARS)?;
        Ok(Self(value.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address: at most 254 characters as sent, no control characters,
/// stored trimmed, a plain `local@domain.tld` address as an RFC 5322 parser
/// accepts it.
/// Parsed once, here, into the contract's [`EmailAddress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEmail(EmailAddress);

impl ValidEmail {
    /// Longest accepted address (the SMTP path limit).
    pub const MAX_CHARS: usize = 254;

    /// Parses a submitted address.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let value = required(raw)?;
        check_text(raw.unwrap_or_default(), Self::MAX_CHARS)?;
        let options = Options::default().without_display_text().without_domain_literal().with_required_tld();
        Parsed::parse_with_options(value, options)
            .map(|_| Self(EmailAddress::new(value)))
            .map_err(|_| "is not a valid e-mail address".to_owned())
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The address, as the contract carries it.
    pub fn address(&self) -> &EmailAddress {
        &self.0
    }
}

/// An optional company name: at most 200 characters as sent, no control
/// characters, stored trimmed; blank means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyName(Option<String>);

impl CompanyName {
    /// Longest accepted company name, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a submitted company name.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        if let Some(raw) = raw {
            check_text(raw, Self::MAX_CHARS)?;
        }
        match raw.map(|v| v.trim_matches(is_blank)).filter(|v| !v.is_empty()) {
            None => Ok(Self(None)),
            Some(value) => Ok(Self(Some(value.to_owned()))),
        }
    }

    /// The company, if any.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A valid sign-up, ready to become an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProspect {
    first_name: PersonName,
    last_name: PersonName,
    email: ValidEmail,
    company_name: CompanyName,
    country: Country,
    role: Role,
}

impl NewProspect {
    /// Parses every field, reporting all problems at once.
    pub fn parse(input: &SignupInput, catalog: &Catalog) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut check = Checker(&mut errors);
        let first_name = check.field(Field::FirstName, PersonName::parse(input.first_name.as_deref()));
        let last_name = check.field(Field::LastName, PersonName::parse(input.last_name.as_deref()));
        let email = check.field(Field::Email, ValidEmail::parse(input.email.as_deref()));
        let company_name = check.field(Field::CompanyName, CompanyName::parse(input.company_name.as_deref()));
        // A code is one of the list's, exactly as listed.
        let country = check.field(
            Field::Country,
            required(input.country.as_deref()).and_then(|_| {
                let sent = input.country.as_deref().unwrap_or_default();
                catalog.country(sent).cloned().ok_or_else(|| "is not a known country code".to_owned())
            }),
        );
        let role = check.field(
            Field::Role,
            required(input.role.as_deref()).and_then(|_| {
                let sent = input.role.as_deref().unwrap_or_default();
                catalog.role(sent).cloned().ok_or_else(|| "is not a known role code".to_owned())
            }),
        );
        match (first_name, last_name, email, company_name, country, role) {
            (Some(first_name), Some(last_name), Some(email), Some(company_name), Some(country), Some(role)) => {
                Ok(Self { first_name, last_name, email, company_name, country, role })
            }
            _ => Err(errors),
        }
    }

    /// The details as they travel in events.
    pub fn into_details(self) -> ProspectDetails {
        ProspectDetails {
            first_name: self.first_name.0,
            last_name: self.last_name.0,
            email: self.email.0,
            company_name: self.company_name.0,
            country: self.country,
            role: self.role,
        }
    }
}

/// Collects the errors of fields parsed one by one.
struct Checker<'a>(&'a mut Vec<FieldError>);

impl Checker<'_> {
    fn field<T>(&mut self, field: Field, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.0.push(FieldError { field, message })).ok()
    }
}

/// What is trimmed around a value and does not count as one: Unicode white
/// space and the byte-order mark, as JSON Schema's `\s` (the OpenAPI
/// document's patterns) reads them.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// The value, trimmed, unless it is missing or blank.
fn required(raw: Option<&str>) -> Result<&str, String> {
    match raw.map(|v| v.trim_matches(is_blank)) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err("is required".to_owned()),
    }
}

/// Bytes that were not UTF-8 reach the parsers as U+FFFD (the form and JSON
/// decoders put one in their place): such text is refused, never stored
/// repaired. A U+FFFD typed as such is refused too: it stands for text lost.
fn check_decoded(value: &str) -> Result<(), String> {
    if value.contains(char::REPLACEMENT_CHARACTER) {
        return Err("must be valid UTF-8 text".to_owned());
    }
    Ok(())
}

/// The checks of a text field, on the value as sent (the limits the
/// OpenAPI document states are on what a client sends).
fn check_text(value: &str, max_chars: usize) -> Result<(), String> {
    check_decoded(value)?;
    if value.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input() -> SignupInput {
        SignupInput {
            first_name: Some("  Ada ".into()),
            last_name: Some("Lovelace".into()),
            email: Some("ada@example.com".into()),
            company_name: Some("".into()),
            country: Some("GB".into()),
            role: Some("EN".into()),
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<Field> {
        errors.iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_sign_up_is_trimmed_and_resolved() {
        let details = NewProspect::parse(&input(), &Catalog::builtin()).expect("valid").into_details();
        assert_eq!(details.first_name, "Ada");
        assert_eq!(details.company_name, None);
        assert_eq!(details.country.name, "United Kingdom");
        assert_eq!(details.role.name, "Engineer");
    }

    #[test]
    fn every_problem_is_reported_by_field() {
        let errors = NewProspect::parse(&SignupInput::default(), &Catalog::builtin()).expect_err("empty");
        assert_eq!(fields(&errors), vec![Field::FirstName, Field::LastName, Field::Email, Field::Country, Field::Role]);
        assert!(errors.iter().all(|e| e.message == "is required"));
    }

    #[test]
    fn text_decoded_from_bytes_that_were_not_utf8_is_refused_by_field() {
        let lost = String::from_utf8_lossy(b"\xff\xfe").into_owned();
        let mut bad = input();
        bad.first_name = Some(lost.clone());
        bad.email = Some(format!("ad{lost}a@example.com"));
        bad.company_name = Some(format!("Caf{lost}"));
        let errors = NewProspect::parse(&bad, &Catalog::builtin()).expect_err("refused");
        assert_eq!(fields(&errors), vec![Field::FirstName, Field::Email, Field::CompanyName]);
        assert!(errors.iter().all(|e| e.message == "must be valid UTF-8 text"), "{errors:?}");
    }

    #[test]
    fn unknown_codes_are_rejected() {
        let mut bad = input();
        bad.country = Some("XX".into());
        bad.role = Some("<script>".into());
        let errors = NewProspect::parse(&bad, &Catalog::builtin()).expect_err("unknown codes");
        assert_eq!(fields(&errors), vec![Field::Country, Field::Role]);
    }

    #[test]
    fn names_accept_any_script_and_reject_control_characters() {
        for name in ["Zoë", "李", "Ἀριστοτέλης", "محمد", "O'Brien-Smith"] {
            assert_eq!(PersonName::parse(Some(name)).expect(name).as_str(), name);
        }
        assert!(PersonName::parse(Some("Ada\u{7}")).is_err());
        assert!(PersonName::parse(Some("Ada\nLovelace")).is_err());
        assert!(PersonName::parse(Some(&"é".repeat(100))).is_ok(), "100 characters, not bytes");
        assert!(PersonName::parse(Some(&"é".repeat(101))).is_err());
    }

    #[test]
    fn email_rules() {
        for good in ["ada@example.com", "a.b+tag@sub.example.co.uk", "  ada@example.com  "] {
            assert!(ValidEmail::parse(Some(good)).is_ok(), "{good}");
        }
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
            "a b@example.com",
        ] {
            assert!(ValidEmail::parse(Some(bad)).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(ValidEmail::parse(Some(&long)).expect_err("too long"), "must be at most 254 characters");
    }

    #[test]
    fn company_is_optional_and_bounded() {
        assert_eq!(CompanyName::parse(None).expect("none").as_deref(), None);
        assert_eq!(CompanyName::parse(Some("   ")).expect("blank").as_deref(), None);
        assert!(CompanyName::parse(Some(&"x".repeat(200))).is_ok());
        assert!(CompanyName::parse(Some(&"x".repeat(201))).is_err());
    }

    /// Found by schemathesis against the OpenAPI document: the limits
    /// were counted after trimming, so 100 characters plus a space (over
    /// the document's maxLength) were accepted; a tab around a company name
    /// (a control character, refused by the document) was trimmed away.
    #[test]
    fn limits_and_characters_are_checked_on_the_value_as_sent() {
        let name = format!(" {}", "a".repeat(PersonName::MAX_CHARS));
        assert_eq!(PersonName::parse(Some(&name)).expect_err("101 as sent"), "must be at most 100 characters");
        assert!(PersonName::parse(Some(&name[1..])).is_ok(), "100 is the limit");
        assert_eq!(CompanyName::parse(Some("Acme\t")).expect_err("a tab"), "must not contain control characters");
        assert_eq!(CompanyName::parse(Some("  ")), Ok(CompanyName(None)), "blank means none");
        assert_eq!(PersonName::parse(Some("\u{feff}")).expect_err("a byte-order mark alone"), "is required");
        let email = format!("{}@example.com ", "a".repeat(ValidEmail::MAX_CHARS - 12));
        assert_eq!(ValidEmail::parse(Some(&email)).expect_err("255 as sent"), "must be at most 254 characters");
        assert_eq!(
            ValidEmail::parse(Some("ada@example.com\t")).expect_err("a tab"),
            "must not contain control characters"
        );
        assert!(ValidEmail::parse(Some(" ada@example.com ")).is_ok(), "spaces around are trimmed");
        let padded = SignupInput { country: Some(" GB".into()), role: Some("EN\n".into()), ..input() };
        let errors = NewProspect::parse(&padded, &Catalog::builtin()).expect_err("codes as listed only");
        assert_eq!(fields(&errors), vec![Field::Country, Field::Role]);
    }

    proptest! {
        #[test]
        fn parsed_names_are_trimmed_bounded_and_clean(raw in "\\PC{0,120}") {
            if let Ok(name) = PersonName::parse(Some(&raw)) {
                let value = name.as_str();
                prop_assert_eq!(value, value.trim());
                prop_assert!(!value.is_empty());
                prop_assert!(value.chars().count() <= PersonName::MAX_CHARS);
                prop_assert!(!value.chars().any(char::is_control));
                prop_assert!(!value.contains(char::REPLACEMENT_CHARACTER));
            } else {
                let trimmed = raw.trim_matches(is_blank);
                prop_assert!(trimmed.is_empty() || raw.chars().count() > PersonName::MAX_CHARS
                    || raw.chars().any(char::is_control) || raw.contains(char::REPLACEMENT_CHARACTER));
            }
        }

        #[test]
        fn names_with_control_characters_never_parse(prefix in "[a-z]{1,10}", control in "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]", suffix in "[a-z]{1,10}") {
            let raw = format!("{prefix}{control}{suffix}");
            prop_assert!(PersonName::parse(Some(&raw)).is_err());
        }

        #[test]
        fn parsed_emails_are_bounded_and_have_an_at(raw in "[a-z0-9.+_-]{0,70}@?[a-z0-9.-]{0,200}") {
            if let Ok(email) = ValidEmail::parse(Some(&raw)) {
                prop_assert!(email.as_str().chars().count() <= ValidEmail::MAX_CHARS);
                prop_assert!(email.as_str().contains('@'));
            }
        }
    }
}
