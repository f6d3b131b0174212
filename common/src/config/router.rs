//! The schema of the router's config (`cellkv-router`): `RouterConfig` with
//! its defaults and validation, shared by the router and the launcher that
//! writes its file. Reading the file and the environment is the router's.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::ConfigError;
use crate::cell_map::check_api_addr;
use crate::CellMap;

/// Secrets shorter than this are refused: a bearer token is the only thing
/// between the network and the data (same floor as the cells use).
pub const MIN_TOKEN_LEN: usize = 16;

/// Environment variable that overrides `cell_api_token`.
pub const ENV_CELL_API_TOKEN: &str = "CELLKV_API_TOKEN";

/// Environment variable that overrides `control.token`.
pub const ENV_CONTROL_TOKEN: &str = "CELLKV_CONTROL_TOKEN";

/// The largest `max_in_flight` and `max_in_flight_per_cell`: the router's
/// bulkheads are tokio semaphores, and this is their `MAX_PERMITS` (the
/// router checks that they agree).
pub const MAX_PERMITS: usize = usize::MAX >> 3;

/// One entry of a token's bucket scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketPattern {
    /// `"*"`: every bucket.
    Any,
    /// `"photos"`: exactly this bucket.
    Exact(String),
    /// `"logs-*"`: every bucket whose name starts with `logs-`.
    Prefix(String),
}

impl BucketPattern {
    /// Parses a pattern; the error completes "bucket pattern {p} ...".
    pub fn parse(p: &str) -> Result<BucketPattern, &'static str> {
        if p == "*" {
            return Ok(BucketPattern::Any);
        }
        match p.strip_suffix('*') {
            Some(prefix) => {
                if prefix.contains('*') {
                    return Err("may contain `*` only once, at the end");
                }
                let ok = prefix.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
                });
                if !ok {
                    return Err("has a prefix with characters no bucket name can contain");
                }
                Ok(BucketPattern::Prefix(prefix.to_string()))
            }
            None => {
                if p.contains('*') {
                    return Err("may contain `*` only at the end");
                }
                crate::names::validate_bucket(p).map_err(|_| "is not a valid bucket name")?;
                Ok(BucketPattern::Exact(p.to_string()))
            }
        }
    }

    pub fn matches(&self, bucket: &str) -> bool {
        match self {
            BucketPattern::Any => true,
            BucketPattern::Exact(b) => b == bucket,
            BucketPattern::Prefix(p) => bucket.starts_with(p.as_str()),
        }
    }
}

/// What a client token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// GET, HEAD and listings.
    Read,
    /// Everything `Read` allows, plus PUT and DELETE.
    ReadWrite,
}

/// One client bearer token with its bucket scope, access and rate limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret clients send as `Authorization: Bearer <token>`.
    pub token: String,
    /// A human name for logs (never the secret itself).
    pub name: String,
    /// Bucket patterns this token may touch: `"*"` (every bucket), an exact
    /// bucket name, or a prefix ending in `*` (`"logs-*"`).
    #[serde(default = "default_buckets")]
    pub buckets: Vec<String>,
    #[serde(default = "default_access")]
    pub access: Access,
    /// Sustained requests per second allowed for this token.
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    /// Requests allowed in a burst above the sustained rate (bucket size).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_buckets() -> Vec<String> {
    vec!["*".to_string()]
}
fn default_access() -> Access {
    Access::Read
}
fn default_rate() -> f64 {
    1000.0
}
fn default_burst() -> u32 {
    2000
}

/// Circuit breaker and active health checking, one breaker per cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed requests (connect error, timeout, 5xx) that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker fails every request fast before it lets probes through.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Period of the health checker's poll of every replica's `/health`.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Deadline of one `/health` call; must not exceed `health_interval`.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Consecutive healthy checks needed to close the breaker again
    /// (hysteresis: one good answer from a flapping cell is not enough).
    pub recovery_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_duration: Duration::from_secs(2),
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_millis(300),
            recovery_successes: 3,
        }
    }
}

