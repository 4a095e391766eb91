//! Scopes: the catalogue entries a provider offers and sets of granted or requested scopes.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A scope a provider knows about.
pub trait Scope {
    /// The scope's wire name, e.g. `read:jira-work`.
    fn name(&self) -> &str;
    /// A short human description.
    fn description(&self) -> &str;
    /// Whether granting this scope makes the provider hand out a refresh token.
    fn grants_refresh_token(&self) -> bool {
        false
    }
}

/// A catalogue entry describing one scope of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ScopeInfo {
    /// Wire name of the scope.
    pub name: &'static str,
    /// Human description of what it allows.
    pub description: &'static str,
    /// Whether this scope yields a refresh token.
    pub refresh_token: bool,
}

impl Scope for ScopeInfo {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        self.description
    }
    fn grants_refresh_token(&self) -> bool {
        self.refresh_token
    }
}

/// An ordered set of scope names, written on the wire as a space-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the space-separated form (any run of whitespace separates; duplicates collapse).
    pub fn parse(text: &str) -> Self {
        Self(text.split_whitespace().map(str::to_owned).collect())
    }

    /// Builds a set from names.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(names.into_iter().map(Into::into).collect())
    }

    /// Whether the set contains `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Whether every scope of `required` is in this set.
    pub fn covers(&self, required: &ScopeSet) -> bool {
        required.0.is_subset(&self.0)
    }

    /// The scopes of `required` that this set lacks.
    pub fn missing(&self, required: &ScopeSet) -> ScopeSet {
        Self(required.0.difference(&self.0).cloned().collect())
    }

    /// Whether any scope in this set yields a refresh token according to `catalogue`.
    pub fn yields_refresh_token<S: Scope>(&self, catalogue: &[S]) -> bool {
        catalogue
            .iter()
            .any(|s| s.grants_refresh_token() && self.contains(s.name()))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates the names in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The names as a vector, in order.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for name in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
            first = false;
        }
        Ok(())
    }
}

impl<S: Into<String>> FromIterator<S> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::from_names(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOGUE: &[ScopeInfo] = &[
        ScopeInfo {
            name: "read:me",
            description: "profile",
            refresh_token: false,
        },
        ScopeInfo {
            name: "offline_access",
            description: "refresh",
            refresh_token: true,
        },
    ];

    #[test]
    fn parse_collapses_whitespace_and_duplicates() {
        let set = ScopeSet::parse("  read:me \t offline_access read:me\n");
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "offline_access read:me");
        assert_eq!(ScopeSet::parse(&set.to_string()), set);
        assert!(ScopeSet::parse("   ").is_empty());
    }

    #[test]
    fn covers_and_missing() {
        let granted = ScopeSet::parse("a b c");
        assert!(granted.covers(&ScopeSet::parse("a c")));
        assert!(granted.covers(&ScopeSet::new()));
        let required = ScopeSet::parse("a d e");
        assert!(!granted.covers(&required));
        assert_eq!(granted.missing(&required).to_string(), "d e");
    }

    #[test]
    fn refresh_token_scope_is_known() {
        assert!(ScopeSet::parse("read:me offline_access").yields_refresh_token(CATALOGUE));
        assert!(!ScopeSet::parse("read:me").yields_refresh_token(CATALOGUE));
    }
}
