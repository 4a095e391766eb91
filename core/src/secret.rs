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
secret_newtype!(
    /// A PKCE code verifier (RFC 7636), kept sealed with its state until the callback.
    PkceVerifier
);

impl PkceVerifier {
    /// A new verifier: 32 random bytes, base64url without padding (43 characters).
    pub fn generate() -> Self {
        Self::new(StateToken::generate().secret())
    }

    /// The `S256` code challenge: base64url(SHA-256(verifier)) without padding.
    pub fn challenge_s256(&self) -> String {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(self.secret().as_bytes()))
    }
}

impl StateToken {
    /// A new unguessable state: 32 random bytes, base64url without padding.
    pub fn generate() -> Self {
        use aes_gcm::aead::OsRng;
        use aes_gcm::aead::rand_core::RngCore;
        use base64::Engine;
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The SHA-256 (hex) under which the state is stored; the state itself is never stored.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.secret().as_bytes()))
    }
}

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

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        let verifier = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            verifier.challenge_s256(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(PkceVerifier::generate().secret().len(), 43);
    }

    #[test]
    fn states_are_random_and_hashed() {
        let a = StateToken::generate();
        let b = StateToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.secret().len(), 43);
        assert_eq!(a.digest().len(), 64);
        assert_eq!(a.digest(), StateToken::new(a.secret()).digest());
        assert_ne!(a.digest(), b.digest());
    }
}
