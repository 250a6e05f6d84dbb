//! Feature hashing: a deterministic, offline embedder. No model, no network:
//! good for tests, benchmarks and near-duplicate detection, not for semantics.

use async_trait::async_trait;
use sluice_core::StageError;

use super::Embedder;
use crate::ConfigError;
use crate::util::validate::check_range;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Weight of a word pair relative to a single word.
const BIGRAM_WEIGHT: f32 = 0.5;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Lowercase alphanumeric tokens, unigrams and bigrams, hashed with FNV-1a
/// (64 bits) into `dimensions` buckets with a hashed sign, then L2-normalized.
/// The same text gives the same vector on every run and platform; an empty
/// text gives the zero vector.
#[derive(Clone, Debug)]
pub struct HashingEmbedder {
    dimensions: usize,
}

impl HashingEmbedder {
    /// `dimensions` in 1..=65536.
    pub fn new(dimensions: usize) -> Result<Self, ConfigError> {
        check_range("dimensions", dimensions, 1, 65_536)?;
        Ok(Self { dimensions })
    }

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimensions];
        let mut token = String::new();
        let mut prev: Option<u64> = None;
        let mut add = |token: &str, prev: &mut Option<u64>| {
            let unigram = fnv1a(FNV_OFFSET, token.as_bytes());
            self.add(&mut vector, unigram, 1.0);
            if let Some(prev_hash) = *prev {
                // The hash of "<previous token> <token>", continued from the previous token's.
                let bigram = fnv1a(fnv1a(prev_hash, b" "), token.as_bytes());
                self.add(&mut vector, bigram, BIGRAM_WEIGHT);
            }
            *prev = Some(unigram);
        };
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                token.push(c.to_ascii_lowercase());
            } else if !c.is_ascii() && c.is_alphanumeric() {
                token.extend(c.to_lowercase());
            } else if !token.is_empty() {
                add(&token, &mut prev);
                token.clear();
            }
        }
        if !token.is_empty() {
            add(&token, &mut prev);
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        vector
    }

    fn add(&self, vector: &mut [f32], hash: u64, weight: f32) {
        let folded = hash ^ (hash >> 32);
        let index = (folded % self.dimensions as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        "hashing"
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn fingerprint(&self) -> String {
        format!("hashing/fnv1a-uni-bigram-v1/{}", self.dimensions)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bigram_hash_is_the_hash_of_the_joined_pair() {
        let continued = fnv1a(fnv1a(fnv1a(FNV_OFFSET, b"hello"), b" "), b"world");
        assert_eq!(continued, fnv1a(FNV_OFFSET, b"hello world"));
    }

    #[test]
    fn tokens_ignore_case_and_punctuation() {
        let e = HashingEmbedder::new(64).unwrap();
        assert_eq!(e.embed_one("Hello, WORLD!"), e.embed_one("hello world"));
        assert_eq!(e.embed_one("Ünïcode Straße"), e.embed_one("ünïcode straße"));
        assert_ne!(e.embed_one("hello world"), e.embed_one("world hello"));
    }

    #[test]
    fn refuses_zero_dimensions() {
        assert!(HashingEmbedder::new(0).is_err());
    }
}
