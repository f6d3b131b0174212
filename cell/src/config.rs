//! `CellConfig`: everything one replica needs to start. The schema (fields,
//! defaults, validation) is `common::config::cell`, shared with the launcher
//! that writes replicas' files; this module adds what only a running replica
//! does with it: read the file and the environment ([`LoadConfig`]).

use std::path::Path;

pub use common::config::cell::*;

/// Loading a [`CellConfig`] from the file system and the process environment.
pub trait LoadConfig: Sized {
    fn from_toml_file(path: &Path) -> Result<Self, ConfigError>;

    /// Takes secrets from `CELLKV_CLUSTER_SECRET`, `CELLKV_API_TOKEN` and
    /// `CELLKV_ADMIN_TOKEN` where set: they override the file (precedence
    /// file < environment < flags).
    fn apply_env(&mut self);
}

impl LoadConfig for CellConfig {
    fn from_toml_file(path: &Path) -> Result<CellConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        CellConfig::from_toml_str(&text, path)
    }

    fn apply_env(&mut self) {
        self.apply_env_from(|var| std::env::var(var).ok());
    }
}