/// Where the router watches the cell map (`[control]`). Without this section
/// the static `cell_map` is used for the router's whole life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// `host:port` of the control cell replicas' cell API (any order; the
    /// router follows `not_leader` hints among them).
    pub endpoints: Vec<String>,
    /// The control cell's `api_token`. Env: `CELLKV_CONTROL_TOKEN`.
    pub token: String,
    /// How often the map object is polled (a HEAD; a GET only when its etag changed).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Deadline of one request to one control cell replica.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Where every accepted map is saved (atomically); read at start-up, and
    /// used when its epoch is newer than the static `cell_map`'s.
    pub cache_file: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            endpoints: Vec::new(),
            token: String::new(),
            poll_interval: Duration::from_millis(250),
            request_timeout: Duration::from_millis(500),
            cache_file: None,
        }
    }
}

/// One S3 credential (`[[s3.credentials]]`): an access key and its secret,
/// scoped to buckets and read or read-write as a client token is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3CredentialConfig {
    /// The access key id clients sign with (public, logged).
    pub access_key: String,
    /// The secret access key. Leave it out and name `secret_key_env` instead
    /// to keep it out of the file.
    #[serde(default)]
    pub secret_key: String,
    /// An environment variable holding the secret (read at start-up; it wins
    /// over `secret_key`).
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Bucket patterns, as a token's: `"*"`, a name, or a prefix ending in `*`.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<String>,
    #[serde(default = "default_access")]
    pub access: Access,
}

/// The S3 listener (`[s3]`, docs/s3.md). Off without `listen`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Where the S3 API listens (its own port). None: S3 is off.
    pub listen: Option<SocketAddr>,
    /// The region requests must be signed for, and GetBucketLocation answers.
    pub region: String,
    pub credentials: Vec<S3CredentialConfig>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            listen: None,
            region: "us-east-1".to_string(),
            credentials: Vec::new(),
        }
    }
}

/// S3 secrets are at least this long (AWS's are 40 characters).
pub const MIN_S3_SECRET_LEN: usize = 16;

impl S3Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_none() {
            return Ok(());
        }
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(invalid(
                "s3.region must be lower-case letters, digits and dashes (like us-east-1)",
            ));
        }
        if self.credentials.is_empty() {
            return Err(invalid(
                "[s3] listens but has no [[s3.credentials]]: add at least one",
            ));
        }
        let mut keys = HashSet::new();
        for (i, c) in self.credentials.iter().enumerate() {
            let what = format!("s3.credentials[{i}] ({:?})", c.access_key);
            let key_ok = (3..=128).contains(&c.access_key.len())
                && c.access_key.bytes().all(|b| b.is_ascii_alphanumeric());
            if !key_ok {
                return Err(invalid(format!(
                    "{what}: access_key must be 3 to 128 letters and digits"
                )));
            }
            if !keys.insert(c.access_key.as_str()) {
                return Err(invalid(format!("{what}: the access key is listed twice")));
            }
            if c.secret_key.len() < MIN_S3_SECRET_LEN {
                return Err(invalid(format!(
                    "{what}: secret_key must be at least {MIN_S3_SECRET_LEN} characters (in the file or the variable named by secret_key_env)"
                )));
            }
            if !c.secret_key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "{what}: secret_key must be printable ASCII without spaces"
                )));
            }
            if c.buckets.is_empty() {
                return Err(invalid(format!(
                    "{what}: buckets is empty; list bucket names or patterns, or [\"*\"] for all"
                )));
            }
            for p in &c.buckets {
                BucketPattern::parse(p)
                    .map_err(|why| invalid(format!("{what}: bucket pattern {p:?} {why}")))?;
            }
        }
        Ok(())
    }
}

