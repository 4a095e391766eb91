//! The `TokenStore` trait: persistent connections, their resources and single-use OAuth states.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::events::{DeleteReason, Event, StatusChange};
use crate::keyring::SealedValue;
use crate::scope::ScopeSet;
use crate::token::{Account, Resource};

/// Whether a connection can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Tokens are usable or refreshable.
    Active,
    /// The grant is dead upstream; the user must consent again.
    NeedsReauth,
}

impl ConnectionStatus {
    /// The stored and serialized form: `active` or `needs_reauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "needs_reauth" => Some(Self::NeedsReauth),
            _ => None,
        }
    }
}

/// One user's connection to one provider, as stored (tokens sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Random id; part of the associated data of both sealed tokens.
    pub id: String,
    /// The user who owns it.
    pub user_id: String,
    /// The provider id.
    pub provider: String,
    /// The upstream account.
    pub account: Account,
    /// Scopes granted.
    pub scopes: ScopeSet,
    /// Usable or needing re-consent.
    pub status: ConnectionStatus,
    /// The sealed access token.
    pub access_token: SealedValue,
    /// The sealed refresh token, when there is one.
    pub refresh_token: Option<SealedValue>,
    /// Id (hex) of the key that sealed both tokens.
    pub key_id: String,
    /// When the access token expires.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the refresh token dies of inactivity, if it does.
    pub refresh_idle_expires_at: Option<DateTime<Utc>>,
    /// When the grant dies whatever happens, if it does.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// Incremented by every token write; refresh waiters watch it.
    pub version: i64,
    /// Until when a refresher holds the lease.
    pub lease_until: Option<DateTime<Utc>>,
    /// Who holds the lease.
    pub lease_owner: Option<String>,
    /// The last refresh failure, a message without secrets.
    pub last_failure: Option<String>,
    /// When the user first connected.
    pub connected_at: DateTime<Utc>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
    /// Last successful refresh.
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// When the current access token was issued (connect or refresh); its lifetime starts here.
    pub access_issued_at: Option<DateTime<Utc>>,
    /// Resources (sites) the grant reaches.
    pub resources: Vec<Resource>,
}

/// A connection without its tokens: what the status route and the admin list show, read
/// without carrying the sealed tokens out of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// Random id.
    pub id: String,
    /// The user who owns it.
    pub user_id: String,
    /// The provider id.
    pub provider: String,
    /// The upstream account.
    pub account: Account,
    /// Scopes granted.
    pub scopes: ScopeSet,
    /// Usable or needing re-consent.
    pub status: ConnectionStatus,
    /// When the access token expires.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the refresh token dies of inactivity, if it does.
    pub refresh_idle_expires_at: Option<DateTime<Utc>>,
    /// When the grant dies whatever happens, if it does.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// The last refresh failure, a message without secrets.
    pub last_failure: Option<String>,
    /// When the user first connected.
    pub connected_at: DateTime<Utc>,
    /// Resources (sites) the grant reaches.
    pub resources: Vec<Resource>,
}

impl ConnectionSummary {
    /// The summary of a stored connection.
    pub fn of(record: &ConnectionRecord) -> Self {
        Self {
            id: record.id.clone(),
            user_id: record.user_id.clone(),
            provider: record.provider.clone(),
            account: record.account.clone(),
            scopes: record.scopes.clone(),
            status: record.status,
            access_expires_at: record.access_expires_at,
            refresh_idle_expires_at: record.refresh_idle_expires_at,
            refresh_expires_at: record.refresh_expires_at,
            last_failure: record.last_failure.clone(),
            connected_at: record.connected_at,
            resources: record.resources.clone(),
        }
    }
}

