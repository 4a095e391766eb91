//! The key ring: AES-256-GCM sealing of token values, bound to their row, owner and field.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use thiserror::Error;

/// Format 1 (legacy): the associated data binds connection id, provider and field.
const FORMAT_LEGACY: u8 = 1;
/// Format 2: the associated data also binds the owning user's id.
const FORMAT_CURRENT: u8 = 2;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The identifier of an encryption key, derived from the key; safe to log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn derive(key: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"grantry key id v1\0");
        hasher.update(key);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }

    /// Parses the hexadecimal form shown in logs and stored in the database.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        let id: [u8; KEY_ID_LEN] = bytes.try_into().ok()?;
        Some(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Failures of the key ring; none of them carries key material or plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A configured key is not base64 of exactly 32 bytes.
    #[error("{variable} must be base64 of exactly 32 bytes (generate one with `grantry keygen`)")]
    InvalidKey {
        /// The variable that holds the bad key.
        variable: &'static str,
    },
    /// The value was sealed under a key the ring does not hold.
    #[error(
        "a stored value is sealed with key {0}, which is not configured; add that key to GRANTRY_ENCRYPTION_OLD_KEYS"
    )]
    UnknownKey(KeyId),
    /// Authentication failed: wrong key material for that id, or a value moved to another row or field.
    #[error(
        "a stored value sealed with key {key_id} failed authentication (tampered, or copied from another row or field)"
    )]
    OpenFailed {
        /// The key id named in the value.
        key_id: KeyId,
    },
    /// The bytes are not a sealed value.
    #[error("a stored value is not a well-formed sealed value")]
    Malformed,
    /// Encryption itself failed.
    #[error("encryption failed")]
    SealFailed,
}

/// Which token of a connection a sealed value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    /// The access token.
    Access,
    /// The refresh token.
    Refresh,
    /// The PKCE verifier of a pending authorization (bound to the state's hash).
    PkceVerifier,
}

impl TokenField {
    /// The field's name as bound into the associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::PkceVerifier => "pkce_verifier",
        }
    }
}

/// What a sealed value is bound to: a ciphertext opens only in the same context.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    /// The connection's id.
    pub connection_id: &'a str,
    /// The id of the user who owns the value.
    pub user_id: &'a str,
    /// The provider's id.
    pub provider: &'a str,
    /// The token field.
    pub field: TokenField,
}

impl SealContext<'_> {
    fn associated_data(&self, format: u8) -> Vec<u8> {
        let field = self.field.as_str();
        let legacy = [self.connection_id, self.provider, field];
        let current = [self.connection_id, self.user_id, self.provider, field];
        // Legacy values open only under the legacy binding, which lacks the user.
        let (label, parts): (&[u8], &[&str]) = if format == FORMAT_LEGACY {
            (b"grantry v1\0", &legacy)
        } else {
            (b"grantry v2\0", &current)
        };
        let mut aad = Vec::with_capacity(96);
        aad.extend_from_slice(label);
        for part in parts {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// A sealed value: format version, key id, nonce, then ciphertext with its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue(Vec<u8>);

impl SealedValue {
    /// Wraps bytes read from storage; validated when opened.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn format(&self) -> Option<u8> {
        match self.0.first() {
            Some(&f @ (FORMAT_LEGACY | FORMAT_CURRENT)) if self.0.len() >= HEADER_LEN => Some(f),
            _ => None,
        }
    }

    /// Whether the value uses the legacy binding (without the user id) and should be re-sealed.
    pub fn is_legacy(&self) -> bool {
        self.format() == Some(FORMAT_LEGACY)
    }

    /// The id of the key that sealed this value, if the value is well formed.
    pub fn key_id(&self) -> Option<KeyId> {
        self.format()?;
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&self.0[1..=KEY_ID_LEN]);
        Some(KeyId(id))
    }
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_id() {
            Some(id) => write!(f, "SealedValue(key {id}, {} bytes)", self.0.len()),
            None => write!(f, "SealedValue(malformed, {} bytes)", self.0.len()),
        }
    }
}

struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl Key {
    fn from_base64(text: &str, variable: &'static str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::InvalidKey { variable })?,
        );
        if bytes.len() != 32 {
            return Err(CryptoError::InvalidKey { variable });
        }
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::InvalidKey { variable })?;
        Ok(Self {
            id: KeyId::derive(&bytes),
            cipher,
        })
    }
}

