//! The vault: a token store plus the key ring, sealing on the way in and opening on the way out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use crate::error::{Error, StoreError};
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
    /// Rows moved to the current key.
    pub moved: usize,
    /// Rows already on the current key.
    pub current: usize,
}

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

fn context<'a>(record_id: &'a str, provider: &'a str, field: TokenField) -> SealContext<'a> {
    SealContext {
        connection_id: record_id,
        provider,
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
            let access = self.keys.seal(
                tokens.access_token.secret(),
                context(&id, provider, TokenField::Access),
            )?;
            let refresh = match &tokens.refresh_token {
                Some(t) => Some(
                    self.keys
                        .seal(t.secret(), context(&id, provider, TokenField::Refresh))?,
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
        let access = self.keys.open(
            &record.access_token,
            context(&record.id, &record.provider, TokenField::Access),
        )?;
        let refresh = match &record.refresh_token {
            Some(sealed) => Some(RefreshToken::new(
                self.keys
                    .open(
                        sealed,
                        context(&record.id, &record.provider, TokenField::Refresh),
                    )?
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
        let access = self.keys.open(
            &record.access_token,
            context(&record.id, &record.provider, TokenField::Access),
        )?;
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
            context(&record.id, &record.provider, TokenField::Access),
        )?;
        let refresh = match (&tokens.refresh_token, &record.refresh_token) {
            (Some(new), _) => Some(self.keys.seal(
                new.secret(),
                context(&record.id, &record.provider, TokenField::Refresh),
            )?),
            (None, Some(old)) => {
                self.reseal(old, &record.id, &record.provider, TokenField::Refresh)?
            }
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
        id: &str,
        provider: &str,
        field: TokenField,
    ) -> Result<Option<SealedValue>, Error> {
        let ctx = context(id, provider, field);
        Ok(Some(
            self.keys
                .reseal(sealed, ctx)?
                .unwrap_or_else(|| sealed.clone()),
        ))
    }

    /// Moves every stored value to the current key; values already on it are left alone.
    pub async fn reencrypt(&self) -> Result<ReencryptReport, Error> {
        self.check_keys().await?;
        let current = self.keys.current_key_id();
        let mut report = ReencryptReport::default();
        let mut all = ConnectionWalk::new(&*self.store, None, None, REENCRYPT_BATCH);
        while let Some(mut record) = all.next().await? {
            loop {
                let on_current = record.access_token.key_id() == Some(current)
                    && record
                        .refresh_token
                        .as_ref()
                        .is_none_or(|r| r.key_id() == Some(current));
                if on_current {
                    report.current += 1;
                    break;
                }
                let access = self.reseal(
                    &record.access_token,
                    &record.id,
                    &record.provider,
                    TokenField::Access,
                )?;
                let refresh = match &record.refresh_token {
                    Some(r) => self.reseal(r, &record.id, &record.provider, TokenField::Refresh)?,
                    None => None,
                };
                let Some(access) = access else { break };
                let written = self
                    .store
                    .rewrap_tokens(
                        &record.id,
                        record.version,
                        &access,
                        refresh.as_ref(),
                        &current.to_string(),
                    )
                    .await?;
                if written {
                    report.moved += 1;
                    break;
                }
                match self.store.connection_by_id(&record.id).await? {
                    Some(fresh) => record = fresh,
                    None => break,
                }
            }
        }
        Ok(report)
    }
}