/// New sealed tokens written by a refresh.
#[derive(Debug, Clone)]
pub struct TokenUpdate {
    /// The sealed access token.
    pub access_token: SealedValue,
    /// The sealed refresh token to keep (the old one when none came back).
    pub refresh_token: Option<SealedValue>,
    /// Id (hex) of the sealing key.
    pub key_id: String,
    /// New access expiry.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// New inactivity expiry of the refresh token.
    pub refresh_idle_expires_at: Option<DateTime<Utc>>,
    /// Scopes, when the refresh reported them.
    pub scopes: Option<ScopeSet>,
    /// When the refresh happened.
    pub refreshed_at: DateTime<Utc>,
}

/// The position of a connection in the paging order: provider, then user id (unique per provider).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionKey {
    /// The provider id.
    pub provider: String,
    /// The user id.
    pub user_id: String,
}

impl ConnectionKey {
    /// The key of a stored connection.
    pub fn of(record: &ConnectionRecord) -> Self {
        Self {
            provider: record.provider.clone(),
            user_id: record.user_id.clone(),
        }
    }
}

/// Which connections one page of [`TokenStore::connections_page`] holds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPageQuery<'a> {
    /// Only this provider's connections; every provider's when `None`.
    pub provider: Option<&'a str>,
    /// Only connections with this status; any status when `None`.
    pub status: Option<ConnectionStatus>,
    /// Only connections strictly after this key; from the first when `None`.
    pub after: Option<&'a ConnectionKey>,
    /// At most this many connections.
    pub limit: u32,
}

/// Every connection matching a provider and status filter, read in keyset pages of
/// [`TokenStore::connections_page`]: memory holds one page, however many rows there are.
pub struct ConnectionWalk<'a> {
    store: &'a dyn TokenStore,
    provider: Option<&'a str>,
    status: Option<ConnectionStatus>,
    batch: u32,
    after: Option<ConnectionKey>,
    page: std::vec::IntoIter<ConnectionRecord>,
    done: bool,
}

impl std::fmt::Debug for ConnectionWalk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionWalk")
            .field("provider", &self.provider)
            .field("status", &self.status)
            .field("batch", &self.batch)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl<'a> ConnectionWalk<'a> {
    /// A walk over `store` in pages of `batch` (at least 1), in (provider, user id) order.
    pub fn new(
        store: &'a dyn TokenStore,
        provider: Option<&'a str>,
        status: Option<ConnectionStatus>,
        batch: u32,
    ) -> Self {
        Self {
            store,
            provider,
            status,
            batch: batch.max(1),
            after: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The next connection, reading the next page when this one is used up; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ConnectionRecord>, StoreError> {
        if let Some(record) = self.page.next() {
            return Ok(Some(record));
        }
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .connections_page(&ConnectionPageQuery {
                provider: self.provider,
                status: self.status,
                after: self.after.as_ref(),
                limit: self.batch,
            })
            .await?;
        self.done = page.len() < self.batch as usize;
        self.after = page.last().map(ConnectionKey::of);
        self.page = page.into_iter();
        Ok(self.page.next())
    }
}

/// A stored upstream account as a personal data report reads it: the connection it belongs to,
/// the account id and when its personal data was last read, without tokens, name or email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    /// The connection id.
    pub connection_id: String,
    /// The user who owns the connection (the paging key within a provider).
    pub user_id: String,
    /// The provider's account id.
    pub account_id: String,
    /// Usable or needing re-consent.
    pub status: ConnectionStatus,
    /// When the account's name and email were last read from the provider (the consent, or the
    /// last re-read since).
    pub read_at: DateTime<Utc>,
}

/// The error of the optional store methods a store does not implement.
fn unsupported(what: &str) -> StoreError {
    StoreError::Database(format!("this store does not support {what}"))
}

/// A pending OAuth state (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// SHA-256 (hex) of the state value.
    pub state_hash: String,
    /// The user who asked for it.
    pub user_id: String,
    /// The provider id.
    pub provider: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The sealed PKCE verifier, for providers that use PKCE.
    pub code_verifier: Option<SealedValue>,
}

