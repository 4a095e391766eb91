//! Reading the account behind a token from a JSON endpoint (OpenID Connect userinfo, `/me`, …).

use grantry_core::{AccessToken, Account, ProviderError};
use serde_json::{Map, Value};
use url::Url;

use crate::http::{is_transient, send, transient};

/// Where the account's id, name and email are found in the account document: each a list of
/// member names, the first one with a value wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFields {
    /// Members holding the stable account id (`sub`).
    pub id: Vec<String>,
    /// Members holding the display name (`name`).
    pub name: Vec<String>,
    /// Members holding the email address (`email`).
    pub email: Vec<String>,
}

impl Default for AccountFields {
    /// The OpenID Connect claims: `sub`, `name`, `email`.
    fn default() -> Self {
        Self::new("sub", "name", "email")
    }
}

impl AccountFields {
    /// One member name each for the id, the name and the email.
    pub fn new(id: &str, name: &str, email: &str) -> Self {
        Self {
            id: vec![id.to_owned()],
            name: vec![name.to_owned()],
            email: vec![email.to_owned()],
        }
    }

    /// The account in `document`: the first non-empty string (or number, as text) of each list.
    /// `None` when no id member has a value.
    pub fn pick(&self, document: &Map<String, Value>) -> Option<Account> {
        let pick = |names: &[String]| {
            names.iter().find_map(|name| match document.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        Some(Account {
            id: pick(&self.id)?,
            name: pick(&self.name),
            email: pick(&self.email),
        })
    }
}

/// Reads the account document at `url` with `token` and picks the account out of it; the
/// document comes back too, for what a provider reads beside the account. 429/5xx are transient;
/// another failure status is `userinfo_refused`, a signed (`application/jwt`) answer
/// `unsupported_userinfo`, a document without an id `userinfo_incomplete`.
pub async fn read_account(
    http: &reqwest::Client,
    url: &Url,
    token: &AccessToken,
    fields: &AccountFields,
) -> Result<(Account, Map<String, Value>), ProviderError> {
    let request = http.get(url.clone()).bearer_auth(token.secret());
    let answer = send(request, "userinfo").await?;
    let status = answer.status.as_u16();
    let refused = |code: &str, description: String| ProviderError::Rejected {
        status,
        code: code.into(),
        description,
    };
    if is_transient(answer.status) {
        let reason = format!("userinfo answered {status}");
        return Err(transient(reason, answer.retry_after));
    }
    if !answer.status.is_success() {
        return Err(refused(
            "userinfo_refused",
            format!("userinfo answered {status}"),
        ));
    }
    if answer.content_type.starts_with("application/jwt") {
        let reason = "signed or encrypted userinfo responses are not supported".into();
        return Err(refused("unsupported_userinfo", reason));
    }
    let document: Map<String, Value> = serde_json::from_slice(&answer.body)
        .map_err(|_| transient("userinfo answered a malformed body", None))?;
    let account = fields.pick(&document).ok_or_else(|| {
        let missing = format!("userinfo has no {}", fields.id.join(" or "));
        refused("userinfo_incomplete", missing)
    })?;
    Ok((account, document))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_member_with_a_value_wins_and_numbers_are_text() {
        let fields = AccountFields {
            id: vec!["sub".into(), "id".into()],
            name: vec!["name".into(), "login".into()],
            email: vec!["email".into()],
        };
        let doc = json!({"sub": " ", "id": 583231, "name": null, "login": "octocat"});
        let account = fields
            .pick(doc.as_object().expect("object"))
            .expect("account");
        assert_eq!(account.id, "583231");
        assert_eq!(account.name.as_deref(), Some("octocat"));
        assert_eq!(account.email, None);
        let nobody = json!({"name": "x"});
        assert!(fields.pick(nobody.as_object().expect("object")).is_none());
    }
}
