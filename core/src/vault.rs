//! The vault: a token store plus the key ring, sealing on the way in and opening on the way out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use crate::error::{CryptoError, Error, StoreError};
use crate::events::{ReauthReason, StatusChange};
use crate::keyring::{KeyId, KeyRing, SealContext, SealedValue, TokenField};
use crate::provider::RefreshPolicy;
use crate::secret::{AccessToken, RefreshToken};
use crate::store::{ConnectionRecord, ConnectionStatus, ConnectionWalk, TokenStore, TokenUpdate};
use crate::token::{AccountDetails, TokenSet};

const PUT_ATTEMPTS: usize = 3;

/// Connections `reencrypt` reads per page.
const REENCRYPT_BATCH: u32 = 500;

/// What `reencrypt` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReencryptReport {
    /// Rows moved to the current key and binding.
    pub moved: usize,
    /// Rows already on the current key and binding.
    pub current: usize,
    /// Rows whose tokens do not open for their row (moved to another user, or tampered); marked
    /// `needs_reauth`, kept.
    pub refused: usize,
}

/// The failure recorded on a row whose sealed tokens do not open for it.
pub const BINDING_FAILURE: &str =
    "the stored tokens do not open for this connection's user (moved or tampered); connect again";

/// Connections with their tokens sealed at rest.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn TokenStore>,
    keys: Arc<KeyRing>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn context(record: &ConnectionRecord, field: TokenField) -> SealContext<'_> {
    SealContext {
        connection_id: &record.id,
        user_id: &record.user_id,
        provider: &record.provider,
        field,
    }
}

impl Vault {
    /// A vault over `store` sealing with `keys`.
    pub fn new(store: Arc<dyn TokenStore>, keys: Arc<KeyRing>) -> Self {
        Self { store, keys }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Fails, naming every missing key id, when a stored value is sealed with a key the ring lacks.
    pub async fn check_keys(&self) -> Result<(), Error> {
        let mut missing = Vec::new();
        for text in self.store.key_ids(Utc::now()).await? {
            let id = KeyId::parse(&text)
                .ok_or_else(|| StoreError::Corrupt(format!("key id `{text}` is not a key id")))?;
            if !self.keys.knows(id) {
                missing.push(id);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingKeys(missing))
        }
    }

    /// Stores a new grant of `user_id` for `provider`, replacing a previous one.
    pub async fn save_grant(
        &self,
        user_id: &str,
        provider: &str,
        tokens: &TokenSet,
        details: &AccountDetails,
        policy: &RefreshPolicy,
        now: DateTime<Utc>,
    ) -> Result<ConnectionRecord, Error> {
        let mut last = None;
        for _ in 0..PUT_ATTEMPTS {
            let existing = self.store.connection(user_id, provider).await?;
            let id = existing
                .as_ref()
                .map(|r| r.id.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let seal_context = |field| SealContext {
                connection_id: &id,
                user_id,
                provider,
                field,
            };
            let access = self.keys.seal(
                tokens.access_token.secret(),
                seal_context(TokenField::Access),
            )?;
            let refresh = match &tokens.refresh_token {
                Some(t) => Some(
                    self.keys
                        .seal(t.secret(), seal_context(TokenField::Refresh))?,
                ),
                None => None,
            };
            let record = ConnectionRecord {
                id: id.clone(),
                user_id: user_id.to_owned(),
                provider: provider.to_owned(),
                account: details.account.clone(),
                scopes: tokens.scopes.clone().unwrap_or_default(),
                status: ConnectionStatus::Active,
                access_token: access,
                refresh_token: refresh,
                key_id: self.keys.current_key_id().to_string(),
                access_expires_at: tokens.expires_at,
                refresh_idle_expires_at: policy
                    .idle_expiry
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d),
                refresh_expires_at: policy
                    .absolute_expiry
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d),
                version: 0,
                lease_until: None,
                lease_owner: None,
                last_failure: None,
                connected_at: now,
                updated_at: now,
                last_refreshed_at: None,
                access_issued_at: Some(now),
                resources: details.resources.clone(),
            };
            match self.store.put_connection(&record).await {
                Ok(stored) => return Ok(stored),
                Err(StoreError::Conflict(what)) => last = Some(StoreError::Conflict(what)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| StoreError::Conflict("connection".into()))
            .into())
    }

    /// Opens the tokens of a stored connection.
    pub fn open_tokens(&self, record: &ConnectionRecord) -> Result<TokenSet, Error> {
        let access = self
            .keys
            .open(&record.access_token, context(record, TokenField::Access))?;
        let refresh = match &record.refresh_token {
            Some(sealed) => Some(RefreshToken::new(
                self.keys
                    .open(sealed, context(record, TokenField::Refresh))?
                    .expose_secret(),
            )),
            None => None,
        };
        Ok(TokenSet {
            access_token: AccessToken::new(access.expose_secret()),
            refresh_token: refresh,
            token_type: "Bearer".into(),
            expires_at: record.access_expires_at,
            scopes: Some(record.scopes.clone()),
        })
    }

    /// Opens only the access token of a stored connection (handing it out needs no refresh token).
    pub fn open_access(&self, record: &ConnectionRecord) -> Result<AccessToken, Error> {
        let access = self
            .keys
            .open(&record.access_token, context(record, TokenField::Access))?;
        Ok(AccessToken::new(access.expose_secret()))
    }

    /// Seals refreshed tokens for `record`, keeping its refresh token when none came back.
    pub fn seal_refresh(
        &self,
        record: &ConnectionRecord,
        tokens: &TokenSet,
        policy: &RefreshPolicy,
        now: DateTime<Utc>,
    ) -> Result<TokenUpdate, Error> {
        let access = self.keys.seal(
            tokens.access_token.secret(),
            context(record, TokenField::Access),
        )?;
        let refresh = match (&tokens.refresh_token, &record.refresh_token) {
            (Some(new), _) => Some(
                self.keys
                    .seal(new.secret(), context(record, TokenField::Refresh))?,
            ),
            (None, Some(old)) => Some(self.reseal(old, record, TokenField::Refresh)?),
            (None, None) => None,
        };
        Ok(TokenUpdate {
            access_token: access,
            refresh_token: refresh,
            key_id: self.keys.current_key_id().to_string(),
            access_expires_at: tokens.expires_at,
            refresh_idle_expires_at: policy
                .idle_expiry
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d),
            scopes: tokens.scopes.clone(),
            refreshed_at: now,
        })
    }

