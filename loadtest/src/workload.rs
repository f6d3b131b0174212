//! What load to offer: the YCSB-style workload (`Workload`, a scenario's
//! `[workload]` table), the key distributions (uniform, zipfian, latest) and a
//! seeded, deterministic generator of operations (`OpGenerator`). It decides
//! *what* to send; sending, timing and recording are the driver's and `stats`'.

use std::fmt;

use common::names::{validate_bucket, validate_key, NameError};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod random;
mod zipfian;

pub use random::{splitmix64, Rng};
pub use zipfian::{Permutation, Zipfian};

/// Largest `limit` of a listing (the API's own bound).
pub const MAX_SCAN_LIMIT: u32 = 1000;
/// Largest value the router accepts by default (`max_object_bytes`).
pub const MAX_VALUE_BYTES: u32 = 4 << 20;
/// Largest key space. Building a zipfian generator sums `key_count` terms
/// (≈ 10 ns each), and `stats` may track every touched key id.
pub const MAX_KEY_COUNT: u64 = 100_000_000;
/// Digits of the zero-padded key number, so byte order (listings) equals numeric order.
pub const KEY_DIGITS: usize = 10;
/// YCSB's default zipfian constant.
pub const DEFAULT_THETA: f64 = 0.99;
/// Seed of the scrambling permutation. Fixed, not the run's seed, so the hot
/// keys of a given `key_count` are the same keys in every run and every stream.
const SCRAMBLE_SEED: u64 = 0x5eed_ce11_5eed_ce11;

/// Why a workload cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("mix fraction `{op}` must be a finite number >= 0, got {value}")]
    MixFraction { op: &'static str, value: f64 },
    #[error("mix fractions must add up to 1, they add up to {sum}")]
    MixSum { sum: f64 },
    #[error("key_count must be 1..={MAX_KEY_COUNT}, got {0}")]
    KeyCount(u64),
    #[error("zipfian theta must be in (0, 1), got {0}")]
    Theta(f64),
    #[error(
        "value_bytes must satisfy 0 <= min <= max <= {MAX_VALUE_BYTES}, got min {min} max {max}"
    )]
    ValueSize { min: u32, max: u32 },
    #[error("scan_max must be 1..={MAX_SCAN_LIMIT}, got {0}")]
    ScanMax(u32),
    #[error("buckets must name at least one bucket")]
    NoBucket,
    #[error("bucket: {0}")]
    Bucket(NameError),
    #[error("key_prefix: {0}")]
    KeyPrefix(NameError),
    #[error("stream {index} of {count}: index must be below count")]
    Stream { index: u64, count: u64 },
}

// ---------------------------------------------------------------------------
// Configuration types

/// The YCSB core workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 50% read, 50% update.
    A,
    /// 95% read, 5% update.
    B,
    /// Read only.
    C,
    /// 95% read, 5% insert; reads favour the latest inserts.
    D,
    /// 95% short scans (listings), 5% insert.
    E,
    /// 50% read, 50% read-modify-write (`If-Match`).
    F,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::A,
        Preset::B,
        Preset::C,
        Preset::D,
        Preset::E,
        Preset::F,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::A => "a",
            Preset::B => "b",
            Preset::C => "c",
            Preset::D => "d",
            Preset::E => "e",
            Preset::F => "f",
        }
    }

    pub fn fractions(self) -> OpFractions {
        let f = OpFractions::default();
        match self {
            Preset::A => OpFractions {
                read: 0.5,
                update: 0.5,
                ..f
            },
            Preset::B => OpFractions {
                read: 0.95,
                update: 0.05,
                ..f
            },
            Preset::C => OpFractions { read: 1.0, ..f },
            Preset::D => OpFractions {
                read: 0.95,
                insert: 0.05,
                ..f
            },
            Preset::E => OpFractions {
                scan: 0.95,
                insert: 0.05,
                ..f
            },
            Preset::F => OpFractions {
                read: 0.5,
                rmw: 0.5,
                ..f
            },
        }
    }

    fn parse(s: &str) -> Option<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

