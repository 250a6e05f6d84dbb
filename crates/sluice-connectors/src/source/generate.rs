//! Deterministic synthetic records, for tests and benchmarks.
//!
//! Record `i` depends only on `(seed, i)` and the text settings: the same
//! configuration yields the same records on every run and platform, whatever
//! the page size, the partitioning or the order pages are fetched in.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

use crate::ConfigError;
use crate::util::validate::{check_not_empty, check_range};

/// `updated_at` of record 0; record `i` has `BASE_UPDATED_AT + i`.
pub const BASE_UPDATED_AT: i64 = 1_700_000_000;

fn default_page_size() -> usize {
    100
}

fn default_partitions() -> usize {
    1
}

fn default_text_words() -> usize {
    40
}

fn default_name() -> String {
    "generate".to_string()
}

/// `[source] kind = "generate"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Records in total, over all partitions (0..=10^12).
    pub count: u64,
    /// Seed of the generator: same seed, same records.
    #[serde(default)]
    pub seed: u64,
    /// Records per page (1..=100000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Partitions `p0`, `p1`, ... splitting `count` evenly (1..=1024).
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// Simulated latency of each page fetch, in milliseconds (0..=60000).
    #[serde(default)]
    pub latency_ms: u64,
    /// Words per text (1..=100000).
    #[serde(default = "default_text_words")]
    pub text_words: usize,
    /// Every Nth record's text is wrapped in HTML with a script and a style (0: never).
    #[serde(default)]
    pub html_every: u64,
    /// Every Nth record has a 3-word text, under 20 chars, that a default filter drops (0: never).
    #[serde(default)]
    pub short_every: u64,
    /// Source name stored with every record.
    #[serde(default = "default_name")]
    pub name: String,
}

impl GenerateConfig {
    pub fn new(count: u64) -> Self {
        Self {
            count,
            seed: 0,
            page_size: default_page_size(),
            partitions: default_partitions(),
            latency_ms: 0,
            text_words: default_text_words(),
            html_every: 0,
            short_every: 0,
            name: default_name(),
        }
    }
}

/// Generates `count` records with ids `gen-000000000`, `gen-000000001`, ...
#[derive(Debug)]
pub struct GenerateSource {
    config: GenerateConfig,
    /// Seed mixed once, so that nearby seeds give unrelated streams.
    seed_mix: u64,
}

impl GenerateSource {
    pub fn new(config: GenerateConfig) -> Result<Self, ConfigError> {
        check_range("generate.count", config.count, 0, 1_000_000_000_000)?;
        check_range("generate.page_size", config.page_size, 1, 100_000)?;
        check_range("generate.partitions", config.partitions, 1, 1024)?;
        check_range("generate.latency_ms", config.latency_ms, 0, 60_000)?;
        check_range("generate.text_words", config.text_words, 1, 100_000)?;
        check_not_empty("generate.name", &config.name)?;
        let seed_mix = mix64(config.seed ^ 0x5EED_5EED_5EED_5EED);
        Ok(Self { config, seed_mix })
    }

    /// Global index range `[start, end)` of partition `p`.
    fn range(&self, p: usize) -> (u64, u64) {
        let (count, parts) = (u128::from(self.config.count), self.config.partitions as u128);
        let at = |i: usize| (count * i as u128 / parts) as u64;
        (at(p), at(p + 1))
    }

    fn partition_index(&self, partition: &str) -> Option<usize> {
        let n = partition.strip_prefix('p')?;
        if n.len() > 1 && n.starts_with('0') {
            return None;
        }
        n.parse::<usize>().ok().filter(|&p| p < self.config.partitions)
    }

    /// Record number `index`, a pure function of the configuration and `index`.
    pub fn record(&self, index: u64) -> Record {
        let mut rng = SplitMix64(mix64(self.seed_mix.wrapping_add(index)));
        let topic = (rng.next() % TOPICS.len() as u64) as usize;
        let (topic_title, topic_words) = TOPICS[topic];

        let mut title = String::with_capacity(topic_title.len() + 14);
        title.push_str(topic_title);
        title.push_str(" #");
        push_u64(&mut title, index);

        let is_nth = |every: u64| every > 0 && (index + 1).is_multiple_of(every);
        let text = if is_nth(self.config.short_every) {
            let mut text = String::with_capacity(18);
            for w in 0..3 {
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(SHORT_WORDS[(rng.next() % SHORT_WORDS.len() as u64) as usize]);
            }
            text
        } else if is_nth(self.config.html_every) {
            let mut text = String::with_capacity(self.config.text_words * 9 + 256 + 2 * title.len());
            text.push_str("<html><head><title>");
            text.push_str(&title);
            text.push_str("</title><style>body { font-family: sans-serif; color: #333; }</style></head>\n<body>");
            text.push_str("<script>window.analytics && window.analytics.track(\"ticket_view\");</script>\n<h1>");
            text.push_str(&title);
            text.push_str("</h1>\n<p>");
            self.push_words(&mut rng, topic_words, &mut text);
            text.push_str("</p>\n</body></html>");
            text
        } else {
            let mut text = String::with_capacity(self.config.text_words * 9);
            self.push_words(&mut rng, topic_words, &mut text);
            text
        };

        let mut fields = Map::new();
        fields.insert("n".to_string(), Value::from(index));
        fields.insert("title".to_string(), Value::String(title));
        let mut id = String::with_capacity(16);
        id.push_str("gen-");
        push_padded(&mut id, index, 9);
        Record {
            source: self.config.name.clone(),
            id,
            text,
            fields,
            updated_at: Some(BASE_UPDATED_AT.saturating_add(index as i64)),
        }
    }

