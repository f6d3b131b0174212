//! [`ClientLimits`]: what every server allows each client (`[client_limits]`
//! in the cell's, the router's and the control server's config), so slow or
//! idle clients cannot hold a server's capacity.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Per-connection and per-request limits of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// Longest wait for a request's head (request line and headers), and
    /// longest idle time between two requests of a kept-alive connection:
    /// past it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time to receive a request body (an object): past it the
    /// request is answered 408 `request_timeout` and nothing is stored.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most connections open at once; a connection over it is closed at once.
    pub max_connections: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

impl ClientLimits {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("client_limits.{m}")));
        if self.header_read_timeout < Duration::from_millis(100) {
            return bad("header_read_timeout must be at least 100ms");
        }
        if self.body_read_timeout < Duration::from_secs(1) {
            return bad("body_read_timeout must be at least 1s");
        }
        if self.max_connections < 16 {
            return bad("max_connections must be at least 16");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_a_partial_table() {
        ClientLimits::default().validate().unwrap();
        let l: ClientLimits = toml::from_str("header_read_timeout = \"2s\"").unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_secs(2));
        assert_eq!(l.max_connections, ClientLimits::default().max_connections);
    }

    #[test]
    fn nonsense_is_refused_with_the_key_named() {
        let l = ClientLimits {
            max_connections: 1,
            ..ClientLimits::default()
        };
        let e = l.validate().unwrap_err().to_string();
        assert!(e.contains("client_limits.max_connections"), "{e}");
        assert!(toml::from_str::<ClientLimits>("typo = 1").is_err());
    }
}
