//! Connection events: what changed in a connection, as the store records it in its outbox in the
//! same transaction as the change, and as webhook receivers get it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::store::ConnectionStatus;

/// Why a connection needs the user's consent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReauthReason {
    /// The provider refused the refresh token (`invalid_grant` or the provider's equivalent).
    InvalidGrant,
    /// The grant passed the provider's absolute expiry.
    AbsoluteExpiry,
    /// The upstream account was closed.
    AccountClosed,
    /// The access token expired and there is no refresh token to renew it.
    Expired,
    /// The stored tokens do not open for this row (moved to another user, or tampered with).
    TokensUnreadable,
}

impl ReauthReason {
    /// The `reason` of the event: `invalid_grant`, `absolute_expiry`, `account_closed`,
    /// `expired` or `tokens_unreadable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::AbsoluteExpiry => "absolute_expiry",
            Self::AccountClosed => "account_closed",
            Self::Expired => "expired",
            Self::TokensUnreadable => "tokens_unreadable",
        }
    }
}

/// Who or what deleted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The user disconnected.
    User,
    /// An admin removed it.
    Admin,
    /// The provider told us the grant is gone.
    Upstream,
    /// The upstream account was closed.
    AccountClosed,
}

impl DeleteReason {
    /// The `connection.deleted` event of `connection`, deleted for this reason.
    pub fn event(self, connection: ConnectionRef<'_>) -> Event {
        Event::connection(
            ConnectionEventKind::Deleted,
            connection,
            "deleted",
            Some(self.as_str()),
            None,
        )
    }

    /// The `reason` of the event: `user`, `admin`, `upstream` or `account_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::Upstream => "upstream",
            Self::AccountClosed => "account_closed",
        }
    }
}

/// A change of a connection's status that keeps the row: what the store writes and announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange<'a> {
    /// The grant is dead: the connection needs re-consent; `failure` is a message without secrets.
    NeedsReauth {
        /// Why.
        reason: ReauthReason,
        /// What failed, for admins.
        failure: &'a str,
    },
    /// A refresh failed after its retries; the connection stays active.
    RefreshFailed {
        /// What failed, for admins.
        failure: &'a str,
    },
}

impl StatusChange<'_> {
    /// The status the connection has after the change.
    pub fn status(&self) -> ConnectionStatus {
        match self {
            Self::NeedsReauth { .. } => ConnectionStatus::NeedsReauth,
            Self::RefreshFailed { .. } => ConnectionStatus::Active,
        }
    }

    /// The failure message stored as the connection's last failure.
    pub fn failure(&self) -> &str {
        match self {
            Self::NeedsReauth { failure, .. } | Self::RefreshFailed { failure } => failure,
        }
    }

    /// The event this change causes.
    pub fn event(&self, connection: ConnectionRef<'_>) -> Event {
        match self {
            Self::NeedsReauth { reason, failure } => Event::connection(
                ConnectionEventKind::NeedsReauth,
                connection,
                ConnectionStatus::NeedsReauth.as_str(),
                Some(reason.as_str()),
                Some(failure),
            ),
            Self::RefreshFailed { failure } => Event::connection(
                ConnectionEventKind::RefreshFailed,
                connection,
                ConnectionStatus::Active.as_str(),
                Some("transient"),
                Some(failure),
            ),
        }
    }
}

/// The kinds of connection events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEventKind {
    /// A user connected a provider they had no connection to.
    Created,
    /// A user consented again to a provider they already had a connection to.
    Reconnected,
    /// The connection needs the user's consent again.
    NeedsReauth,
    /// The connection was deleted.
    Deleted,
    /// A refresh failed after its retries (the connection stays active).
    RefreshFailed,
}

impl ConnectionEventKind {
    /// The event `type`: `connection.created`, `connection.reconnected`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "connection.created",
            Self::Reconnected => "connection.reconnected",
            Self::NeedsReauth => "connection.needs_reauth",
            Self::Deleted => "connection.deleted",
            Self::RefreshFailed => "connection.refresh_failed",
        }
    }
}

/// Which connection an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRef<'a> {
    /// The connection id.
    pub connection_id: &'a str,
    /// Its user.
    pub user_id: &'a str,
    /// Its provider id.
    pub provider: &'a str,
}

/// One event, as delivered: `{"type", "id", "timestamp", "data"}`; it never holds a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id (`msg_…`), the `webhook-id` of every delivery attempt.
    pub id: String,
    /// The type, such as `connection.created`.
    pub kind: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// What happened.
    pub data: Value,
}

impl Event {
    /// A new event of `kind` with a fresh id, happening now.
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        Self {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            kind: kind.into(),
            timestamp: Utc::now(),
            data,
        }
    }

    /// The event of a stored grant with `status`: `connection.created` for a new connection,
    /// `connection.reconnected` when it replaced one (active or `needs_reauth`).
    pub fn connected(
        connection: ConnectionRef<'_>,
        status: ConnectionStatus,
        replaced: bool,
    ) -> Self {
        let kind = if replaced {
            ConnectionEventKind::Reconnected
        } else {
            ConnectionEventKind::Created
        };
        Self::connection(kind, connection, status.as_str(), None, None)
    }

    /// A connection event: `data` holds the provider, user, connection, its status after the
    /// change, the reason and (for failures) the failure message.
    pub fn connection(
        kind: ConnectionEventKind,
        connection: ConnectionRef<'_>,
        status: &str,
        reason: Option<&str>,
        failure: Option<&str>,
    ) -> Self {
        let mut data = json!({
            "provider": connection.provider,
            "user_id": connection.user_id,
            "connection_id": connection.connection_id,
            "status": status,
            "reason": reason,
        });
        if let (Some(failure), Some(map)) = (failure, data.as_object_mut()) {
            map.insert("failure".into(), Value::from(failure));
        }
        Self::new(kind.as_str(), data)
    }

    /// The JSON body every delivery of this event carries.
    pub fn body(&self) -> String {
        json!({
            "type": self.kind,
            "id": self.id,
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": self.data,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionRef<'static> {
        ConnectionRef {
            connection_id: "c-1",
            user_id: "u-1",
            provider: "atlassian",
        }
    }

    #[test]
    fn a_body_has_the_contract_shape() {
        let event = StatusChange::NeedsReauth {
            reason: ReauthReason::InvalidGrant,
            failure: "refused",
        }
        .event(conn());
        let body: Value = serde_json::from_str(&event.body()).expect("json");
        assert_eq!(body["type"], "connection.needs_reauth");
        assert_eq!(body["id"], event.id.as_str());
        assert!(event.id.starts_with("msg_"));
        assert!(
            DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("timestamp")).is_ok()
        );
        assert_eq!(body["data"]["status"], "needs_reauth");
        assert_eq!(body["data"]["reason"], "invalid_grant");
        assert_eq!(body["data"]["connection_id"], "c-1");
        assert_eq!(body["data"]["failure"], "refused");
    }

    #[test]
    fn a_refresh_failure_keeps_the_connection_active() {
        let change = StatusChange::RefreshFailed { failure: "503" };
        assert_eq!(change.status(), ConnectionStatus::Active);
        let event = change.event(conn());
        assert_eq!(event.kind, "connection.refresh_failed");
        assert_eq!(event.data["status"], "active");
    }

    #[test]
    fn ids_are_unique() {
        let a = Event::new("x", Value::Null);
        let b = Event::new("x", Value::Null);
        assert_ne!(a.id, b.id);
    }
}
