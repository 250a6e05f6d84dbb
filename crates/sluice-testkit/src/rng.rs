//! Small deterministic building blocks: a seeded PRNG and a stable hash.
//! Both are fixed algorithms (SplitMix64, FNV-1a), so datasets, nonces and
//! embeddings are the same on every machine and every Rust release.

/// SplitMix64: tiny, fast, good enough for fake data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift; the tiny bias is irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One string of a non-empty list.
    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing function.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a text (FNV-1a, then mixed). This is the hash the
/// fakes use to count distinct inputs; tests can compute it too.
pub fn text_hash(text: &str) -> u64 {
    mix(fnv1a(FNV_OFFSET, text.as_bytes()))
}

/// [`text_hash`] of `prefix` followed by `chars`, without building that string
/// (the fake's embeddings hash every character trigram of every input).
pub fn text_hash_of(prefix: &str, chars: &[char]) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, prefix.as_bytes());
    let mut utf8 = [0u8; 4];
    for c in chars {
        h = fnv1a(h, c.encode_utf8(&mut utf8).as_bytes());
    }
    mix(h)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let r = a.range(-3, 3);
            b.range(-3, 3);
            assert!((-3..=3).contains(&r));
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn text_hash_is_stable() {
        assert_eq!(text_hash("hello"), text_hash("hello"));
        assert_ne!(text_hash("hello"), text_hash("hello "));
    }

    #[test]
    fn text_hash_of_parts_is_the_hash_of_the_joined_text() {
        let chars: Vec<char> = "héé€".chars().collect();
        assert_eq!(text_hash_of("#", &chars), text_hash("#héé€"));
        assert_eq!(text_hash_of("", &[]), text_hash(""));
    }
}