/// Shares of each operation; they must add up to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpFractions {
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    /// Read-modify-write: a GET, then a PUT with `If-Match` on its etag.
    pub rmw: f64,
}

impl OpFractions {
    fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("read", self.read),
            ("update", self.update),
            ("insert", self.insert),
            ("scan", self.scan),
            ("rmw", self.rmw),
        ]
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        let mut sum = 0.0;
        for (op, value) in self.named() {
            if !value.is_finite() || value < 0.0 {
                return Err(WorkloadError::MixFraction { op, value });
            }
            sum += value;
        }
        if (sum - 1.0).abs() > 1e-6 {
            return Err(WorkloadError::MixSum { sum });
        }
        Ok(())
    }
}

/// The operation mix: `mix = "a"` (a YCSB preset, `a`..`f`) or
/// `mix = { read = 0.7, update = 0.2, insert = 0.1 }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mix {
    Preset(Preset),
    Custom(OpFractions),
}

impl Default for Mix {
    fn default() -> Self {
        Mix::Preset(Preset::A)
    }
}

impl Mix {
    pub fn fractions(&self) -> OpFractions {
        match self {
            Mix::Preset(p) => p.fractions(),
            Mix::Custom(f) => *f,
        }
    }

    /// YCSB's request distribution for the mix: latest for D, zipfian otherwise.
    pub fn default_key_dist(&self) -> KeyDist {
        match self {
            Mix::Preset(Preset::D) => KeyDist::Latest {
                theta: DEFAULT_THETA,
            },
            _ => KeyDist::Zipfian {
                theta: DEFAULT_THETA,
                scrambled: true,
            },
        }
    }
}

impl Serialize for Mix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mix::Preset(p) => s.serialize_str(p.as_str()),
            Mix::Custom(f) => f.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Mix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MixVisitor;
        impl<'de> Visitor<'de> for MixVisitor {
            type Value = Mix;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YCSB preset \"a\"..\"f\" or a table of fractions")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mix, E> {
                Preset::parse(v).map(Mix::Preset).ok_or_else(|| {
                    E::invalid_value(de::Unexpected::Str(v), &"one of a, b, c, d, e, f")
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Mix, A::Error> {
                OpFractions::deserialize(MapAccessDeserializer::new(map)).map(Mix::Custom)
            }
        }
        d.deserialize_any(MixVisitor)
    }
}

/// How keys are picked. TOML: `key_dist = "uniform"`,
/// `key_dist = { zipfian = { theta = 0.99, scrambled = true } }`,
/// `key_dist = { latest = { theta = 0.99 } }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyDist {
    Uniform,
    /// Popular keys by rank. `scrambled` (YCSB's default) spreads the popular
    /// ranks over the key space instead of keys 0, 1, 2...
    Zipfian {
        #[serde(default = "default_theta")]
        theta: f64,
        #[serde(default = "default_true")]
        scrambled: bool,
    },
    /// Zipfian over recency: the newest key (of this stream's inserts, then
    /// the preloaded keys from the last) is the most popular.
    Latest {
        #[serde(default = "default_theta")]
        theta: f64,
    },
}

fn default_theta() -> f64 {
    DEFAULT_THETA
}

fn default_true() -> bool {
    true
}

/// Value sizes: `value_bytes = 1024` or `value_bytes = { min = 100, max = 4000 }` (uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSize {
    Fixed(u32),
    Range { min: u32, max: u32 },
}

