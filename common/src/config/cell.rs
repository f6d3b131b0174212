//! The schema of a replica's config (`cellkv-cell`): `CellConfig` with its
//! defaults and validation, shared by the replica and the launcher that
//! writes its file. Reading the file and the environment is the replica's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::ConfigError;
use crate::{CellId, NodeId};

/// Most bytes in one Raft entry the replica's proposer batches (values
/// dominate); one large object still goes alone. Here because the Raft body
/// limit (`CellConfig::max_raft_body_bytes`) is derived from it.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// One member of the cell, as this replica knows it at bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub node_id: NodeId,
    /// Where the peer serves the cell API, `/health` and `/metrics`.
    pub api_addr: String,
    /// Where the peer serves Raft RPC and the admin endpoints.
    pub raft_addr: String,
}

/// Raft timing and log-compaction knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Heartbeat period of the leader.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time in [min, max) starts an election.
    /// openraft 0.9 first waits out the old leader's lease (= max), and a split vote
    /// costs another round: with the defaults (50 ms / 250–500 ms) a killed leader
    /// was replaced in 0.8–1.5 s under write load on 2 cores.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many applied entries; the log before it is purged.
    /// Each snapshot writes the whole state once, so this trades log size for I/O.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the last snapshot, so a briefly lagging
    /// follower catches up by log instead of by snapshot.
    pub logs_to_keep_after_snapshot: u64,
    /// Size of one chunk when a snapshot is streamed to a replica.
    pub snapshot_chunk_bytes: u64,
    /// Most entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
    /// Connect timeout to peers, and upper bound of one AppendEntries or Vote RPC
    /// (openraft sets shorter deadlines for heartbeats on its own).
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Upper bound of one snapshot chunk RPC.
    #[serde(with = "humantime_serde")]
    pub snapshot_rpc_timeout: Duration,
    /// A leader answers an AppendEntries without entries (a heartbeat, or the
    /// commit-index update openraft sends after every commit) itself, instead
    /// of sending it, when the same follower acknowledged the same log
    /// position for this leader in an RPC sent less than this long ago
    /// (ADR 0016). `0s` sends every one. Must be shorter than
    /// `heartbeat_interval`, so an idle follower still hears the leader.
    #[serde(with = "humantime_serde")]
    pub heartbeat_elide_window: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(250),
            election_timeout_max: Duration::from_millis(500),
            snapshot_logs_since_last: 100_000,
            logs_to_keep_after_snapshot: 10_000,
            snapshot_chunk_bytes: 4 << 20,
            max_payload_entries: 256,
            rpc_timeout: Duration::from_secs(2),
            snapshot_rpc_timeout: Duration::from_secs(10),
            heartbeat_elide_window: Duration::from_millis(5),
        }
    }
}

/// How writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledge a write only after a quorum has fsynced it (group commit).
    #[default]
    Fsync,
    /// UNSAFE: acknowledge after the write reached the OS page cache on a quorum.
    /// Survives process crashes but not power loss or kernel panics. For benchmarks only.
    UnsafeNoFsync,
}

/// Everything one replica needs to start, with defaults. Precedence: file <
/// environment (secrets) < command-line flags. `validate()` runs once at
/// start-up and fails fast with a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CellConfig {
    pub cell_id: CellId,
    pub node_id: NodeId,
    /// Listen address of the cell API (router traffic), `/health` and `/metrics`.
    pub api_listen: SocketAddr,
    /// Listen address of Raft RPC and the admin endpoints.
    pub raft_listen: SocketAddr,
    /// Address peers and routers use to reach this replica's API (defaults to `api_listen`).
    pub api_advertise: Option<String>,
    /// Address peers use to reach this replica's Raft RPC (defaults to `raft_listen`).
    pub raft_advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Shared by the replicas of this cell; authenticates Raft RPC. Env: `CELLKV_CLUSTER_SECRET`.
    pub cluster_secret: String,
    /// Bearer token the router presents on the cell API. Env: `CELLKV_API_TOKEN`.
    pub api_token: String,
    /// Bearer token for `/admin/*` on the Raft port. Env: `CELLKV_ADMIN_TOKEN`.
    pub admin_token: String,
    /// The cell's members at bootstrap (including this replica).
    pub peers: Vec<PeerConfig>,
    pub durability: Durability,
    /// Largest object value accepted; larger puts get 413 `payload_too_large`.
    pub max_object_bytes: u64,
    /// Deadline of one cell API request (a write's outcome is unknown past it).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Deadline for draining in-flight requests on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// What each client may hold of this server (`[client_limits]`).
    pub client_limits: super::ClientLimits,
    /// Refuse to start, and report unhealthy, below this much free disk.
    pub min_free_disk_bytes: u64,
    /// Async worker threads; default: one per CPU. Several replicas sharing a
    /// small machine waste CPU on cross-thread wake-ups; fewer threads help there.
    pub worker_threads: Option<usize>,
    pub raft: RaftConfig,
}

