//! Skewed key choice: YCSB's zipfian generator and the permutation that
//! scrambles its popular ranks over the key space.

use super::random::{splitmix64, Rng};
use super::{WorkloadError, MAX_KEY_COUNT};

/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating billion-record
/// synthetic databases", SIGMOD 1994): rank `r` (0 = most popular) of `items`
/// comes with probability `1 / ((r+1)^theta * zeta(items))`. Ranks 0 and 1 are
/// exact; the rest follow a closed-form approximation. Sampling is O(1);
/// building is O(items), growing is O(added items).
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

fn zeta_add(from: u64, to: u64, theta: f64, partial: f64) -> f64 {
    let mut sum = partial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Result<Zipfian, WorkloadError> {
        if !(theta > 0.0 && theta < 1.0) {
            return Err(WorkloadError::Theta(theta));
        }
        if items == 0 || items > MAX_KEY_COUNT.saturating_mul(64) {
            return Err(WorkloadError::KeyCount(items));
        }
        let zeta2 = zeta_add(0, 2, theta, 0.0);
        let zetan = zeta_add(0, items, theta, 0.0);
        let mut z = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            zetan,
            eta: 0.0,
            half_pow_theta: 0.5f64.powf(theta),
        };
        z.eta = z.compute_eta();
        Ok(z)
    }

    fn compute_eta(&self) -> f64 {
        (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// Extends the item count to `items` (never shrinks), adding only the new
    /// terms to zeta, as YCSB does for a growing key space.
    pub fn grow(&mut self, items: u64) {
        if items <= self.items {
            return;
        }
        self.zetan = zeta_add(self.items, items, self.theta, self.zetan);
        self.items = items;
        self.eta = self.compute_eta();
    }

    /// The theoretical probability of `rank`.
    pub fn probability(&self, rank: u64) -> f64 {
        if rank >= self.items {
            return 0.0;
        }
        1.0 / (((rank + 1) as f64).powf(self.theta) * self.zetan)
    }

    /// A rank in `[0, items)`, 0 the most popular.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 || self.items == 1 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1;
        }
        let r = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (r as u64).min(self.items - 1)
    }
}

/// A bijection of `[0, n)` that spreads popular ranks over the key space.
/// YCSB scrambles with `fnv64(rank) % n`, which merges some ranks into one key;
/// this is a true permutation (three multiply-add-xorshift rounds on the next
/// power of two, with cycle walking), so the zipfian skew is kept exactly.
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    mask: u64,
    shift: u32,
    mul: [u64; 3],
    add: [u64; 3],
}

impl Permutation {
    pub fn new(n: u64, seed: u64) -> Permutation {
        let bits = if n <= 2 {
            1
        } else {
            64 - (n - 1).leading_zeros()
        };
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut st = seed;
        let mut mul = [0u64; 3];
        let mut add = [0u64; 3];
        for i in 0..3 {
            mul[i] = splitmix64(&mut st) | 1;
            add[i] = splitmix64(&mut st);
        }
        Permutation {
            n: n.max(1),
            mask,
            shift: bits.div_ceil(2).max(1),
            mul,
            add,
        }
    }

    // Each step is a bijection of [0, 2^bits): odd multiply, add, xorshift.
    fn round(&self, mut x: u64) -> u64 {
        for i in 0..3 {
            x = x.wrapping_mul(self.mul[i]).wrapping_add(self.add[i]) & self.mask;
            x ^= x >> self.shift;
        }
        x
    }

    /// The image of `x` (`x < n`; larger inputs are reduced modulo `n` first).
    pub fn apply(&self, x: u64) -> u64 {
        let mut y = self.round(x % self.n);
        while y >= self.n {
            y = self.round(y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SEED: u64 = 0x5eed;

    #[test]
    fn zipfian_top_ranks_match_theory() {
        let z = Zipfian::new(1000, 0.99).unwrap();
        let mut rng = Rng::seed_from(1);
        let n = 200_000;
        let mut counts = vec![0u64; 1000];
        for _ in 0..n {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        // Ranks 0 and 1 are exact in the algorithm: within 3% of theory
        // (≈ 7 standard deviations for these counts).
        for rank in [0u64, 1] {
            let expected = z.probability(rank) * n as f64;
            let got = counts[rank as usize] as f64;
            assert!(
                (got - expected).abs() / expected < 0.03,
                "rank {rank}: got {got}, expected {expected}"
            );
        }
        // The approximation for the rest: the top 10 together within 5%,
        // and counts fall with rank overall.
        let top10: u64 = counts[..10].iter().sum();
        let expected10: f64 = (0..10).map(|r| z.probability(r)).sum::<f64>() * n as f64;
        assert!((top10 as f64 - expected10).abs() / expected10 < 0.05);
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        // p(0) = 1/zeta(1000, 0.99) ≈ 0.134.
        assert!((z.probability(0) - 0.134).abs() < 0.005);
    }

    #[test]
    fn zipfian_grow_equals_a_fresh_build() {
        let mut grown = Zipfian::new(100, 0.9).unwrap();
        grown.grow(5000);
        grown.grow(10); // never shrinks
        let fresh = Zipfian::new(5000, 0.9).unwrap();
        assert_eq!(grown.items(), 5000);
        assert!((grown.zetan - fresh.zetan).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-12);
    }

    #[test]
    fn zipfian_rejects_bad_theta_and_handles_one_item() {
        assert_eq!(
            Zipfian::new(10, 1.0).unwrap_err(),
            WorkloadError::Theta(1.0)
        );
        assert!(Zipfian::new(10, 0.0).is_err());
        assert!(Zipfian::new(0, 0.5).is_err());
        let z = Zipfian::new(1, 0.99).unwrap();
        let mut rng = Rng::seed_from(3);
        assert!((0..100).all(|_| z.sample(&mut rng) == 0));
    }

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 1000, 1023, 1024, 1025, 65_537] {
            let p = Permutation::new(n, SEED);
            let image: HashSet<u64> = (0..n).map(|x| p.apply(x)).collect();
            assert_eq!(image.len() as u64, n, "n = {n}");
            assert!(image.iter().all(|&y| y < n));
        }
        // It actually moves things.
        let p = Permutation::new(1000, SEED);
        assert!((0..10).filter(|&x| p.apply(x) == x).count() < 3);
    }
}