/// Everything a router needs to start (listen address, the cell map, client
/// tokens, limits, timeouts, bulkhead and breaker knobs), with defaults.
/// Precedence: file < environment (the cell API and control tokens) <
/// command-line flags. `validate()` runs once at start-up and fails fast
/// with a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Public API listen address (overridden by `--listen`).
    pub listen: SocketAddr,
    /// Bearer token the router presents to every cell. Env: `CELLKV_API_TOKEN`.
    pub cell_api_token: String,
    /// The cells and their replicas; keys are placed with `cell_map.routing()`.
    /// With `[control]` this is only the starting map (unless the cache file
    /// holds a newer one): newer maps from the control cell replace it.
    pub cell_map: CellMap,
    /// Client tokens; at least one.
    pub tokens: Vec<TokenConfig>,
    /// Largest object value accepted; larger PUTs get 413 `payload_too_large`.
    pub max_object_bytes: u64,
    /// Deadline of one forwarded operation, retries and leader hops included
    /// (queueing in the bulkhead is bounded separately by `queue_timeout`).
    #[serde(with = "humantime_serde")]
    pub cell_request_timeout: Duration,
    /// Deadline of one TCP connect to a replica. A connect inside one
    /// network takes well under a millisecond; a replica behind a dropped
    /// link never answers, and every request tries each replica once, so
    /// this bounds how long a cut-off cell holds requests before it fails
    /// them (measured on the Compose deployment: 1 s made them wait 3 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Requests one cell may have in flight at once (its bulkhead).
    pub max_in_flight_per_cell: usize,
    /// Requests that may wait for one cell's bulkhead; more fail at once with 503.
    pub max_queue_per_cell: usize,
    /// Longest wait for a bulkhead permit before 503 `cell_unavailable`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Requests in flight to all cells together.
    pub max_in_flight: usize,
    pub breaker: BreakerConfig,
    /// Deadline for draining in-flight requests on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// What each client may hold of this server (`[client_limits]`).
    pub client_limits: super::ClientLimits,
    /// Watch the cell map in the control cell (optional).
    pub control: Option<ControlConfig>,
    /// `"host:port" = "host:port"`: dial a replica whose map address is the
    /// key at the value instead (like curl's `--connect-to`), for a sidecar,
    /// an egress proxy or a latency-injecting proxy in fault tests. Only the
    /// TCP destination changes: the map, leader hints and logs keep naming
    /// the replica's own address, so the override survives map changes.
    pub connect_to: BTreeMap<String, String>,
    /// The S3 API on its own listener (off unless `s3.listen` is set).
    pub s3: S3Config,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cell_api_token: String::new(),
            cell_map: CellMap::default(),
            tokens: Vec::new(),
            max_object_bytes: 4 << 20,
            cell_request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(250),
            max_in_flight_per_cell: 256,
            max_queue_per_cell: 512,
            queue_timeout: Duration::from_secs(1),
            max_in_flight: 4096,
            breaker: BreakerConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            client_limits: super::ClientLimits::default(),
            control: None,
            connect_to: BTreeMap::new(),
            s3: S3Config::default(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl RouterConfig {
    pub fn from_toml_str(text: &str, path: &Path) -> Result<RouterConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Takes the cell API token from `CELLKV_API_TOKEN` and the control
    /// token from `CELLKV_CONTROL_TOKEN` (`get` reads a variable) where set.
    pub fn apply_env_from(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(ENV_CELL_API_TOKEN).filter(|v| !v.is_empty()) {
            self.cell_api_token = v;
        }
        if let Some(control) = &mut self.control {
            if let Some(v) = get(ENV_CONTROL_TOKEN).filter(|v| !v.is_empty()) {
                control.token = v;
            }
        }
        for c in &mut self.s3.credentials {
            if let Some(var) = &c.secret_key_env {
                if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                    c.secret_key = v;
                }
            }
        }
    }

    /// Checks every field; reports the first problem with the field's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_limits.validate()?;
        if self.cell_api_token.len() < MIN_TOKEN_LEN {
            return Err(invalid(format!(
                "cell_api_token must be at least {MIN_TOKEN_LEN} characters (set it in the file or {ENV_CELL_API_TOKEN})"
            )));
        }
        self.cell_map.validate()?;
        self.cell_map.ring()?;
        self.cell_map.routing()?;
        self.validate_tokens()?;
        if self.max_object_bytes == 0 {
            return Err(invalid("max_object_bytes must be > 0"));
        }
        if usize::try_from(self.max_object_bytes).is_err() {
            return Err(invalid(
                "max_object_bytes does not fit in memory on this platform",
            ));
        }
        for (name, d) in [
            ("cell_request_timeout", self.cell_request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("queue_timeout", self.queue_timeout),
            ("breaker.open_duration", self.breaker.open_duration),
            ("breaker.health_interval", self.breaker.health_interval),
            ("breaker.health_timeout", self.breaker.health_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(format!("{name} must be > 0")));
            }
        }
        if self.connect_timeout > self.cell_request_timeout {
            return Err(invalid(
                "connect_timeout must not exceed cell_request_timeout",
            ));
        }
        if self.breaker.health_timeout > self.breaker.health_interval {
            return Err(invalid(
                "breaker.health_timeout must not exceed breaker.health_interval (checks would overlap)",
            ));
        }
        let max_permits = MAX_PERMITS;
        if self.max_in_flight_per_cell == 0 || self.max_in_flight_per_cell > max_permits {
            return Err(invalid(format!(
                "max_in_flight_per_cell must be in 1..={max_permits}"
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > max_permits {
            return Err(invalid(format!(
                "max_in_flight must be in 1..={max_permits}"
            )));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(invalid("breaker.failure_threshold must be >= 1"));
        }
        if self.breaker.recovery_successes == 0 {
            return Err(invalid("breaker.recovery_successes must be >= 1"));
        }
        if let Some(c) = &self.control {
            self.validate_control(c)?;
        }
        self.s3.validate()?;
        if self.s3.listen.is_some_and(|l| l == self.listen) {
            return Err(invalid("s3.listen must differ from listen"));
        }
        for (from, to) in &self.connect_to {
            for a in [from, to] {
                check_api_addr(a).map_err(|why| {
                    invalid(format!(
                        "connect_to: {a:?} (in {from:?} = {to:?}) is not \"host:port\" ({why})"
                    ))
                })?;
            }
        }
        Ok(())
    }

    fn validate_control(&self, c: &ControlConfig) -> Result<(), ConfigError> {
        if c.endpoints.is_empty() {
            return Err(invalid(
                "control.endpoints is empty: list the control cell replicas' API addresses, or remove [control]",
            ));
        }
        let mut seen = HashSet::new();
        for e in &c.endpoints {
            check_api_addr(e).map_err(|why| {
                invalid(format!(
                    "control.endpoints: {e:?} is not \"host:port\" ({why})"
                ))
            })?;
            if !seen.insert(e.as_str()) {
                return Err(invalid(format!("control.endpoints lists {e:?} twice")));
            }
        }
        if c.token.len() < MIN_TOKEN_LEN {
            return Err(invalid(format!(
                "control.token must be at least {MIN_TOKEN_LEN} characters (set it in the file or {ENV_CONTROL_TOKEN})"
            )));
        }
        if !c.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "control.token must be printable ASCII without spaces",
            ));
        }
        if self.tokens.iter().any(|t| t.token == c.token) {
            return Err(invalid(
                "control.token must differ from every client token (clients must not reach the control cell)",
            ));
        }
        for (name, d) in [
            ("control.poll_interval", c.poll_interval),
            ("control.request_timeout", c.request_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(format!("{name} must be > 0")));
            }
        }
        if c.cache_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "control.cache_file must not be empty (or leave it out)",
            ));
        }
        Ok(())
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() {
            return Err(invalid("no [[tokens]]: add at least one client token"));
        }
        let mut secrets = HashSet::new();
        let mut names = HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let what = format!("tokens[{i}] ({:?})", t.name);
            if t.name.trim().is_empty() {
                return Err(invalid(format!("tokens[{i}].name must not be empty")));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!(
                    "{what}: the name is used twice; names must be unique"
                )));
            }
            if t.token.len() < MIN_TOKEN_LEN {
                return Err(invalid(format!(
                    "{what}: token must be at least {MIN_TOKEN_LEN} characters"
                )));
            }
            if !t.token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "{what}: token must be printable ASCII without spaces"
                )));
            }
            if t.token == self.cell_api_token {
                return Err(invalid(format!(
                    "{what}: a client token must differ from cell_api_token"
                )));
            }
            if !secrets.insert(t.token.as_str()) {
                return Err(invalid(format!("{what}: the same token is listed twice")));
            }
            if t.buckets.is_empty() {
                return Err(invalid(format!(
                    "{what}: buckets is empty; list bucket names or patterns, or [\"*\"] for all"
                )));
            }
            for p in &t.buckets {
                BucketPattern::parse(p)
                    .map_err(|why| invalid(format!("{what}: bucket pattern {p:?} {why}")))?;
            }
            if !(t.rate_per_sec.is_finite() && t.rate_per_sec > 0.0) {
                return Err(invalid(format!(
                    "{what}: rate_per_sec must be a number > 0"
                )));
            }
            if t.burst == 0 {
                return Err(invalid(format!("{what}: burst must be >= 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CellId, CellSpec, CellState, NodeId, ReplicaSpec};

    fn token(name: &str, secret: &str) -> TokenConfig {
        TokenConfig {
            token: secret.to_string(),
            name: name.to_string(),
            buckets: default_buckets(),
            access: Access::ReadWrite,
            rate_per_sec: 100.0,
            burst: 10,
        }
    }

    fn valid() -> RouterConfig {
        RouterConfig {
            cell_api_token: "router-to-cell-token".into(),
            cell_map: CellMap {
                epoch: 1,
                cells: vec![CellSpec {
                    id: CellId(1),
                    weight: 1,
                    replicas: vec![ReplicaSpec {
                        node_id: NodeId(1),
                        api_addr: "127.0.0.1:7001".into(),
                        control_addr: None,
                    }],
                    state: CellState::Active,
                }],
                ..CellMap::default()
            },
            tokens: vec![token("app", "client-token-0123456789")],
            ..RouterConfig::default()
        }
    }

    fn must_fail(cfg: &RouterConfig, needle: &str) {
        let err = cfg.validate().expect_err(needle).to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn defaults_and_valid_config() {
        let d = RouterConfig::default();
        assert_eq!(d.max_object_bytes, 4 << 20);
        assert_eq!(d.cell_request_timeout, Duration::from_secs(5));
        assert_eq!(d.max_in_flight_per_cell, 256);
        assert_eq!(d.max_queue_per_cell, 512);
        assert_eq!(d.max_in_flight, 4096);
        assert_eq!(d.breaker.health_interval, Duration::from_millis(500));
        assert!(
            d.validate().is_err(),
            "the default has no cells, tokens or secret"
        );
        valid().validate().expect("valid");
    }

    #[test]
    fn s3_section() {
        let mut c = valid();
        assert_eq!(c.s3.region, "us-east-1");
        assert_eq!(c.s3.listen, None);
        c.s3.listen = Some("127.0.0.1:9000".parse().unwrap());
        must_fail(&c, "[[s3.credentials]]");
        c.s3.credentials.push(S3CredentialConfig {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: String::new(),
            secret_key_env: Some("MY_S3_SECRET".into()),
            buckets: vec!["*".into()],
            access: Access::ReadWrite,
        });
        must_fail(&c, "secret_key");
        c.apply_env_from(|v| (v == "MY_S3_SECRET").then(|| "s".repeat(40)));
        c.validate().unwrap();
        c.s3.credentials[0].buckets = vec!["a*b*".into()];
        must_fail(&c, "bucket pattern");
        c.s3.credentials[0].buckets = vec!["*".into()];
        c.s3.credentials.push(c.s3.credentials[0].clone());
        must_fail(&c, "listed twice");
        c.s3.credentials.pop();
        c.s3.region = "US East".into();
        must_fail(&c, "s3.region");
        c.s3.region = "eu-west-1".into();
        c.s3.listen = Some(c.listen);
        must_fail(&c, "s3.listen");
        let text = r#"
            [s3]
            listen = "127.0.0.1:9000"
            [[s3.credentials]]
            access_key = "AKIDEXAMPLE"
            secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
            access = "read_write"
        "#;
        let parsed: S3Config = toml::from_str::<RouterConfig>(text).unwrap().s3;
        assert_eq!(parsed.region, "us-east-1");
        assert_eq!(parsed.credentials[0].buckets, vec!["*".to_string()]);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = valid();
        c.cell_api_token = "short".into();
        must_fail(&c, "cell_api_token");

        let mut c = valid();
        c.cell_map.cells.clear();
        must_fail(&c, "no cells");

        let mut c = valid();
        c.tokens.clear();
        must_fail(&c, "[[tokens]]");

        let mut c = valid();
        c.tokens.push(token("app", "another-client-token-1"));
        must_fail(&c, "unique");

        let mut c = valid();
        c.tokens.push(token("other", "client-token-0123456789"));
        must_fail(&c, "listed twice");

        let mut c = valid();
        c.tokens[0].token = "router-to-cell-token".into();
        must_fail(&c, "differ from cell_api_token");

        let mut c = valid();
        c.tokens[0].token = "short".into();
        must_fail(&c, "at least 16");

        let mut c = valid();
        c.tokens[0].buckets = vec!["a*b".into()];
        must_fail(&c, "bucket pattern");

        let mut c = valid();
        c.tokens[0].buckets = vec![];
        must_fail(&c, "buckets is empty");

        let mut c = valid();
        c.tokens[0].rate_per_sec = 0.0;
        must_fail(&c, "rate_per_sec");

        let mut c = valid();
        c.tokens[0].burst = 0;
        must_fail(&c, "burst");

        let mut c = valid();
        c.max_object_bytes = 0;
        must_fail(&c, "max_object_bytes");

        let mut c = valid();
        c.queue_timeout = Duration::ZERO;
        must_fail(&c, "queue_timeout");

        let mut c = valid();
        c.connect_timeout = Duration::from_secs(10);
        must_fail(&c, "connect_timeout");

        let mut c = valid();
        c.breaker.health_timeout = Duration::from_secs(1);
        must_fail(&c, "health_timeout");

        let mut c = valid();
        c.max_in_flight_per_cell = 0;
        must_fail(&c, "max_in_flight_per_cell");

        let mut c = valid();
        c.breaker.recovery_successes = 0;
        must_fail(&c, "recovery_successes");

        let mut c = valid();
        c.breaker.failure_threshold = 0;
        must_fail(&c, "failure_threshold");
    }

    #[test]
    fn parses_toml_with_defaults_and_refuses_unknown_fields() {
        let text = r#"
            listen = "0.0.0.0:9000"
            cell_api_token = "router-to-cell-token"
            cell_request_timeout = "1500ms"

            [breaker]
            open_duration = "3s"

            [cell_map]
            epoch = 4
            [[cell_map.cells]]
            id = 7
            replicas = [{ node_id = 1, api_addr = "127.0.0.1:7001" }]

            [[tokens]]
            token = "client-token-0123456789"
            name = "app"
            buckets = ["photos", "logs-*"]
            access = "read_write"
        "#;
        let c = RouterConfig::from_toml_str(text, Path::new("x.toml")).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.cell_request_timeout, Duration::from_millis(1500));
        assert_eq!(c.breaker.open_duration, Duration::from_secs(3));
        assert_eq!(c.breaker.recovery_successes, 3);
        assert_eq!(c.cell_map.epoch, 4);
        assert_eq!(c.cell_map.cells[0].id, CellId(7));
        assert_eq!(c.tokens[0].access, Access::ReadWrite);
        assert_eq!(c.tokens[0].rate_per_sec, 1000.0);

        let typo = format!("{text}\nmax_inflight = 3\n");
        let err =
            RouterConfig::from_toml_str(&typo, Path::new("x.toml")).expect_err("unknown field");
        assert!(err.to_string().contains("max_inflight"), "{err}");
        let bad_access = text.replace("read_write", "write");
        assert!(RouterConfig::from_toml_str(&bad_access, Path::new("x.toml")).is_err());
    }

    #[test]
    fn patterns_parse_and_match() {
        assert_eq!(BucketPattern::parse("*"), Ok(BucketPattern::Any));
        assert_eq!(
            BucketPattern::parse("photos"),
            Ok(BucketPattern::Exact("photos".into()))
        );
        assert_eq!(
            BucketPattern::parse("logs-*"),
            Ok(BucketPattern::Prefix("logs-".into()))
        );
        for bad in ["a*b", "**", "*a", "Logs-*", "a_b*", "ab", "UPPER", "x*y*"] {
            assert!(BucketPattern::parse(bad).is_err(), "{bad}");
        }
        let p = BucketPattern::parse("logs-*").unwrap();
        assert!(p.matches("logs-2024") && p.matches("logs-"));
        assert!(!p.matches("log") && !p.matches("photos"));
        let e = BucketPattern::parse("photos").unwrap();
        assert!(e.matches("photos") && !e.matches("photos2") && !e.matches("photo"));
        assert!(BucketPattern::Any.matches("anything"));
    }

    /// A config with one cell and one client token, before any optional table.
    const MINIMAL: &str = r#"
            cell_api_token = "router-to-cell-token"
            [cell_map]
            epoch = 1
            [[cell_map.cells]]
            id = 1
            replicas = [{ node_id = 1, api_addr = "127.0.0.1:7001" }]
            [[tokens]]
            token = "client-token-0123456789"
            name = "app"
    "#;

    #[test]
    fn connect_to_parses_and_refuses_what_is_not_host_port() {
        let text = format!(
            "{MINIMAL}\n{}",
            r#"
            [connect_to]
            "127.0.0.1:7001" = "127.0.0.1:9001"
            "cell-1.internal:7001" = "sidecar:15001"
        "#
        );
        let c = RouterConfig::from_toml_str(&text, Path::new("x.toml")).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.connect_to["127.0.0.1:7001"], "127.0.0.1:9001");
        assert_eq!(c.connect_to.len(), 2);
        assert!(valid().connect_to.is_empty(), "none by default");
        let mut bad = c.clone();
        bad.connect_to
            .insert("127.0.0.1:7002".into(), "nowhere".into());
        must_fail(&bad, "connect_to: \"nowhere\"");
        let mut bad = c;
        bad.connect_to.insert("h:0".into(), "127.0.0.1:1".into());
        must_fail(&bad, "connect_to: \"h:0\"");
    }

    #[test]
    fn control_section_defaults_and_validation() {
        let text = format!(
            "{MINIMAL}\n{}",
            r#"
            [control]
            endpoints = ["127.0.0.1:7801", "ctl-2.internal:7801"]
            token = "control-cell-token-0123"
        "#
        );
        let text = text.as_str();
        let c = RouterConfig::from_toml_str(text, Path::new("x.toml")).expect("parse");
        c.validate().expect("valid");
        let ctl = c.control.clone().expect("[control]");
        assert_eq!(ctl.poll_interval, Duration::from_millis(250));
        assert_eq!(ctl.request_timeout, Duration::from_millis(500));
        assert_eq!(ctl.cache_file, None);
        assert!(valid().control.is_none(), "no [control]: static map only");
        let typo = format!("{text}\npoll_intervall = \"1s\"\n");
        assert!(RouterConfig::from_toml_str(&typo, Path::new("x.toml")).is_err());

        let with = |f: &dyn Fn(&mut ControlConfig)| {
            let mut c = c.clone();
            f(c.control.as_mut().unwrap());
            c
        };
        must_fail(
            &with(&|c| c.endpoints.clear()),
            "control.endpoints is empty",
        );
        must_fail(
            &with(&|c| c.endpoints = vec!["nohost".into()]),
            "control.endpoints",
        );
        must_fail(
            &with(&|c| c.endpoints = vec!["h:0".into()]),
            "control.endpoints",
        );
        must_fail(
            &with(&|c| c.endpoints = vec!["h:1".into(), "h:1".into()]),
            "twice",
        );
        must_fail(&with(&|c| c.token = "short".into()), "control.token");
        must_fail(
            &with(&|c| c.token = "client-token-0123456789".into()),
            "differ from every client token",
        );
        must_fail(
            &with(&|c| c.poll_interval = Duration::ZERO),
            "control.poll_interval",
        );
        must_fail(
            &with(&|c| c.request_timeout = Duration::ZERO),
            "control.request_timeout",
        );
        must_fail(
            &with(&|c| c.cache_file = Some(PathBuf::new())),
            "control.cache_file",
        );
        for good in ["[::1]:7801", "10.0.0.1:1", "a-b.c:65535"] {
            assert_eq!(check_api_addr(good), Ok(()), "{good}");
        }
    }
}
