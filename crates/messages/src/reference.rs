//! Reference data: the countries and roles a prospect can choose from.
//!
//! `save-prospect` owns the authoritative lists (seeded into Postgres by a
//! migration); the built-in lists here are the same data, for services that
//! must render a form before anyone can answer them. A test in `save-prospect`
//! fails when the migration and these lists disagree.

use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The code meaning "the prospect preferred not to say".
pub const NOT_TELLING: &str = "-";

/// A country: ISO 3166-1 alpha-2 code (or [`NOT_TELLING`]) and display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, or "-".
    pub code: String,
    /// English display name.
    pub name: String,
}

/// A job role: short code (or [`NOT_TELLING`]) and display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Role {
    /// Short code, or "-".
    pub code: String,
    /// English display name.
    pub name: String,
}

static COUNTRIES: LazyLock<Vec<Country>> = LazyLock::new(|| {
    parse_tsv(include_str!("../data/countries.tsv")).map(|(code, name)| Country { code, name }).collect()
});

static ROLES: LazyLock<Vec<Role>> =
    LazyLock::new(|| parse_tsv(include_str!("../data/roles.tsv")).map(|(code, name)| Role { code, name }).collect());

/// The built-in countries: "-" (Not telling) first, then by name.
pub fn builtin_countries() -> &'static [Country] {
    &COUNTRIES
}

/// The built-in roles: "-" (Not telling) first, then by name.
pub fn builtin_roles() -> &'static [Role] {
    &ROLES
}

/// Sorts reference entries the way forms show them: "-" first, then by name.
pub fn form_order<T>(entries: &mut [T], code: impl Fn(&T) -> &str, name: impl Fn(&T) -> &str) {
    entries.sort_by(|a, b| {
        (code(a) != NOT_TELLING, name(a).to_lowercase()).cmp(&(code(b) != NOT_TELLING, name(b).to_lowercase()))
    });
}

/// Reads `code<TAB>name` lines, skipping `#` comments, in form order.
fn parse_tsv(text: &'static str) -> impl Iterator<Item = (String, String)> {
    let mut rows: Vec<(String, String)> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split_once('\t'))
        .map(|(code, name)| (code.to_owned(), name.to_owned()))
        .collect();
    form_order(&mut rows, |r| &r.0, |r| &r.1);
    rows.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_start_with_not_telling_then_follow_names() {
        for names in [
            builtin_countries().iter().map(|c| (c.code.as_str(), c.name.as_str())).collect::<Vec<_>>(),
            builtin_roles().iter().map(|r| (r.code.as_str(), r.name.as_str())).collect(),
        ] {
            assert_eq!(names[0], (NOT_TELLING, "Not telling"));
            let rest: Vec<String> = names[1..].iter().map(|(_, n)| n.to_lowercase()).collect();
            let mut sorted = rest.clone();
            sorted.sort();
            assert_eq!(rest, sorted);
            assert!(names[1..].iter().all(|(code, _)| *code != NOT_TELLING));
        }
    }

    #[test]
    fn countries_are_the_iso_alpha2_set() {
        let countries = builtin_countries();
        assert_eq!(countries.len(), 250, "249 ISO 3166-1 codes plus \"-\"");
        assert!(countries[1..].iter().all(|c| c.code.len() == 2 && c.code.chars().all(|ch| ch.is_ascii_uppercase())));
        assert!(countries.iter().any(|c| c.code == "GB" && c.name == "United Kingdom"));
    }
}
