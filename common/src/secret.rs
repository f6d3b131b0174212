//! Comparing secrets (tokens, the cluster secret) in time that depends only on
//! their lengths, so a token cannot be guessed byte by byte from response timings.

/// True when `a == b`, examining every byte whatever the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an `Authorization` header says about the bearer token a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// No header, or one that is not `Bearer <token>`.
    Missing,
    Wrong,
    Ok,
}

/// Checks an `Authorization` header value (`None`: no header) against
/// `Bearer <expected>`, comparing the token with [`ct_eq`].
pub fn check_bearer(authorization: Option<&[u8]>, expected: &str) -> Bearer {
    match authorization.and_then(|v| v.strip_prefix(b"Bearer ")) {
        Some(t) if ct_eq(t, expected.as_bytes()) => Bearer::Ok,
        Some(_) => Bearer::Wrong,
        None => Bearer::Missing,
    }
}

/// True when an `Authorization` header value is `Bearer <expected>`
/// ([`check_bearer`] for callers that answer a missing and a wrong token alike).
pub fn bearer_matches(authorization: Option<&[u8]>, expected: &str) -> bool {
    check_bearer(authorization, expected) == Bearer::Ok
}

#[cfg(test)]
mod tests {
    use super::{bearer_matches, ct_eq};

    #[test]
    fn bearer_matches_only_the_expected_token() {
        let t = "admin-token-0123";
        assert!(bearer_matches(Some(b"Bearer admin-token-0123"), t));
        assert!(!bearer_matches(Some(b"Bearer admin-token-0124"), t));
        assert!(!bearer_matches(Some(b"bearer admin-token-0123"), t));
        assert!(!bearer_matches(Some(b"admin-token-0123"), t));
        assert!(!bearer_matches(None, t));
    }

    #[test]
    fn equal_only_when_every_byte_matches() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"token-123", b"token-123"));
        assert!(!ct_eq(b"token-123", b"token-124"));
        assert!(!ct_eq(b"xoken-123", b"token-123"));
        assert!(!ct_eq(b"token", b"token-123"));
    }
}
