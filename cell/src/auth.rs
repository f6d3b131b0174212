//! Bearer-token checks shared by the cell API and the control port, in
//! constant time so a token cannot be guessed byte by byte from timings.

use common::secret::ct_eq;
use http::HeaderMap;

/// The outcome of checking a request's `Authorization: Bearer` token.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer {
    Missing,
    Wrong,
    Ok,
}

pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Bearer {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    match v.as_bytes().strip_prefix(b"Bearer ") {
        Some(tok) if ct_eq(tok, expected.as_bytes()) => Bearer::Ok,
        Some(_) => Bearer::Wrong,
        None => Bearer::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(check_bearer(&h, "secret-token-123"), Bearer::Missing);
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(check_bearer(&h, "secret-token-123"), Bearer::Missing);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer secret-token-124".parse().unwrap(),
        );
        assert_eq!(check_bearer(&h, "secret-token-123"), Bearer::Wrong);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer secret".parse().unwrap(),
        );
        assert_eq!(check_bearer(&h, "secret-token-123"), Bearer::Wrong);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer secret-token-123".parse().unwrap(),
        );
        assert_eq!(check_bearer(&h, "secret-token-123"), Bearer::Ok);
    }
}
