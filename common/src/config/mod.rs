//! The config file schemas of the servers (typed serde structs, defaults,
//! validation), here so that a server and the launcher writing its file
//! share one definition. Reading files and the environment stays in the servers.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::cell_map::CellMapError;
use crate::RingError;

pub mod cell;
pub mod control;
pub mod limits;
pub mod router;

pub use limits::ClientLimits;

/// Why a config file could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid [cell_map]: {0}")]
    CellMap(#[from] CellMapError),
    #[error("invalid [cell_map]: {0}")]
    Ring(#[from] RingError),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Parses a TOML file's text; `path` only names it in the error.
pub fn from_toml_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellMap;

    /// `config/*.example.toml`, sorted.
    fn example_files() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".example.toml"))
            .collect();
        files.sort();
        files
    }

    /// Every shipped example parses with the schema its name says and
    /// validates, so the examples keep up as fields change.
    #[test]
    fn every_example_file_parses_and_validates() {
        let files = example_files();
        assert!(files.len() >= 4, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).expect("read the example");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let checked = match name.as_str() {
                "cell.example.toml" => super::cell::CellConfig::from_toml_str(&text, &path)
                    .and_then(|c| c.validate())
                    .map_err(|e| e.to_string()),
                "router.example.toml" => super::router::RouterConfig::from_toml_str(&text, &path)
                    .and_then(|c| c.validate())
                    .map_err(|e| e.to_string()),
                "control.example.toml" => {
                    super::control::ControlConfig::from_toml_str(&text, &path)
                        .and_then(|c| c.validate())
                        .map_err(|e| e.to_string())
                }
                "cluster-map.example.toml" => from_toml_str::<CellMap>(&text, &path)
                    .and_then(|m| Ok(m.validate()?))
                    .map_err(|e| e.to_string()),
                other => panic!("{other}: no schema is known for this example; add it here"),
            };
            if let Err(e) = checked {
                panic!("{name}: {e}");
            }
        }
    }
}
