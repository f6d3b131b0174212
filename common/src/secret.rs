//! Comparing secrets (tokens, the cluster secret) in time that depends only on
//! their lengths, so a token cannot be guessed byte by byte from response timings.

/// True when `a == b`, examining every byte whatever the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_only_when_every_byte_matches() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"token-123", b"token-123"));
        assert!(!ct_eq(b"token-123", b"token-124"));
        assert!(!ct_eq(b"xoken-123", b"token-123"));
        assert!(!ct_eq(b"token", b"token-123"));
    }
}
