//! The error a peer sends in a `Response`: typed, serialisable, and free of
//! internals (a handler maps its own errors to one of these).

use serde::{Deserialize, Serialize};

/// An error that crosses the link. Unknown codes from a newer peer decode as
/// [`WireError::Unknown`] instead of failing the frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WireError {
    /// The peer does not know this request kind (it runs an older version).
    #[error("unknown request kind '{kind}'")]
    UnknownKind { kind: String },
    /// The request kind is known but its fields are not valid.
    #[error("bad request: {message}")]
    BadRequest { message: String },
    /// The handler did not finish within the request's deadline.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The peer ignored the advertised bound on requests in flight.
    #[error("too many requests in flight")]
    Overloaded,
    /// The module, system, driver or commit does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The handler ran and failed; the message is safe to show.
    #[error("failed: {message}")]
    Failed { message: String },
    /// The request is valid but cannot be served here now.
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    /// The request carried a control epoch other than the receiver's: it
    /// was sent under a controller that is no longer (or not yet) in charge.
    #[error("control epoch {sent} is not the current epoch {current}")]
    StaleEpoch { sent: u64, current: u64 },
    /// The caller may not ask this: `rule` names the rule that refused it
    /// (`own_site`: an edge acts only on its own site's modules and
    /// systems; `epoch_required`: a request that acts on devices must carry
    /// the caller's control epoch; `master_only`: a kind only the master
    /// sends). A previous-version peer reads it as [`WireError::Unknown`].
    #[error("refused by rule {rule}: {message}")]
    Forbidden { rule: String, message: String },
    /// The peer is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    #[serde(other)]
    #[error("unknown error from peer")]
    Unknown,
}

impl WireError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
}