/// One hand-out of a user's access token to an admin, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHandout {
    /// Increasing id; pages of the audit are keyed by it.
    pub id: i64,
    /// The provider id.
    pub provider: String,
    /// The admin who took the token.
    pub admin_id: String,
    /// The user whose token it was.
    pub user_id: String,
    /// When it was handed out.
    pub handed_out_at: DateTime<Utc>,
}

/// An active connection a maintenance pass must act on; the last one of a batch is where the
/// next batch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueConnection {
    /// The connection id.
    pub id: String,
    /// The row version when it was read (fences writes against a reconnect).
    pub version: i64,
    /// The expiry that made it due (inactivity or absolute, depending on the query).
    pub due_at: DateTime<Utc>,
}

/// What a connection set up upstream for one of its resources (webhooks, say), found again by
/// the hash of the secret in its callback path; deleted with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The connection it belongs to.
    pub connection_id: String,
    /// The connection's provider.
    pub provider: String,
    /// The resource (site) it covers; one subscription per connection and resource.
    pub resource_id: String,
    /// SHA-256 (hex) of the secret in its callback path.
    pub secret_hash: String,
    /// The provider's ids of what was registered upstream.
    pub remote_ids: Vec<String>,
    /// When it expires upstream unless renewed.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was first set up.
    pub created_at: DateTime<Utc>,
    /// When it was last set up or renewed.
    pub renewed_at: DateTime<Utc>,
}

