//! The harness's random numbers: splitmix64 for seeding and xoshiro256** for
//! the streams. Ours, not a crate's, so a seed means the same operations on
//! every machine and every version of the dependencies.

/// One step of splitmix64: seeds [`Rng`] and derives stream seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: small, fast and good enough for load generation. Not
/// cryptographic. Seeded through splitmix64, as its authors recommend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn seed_from(seed: u64) -> Rng {
        let mut st = seed;
        // splitmix64 never yields four zero words in a row, the one bad state.
        Rng {
            s: [
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
            ],
        }
    }

    /// Generator `index` of a family: independent streams from one run seed.
    pub fn for_stream(seed: u64, index: u64) -> Rng {
        let mut st = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::seed_from(splitmix64(&mut st))
    }

    #[cfg(test)]
    fn from_state(s: [u64; 4]) -> Rng {
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` without modulo bias (Lemire's method). `n = 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `[lo, hi]`; `lo` when `hi < lo`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        let mut st = 0;
        assert_eq!(splitmix64(&mut st), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut st), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(&mut st), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn xoshiro256starstar_matches_the_reference_sequence() {
        let mut r = Rng::from_state([1, 2, 3, 4]);
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn below_and_between_stay_in_range_and_f64_in_unit_interval() {
        let mut r = Rng::seed_from(7);
        for n in [1u64, 2, 3, 10, 1000, u64::MAX] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
        for _ in 0..1000 {
            let v = r.between(5, 9);
            assert!((5..=9).contains(&v));
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(r.between(9, 5), 9);
        let _ = r.between(0, u64::MAX);
    }
}
