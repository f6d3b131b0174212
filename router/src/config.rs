//! `RouterConfig`: everything a router needs to start. The schema (fields,
//! defaults, validation) is `common::config::router`, shared with the
//! launcher that writes routers' files; this module adds what only a running
//! router does with it: read the file and the environment ([`LoadConfig`]).

use std::path::Path;

pub use common::config::router::*;

/// Loading a [`RouterConfig`] from the file system and the process environment.
pub trait LoadConfig: Sized {
    fn from_toml_file(path: &Path) -> Result<Self, ConfigError>;

    /// Fills the cell API token from `CELLKV_API_TOKEN` and the control
    /// token from `CELLKV_CONTROL_TOKEN` when they are set.
    fn apply_env(&mut self);
}

impl LoadConfig for RouterConfig {
    fn from_toml_file(path: &Path) -> Result<RouterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        RouterConfig::from_toml_str(&text, path)
    }

    fn apply_env(&mut self) {
        self.apply_env_from(|var| std::env::var(var).ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schemas_permit_limit_is_the_bulkheads() {
        assert_eq!(MAX_PERMITS, tokio::sync::Semaphore::MAX_PERMITS);
    }

    #[test]
    fn reads_the_example_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/router.example.toml");
        let c = RouterConfig::from_toml_file(&path).expect("parse the example");
        c.validate().expect("the example validates");
        let err = RouterConfig::from_toml_file(&path.with_extension("missing")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
