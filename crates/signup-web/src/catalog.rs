//! The countries and roles the form offers and accepts.

use std::collections::HashMap;

use messages::{Country, Role};

/// Reference data in form order ("-" first, then by name), with lookups by
/// code.
#[derive(Debug, Clone)]
pub struct Catalog {
    countries: Vec<Country>,
    roles: Vec<Role>,
    country_index: HashMap<String, usize>,
    role_index: HashMap<String, usize>,
}

impl Catalog {
    /// The built-in lists from the `messages` crate.
    pub fn builtin() -> Self {
        Self::new(messages::reference::builtin_countries().to_vec(), messages::reference::builtin_roles().to_vec())
    }

    /// A catalog of the given lists, put in form order.
    pub fn new(mut countries: Vec<Country>, mut roles: Vec<Role>) -> Self {
        messages::reference::form_order(&mut countries, |c| &c.code, |c| &c.name);
        messages::reference::form_order(&mut roles, |r| &r.code, |r| &r.name);
        let country_index = countries.iter().enumerate().map(|(i, c)| (c.code.clone(), i)).collect();
        let role_index = roles.iter().enumerate().map(|(i, r)| (r.code.clone(), i)).collect();
        Self { countries, roles, country_index, role_index }
    }

    /// Countries in form order.
    pub fn countries(&self) -> &[Country] {
        &self.countries
    }

    /// Roles in form order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// The country with this code.
    pub fn country(&self, code: &str) -> Option<&Country> {
        self.country_index.get(code).map(|&i| &self.countries[i])
    }

    /// The role with this code.
    pub fn role(&self, code: &str) -> Option<&Role> {
        self.role_index.get(code).map(|&i| &self.roles[i])
    }
}