impl ValueSize {
    fn bounds(self) -> (u32, u32) {
        match self {
            ValueSize::Fixed(n) => (n, n),
            ValueSize::Range { min, max } => (min, max),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeRange {
    min: u32,
    max: u32,
}

impl Serialize for ValueSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            ValueSize::Fixed(n) => s.serialize_u32(n),
            ValueSize::Range { min, max } => SizeRange { min, max }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ValueSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl<'de> Visitor<'de> for SizeVisitor {
            type Value = ValueSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count or a table { min, max }")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueSize, E> {
                u32::try_from(v)
                    .map(ValueSize::Fixed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a u32"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueSize, E> {
                u32::try_from(v)
                    .map(ValueSize::Fixed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"0..=u32::MAX"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValueSize, A::Error> {
                let r = SizeRange::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ValueSize::Range {
                    min: r.min,
                    max: r.max,
                })
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// A scenario's `[workload]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub mix: Mix,
    /// Keys written by the preload, ids `0..key_count`; reads, updates and
    /// scans pick among them (latest also among this stream's inserts).
    pub key_count: u64,
    /// `None`: the mix's YCSB default ([`Mix::default_key_dist`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_dist: Option<KeyDist>,
    pub value_bytes: ValueSize,
    /// Key id `i` lives in bucket `buckets[i % len]`.
    pub buckets: Vec<String>,
    pub key_prefix: String,
    /// Scans list `1..=scan_max` keys (uniform).
    pub scan_max: u32,
    /// Write every key once before the warm-up.
    pub preload: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            mix: Mix::default(),
            key_count: 10_000,
            key_dist: None,
            value_bytes: ValueSize::Fixed(1024),
            buckets: vec!["loadtest".to_owned()],
            key_prefix: "k".to_owned(),
            scan_max: 10,
            preload: true,
        }
    }
}

impl Workload {
    pub fn key_dist(&self) -> KeyDist {
        self.key_dist.unwrap_or_else(|| self.mix.default_key_dist())
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        if let Mix::Custom(f) = &self.mix {
            f.validate()?;
        }
        if self.key_count == 0 || self.key_count > MAX_KEY_COUNT {
            return Err(WorkloadError::KeyCount(self.key_count));
        }
        match self.key_dist() {
            KeyDist::Uniform => {}
            KeyDist::Zipfian { theta, .. } | KeyDist::Latest { theta } => {
                if !(theta > 0.0 && theta < 1.0) {
                    return Err(WorkloadError::Theta(theta));
                }
            }
        }
        let (min, max) = self.value_bytes.bounds();
        if min > max || max > MAX_VALUE_BYTES {
            return Err(WorkloadError::ValueSize { min, max });
        }
        if self.scan_max == 0 || self.scan_max > MAX_SCAN_LIMIT {
            return Err(WorkloadError::ScanMax(self.scan_max));
        }
        if self.buckets.is_empty() {
            return Err(WorkloadError::NoBucket);
        }
        for b in &self.buckets {
            validate_bucket(b).map_err(WorkloadError::Bucket)?;
        }
        // The full key of the largest id must be valid too.
        validate_key(&key_name(&self.key_prefix, u64::MAX / 2)).map_err(WorkloadError::KeyPrefix)
    }

    /// The `(bucket, key)` of key id `id`.
    pub fn key_of(&self, id: u64) -> (&str, String) {
        (bucket_of(&self.buckets, id), key_name(&self.key_prefix, id))
    }

    /// The id of `(bucket, key)` if it is one of this workload's keys.
    pub fn key_id_of(&self, bucket: &str, key: &str) -> Option<u64> {
        let digits = key.strip_prefix(self.key_prefix.as_str())?;
        if digits.len() < KEY_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id: u64 = digits.parse().ok()?;
        (self.key_of(id) == (bucket, key.to_owned())).then_some(id)
    }

    /// The smallest value a write of this workload sends.
    pub fn min_value_bytes(&self) -> u32 {
        self.value_bytes.bounds().0
    }

    /// The preloaded keys: `(id, bucket, key)` for ids `0..key_count`.
    pub fn initial_keys(&self) -> impl Iterator<Item = (u64, &str, String)> + '_ {
        (0..self.key_count).map(|id| {
            let (b, k) = self.key_of(id);
            (id, b, k)
        })
    }
}

/// `prefix` then the zero-padded id, so keys sort like their ids.
pub fn key_name(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:0width$}", width = KEY_DIGITS)
}

fn bucket_of(buckets: &[String], id: u64) -> &str {
    match buckets.len() {
        0 => "",
        n => &buckets[(id % n as u64) as usize],
    }
}

// ---------------------------------------------------------------------------
// Operations

/// The kind of an operation without its parameters: a bounded stats label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpType {
    pub const ALL: [OpType; 5] = [
        OpType::Read,
        OpType::Update,
        OpType::Insert,
        OpType::Scan,
        OpType::ReadModifyWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Read => "read",
            OpType::Update => "update",
            OpType::Insert => "insert",
            OpType::Scan => "scan",
            OpType::ReadModifyWrite => "rmw",
        }
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `GET` the key.
    Read,
    /// Unconditional `PUT` of an existing key.
    Update,
    /// `PUT` of a new key (`If-None-Match: *` is safe: nobody else writes it).
    Insert,
    /// A listing of the key's bucket: `start_after` = the key, `limit`.
    Scan { limit: u32 },
    /// `GET`, then `PUT` with `If-Match` on the etag read.
    ReadModifyWrite,
}

