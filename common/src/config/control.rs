//! The schema of the control server's config (`cellkv-control`):
//! `ControlConfig` with its defaults and validation, shared by the server and
//! the launcher that writes its file. Reading files and the environment is the server's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::ConfigError;

/// Shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The control server's configuration (TOML file < environment < flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Admin API (cellkvctl) listen address.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API; env `CELLKV_ADMIN_TOKEN`.
    pub admin_token: String,
    /// API addresses (`host:port`) of the control cell's replicas.
    pub control_cell: Vec<String>,
    /// The control cell's `api_token`; env `CELLKV_CONTROL_TOKEN`.
    pub control_token: String,
    /// Data cells' `api_token` (scans, health); env `CELLKV_API_TOKEN`.
    pub cell_api_token: String,
    /// Data cells' `admin_token` (control port); env `CELLKV_CELL_ADMIN_TOKEN`.
    pub cell_admin_token: String,
    /// TOML file with the map to store when the control cell has none.
    pub initial_map: Option<PathBuf>,
    /// Default copy rate limit of a job (bytes of scanned values per second).
    pub bandwidth_bytes_per_sec: u64,
    /// A batch moves at most about this many bytes (by the source's range stats).
    pub batch_max_bytes: u64,
    /// A batch moves at most this many ranges: the write pause of a batch
    /// grows with the ranges its delta step must compare.
    pub batch_max_ranges: usize,
    /// One call to a cell or the control cell, leader hops included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// One TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a step keeps retrying a failing cell before the job needs an operator.
    #[serde(with = "humantime_serde")]
    pub step_retry_timeout: Duration,
    /// Job lease lifetime; renewed every third of it.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Objects deleted per purge call.
    pub purge_chunk: u64,
    /// Largest scan page asked for (bytes).
    pub scan_page_bytes: u64,
    /// Largest ingest request sent (bytes of values).
    pub ingest_max_bytes: u64,
    /// Drain in-flight admin requests and the current job step this long on SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// What each client may hold of this server (`[client_limits]`).
    pub client_limits: super::ClientLimits,
    /// Largest admin API request body.
    pub max_admin_body_bytes: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            admin_listen: "127.0.0.1:7900".parse().expect("valid address"),
            admin_token: String::new(),
            control_cell: Vec::new(),
            control_token: String::new(),
            cell_api_token: String::new(),
            cell_admin_token: String::new(),
            initial_map: None,
            bandwidth_bytes_per_sec: 64 << 20,
            batch_max_bytes: 64 << 20,
            batch_max_ranges: 512,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            step_retry_timeout: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(10),
            purge_chunk: 1000,
            scan_page_bytes: 4 << 20,
            ingest_max_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(10),
            client_limits: super::ClientLimits::default(),
            max_admin_body_bytes: 1 << 20,
        }
    }
}

impl ControlConfig {
    /// Parses a config file's text; `path` only names it in the error.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<ControlConfig, ConfigError> {
        super::from_toml_str(text, path)
    }

    /// Secrets from the environment (`get` reads a variable) override the file.
    pub fn apply_env_from(&mut self, get: impl Fn(&str) -> Option<String>) {
        for (var, field) in [
            ("CELLKV_ADMIN_TOKEN", &mut self.admin_token),
            ("CELLKV_CONTROL_TOKEN", &mut self.control_token),
            ("CELLKV_API_TOKEN", &mut self.cell_api_token),
            ("CELLKV_CELL_ADMIN_TOKEN", &mut self.cell_admin_token),
        ] {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                *field = v;
            }
        }
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_limits.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, env, tok) in [
            ("admin_token", "CELLKV_ADMIN_TOKEN", &self.admin_token),
            ("control_token", "CELLKV_CONTROL_TOKEN", &self.control_token),
            ("cell_api_token", "CELLKV_API_TOKEN", &self.cell_api_token),
            (
                "cell_admin_token",
                "CELLKV_CELL_ADMIN_TOKEN",
                &self.cell_admin_token,
            ),
        ] {
            if tok.len() < MIN_TOKEN_LEN {
                return bad(format!(
                    "{name} must be at least {MIN_TOKEN_LEN} characters (set it in the file or in {env})"
                ));
            }
        }
        for (name, tok) in [
            ("control_token", &self.control_token),
            ("cell_api_token", &self.cell_api_token),
            ("cell_admin_token", &self.cell_admin_token),
        ] {
            if crate::secret::ct_eq(tok.as_bytes(), self.admin_token.as_bytes()) {
                return bad(format!(
                    "admin_token must differ from {name}: a leaked data token must not open the admin API"
                ));
            }
        }
        if self.control_cell.is_empty() {
            return bad("control_cell is empty: list the control cell's replica API addresses (\"host:port\")".into());
        }
        for a in &self.control_cell {
            if !a.contains(':') || a.starts_with("http") {
                return bad(format!(
                    "control_cell entry {a:?} is not \"host:port\" (no scheme)"
                ));
            }
        }
        if self.bandwidth_bytes_per_sec == 0 {
            return bad("bandwidth_bytes_per_sec must be > 0".into());
        }
        if self.batch_max_bytes == 0 || self.batch_max_ranges == 0 {
            return bad("batch_max_bytes and batch_max_ranges must be > 0".into());
        }
        if self.purge_chunk == 0 || self.scan_page_bytes == 0 || self.ingest_max_bytes == 0 {
            return bad("purge_chunk, scan_page_bytes and ingest_max_bytes must be > 0".into());
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad("lease_ttl must be at least 1s".into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("request_timeout and connect_timeout must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ControlConfig {
        ControlConfig {
            admin_token: "admin-token-0123456789".into(),
            control_token: "control-token-0123456789".into(),
            cell_api_token: "api-token-0123456789".into(),
            cell_admin_token: "cell-admin-token-0123456789".into(),
            control_cell: vec!["127.0.0.1:7801".into()],
            ..ControlConfig::default()
        }
    }

    #[test]
    fn defaults_and_validation() {
        assert!(good().validate().is_ok());
        let mut c = good();
        c.admin_token = "short".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("admin_token") && e.contains("16"), "{e}");
        let mut c = good();
        c.admin_token = c.cell_api_token.clone();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("differ from cell_api_token"), "{e}");
        let mut c = good();
        c.control_cell.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("control_cell"));
        let mut c = good();
        c.control_cell = vec!["http://x:1".into()];
        assert!(c.validate().is_err());
        let mut c = good();
        c.bandwidth_bytes_per_sec = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn toml_and_env() {
        let c = ControlConfig::from_toml_str(
            r#"
            admin_listen = "127.0.0.1:0"
            control_cell = ["a:1", "b:2"]
            request_timeout = "3s"
            batch_max_bytes = 1000
            "#,
            Path::new("control.toml"),
        )
        .unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.batch_max_bytes, 1000);
        assert_eq!(c.bandwidth_bytes_per_sec, 64 << 20);
        let err = ControlConfig::from_toml_str("admn_token = \"x\"", Path::new("c.toml"));
        assert!(err.unwrap_err().to_string().contains("admn_token"));
        let mut c = c;
        c.apply_env_from(|k| match k {
            "CELLKV_ADMIN_TOKEN" => Some("from-env-admin-token".into()),
            "CELLKV_API_TOKEN" => Some(String::new()),
            _ => None,
        });
        assert_eq!(c.admin_token, "from-env-admin-token");
        assert_eq!(c.cell_api_token, "");
    }
}
