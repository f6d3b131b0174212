//! Client authentication and authorization: bearer-token lookup (in constant
//! time), bucket scope patterns, read/write access and the per-token rate
//! limit. Knows nothing of cells; the API layer turns refusals into 401/403/429.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::config::{Access, TokenConfig};
use crate::rate_limit::TokenBucket;

/// One entry of a token's bucket scope (parsed where the config is validated).
pub use common::config::router::BucketPattern;

/// An authenticated client: what its token allows, and its rate limiter.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    pub access: Access,
    scope: Vec<BucketPattern>,
    /// A std mutex: the critical section is a few float operations, never awaits.
    limiter: Mutex<TokenBucket>,
}

/// Why an authenticated client may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("token {token:?} may not access bucket {bucket:?}")]
    OutOfScope { token: String, bucket: String },
    #[error("token {token:?} is read-only")]
    ReadOnly { token: String },
}

impl Principal {
    /// Checks the bucket scope, then (for writes) the access level.
    pub fn authorize(&self, bucket: &str, write: bool) -> Result<(), Denied> {
        if !self.scope.iter().any(|p| p.matches(bucket)) {
            return Err(Denied::OutOfScope {
                token: self.name.clone(),
                bucket: bucket.to_string(),
            });
        }
        if write && self.access != Access::ReadWrite {
            return Err(Denied::ReadOnly {
                token: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Takes one request from the token's budget, or says how long to wait.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update of
        // two floats; the bucket is still usable.
        let mut b = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        b.try_take(now)
    }
}

/// Why a request carries no usable identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

/// The configured client tokens.
#[derive(Debug)]
pub struct Authenticator {
    clients: Vec<(Vec<u8>, Arc<Principal>)>,
}

impl Authenticator {
    /// Builds the table from validated token configs.
    pub fn new(tokens: &[TokenConfig], now: Instant) -> Authenticator {
        let clients = tokens
            .iter()
            .map(|t| {
                let scope = t
                    .buckets
                    .iter()
                    .filter_map(|p| BucketPattern::parse(p).ok())
                    .collect();
                let principal = Principal {
                    name: t.name.clone(),
                    access: t.access,
                    scope,
                    limiter: Mutex::new(TokenBucket::new(t.rate_per_sec, t.burst, now)),
                };
                (t.token.as_bytes().to_vec(), Arc::new(principal))
            })
            .collect();
        Authenticator { clients }
    }

    /// Finds the client of the request's bearer token. Compares against every
    /// configured token in constant time, so timing reveals neither which
    /// token matched nor how much of one did.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, AuthError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(AuthError::Missing)?;
        let mut found = None;
        for (secret, principal) in &self.clients {
            if common::secret::ct_eq(token, secret) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, token: &str, buckets: &[&str], access: Access) -> TokenConfig {
        TokenConfig {
            token: token.into(),
            name: name.into(),
            buckets: buckets.iter().map(|s| s.to_string()).collect(),
            access,
            rate_per_sec: 1.0,
            burst: 2,
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    /// A read-only token for every bucket and a read-write token for `photos` and `logs-*`.
    fn reader_and_writer(now: Instant) -> Authenticator {
        Authenticator::new(
            &[
                cfg("reader", "reader-token-0123456789", &["*"], Access::Read),
                cfg(
                    "writer",
                    "writer-token-0123456789",
                    &["photos", "logs-*"],
                    Access::ReadWrite,
                ),
            ],
            now,
        )
    }

    #[test]
    fn authenticate_finds_the_right_token() {
        let now = Instant::now();
        let auth = reader_and_writer(now);
        assert_eq!(
            auth.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.authenticate(&headers("Basic abc")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer nope")).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer reader-token-012345678X"))
                .unwrap_err(),
            AuthError::Invalid
        );
        let w = auth
            .authenticate(&headers("Bearer writer-token-0123456789"))
            .unwrap();
        assert_eq!(w.name, "writer");
        let r = auth
            .authenticate(&headers("Bearer reader-token-0123456789"))
            .unwrap();
        assert_eq!(r.name, "reader");
    }

    #[test]
    fn scope_and_access() {
        let now = Instant::now();
        let auth = reader_and_writer(now);
        let r = auth
            .authenticate(&headers("Bearer reader-token-0123456789"))
            .unwrap();
        let w = auth
            .authenticate(&headers("Bearer writer-token-0123456789"))
            .unwrap();
        assert_eq!(r.authorize("anything", false), Ok(()));
        assert!(matches!(
            r.authorize("anything", true),
            Err(Denied::ReadOnly { .. })
        ));
        assert_eq!(w.authorize("photos", true), Ok(()));
        assert_eq!(w.authorize("logs-eu", true), Ok(()));
        assert_eq!(w.authorize("logs-eu", false), Ok(()));
        assert!(matches!(
            w.authorize("photos-old", false),
            Err(Denied::OutOfScope { .. })
        ));
        assert!(matches!(
            w.authorize("logs", true),
            Err(Denied::OutOfScope { .. })
        ));
    }

    #[test]
    fn each_token_has_its_own_rate_limit() {
        let now = Instant::now();
        let auth = Authenticator::new(
            &[
                cfg("a", "token-a-0123456789abc", &["*"], Access::Read),
                cfg("b", "token-b-0123456789abc", &["*"], Access::Read),
            ],
            now,
        );
        let a = auth
            .authenticate(&headers("Bearer token-a-0123456789abc"))
            .unwrap();
        let b = auth
            .authenticate(&headers("Bearer token-b-0123456789abc"))
            .unwrap();
        assert!(a.take(now).is_ok() && a.take(now).is_ok());
        assert_eq!(a.take(now), Err(Duration::from_secs(1)));
        assert!(b.take(now).is_ok(), "b is not limited by a's use");
        assert!(a.take(now + Duration::from_secs(1)).is_ok());
    }
}
