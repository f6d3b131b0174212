//! Bearer-token checks shared by the cell API and the control port, in
//! constant time so a token cannot be guessed byte by byte from timings.

pub use common::secret::Bearer;
use http::HeaderMap;

/// Checks the request's `Authorization` header with [`common::secret::check_bearer`].
pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Bearer {
    common::secret::check_bearer(
        headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        expected,
    )
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