    /// `text_words` words: a quarter from the topic's keywords, the rest common words,
    /// with a sentence break now and then.
    fn push_words(&self, rng: &mut SplitMix64, topic_words: &[&str], out: &mut String) {
        let words = self.config.text_words;
        for w in 0..words {
            let r = rng.next();
            let word = if !topic_words.is_empty() && r & 3 == 0 {
                topic_words[((r >> 8) % topic_words.len() as u64) as usize]
            } else {
                COMMON_WORDS[((r >> 8) % COMMON_WORDS.len() as u64) as usize]
            };
            out.push_str(word);
            if w + 1 == words {
                out.push('.');
            } else if r >> 60 == 0 {
                out.push_str(". ");
            } else {
                out.push(' ');
            }
        }
    }
}

#[async_trait]
impl Source for GenerateSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok((0..self.config.partitions).map(|p| format!("p{p}")).collect())
    }

    async fn fetch(&self, _ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let Some(p) = self.partition_index(partition) else {
            return Err(SourceError::fatal(format!(
                "generate: unknown partition {partition:?} (partitions are p0..p{})",
                self.config.partitions - 1
            )));
        };
        let (start, end) = self.range(p);
        let from = match cursor {
            None => start,
            Some(text) => match text.parse::<u64>() {
                Ok(from) if (start..=end).contains(&from) => from,
                _ => {
                    return Err(SourceError::CursorInvalid {
                        message: format!("generate cursor {text:?} is not an index in {start}..={end} of {partition}"),
                    });
                }
            },
        };
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
        let to = end.min(from.saturating_add(self.config.page_size as u64));
        let items = (from..to).map(|i| SourceItem::Record(self.record(i))).collect();
        Ok(Page { items, next: (to < end).then(|| to.to_string()), dropped: 0 })
    }

    async fn estimated_total(&self) -> Option<u64> {
        Some(self.config.count)
    }
}

/// The splitmix64 generator (Steele, Lea, Flood 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
}

/// The splitmix64 finalizer: a bijection that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn push_u64(out: &mut String, n: u64) {
    push_padded(out, n, 1);
}

/// `n` in decimal, left-padded with zeros to `width` digits.
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    out.push_str(std::str::from_utf8(&buf[start..]).expect("ascii digits"));
}

/// (title, keywords) per topic; the last topic has no keywords.
const TOPICS: [(&str, &[&str]); 6] = [
    ("Billing question", &["refund", "invoice", "billing", "charged", "payment", "subscription", "receipt", "price"]),
    ("Account access", &["login", "password", "reset", "locked", "account", "signin", "verification"]),
    ("Bug report", &["crash", "error", "bug", "broken", "exception", "fails", "glitch"]),
    ("Feature request", &["feature", "request", "suggestion", "idea", "roadmap", "integration", "wishlist"]),
    ("Performance issue", &["slow", "timeout", "latency", "lag", "loading", "freezes", "sluggish"]),
    ("General question", &[]),
];

const COMMON_WORDS: [&str; 64] = [
    "the",
    "a",
    "customer",
    "team",
    "please",
    "help",
    "we",
    "our",
    "your",
    "order",
    "today",
    "yesterday",
    "issue",
    "question",
    "thanks",
    "hello",
    "support",
    "app",
    "page",
    "update",
    "service",
    "version",
    "user",
    "data",
    "time",
    "after",
    "before",
    "when",
    "again",
    "still",
    "working",
    "need",
    "using",
    "new",
    "could",
    "would",
    "this",
    "that",
    "with",
    "from",
    "have",
    "been",
    "about",
    "some",
    "every",
    "week",
    "month",
    "report",
    "dashboard",
    "settings",
    "mobile",
    "web",
    "browser",
    "plan",
    "project",
    "file",
    "export",
    "import",
    "morning",
    "colleague",
    "screen",
    "button",
    "workspace",
    "calendar",
];

/// Words of at most 5 letters: three of them stay under 20 chars.
const SHORT_WORDS: [&str; 10] = ["ok", "hi", "yes", "no", "bye", "cool", "sure", "fine", "great", "thx"];

/// `kind = "generate"`.
impl crate::kind::SourceKind for GenerateConfig {
    fn build(&self) -> Result<std::sync::Arc<dyn Source>, ConfigError> {
        Ok(std::sync::Arc::new(GenerateSource::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_numbers() {
        let mut s = String::new();
        push_padded(&mut s, 42, 9);
        s.push(' ');
        push_padded(&mut s, 1_234_567_890, 9);
        s.push(' ');
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, u64::MAX);
        assert_eq!(s, "000000042 1234567890 0 18446744073709551615");
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference: splitmix64 seeded with 1234567 (from the public domain C implementation).
        let mut rng = SplitMix64(1_234_567);
        assert_eq!(rng.next(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn ranges_split_count_evenly() {
        let mut config = GenerateConfig::new(10);
        config.partitions = 3;
        let source = GenerateSource::new(config).unwrap();
        assert_eq!([source.range(0), source.range(1), source.range(2)], [(0, 3), (3, 6), (6, 10)]);
        assert_eq!(source.partition_index("p2"), Some(2));
        assert_eq!(source.partition_index("p3"), None);
        assert_eq!(source.partition_index("p01"), None);
        assert_eq!(source.partition_index("main"), None);
    }

    #[test]
    fn short_texts_stay_under_twenty_chars() {
        let mut config = GenerateConfig::new(1000);
        config.short_every = 1;
        let source = GenerateSource::new(config).unwrap();
        for i in 0..1000 {
            let r = source.record(i);
            assert_eq!(r.text.split(' ').count(), 3);
            assert!(r.text.chars().count() < 20, "{}", r.text);
        }
    }
}