/// The current key, which seals, and older keys, which only open.
pub struct KeyRing {
    current: Key,
    old: Vec<Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Builds a ring from base64 keys: `current` seals, `old` keys open only.
    ///
    /// `old` is the comma-separated list of `GRANTRY_ENCRYPTION_OLD_KEYS`; blanks are ignored.
    pub fn from_base64(
        current: &SecretString,
        old: Option<&SecretString>,
    ) -> Result<Self, CryptoError> {
        use secrecy::ExposeSecret;
        let current = Key::from_base64(current.expose_secret(), "GRANTRY_ENCRYPTION_KEY")?;
        let mut olds = Vec::new();
        if let Some(old) = old {
            for part in old
                .expose_secret()
                .split(',')
                .filter(|p| !p.trim().is_empty())
            {
                let key = Key::from_base64(part, "GRANTRY_ENCRYPTION_OLD_KEYS")?;
                if key.id != current.id && !olds.iter().any(|k: &Key| k.id == key.id) {
                    olds.push(key);
                }
            }
        }
        Ok(Self { current, old: olds })
    }

    /// Generates a new random key and returns it as base64 (what `grantry keygen` prints).
    pub fn generate_key_base64() -> String {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        STANDARD.encode(key.as_slice())
    }

    /// The id of the key that seals new values.
    pub fn current_key_id(&self) -> KeyId {
        self.current.id
    }