impl OpKind {
    pub fn op_type(self) -> OpType {
        match self {
            OpKind::Read => OpType::Read,
            OpKind::Update => OpType::Update,
            OpKind::Insert => OpType::Insert,
            OpKind::Scan { .. } => OpType::Scan,
            OpKind::ReadModifyWrite => OpType::ReadModifyWrite,
        }
    }
}

/// One operation to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// Identifies `(bucket, key)`; stats track keys by it.
    pub key_id: u64,
    pub bucket: String,
    pub key: String,
    /// Bytes to write; 0 for reads and scans.
    pub value_len: u32,
}

#[derive(Clone, Debug)]
enum KeyChooser {
    Uniform,
    Zipfian {
        zipf: Zipfian,
        scramble: Option<Permutation>,
    },
    Latest {
        zipf: Zipfian,
    },
}

/// Produces a deterministic sequence of [`Op`]s for one client (stream).
/// Build one with [`OpGenerator::new`] (the O(key_count) zipfian setup) and
/// [`fork`](OpGenerator::fork) it per client: forks share the setup, get
/// independent random streams and disjoint insert key ids.
#[derive(Clone, Debug)]
pub struct OpGenerator {
    rng: Rng,
    seed: u64,
    /// Cumulative op fractions: read, update, insert, scan (rmw takes the rest).
    cdf: [f64; 4],
    chooser: KeyChooser,
    value: ValueSize,
    buckets: Vec<String>,
    prefix: String,
    key_count: u64,
    scan_max: u32,
    stream: u64,
    streams: u64,
    /// Inserts made by this stream so far.
    inserted: u64,
}

impl OpGenerator {
    /// Stream 0 of 1 of `workload` (validated here) under `seed`.
    pub fn new(workload: &Workload, seed: u64) -> Result<OpGenerator, WorkloadError> {
        workload.validate()?;
        let f = workload.mix.fractions();
        let mut cdf = [0.0; 4];
        let mut acc = 0.0;
        for (slot, v) in cdf.iter_mut().zip([f.read, f.update, f.insert, f.scan]) {
            acc += v;
            *slot = acc;
        }
        let n = workload.key_count;
        let chooser = match workload.key_dist() {
            KeyDist::Uniform => KeyChooser::Uniform,
            KeyDist::Zipfian { theta, scrambled } => KeyChooser::Zipfian {
                zipf: Zipfian::new(n, theta)?,
                scramble: scrambled.then(|| Permutation::new(n, SCRAMBLE_SEED)),
            },
            KeyDist::Latest { theta } => KeyChooser::Latest {
                zipf: Zipfian::new(n, theta)?,
            },
        };
        Ok(OpGenerator {
            rng: Rng::for_stream(seed, 0),
            seed,
            cdf,
            chooser,
            value: workload.value_bytes,
            buckets: workload.buckets.clone(),
            prefix: workload.key_prefix.clone(),
            key_count: n,
            scan_max: workload.scan_max,
            stream: 0,
            streams: 1,
            inserted: 0,
        })
    }