/// Persistent storage of connections and states; every method is atomic.
///
/// Every change of a connection's state also writes its [`Event`] to the store's outbox in the
/// same transaction (a store with no event destinations may write none): `put_connection`
/// writes `connection.created` or `connection.reconnected`, `set_status`/`set_status_at` the
/// event of their [`StatusChange`], `delete_connection` `connection.deleted`.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts or replaces the (user, provider) connection and its resources.
    ///
    /// An existing row is replaced only if its id equals `record.id` (the id the tokens were
    /// sealed for); otherwise [`StoreError::Conflict`]. Replacing bumps `version`, clears the
    /// lease and the last failure. Returns the stored row. Records `connection.created` for a
    /// new row, `connection.reconnected` for a replaced one.
    async fn put_connection(
        &self,
        record: &ConnectionRecord,
    ) -> Result<ConnectionRecord, StoreError>;

    /// The connection of `user_id` to `provider`.
    async fn connection(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError>;

    /// The connection of `user_id` to `provider` without its tokens.
    async fn connection_summary(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionSummary>, StoreError> {
        Ok(self
            .connection(user_id, provider)
            .await?
            .as_ref()
            .map(ConnectionSummary::of))
    }

    /// A connection by id.
    async fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError>;

    /// Every connection of `provider` (all providers when `None`), ordered by user id.
    async fn list_connections(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError>;

    /// One page of connections with their resources, ordered by (provider, user id): at most
    /// `query.limit` of those after `query.after` that match the provider and status filters.
    ///
    /// Keyset paging: the next page starts after the [`ConnectionKey`] of the last record, so
    /// a deep page costs what the first one does.
    async fn connections_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionRecord>, StoreError>;

    /// [`connections_page`](Self::connections_page) without the tokens.
    async fn connection_summaries_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionSummary>, StoreError> {
        Ok(self
            .connections_page(query)
            .await?
            .iter()
            .map(ConnectionSummary::of)
            .collect())
    }

    /// Deletes the connection and its resources, recording `connection.deleted` with `reason`;
    /// whether one existed.
    async fn delete_connection(
        &self,
        user_id: &str,
        provider: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError>;

    /// Replaces the resources of a connection.
    async fn replace_resources(
        &self,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<(), StoreError>;

    /// Takes the refresh lease for `lease` if it is free or expired; whether this caller won it.
    ///
    /// Both the expiry test and the new expiry use the database's clock, so replicas whose
    /// clocks disagree can never hold one lease together.
    async fn try_acquire_lease(
        &self,
        connection_id: &str,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Releases the lease if `owner` still holds it.
    async fn release_lease(&self, connection_id: &str, owner: &str) -> Result<(), StoreError>;

    /// Writes refreshed tokens if the row is still at `expected_version`: version + 1, lease
    /// cleared, status active, failure cleared. Whether the write happened.
    async fn complete_refresh(
        &self,
        connection_id: &str,
        expected_version: i64,
        update: &TokenUpdate,
    ) -> Result<bool, StoreError>;

    /// Re-seals the tokens of a row at `expected_version` without bumping the version (key
    /// rotation changes no token). Whether the write happened.
    async fn rewrap_tokens(
        &self,
        connection_id: &str,
        expected_version: i64,
        access_token: &SealedValue,
        refresh_token: Option<&SealedValue>,
        key_id: &str,
    ) -> Result<bool, StoreError>;

    /// Applies `change` (status and last failure), releasing any lease and recording the
    /// change's event; the row and its tokens stay.
    async fn set_status(
        &self,
        connection_id: &str,
        change: StatusChange<'_>,
    ) -> Result<(), StoreError>;

    /// Like [`set_status`](TokenStore::set_status), only while the row is still at
    /// `expected_version` (a refresher's failure must not overwrite a reconnect). Whether it wrote.
    async fn set_status_at(
        &self,
        connection_id: &str,
        expected_version: i64,
        change: StatusChange<'_>,
    ) -> Result<bool, StoreError>;

    /// Records an event that is not a change of a connection's row (a provider's own, such as
    /// an upstream notification), for delivery like the others.
    async fn record_event(&self, event: &Event) -> Result<(), StoreError>;

    /// The number of connections per (provider, status), ordered.
    async fn connection_counts(&self) -> Result<Vec<(String, ConnectionStatus, u64)>, StoreError>;

    /// Every distinct key id that sealed a stored token, or the PKCE verifier of a state still
    /// pending at `now`.
    async fn key_ids(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError>;

    /// Up to `limit` active connections of `provider` with a refresh token whose inactivity
    /// expiry is before `cutoff`, ordered by (that expiry, id), starting after `after`.
    async fn due_for_keep_alive(
        &self,
        provider: &str,
        cutoff: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError>;

    /// Up to `limit` active connections of `provider` whose absolute expiry is at or before
    /// `now`, ordered by (that expiry, id), starting after `after`.
    async fn past_absolute_expiry(
        &self,
        provider: &str,
        now: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError>;

    /// Takes or renews the lease of background task `name` for `duration` of the database clock,
    /// if it is free, expired or already held by `owner`; whether `owner` holds it now.
    async fn try_acquire_task_lease(
        &self,
        name: &str,
        owner: &str,
        duration: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Ends the lease of task `name` if `owner` still holds it.
    async fn release_task_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    /// Stores a new state, then deletes the other states of its user and provider that are
    /// expired or used, and the oldest beyond `max_pending` (the new state always stays).
    async fn put_state(&self, state: &StateRecord, max_pending: usize) -> Result<(), StoreError>;

    /// Marks the state used and returns it, only if it exists, is unused, unexpired at `now`,
    /// and belongs to this user and provider. A state of another user is left untouched.
    async fn consume_state(
        &self,
        state_hash: &str,
        user_id: &str,
        provider: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StateRecord>, StoreError>;

    /// Deletes up to `limit` states that expired at or before `now`; how many.
    async fn purge_expired_states(&self, now: DateTime<Utc>, limit: u32)
    -> Result<u64, StoreError>;

    /// Audits that `admin_id` took the `provider` access token of `user_id` at `at`; the stored row.
    async fn record_token_handout(
        &self,
        provider: &str,
        admin_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenHandout, StoreError>;

    /// Inserts or replaces the subscription of (`connection_id`, `resource_id`).
    async fn put_subscription(&self, subscription: &Subscription) -> Result<(), StoreError>;

    /// Moves the expiry of the subscription of (`connection_id`, `resource_id`) to `expires_at`,
    /// only while it still holds `secret_hash` (a renewal never overwrites a newer set-up);
    /// whether it did.
    async fn renew_subscription(
        &self,
        connection_id: &str,
        resource_id: &str,
        secret_hash: &str,
        expires_at: DateTime<Utc>,
        renewed_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The subscriptions of a connection, by resource id.
    async fn subscriptions(&self, connection_id: &str) -> Result<Vec<Subscription>, StoreError>;

    /// The subscription whose callback secret hashes to `secret_hash`.
    async fn subscription_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Up to `limit` subscriptions of `provider` expiring before `before`, ordered by (expiry,
    /// connection id, resource id), starting after `after`.
    async fn subscriptions_expiring(
        &self,
        provider: &str,
        before: DateTime<Utc>,
        after: Option<&Subscription>,
        limit: u32,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// Deletes the subscriptions of a connection; how many.
    async fn delete_subscriptions(&self, connection_id: &str) -> Result<u64, StoreError>;

    /// Records that `provider` delivered the notification `delivery_id` at `at` and, the first
    /// time only, `event`, both in one transaction (so a failure never keeps the receipt and
    /// loses the event); whether it was the first time (a repeat is a redelivery to ignore).
    async fn record_event_once(
        &self,
        provider: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<bool, StoreError>;

    /// Deletes up to `limit` receipts recorded before `before`; how many.
    async fn purge_receipts(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// One page of `provider`'s connections as [`StoredAccount`]s, ordered by user id: at most
    /// `limit` of those whose user id is after `after`. Keyset paging; nothing but the listed
    /// columns is read. The default reads summaries and takes the consent as the last read.
    async fn accounts_page(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredAccount>, StoreError> {
        let key = after.map(|user_id| ConnectionKey {
            provider: provider.to_owned(),
            user_id: user_id.to_owned(),
        });
        let page = self
            .connection_summaries_page(&ConnectionPageQuery {
                provider: Some(provider),
                status: None,
                after: key.as_ref(),
                limit,
            })
            .await?;
        Ok(page
            .into_iter()
            .map(|s| StoredAccount {
                connection_id: s.id,
                user_id: s.user_id,
                account_id: s.account.id,
                status: s.status,
                read_at: s.connected_at,
            })
            .collect())
    }

    /// Writes the name and email of `account`, read again from the provider at `read_at`, into
    /// the connection `connection_id`, only while it still belongs to the account `account.id`
    /// (tokens and version untouched); whether it wrote. Unsupported by default.
    async fn update_account(
        &self,
        _connection_id: &str,
        _account: &Account,
        _read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Err(unsupported("re-reading accounts"))
    }

    /// Deletes the connection `connection_id` with its resources, only while it still belongs
    /// to the account `account_id` (in one transaction: a reconnect to another account in
    /// between must keep its row), recording `connection.deleted` with `reason`; whether it did.
    /// Unsupported by default.
    async fn delete_account_connection(
        &self,
        _connection_id: &str,
        _account_id: &str,
        _reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        Err(unsupported("deleting connections by account"))
    }

    /// The value `provider` stored under `name` with
    /// [`put_provider_state`](Self::put_provider_state). Unsupported by default.
    async fn provider_state(
        &self,
        _provider: &str,
        _name: &str,
    ) -> Result<Option<String>, StoreError> {
        Err(unsupported("provider state"))
    }

    /// Stores `value` as `provider`'s state `name` (replacing any), durably and for every
    /// replica: when a provider's periodic work is next due, say. Unsupported by default.
    async fn put_provider_state(
        &self,
        _provider: &str,
        _name: &str,
        _value: &str,
        _at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unsupported("provider state"))
    }

    /// The hand-outs of `provider`, newest first: at most `limit`, only ids below `before` when given.
    async fn token_handouts(
        &self,
        provider: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TokenHandout>, StoreError>;
}