impl Default for CellConfig {
    fn default() -> Self {
        CellConfig {
            cell_id: CellId(1),
            node_id: NodeId(1),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            raft_listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            api_advertise: None,
            raft_advertise: None,
            data_dir: PathBuf::from("./data"),
            cluster_secret: String::new(),
            api_token: String::new(),
            admin_token: String::new(),
            peers: Vec::new(),
            durability: Durability::Fsync,
            max_object_bytes: 4 << 20,
            request_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            client_limits: super::ClientLimits::default(),
            min_free_disk_bytes: 64 << 20,
            worker_threads: None,
            raft: RaftConfig::default(),
        }
    }
}

/// Secrets shorter than this are refused: they are the only thing between the
/// network and the data.
pub const MIN_SECRET_LEN: usize = 16;

impl CellConfig {
    /// Parses a config file's text; `path` only names it in the error.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<CellConfig, ConfigError> {
        super::from_toml_str(text, path)
    }

    /// Takes secrets from the environment (`get` reads a variable) where set:
    /// they override the file (precedence file < environment < flags).
    pub fn apply_env_from(&mut self, get: impl Fn(&str) -> Option<String>) {
        for (var, slot) in [
            ("CELLKV_CLUSTER_SECRET", &mut self.cluster_secret),
            ("CELLKV_API_TOKEN", &mut self.api_token),
            ("CELLKV_ADMIN_TOKEN", &mut self.admin_token),
        ] {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                *slot = v;
            }
        }
    }

    pub fn api_advertise(&self) -> String {
        self.api_advertise
            .clone()
            .unwrap_or_else(|| self.api_listen.to_string())
    }

    pub fn raft_advertise(&self) -> String {
        self.raft_advertise
            .clone()
            .unwrap_or_else(|| self.raft_listen.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_limits.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, v) in [
            (
                "cluster_secret (CELLKV_CLUSTER_SECRET)",
                &self.cluster_secret,
            ),
            ("api_token (CELLKV_API_TOKEN)", &self.api_token),
            ("admin_token (CELLKV_ADMIN_TOKEN)", &self.admin_token),
        ] {
            if v.len() < MIN_SECRET_LEN {
                return bad(format!(
                    "{name} must be set and at least {MIN_SECRET_LEN} characters long"
                ));
            }
        }
        if self.api_token == self.admin_token {
            return bad("api_token and admin_token must differ".into());
        }
        let r = &self.raft;
        if r.election_timeout_min <= r.heartbeat_interval {
            return bad(
                "raft.election_timeout_min must be greater than raft.heartbeat_interval".into(),
            );
        }
        if r.heartbeat_elide_window >= r.heartbeat_interval {
            return bad(
                "raft.heartbeat_elide_window must be shorter than raft.heartbeat_interval".into(),
            );
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return bad(
                "raft.election_timeout_max must be greater than raft.election_timeout_min".into(),
            );
        }
        if r.snapshot_logs_since_last == 0
            || r.max_payload_entries == 0
            || r.snapshot_chunk_bytes == 0
        {
            return bad("raft.snapshot_logs_since_last, raft.max_payload_entries and raft.snapshot_chunk_bytes must be positive".into());
        }
        if self.worker_threads == Some(0) {
            return bad("worker_threads must be at least 1".into());
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > (64 << 20) {
            return bad("max_object_bytes must be between 1 and 64 MiB".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !seen.insert(p.node_id) {
                return bad(format!("peer node_id {} appears twice", p.node_id));
            }
            for addr in [&p.api_addr, &p.raft_addr] {
                if addr
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u16>().ok())
                    .is_none()
                {
                    return bad(format!(
                        "peer {} address {addr:?} is not host:port",
                        p.node_id
                    ));
                }
            }
        }
        if !self.peers.is_empty() && !seen.contains(&self.node_id) {
            return bad(format!(
                "peers must include this replica (node_id {})",
                self.node_id
            ));
        }
        Ok(())
    }

    /// The largest Raft RPC body a peer may send or accept. Senders split an
    /// AppendEntries batch that would be larger (openraft retries with fewer
    /// entries), so this needs to fit only one maximal entry — a proposer
    /// batch plus one object that overflowed it — or one snapshot chunk.
    pub fn max_raft_body_bytes(&self) -> usize {
        let one_entry = MAX_BATCH_BYTES as u64 + 2 * self.max_object_bytes + (1 << 20);
        one_entry
            .max(32 << 20)
            .max(self.raft.snapshot_chunk_bytes + (1 << 20)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CellConfig {
        CellConfig {
            cluster_secret: "s".repeat(16),
            api_token: "a".repeat(16),
            admin_token: "d".repeat(16),
            ..CellConfig::default()
        }
    }

    #[test]
    fn defaults_with_secrets_validate() {
        valid().validate().unwrap();
    }

    #[test]
    fn refuses_short_secrets_and_equal_tokens() {
        let mut c = valid();
        c.cluster_secret = "short".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster_secret"));
        let mut c = valid();
        c.admin_token = c.api_token.clone();
        assert!(c.validate().is_err());
    }

    #[test]
    fn refuses_bad_timeouts_and_peers() {
        let mut c = valid();
        c.raft.election_timeout_min = Duration::from_millis(50);
        assert!(c.validate().is_err());
        let mut c = valid();
        c.raft.heartbeat_elide_window = c.raft.heartbeat_interval;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heartbeat_elide_window"));
        c.raft.heartbeat_elide_window = Duration::ZERO;
        c.validate().expect("0s turns eliding off");
        let mut c = valid();
        c.peers = vec![PeerConfig {
            node_id: NodeId(2),
            api_addr: "127.0.0.1:1".into(),
            raft_addr: "127.0.0.1:2".into(),
        }];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("include this replica"));
        c.peers[0].node_id = NodeId(1);
        c.peers[0].raft_addr = "nope".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn raft_body_limit_fits_one_maximal_entry_but_stays_bounded() {
        let mut c = valid();
        let one_entry = MAX_BATCH_BYTES as u64 + 2 * c.max_object_bytes;
        assert!(c.max_raft_body_bytes() as u64 > one_entry);
        assert!(
            c.max_raft_body_bytes() <= 64 << 20,
            "{}",
            c.max_raft_body_bytes()
        );
        c.max_object_bytes = 64 << 20;
        assert!(c.max_raft_body_bytes() as u64 > MAX_BATCH_BYTES as u64 + (128 << 20));
    }

    #[test]
    fn parses_toml_with_humantime_and_rejects_unknown_fields() {
        let c: CellConfig = toml::from_str(
            r#"
            cell_id = 3
            node_id = 2
            data_dir = "/tmp/x"
            [raft]
            heartbeat_interval = "50ms"
            election_timeout_min = "300ms"
            election_timeout_max = "600ms"
            "#,
        )
        .unwrap();
        assert_eq!(c.cell_id, CellId(3));
        assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.raft.snapshot_logs_since_last, 100_000);
        assert!(toml::from_str::<CellConfig>("bogus = 1").is_err());
    }

    #[test]
    fn environment_overrides_secrets_unless_empty() {
        let mut c = valid();
        c.apply_env_from(|k| match k {
            "CELLKV_API_TOKEN" => Some("from-env-api-token".into()),
            "CELLKV_ADMIN_TOKEN" => Some(String::new()),
            _ => None,
        });
        assert_eq!(c.api_token, "from-env-api-token");
        assert_eq!(c.admin_token, valid().admin_token);
        assert_eq!(c.cluster_secret, valid().cluster_secret);
    }
}
