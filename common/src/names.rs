//! Validation of bucket names and object keys, shared by the router and the
//! cells so both refuse the same inputs with the same error codes.

use crate::error::ErrorCode;

/// Longest object key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a bucket name or key was refused; `code()` gives the stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid bucket name {name:?}: {why}")]
    Bucket { name: String, why: &'static str },
    #[error("invalid object key: {why}")]
    Key { why: &'static str },
}

impl NameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NameError::Bucket { .. } => ErrorCode::InvalidBucket,
            NameError::Key { .. } => ErrorCode::InvalidKey,
        }
    }
}

/// Checks a bucket name against S3's naming rules: 3–63 characters of lowercase
/// letters, digits, dots and hyphens; starts and ends with a letter or digit; no
/// two adjacent dots; not formatted like an IPv4 address; no reserved prefixes
/// (`xn--`, `sthree-`) or suffixes (`-s3alias`, `--ol-s3`).
pub fn validate_bucket(name: &str) -> Result<(), NameError> {
    let err = |why| {
        Err(NameError::Bucket {
            name: name.chars().take(80).collect(),
            why,
        })
    };
    let b = name.as_bytes();
    if b.len() < 3 || b.len() > 63 {
        return err("must be 3 to 63 characters long");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
    {
        return err("may contain only lowercase letters, digits, dots and hyphens");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return err("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return err("must not contain two adjacent dots");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return err("must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") {
        return err("must not start with a reserved prefix (xn--, sthree-)");
    }
    if name.ends_with("-s3alias") || name.ends_with("--ol-s3") {
        return err("must not end with a reserved suffix (-s3alias, --ol-s3)");
    }
    Ok(())
}

/// Checks an object key: 1 to 1024 bytes of UTF-8 (guaranteed by `&str`) with no
/// NUL or other control characters, which break listings and logs.
pub fn validate_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::Key {
            why: "must not be empty",
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(NameError::Key {
            why: "must be at most 1024 bytes of UTF-8",
        });
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(NameError::Key {
            why: "must not contain control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_buckets_pass() {
        for b in ["abc", "my-bucket", "my.bucket.1", "a1b", &"a".repeat(63)] {
            assert_eq!(validate_bucket(b), Ok(()), "{b}");
        }
    }

    #[test]
    fn bad_buckets_fail_with_reason() {
        for b in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "sthree-x",
            "abc-s3alias",
            "abc--ol-s3",
            "a b",
        ] {
            let e = validate_bucket(b).expect_err(b);
            assert_eq!(e.code(), ErrorCode::InvalidBucket);
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key("dir/sub/file.txt").is_ok());
        assert!(validate_key("ünïcødé/κλειδί").is_ok());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert_eq!(
            validate_key(&"k".repeat(1025)).unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        // 1024 bytes but multi-byte chars: 342 * 3 = 1026 bytes.
        assert!(validate_key(&"€".repeat(342)).is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\0b").is_err());
        assert!(validate_key("a\nb").is_err());
    }
}
