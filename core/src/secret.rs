//! Newtypes for secret protocol values whose `Debug` and `Display` never show the value.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

macro_rules! secret_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The secret value itself; every call site is a place where it may leave the process.
            pub fn secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[redacted]")
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.secret() == other.secret()
            }
        }

        impl Eq for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_newtype!(
    /// An OAuth access token.
    AccessToken
);
secret_newtype!(
    /// An OAuth refresh token.
    RefreshToken
);
secret_newtype!(
    /// An OAuth client secret.
    ClientSecret
);
secret_newtype!(
    /// An authorization code returned to the callback.
    AuthorizationCode
);
secret_newtype!(
    /// The opaque `state` value of an authorization request.
    StateToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let token = AccessToken::new("very-secret-value");
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert_eq!(format!("{token}"), "[redacted]");
        assert_eq!(token.secret(), "very-secret-value");
        let refresh: RefreshToken = serde_json::from_str("\"r-1\"").expect("json string");
        assert!(!format!("{refresh:?}").contains("r-1"));
    }
}