    fn reseal(
        &self,
        sealed: &SealedValue,
        record: &ConnectionRecord,
        field: TokenField,
    ) -> Result<SealedValue, Error> {
        Ok(self
            .keys
            .reseal(sealed, context(record, field))?
            .unwrap_or_else(|| sealed.clone()))
    }

    /// Whether both tokens of `record` use the current key and binding.
    fn is_current(&self, record: &ConnectionRecord) -> bool {
        self.keys.is_current(&record.access_token)
            && record
                .refresh_token
                .as_ref()
                .is_none_or(|r| self.keys.is_current(r))
    }

    /// Re-seals the tokens of `record` under the current key and binding, at its version.
    ///
    /// `Ok(None)` when the tokens do not open for the row: the row is marked `needs_reauth`
    /// (kept, never deleted). `Ok(Some(written))` otherwise; `written` is false when a
    /// concurrent writer changed the row first.
    async fn rewrap(&self, record: &ConnectionRecord) -> Result<Option<bool>, Error> {
        let resealed = self
            .reseal(&record.access_token, record, TokenField::Access)
            .and_then(|access| {
                let refresh = match &record.refresh_token {
                    Some(r) => Some(self.reseal(r, record, TokenField::Refresh)?),
                    None => None,
                };
                Ok((access, refresh))
            });
        let (access, refresh) = match resealed {
            Ok(pair) => pair,
            Err(Error::Crypto(CryptoError::OpenFailed { .. })) => {
                self.refuse(record).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let written = self
            .store
            .rewrap_tokens(
                &record.id,
                record.version,
                &access,
                refresh.as_ref(),
                &self.keys.current_key_id().to_string(),
            )
            .await?;
        Ok(Some(written))
    }

    async fn refuse(&self, record: &ConnectionRecord) -> Result<(), Error> {
        tracing::warn!(
            connection = %record.id,
            provider = %record.provider,
            "stored tokens do not open for this row; marked needs_reauth"
        );
        self.store
            .set_status_at(
                &record.id,
                record.version,
                StatusChange::NeedsReauth {
                    reason: ReauthReason::TokensUnreadable,
                    failure: BINDING_FAILURE,
                },
            )
            .await?;
        Ok(())
    }

    /// Checks that the tokens of `record` open for its row and user, upgrading values sealed
    /// under the legacy binding (without the user id) in place.
    ///
    /// Returns the record to use, with its tokens when they were opened on the way (values
    /// already on the current binding), so the caller need not open them again;
    /// [`Error::Binding`] when the tokens do not open for this row (the row is then marked
    /// `needs_reauth`).
    pub async fn verify_binding(
        &self,
        record: ConnectionRecord,
    ) -> Result<(ConnectionRecord, Option<TokenSet>), Error> {
        let legacy = record.access_token.is_legacy()
            || record
                .refresh_token
                .as_ref()
                .is_some_and(SealedValue::is_legacy);
        if !legacy {
            return match self.open_tokens(&record) {
                Err(Error::Crypto(CryptoError::OpenFailed { .. })) => {
                    self.refuse(&record).await?;
                    Err(Error::Binding)
                }
                Err(e) => Err(e),
                Ok(tokens) => Ok((record, Some(tokens))),
            };
        }
        match self.rewrap(&record).await? {
            None => Err(Error::Binding),
            Some(true) => Ok((
                self.store
                    .connection_by_id(&record.id)
                    .await?
                    .unwrap_or(record),
                None,
            )),
            Some(false) => Ok((record, None)),
        }
    }

    /// Moves every stored value to the current key and binding (the user id in the associated
    /// data); values already on both are left alone.
    pub async fn reencrypt(&self) -> Result<ReencryptReport, Error> {
        self.check_keys().await?;
        let mut report = ReencryptReport::default();
        let mut all = ConnectionWalk::new(&*self.store, None, None, REENCRYPT_BATCH);
        while let Some(record) = all.next().await? {
            self.reencrypt_row(record, &mut report).await?;
        }
        Ok(report)
    }

    /// Re-seals one row under the current key and binding (re-reading it when a concurrent
    /// writer changed it first) and counts the outcome in `report`.
    async fn reencrypt_row(
        &self,
        mut record: ConnectionRecord,
        report: &mut ReencryptReport,
    ) -> Result<(), Error> {
        loop {
            if self.is_current(&record) {
                report.current += 1;
                return Ok(());
            }
            match self.rewrap(&record).await? {
                None => {
                    report.refused += 1;
                    return Ok(());
                }
                Some(true) => {
                    report.moved += 1;
                    return Ok(());
                }
                Some(false) => {}
            }
            match self.store.connection_by_id(&record.id).await? {
                Some(fresh) => record = fresh,
                None => return Ok(()),
            }
        }
    }
}