    /// Whether this ring can open values sealed under `id`.
    pub fn knows(&self, id: KeyId) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: KeyId) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` under the current key for `context`, with a fresh random nonce.
    pub fn seal(
        &self,
        plaintext: &str,
        context: SealContext<'_>,
    ) -> Result<SealedValue, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = context.associated_data(FORMAT_CURRENT);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::SealFailed)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(FORMAT_CURRENT);
        out.extend_from_slice(&self.current.id.0);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        Ok(SealedValue(out))
    }

    /// Opens a sealed value for `context`; fails if the key is unknown or the context differs.
    ///
    /// A legacy value (format 1) opens under the legacy binding, which ignores `user_id`;
    /// a current value opens only for the same user.
    pub fn open(
        &self,
        sealed: &SealedValue,
        context: SealContext<'_>,
    ) -> Result<SecretString, CryptoError> {
        let format = sealed.format().ok_or(CryptoError::Malformed)?;
        let key_id = sealed.key_id().ok_or(CryptoError::Malformed)?;
        let key = self.key(key_id).ok_or(CryptoError::UnknownKey(key_id))?;
        let bytes = sealed.as_bytes();
        let nonce = Nonce::from_slice(&bytes[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = context.associated_data(format);
        let plaintext = Zeroizing::new(
            key.cipher
                .decrypt(
                    nonce,
                    Payload {
                        msg: &bytes[HEADER_LEN..],
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::OpenFailed { key_id })?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| CryptoError::Malformed)?;
        Ok(SecretString::from(text.to_owned()))
    }

    /// Whether `sealed` uses the current key and the current binding.
    pub fn is_current(&self, sealed: &SealedValue) -> bool {
        sealed.format() == Some(FORMAT_CURRENT) && sealed.key_id() == Some(self.current.id)
    }

    /// Re-seals `sealed` under the current key and binding; `None` when it already uses both.
    pub fn reseal(
        &self,
        sealed: &SealedValue,
        context: SealContext<'_>,
    ) -> Result<Option<SealedValue>, CryptoError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        use secrecy::ExposeSecret;
        let plain = self.open(sealed, context)?;
        self.seal(plain.expose_secret(), context).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn ring(current: &str, old: &[&str]) -> KeyRing {
        let old = old.join(",");
        KeyRing::from_base64(
            &SecretString::from(current.to_owned()),
            Some(&SecretString::from(old)),
        )
        .expect("valid keys")
    }

    fn ctx(id: &str, field: TokenField) -> SealContext<'_> {
        SealContext {
            connection_id: id,
            user_id: "u1",
            provider: "atlassian",
            field,
        }
    }

    #[test]
    fn round_trip_and_fresh_nonce() {
        let ring = ring(&KeyRing::generate_key_base64(), &[]);
        let a = ring
            .seal("token-value", ctx("c1", TokenField::Access))
            .expect("seal");
        let b = ring
            .seal("token-value", ctx("c1", TokenField::Access))
            .expect("seal");
        assert_ne!(a, b, "each seal uses a fresh nonce");
        let opened = ring.open(&a, ctx("c1", TokenField::Access)).expect("open");
        assert_eq!(opened.expose_secret(), "token-value");
        assert!(!a.as_bytes().windows(11).any(|w| w == b"token-value"));
    }

    #[test]
    fn value_does_not_open_for_another_row_field_or_provider() {
        let ring = ring(&KeyRing::generate_key_base64(), &[]);
        let sealed = ring
            .seal("secret", ctx("c1", TokenField::Access))
            .expect("seal");
        assert!(matches!(
            ring.open(&sealed, ctx("c2", TokenField::Access)),
            Err(CryptoError::OpenFailed { .. })
        ));
        assert!(matches!(
            ring.open(&sealed, ctx("c1", TokenField::Refresh)),
            Err(CryptoError::OpenFailed { .. })
        ));
        let other_provider = SealContext {
            connection_id: "c1",
            user_id: "u1",
            provider: "other",
            field: TokenField::Access,
        };
        assert!(ring.open(&sealed, other_provider).is_err());
    }

    #[test]
    fn value_does_not_open_for_another_user() {
        let ring = ring(&KeyRing::generate_key_base64(), &[]);
        let sealed = ring
            .seal("secret", ctx("c1", TokenField::Access))
            .expect("seal");
        assert!(!sealed.is_legacy());
        let other_user = SealContext {
            user_id: "u2",
            ..ctx("c1", TokenField::Access)
        };
        assert!(matches!(
            ring.open(&sealed, other_user),
            Err(CryptoError::OpenFailed { .. })
        ));
        let mut downgraded = sealed.as_bytes().to_vec();
        downgraded[0] = FORMAT_LEGACY;
        let downgraded = SealedValue::from_bytes(downgraded);
        assert!(downgraded.is_legacy());
        assert!(
            ring.open(&downgraded, other_user).is_err()
                && ring
                    .open(&downgraded, ctx("c1", TokenField::Access))
                    .is_err(),
            "a current value relabelled legacy opens for nobody"
        );
    }

    #[test]
    fn old_keys_open_and_reseal_moves_to_current() {
        let old_key = KeyRing::generate_key_base64();
        let new_key = KeyRing::generate_key_base64();
        let before = ring(&old_key, &[]);
        let sealed = before
            .seal("s", ctx("c1", TokenField::Refresh))
            .expect("seal");
        let after = ring(&new_key, &[&old_key]);
        assert_eq!(
            after
                .open(&sealed, ctx("c1", TokenField::Refresh))
                .expect("open")
                .expose_secret(),
            "s"
        );
        let moved = after
            .reseal(&sealed, ctx("c1", TokenField::Refresh))
            .expect("reseal")
            .expect("moved");
        assert_eq!(moved.key_id(), Some(after.current_key_id()));
        assert!(
            after
                .reseal(&moved, ctx("c1", TokenField::Refresh))
                .expect("noop")
                .is_none()
        );
        let only_new = ring(&new_key, &[]);
        assert_eq!(
            only_new.open(&sealed, ctx("c1", TokenField::Refresh)).err(),
            Some(CryptoError::UnknownKey(before.current_key_id()))
        );
        assert!(
            only_new
                .open(&moved, ctx("c1", TokenField::Refresh))
                .is_ok()
        );
    }

    #[test]
    fn bad_keys_and_bytes_are_errors_not_panics() {
        let bad = KeyRing::from_base64(&SecretString::from("not base64!".to_owned()), None);
        assert_eq!(
            bad.err(),
            Some(CryptoError::InvalidKey {
                variable: "GRANTRY_ENCRYPTION_KEY"
            })
        );
        let short = KeyRing::from_base64(&SecretString::from("AAAA".to_owned()), None);
        assert!(short.is_err());
        let ring = ring(&KeyRing::generate_key_base64(), &[]);
        for bytes in [vec![], vec![1], vec![9; 40], vec![1; 21]] {
            assert!(
                ring.open(
                    &SealedValue::from_bytes(bytes),
                    ctx("c", TokenField::Access)
                )
                .is_err()
            );
        }
    }

    #[test]
    fn key_id_is_stable_and_parseable() {
        let key = KeyRing::generate_key_base64();
        let a = ring(&key, &[]);
        let b = ring(&key, &[]);
        assert_eq!(a.current_key_id(), b.current_key_id());
        let shown = a.current_key_id().to_string();
        assert_eq!(shown.len(), 16);
        assert_eq!(KeyId::parse(&shown), Some(a.current_key_id()));
        assert!(!format!("{a:?}").contains(&key));
    }
}