    /// Stream `index` of `count`: its own random sequence (from the same seed)
    /// and insert ids `key_count + j * count + index`. Call on a fresh generator.
    pub fn fork(&self, index: u64, count: u64) -> Result<OpGenerator, WorkloadError> {
        if index >= count {
            return Err(WorkloadError::Stream { index, count });
        }
        let mut g = self.clone();
        g.rng = Rng::for_stream(self.seed, index);
        g.stream = index;
        g.streams = count;
        Ok(g)
    }

    /// Inserts this stream made.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    pub fn next_op(&mut self) -> Op {
        let u = self.rng.next_f64();
        let kind = match self.cdf.iter().position(|&c| u < c) {
            Some(0) => OpKind::Read,
            Some(1) => OpKind::Update,
            Some(2) => OpKind::Insert,
            Some(3) => OpKind::Scan {
                limit: self.rng.between(1, u64::from(self.scan_max)) as u32,
            },
            _ => OpKind::ReadModifyWrite,
        };
        let key_id = match kind {
            OpKind::Insert => self.next_insert_id(),
            _ => self.choose_existing(),
        };
        let value_len = match kind {
            OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite => self.value_len(),
            OpKind::Read | OpKind::Scan { .. } => 0,
        };
        Op {
            kind,
            key_id,
            bucket: bucket_of(&self.buckets, key_id).to_owned(),
            key: key_name(&self.prefix, key_id),
            value_len,
        }
    }

    fn value_len(&mut self) -> u32 {
        let (min, max) = self.value.bounds();
        self.rng.between(u64::from(min), u64::from(max)) as u32
    }

    fn insert_id(&self, j: u64) -> u64 {
        self.key_count + j * self.streams + self.stream
    }

    fn next_insert_id(&mut self) -> u64 {
        let id = self.insert_id(self.inserted);
        self.inserted += 1;
        if let KeyChooser::Latest { zipf } = &mut self.chooser {
            zipf.grow(self.key_count + self.inserted);
        }
        id
    }

    fn choose_existing(&mut self) -> u64 {
        match &self.chooser {
            KeyChooser::Uniform => self.rng.below(self.key_count),
            KeyChooser::Zipfian { zipf, scramble } => {
                let rank = zipf.sample(&mut self.rng);
                match scramble {
                    Some(p) => p.apply(rank),
                    None => rank,
                }
            }
            KeyChooser::Latest { zipf } => {
                // Recency rank r: this stream's inserts newest first, then the
                // preloaded keys from the last. Every id named here exists.
                let r = zipf.sample(&mut self.rng);
                if r < self.inserted {
                    self.insert_id(self.inserted - 1 - r)
                } else {
                    self.key_count - 1 - (r - self.inserted).min(self.key_count - 1)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn workload(mix: Mix, key_count: u64, key_dist: KeyDist) -> Workload {
        Workload {
            mix,
            key_count,
            key_dist: Some(key_dist),
            ..Workload::default()
        }
    }

    #[test]
    fn scrambled_zipfian_keeps_the_skew_but_moves_the_hot_key() {
        let w = workload(
            Mix::Preset(Preset::C),
            1000,
            KeyDist::Zipfian {
                theta: 0.99,
                scrambled: true,
            },
        );
        let mut g = OpGenerator::new(&w, 11).unwrap();
        let n = 100_000;
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for _ in 0..n {
            *counts.entry(g.next_op().key_id).or_default() += 1;
        }
        let (&hot, &top) = counts.iter().max_by_key(|(_, c)| **c).unwrap();
        let expected = Zipfian::new(1000, 0.99).unwrap().probability(0) * n as f64;
        assert!((top as f64 - expected).abs() / expected < 0.04);
        assert_eq!(hot, Permutation::new(1000, SCRAMBLE_SEED).apply(0));
        assert_ne!(hot, 0);
    }

    #[test]
    fn uniform_is_uniform_by_chi_square() {
        let bins = 100u64;
        let w = workload(Mix::Preset(Preset::C), bins, KeyDist::Uniform);
        let mut g = OpGenerator::new(&w, 5).unwrap();
        let n = 100_000u64;
        let mut counts = vec![0u64; bins as usize];
        for _ in 0..n {
            counts[g.next_op().key_id as usize] += 1;
        }
        let expected = (n / bins) as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 99 degrees of freedom: mean 99, sd 14; 160 is p ≈ 0.0001.
        assert!(chi2 < 160.0, "chi2 = {chi2}");
        assert!(chi2 > 50.0, "suspiciously flat: chi2 = {chi2}");
    }

    fn op_shares(mix: Mix, n: usize) -> HashMap<OpType, f64> {
        let w = workload(mix, 1000, KeyDist::Uniform);
        let mut g = OpGenerator::new(&w, 9).unwrap();
        let mut counts: HashMap<OpType, usize> = HashMap::new();
        for _ in 0..n {
            *counts.entry(g.next_op().kind.op_type()).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(k, c)| (k, c as f64 / n as f64))
            .collect()
    }

    #[test]
    fn mix_fractions_hold_over_100k_ops() {
        let custom = OpFractions {
            read: 0.4,
            update: 0.2,
            insert: 0.1,
            scan: 0.1,
            rmw: 0.2,
        };
        let mut cases: Vec<Mix> = Preset::ALL.into_iter().map(Mix::Preset).collect();
        cases.push(Mix::Custom(custom));
        for mix in cases {
            let f = mix.fractions();
            let got = op_shares(mix, 100_000);
            let want = [
                (OpType::Read, f.read),
                (OpType::Update, f.update),
                (OpType::Insert, f.insert),
                (OpType::Scan, f.scan),
                (OpType::ReadModifyWrite, f.rmw),
            ];
            for (op, share) in want {
                let g = got.get(&op).copied().unwrap_or(0.0);
                assert!((g - share).abs() < 0.006, "{mix:?} {op}: {g} vs {share}");
            }
        }
    }

    #[test]
    fn same_seed_same_ops_and_forks_differ() {
        let w = Workload {
            mix: Mix::Preset(Preset::A),
            value_bytes: ValueSize::Range { min: 10, max: 20 },
            ..Workload::default()
        };
        let a: Vec<Op> = {
            let mut g = OpGenerator::new(&w, 42).unwrap();
            (0..1000).map(|_| g.next_op()).collect()
        };
        let b: Vec<Op> = {
            let mut g = OpGenerator::new(&w, 42).unwrap();
            (0..1000).map(|_| g.next_op()).collect()
        };
        assert_eq!(a, b);
        let c: Vec<Op> = {
            let mut g = OpGenerator::new(&w, 43).unwrap();
            (0..1000).map(|_| g.next_op()).collect()
        };
        assert_ne!(a, c);
        let base = OpGenerator::new(&w, 42).unwrap();
        let mut f1 = base.fork(1, 4).unwrap();
        let mut f2 = base.fork(2, 4).unwrap();
        let x: Vec<Op> = (0..100).map(|_| f1.next_op()).collect();
        let y: Vec<Op> = (0..100).map(|_| f2.next_op()).collect();
        assert_ne!(x, y);
        assert!(a.iter().all(|op| match op.kind {
            OpKind::Read => op.value_len == 0,
            _ => (10..=20).contains(&op.value_len),
        }));
        assert_eq!(
            base.fork(4, 4).unwrap_err(),
            WorkloadError::Stream { index: 4, count: 4 }
        );
    }

    #[test]
    fn inserts_of_forked_streams_are_disjoint_and_new() {
        let w = workload(
            Mix::Custom(OpFractions {
                insert: 1.0,
                ..OpFractions::default()
            }),
            100,
            KeyDist::Uniform,
        );
        let base = OpGenerator::new(&w, 1).unwrap();
        let mut seen = HashSet::new();
        for s in 0..3 {
            let mut g = base.fork(s, 3).unwrap();
            for _ in 0..50 {
                let op = g.next_op();
                assert_eq!(op.kind, OpKind::Insert);
                assert!(op.key_id >= 100);
                assert!(seen.insert(op.key_id), "duplicate {}", op.key_id);
            }
        }
        // 150 inserts from 3 streams fill ids 100..250 exactly.
        assert_eq!(seen, (100..250).collect());
    }

    #[test]
    fn latest_reads_favour_the_newest_inserts() {
        let w = workload(
            Mix::Custom(OpFractions {
                read: 0.5,
                insert: 0.5,
                ..OpFractions::default()
            }),
            1000,
            KeyDist::Latest { theta: 0.99 },
        );
        let mut g = OpGenerator::new(&w, 2).unwrap();
        let mut inserted = HashSet::new();
        let (mut reads, mut newest_hits, mut recent_hits) = (0u64, 0u64, 0u64);
        let mut last_insert = None;
        for _ in 0..20_000 {
            let op = g.next_op();
            match op.kind {
                OpKind::Insert => {
                    inserted.insert(op.key_id);
                    last_insert = Some(op.key_id);
                }
                OpKind::Read => {
                    reads += 1;
                    // Every read names a key that exists: preloaded or inserted.
                    assert!(op.key_id < 1000 || inserted.contains(&op.key_id));
                    if Some(op.key_id) == last_insert {
                        newest_hits += 1;
                    }
                    if op.key_id >= 1000 && last_insert.is_some_and(|l| l - op.key_id < 100) {
                        recent_hits += 1;
                    }
                }
                _ => unreachable!(),
            }
        }
        // The newest key gets p(0) ≈ 1/zeta(n) of reads: ≈ 10% for n ≈ 1000..11000.
        let share = newest_hits as f64 / reads as f64;
        assert!((0.08..0.15).contains(&share), "newest share {share}");
        // The 100 newest inserts take most reads, though they are < 1% of keys.
        assert!(recent_hits as f64 / reads as f64 > 0.5);
        // Preset D defaults to latest.
        assert_eq!(
            Mix::Preset(Preset::D).default_key_dist(),
            KeyDist::Latest { theta: 0.99 }
        );
    }

    #[test]
    fn scans_have_bounded_limits_and_keys_sort_like_ids() {
        let w = Workload {
            mix: Mix::Preset(Preset::E),
            scan_max: 5,
            buckets: vec!["b-one".into(), "b-two".into()],
            ..Workload::default()
        };
        let mut g = OpGenerator::new(&w, 3).unwrap();
        for _ in 0..1000 {
            let op = g.next_op();
            if let OpKind::Scan { limit } = op.kind {
                assert!((1..=5).contains(&limit));
                assert_eq!(op.value_len, 0);
            }
            assert_eq!(op.bucket, w.key_of(op.key_id).0);
        }
        assert_eq!(key_name("k", 42), "k0000000042");
        assert!(key_name("k", 9) < key_name("k", 10));
        assert_eq!(w.key_of(3), ("b-two", "k0000000003".to_owned()));
        assert_eq!(w.key_id_of("b-two", "k0000000003"), Some(3));
        assert_eq!(w.key_id_of("b-one", "k0000000003"), None);
        assert_eq!(w.key_id_of("b-two", "k3"), None);
        assert_eq!(w.key_id_of("b-two", "pre-000000003"), None);
        assert_eq!(
            w.key_id_of("b-one", &key_name("k", 123_456_789_012)),
            Some(123_456_789_012)
        );
        assert_eq!(w.initial_keys().count(), 10_000);
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        workload: Workload,
    }

    fn parse(toml_text: &str) -> Result<Workload, String> {
        toml::from_str::<Wrap>(toml_text)
            .map(|w| w.workload)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn toml_forms_parse() {
        let w = parse(
            "[workload]\nmix = \"B\"\nkey_dist = \"uniform\"\nvalue_bytes = 100\nkey_count = 5",
        )
        .unwrap();
        assert_eq!(w.mix, Mix::Preset(Preset::B));
        assert_eq!(w.key_dist(), KeyDist::Uniform);
        assert_eq!(w.value_bytes, ValueSize::Fixed(100));
        let w = parse(
            "[workload]\nmix = { read = 0.9, insert = 0.1 }\n\
             key_dist = { zipfian = { theta = 0.8 } }\nvalue_bytes = { min = 1, max = 9 }",
        )
        .unwrap();
        assert_eq!(w.mix.fractions().insert, 0.1);
        assert_eq!(
            w.key_dist(),
            KeyDist::Zipfian {
                theta: 0.8,
                scrambled: true
            }
        );
        assert_eq!(w.value_bytes, ValueSize::Range { min: 1, max: 9 });
        w.validate().unwrap();
        // Round trip through TOML.
        let text = toml::to_string(&w).unwrap();
        assert_eq!(toml::from_str::<Workload>(&text).unwrap(), w);

        for bad in [
            "[workload]\nmix = \"g\"",
            "[workload]\nmix = { read = 1.0, delete = 0.0 }",
            "[workload]\nkey_dist = { zipfian = { theta = 0.8, skew = 1 } }",
            "[workload]\nvalue_bytes = -1",
            "[workload]\nvalue_bytes = { min = 1 }",
            "[workload]\nkeys = 3",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn validate_catches_bad_workloads() {
        let ok = Workload::default();
        ok.validate().unwrap();
        let bad = |f: &dyn Fn(&mut Workload)| {
            let mut w = Workload::default();
            f(&mut w);
            w.validate().unwrap_err()
        };
        assert_eq!(
            bad(&|w| w.mix = Mix::Custom(OpFractions {
                read: 0.5,
                ..OpFractions::default()
            })),
            WorkloadError::MixSum { sum: 0.5 }
        );
        assert!(matches!(
            bad(&|w| w.mix = Mix::Custom(OpFractions {
                read: 1.5,
                update: -0.5,
                ..OpFractions::default()
            })),
            WorkloadError::MixFraction { op: "update", .. }
        ));
        assert_eq!(bad(&|w| w.key_count = 0), WorkloadError::KeyCount(0));
        assert_eq!(
            bad(&|w| w.key_dist = Some(KeyDist::Latest { theta: 1.2 })),
            WorkloadError::Theta(1.2)
        );
        assert!(matches!(
            bad(&|w| w.value_bytes = ValueSize::Range { min: 5, max: 4 }),
            WorkloadError::ValueSize { .. }
        ));
        assert!(matches!(
            bad(&|w| w.value_bytes = ValueSize::Fixed(MAX_VALUE_BYTES + 1)),
            WorkloadError::ValueSize { .. }
        ));
        assert_eq!(bad(&|w| w.scan_max = 0), WorkloadError::ScanMax(0));
        assert_eq!(bad(&|w| w.buckets.clear()), WorkloadError::NoBucket);
        assert!(matches!(
            bad(&|w| w.buckets = vec!["Bad_Bucket".into()]),
            WorkloadError::Bucket(_)
        ));
        assert!(matches!(
            bad(&|w| w.key_prefix = "a\u{1}".into()),
            WorkloadError::KeyPrefix(_)
        ));
    }
}
