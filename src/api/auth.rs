//! Authentication (`Authorization: Bearer <key>`) and roles.
//!
//! Keys are `ApiKey` documents (hashed). A failed attempt answers 401 with
//! no detail; repeated failures from one address are answered more and more
//! slowly (from the 6th within 10 minutes: 250 ms, doubling, at most 5 s).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use crate::model::{ApiKey, EdgeLocation, KeyDigest, KeyRole, MIN_KEY_LEN};
use crate::store::{Expect, Store, StoreError, Write};
use crate::util::ThrottlePolicy;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub user: String,
    pub role: KeyRole,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == KeyRole::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Operators act on the master's systems (`location` None) and on the
    /// locations that list their user among `admins`; admins on everything.
    pub fn require_operator(&self, location: Option<&EdgeLocation>) -> Result<(), ApiError> {
        match self.role {
            KeyRole::Admin => Ok(()),
            KeyRole::Operator => match location {
                None => Ok(()),
                Some(l) if l.admins.iter().any(|a| a == &self.user) => Ok(()),
                Some(_) => Err(ApiError::Forbidden),
            },
            KeyRole::Viewer => Err(ApiError::Forbidden),
        }
    }
}

/// The API's failure throttle for bad keys: five free failures within ten
/// minutes, then each answer waits 250 ms, doubling up to 5 s.
pub(super) const KEY_THROTTLE: ThrottlePolicy = ThrottlePolicy {
    free: 6,
    window: Duration::from_secs(600),
    base: Duration::from_millis(250),
    cap: Duration::from_secs(5),
    max_tracked: 10_000,
};

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(&parts.extensions);
        authenticate(state, ip, bearer(&parts.headers)).await
    }
}

/// The address the request came from (unspecified when unknown).
pub(super) fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The key presented as `Authorization: Bearer …`, if any.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Checks a presented key (`None`: none was presented), answering failures
/// more and more slowly per address.
pub(super) async fn authenticate(
    state: &ApiState,
    ip: IpAddr,
    key: Option<&str>,
) -> Result<Caller, ApiError> {
    let found = match key {
        Some(key) if !key.is_empty() => lookup(state, key).await?,
        _ => None,
    };
    match found {
        Some(k) => {
            state.throttle.success(ip);
            Ok(Caller {
                key_id: k.id,
                user: k.user.clone(),
                role: k.role,
            })
        }
        None => {
            state.throttle.failure(ip, Instant::now());
            let wait = state.throttle.penalty(ip, Instant::now());
            if !wait.is_zero() {
                tracing::warn!(%ip, wait_ms = wait.as_millis() as u64, "repeated API authentication failures");
                tokio::time::sleep(wait).await;
            }
            Err(ApiError::Unauthorized)
        }
    }
}

async fn lookup(state: &ApiState, key: &str) -> Result<Option<Arc<ApiKey>>, ApiError> {
    let presented = KeyDigest::of(key);
    let Some(k) = state
        .cache
        .get_parsed::<ApiKey>(&state.store, presented.id())
        .await?
    else {
        return Ok(None);
    };
    Ok(k.matches_digest(&presented).then_some(k))
}

/// Makes sure an admin key exists. A configured `admin_key` is stored if it
/// is not already; with none configured and no key at all, one is generated
/// and written once to `<data_dir>/admin-key` (mode 0600), whose path is
/// returned so the caller can log it.
pub async fn bootstrap_admin(
    store: &Store,
    configured: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Option<PathBuf>, BootstrapError> {
    if let Some(key) = configured {
        if key.len() < MIN_KEY_LEN {
            return Err(BootstrapError::Short);
        }
        if store.get(ApiKey::id_for(key)).await?.is_none() {
            let doc = ApiKey::new("admin (configured)", "admin", KeyRole::Admin, key);
            store.apply(&[Write::put(&doc, Expect::Absent)]).await?;
        }
        return Ok(None);
    }
    if store.count(crate::model::Kind::ApiKey).await? > 0 {
        return Ok(None);
    }
    let key = ApiKey::generate();
    let path = data_dir.join("admin-key");
    crate::util::private_dir(data_dir).map_err(|e| BootstrapError::Write(path.clone(), e))?;
    write_private(&path, &key).map_err(|e| BootstrapError::Write(path.clone(), e))?;
    let doc = ApiKey::new("admin (generated)", "admin", KeyRole::Admin, &key);
    store.apply(&[Write::put(&doc, Expect::Absent)]).await?;
    Ok(Some(path))
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("admin_key must be at least {MIN_KEY_LEN} characters")]
    Short,
    #[error("cannot write the generated admin key to {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot store the admin key")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::FailureThrottle;

    #[test]
    fn bad_keys_wait_longer_and_success_resets() {
        let t = FailureThrottle::new(KEY_THROTTLE);
        let now = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let failed = |ip| {
            t.failure(ip, now);
            t.penalty(ip, now)
        };
        let waits: Vec<u128> = (0..10).map(|_| failed(a).as_millis()).collect();
        assert_eq!(waits, vec![0, 0, 0, 0, 0, 250, 500, 1000, 2000, 4000]);
        assert_eq!(failed(a), Duration::from_secs(5), "capped");
        assert_eq!(
            failed(b),
            Duration::ZERO,
            "other addresses are not affected"
        );
        t.success(a);
        assert_eq!(failed(a), Duration::ZERO);
    }
}
