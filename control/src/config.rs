//! `ControlConfig`: the control server's configuration. The schema (fields,
//! defaults, validation) is `common::config::control`, shared with the
//! launcher that writes the server's file; this module adds what only the
//! running server does: read the file and the environment ([`LoadConfig`]),
//! and load the optional initial cell map (storing it is `store`'s job).

use std::path::Path;

use common::CellMap;

pub use common::config::control::*;

/// Loading a [`ControlConfig`] from the file system and the process environment.
pub trait LoadConfig: Sized {
    fn from_toml_file(path: &Path) -> Result<Self, ConfigError>;

    /// Secrets from the environment (`CELLKV_ADMIN_TOKEN`,
    /// `CELLKV_CONTROL_TOKEN`, `CELLKV_API_TOKEN`, `CELLKV_CELL_ADMIN_TOKEN`)
    /// override the file.
    fn apply_env(&mut self);
}

impl LoadConfig for ControlConfig {
    fn from_toml_file(path: &Path) -> Result<ControlConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ControlConfig::from_toml_str(&text, path)
    }

    fn apply_env(&mut self) {
        self.apply_env_from(|k| std::env::var(k).ok());
    }
}

/// Reads an initial cell map (TOML with the `CellMap` shape) and validates it.
pub fn load_map_file(path: &Path) -> Result<CellMap, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let map: CellMap = common::config::from_toml_str(&text, path)?;
    map.validate()
        .map_err(|e| ConfigError::Invalid(format!("initial map {}: {e}", path.display())))?;
    Ok(map)
}
