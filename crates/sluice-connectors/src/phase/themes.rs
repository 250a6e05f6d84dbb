//! `theme_extraction`: groups the stored documents into themes by k-means
//! over their embeddings (k-means++ start from a fixed seed, so the same
//! data gives the same themes), and labels each theme with the terms that
//! set its documents apart. Writes one `theme` result per theme and each
//! document's theme into its annotations, in one commit.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::{
    Context, Counts, DocumentUpdate, EngineError, PhaseInput, PhaseOutput, PhaseResult, PhaseTask, StoreError,
};

use super::THEME_EXTRACTION;
use crate::ConfigError;

/// `[phases.theme_extraction]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThemeConfig {
    /// Themes to find (1..=1000); fewer when there are fewer documents.
    #[serde(default = "default_themes")]
    pub themes: usize,
    /// Seed of the k-means++ start.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Most k-means rounds (1..=1000); it stops earlier once no document moves.
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Terms in each theme's label (1..=10).
    #[serde(default = "default_label_terms")]
    pub label_terms: usize,
}

impl Default for ThemeConfig {
    fn default() -> Self {
        Self {
            themes: default_themes(),
            seed: default_seed(),
            iterations: default_iterations(),
            label_terms: default_label_terms(),
        }
    }
}

fn default_themes() -> usize {
    8
}
fn default_seed() -> u64 {
    42
}
fn default_iterations() -> usize {
    50
}
fn default_label_terms() -> usize {
    3
}

/// Characters of each document used for labels.
const LABEL_TEXT_CHARS: usize = 4000;

pub struct ThemeExtraction {
    config: ThemeConfig,
}

impl ThemeExtraction {
    pub fn new(config: ThemeConfig) -> Result<Self, ConfigError> {
        let check = |key: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!("phases.theme_extraction.{key} = {value} is out of range (allowed: 1-{max})")))
            }
        };
        check("themes", config.themes, 1000)?;
        check("iterations", config.iterations, 1000)?;
        check("label_terms", config.label_terms, 10)?;
        Ok(Self { config })
    }
}

/// A document taking part in clustering.
struct Member {
    id: String,
    embedding: Vec<f32>,
    /// Ids in the run's [`Vocabulary`], sorted, each once.
    terms: Vec<u32>,
    category: Option<String>,
    annotations: serde_json::Map<String, serde_json::Value>,
}

#[async_trait]
impl PhaseTask for ThemeExtraction {
    fn name(&self) -> &str {
        THEME_EXTRACTION
    }

    async fn run(&self, _ctx: &Context, input: PhaseInput<'_>) -> Result<PhaseOutput, EngineError> {
        let mut members = Vec::new();
        let mut vocabulary = Vocabulary::default();
        let mut without_embedding = 0u64;
        input
            .for_each_document(|doc| {
                let Some(embedding) = doc.embedding else {
                    without_embedding += 1;
                    return;
                };
                let text: String = doc.record.text.chars().take(LABEL_TEXT_CHARS).collect();
                members.push(Member {
                    id: doc.record.id,
                    embedding,
                    terms: vocabulary.terms_of(&text),
                    category: doc.classification.map(|c| c.category),
                    annotations: doc.annotations,
                });
            })
            .await?;
        if let Some(first) = members.first() {
            let dims = first.embedding.len();
            if let Some(odd) = members.iter().find(|m| m.embedding.len() != dims) {
                return Err(EngineError::Store(StoreError::Contract {
                    message: format!(
                        "theme_extraction: document {} has a {}-dimension embedding, others {dims}: \
                         re-run embedding_generation with one embedder",
                        odd.id,
                        odd.embedding.len()
                    ),
                }));
            }
        }
        let config = self.config.clone();
        let source = input.source.to_string();
        let output = tokio::task::spawn_blocking(move || themes_of(members, &vocabulary, &config, &source))
            .await
            .map_err(|e| EngineError::Invalid(format!("theme_extraction ended abnormally: {e}")))?;
        let mut output = output;
        output.counts.filtered = without_embedding;
        Ok(output)
    }
}

fn themes_of(members: Vec<Member>, vocabulary: &Vocabulary, config: &ThemeConfig, source: &str) -> PhaseOutput {
    if members.is_empty() {
        return PhaseOutput::default();
    }
    let vectors: Vec<&[f32]> = members.iter().map(|m| m.embedding.as_slice()).collect();
    let k = config.themes.min(members.len());
    let assignment = kmeans(&vectors, k, config.seed, config.iterations);

    // Themes in a stable order: largest first, then by their first document id.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (index, &cluster) in assignment.iter().enumerate() {
        groups[cluster].push(index);
    }
    groups.retain(|g| !g.is_empty());
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| members[a[0]].id.cmp(&members[b[0]].id)));

    let mut document_frequency = vec![0u32; vocabulary.words.len()];
    for member in &members {
        for &term in &member.terms {
            document_frequency[term as usize] += 1;
        }
    }
    let total = members.len() as f64;
    let mut results = Vec::with_capacity(groups.len());
    let mut theme_of = vec![(String::new(), String::new()); members.len()];
    for (number, group) in groups.iter().enumerate() {
        let key = format!("theme-{number:03}");
        let terms = label_terms(group, &members, vocabulary, &document_frequency, total, config.label_terms);
        let label = if terms.is_empty() { format!("theme {number}") } else { terms.join(" / ") };
        let mut categories: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in group {
            if let Some(category) = &members[i].category {
                *categories.entry(category).or_default() += 1;
            }
        }
        let top_category = categories.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(c, _)| *c);
        let ids: Vec<&str> = group.iter().map(|&i| members[i].id.as_str()).collect();
        results.push(PhaseResult {
            kind: "theme".into(),
            key: key.clone(),
            value: json!({
                "label": label,
                "terms": terms,
                "size": group.len(),
                "top_category": top_category,
                "document_ids": ids,
            }),
        });
        for &i in group {
            theme_of[i] = (key.clone(), label.clone());
        }
    }
    let stored = members.len() as u64;
    let updates = members
        .into_iter()
        .zip(theme_of)
        .map(|(member, (key, label))| {
            let mut annotations = member.annotations;
            annotations.insert("theme".into(), json!({"id": key, "label": label}));
            DocumentUpdate { source: source.to_string(), id: member.id, embedding: None, annotations }
        })
        .collect();
    PhaseOutput { updates, results, counts: Counts { stored, ..Counts::default() } }
}

/// The terms most particular to a group: frequent in it, rare elsewhere.
fn label_terms(
    group: &[usize],
    members: &[Member],
    vocabulary: &Vocabulary,
    document_frequency: &[u32],
    total: f64,
    n: usize,
) -> Vec<String> {
    let mut in_group: HashMap<u32, u32> = HashMap::new();
    for &i in group {
        for &term in &members[i].terms {
            *in_group.entry(term).or_default() += 1;
        }
    }
    let size = group.len() as f64;
    let mut scored: Vec<(f64, &str)> = in_group
        .into_iter()
        .filter(|(_, count)| *count > 1 || group.len() == 1)
        .map(|(term, count)| {
            let df = f64::from(document_frequency[term as usize].max(1));
            (f64::from(count) / size * (1.0 + total / df).ln(), vocabulary.words[term as usize].as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(n).map(|(_, term)| term.to_string()).collect()
}

const STOPWORDS: &[&str] = &[
    "about", "after", "again", "also", "been", "before", "being", "could", "does", "doing", "down", "each", "from",
    "have", "having", "here", "into", "just", "like", "more", "most", "much", "need", "only", "other", "over",
    "please", "same", "should", "some", "still", "such", "than", "thank", "thanks", "that", "their", "them", "then",
    "there", "these", "they", "this", "those", "through", "very", "want", "were", "what", "when", "where", "which",
    "while", "will", "with", "would", "your", "yours", "hello", "today", "team", "know", "help",
];

/// The words seen in a run, each stored once: documents hold word ids, so
/// the memory for labels grows with the vocabulary, not with the corpus.
#[derive(Default)]
struct Vocabulary {
    ids: HashMap<String, u32>,
    words: Vec<String>,
}

impl Vocabulary {
    /// Distinct lowercase words of four letters or more that say something, as ids.
    fn terms_of(&mut self, text: &str) -> Vec<u32> {
        let mut terms: Vec<u32> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4 && w.chars().any(char::is_alphabetic))
            .map(str::to_lowercase)
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .map(|w| match self.ids.get(&w) {
                Some(&id) => id,
                None => {
                    let id = self.words.len() as u32;
                    self.ids.insert(w.clone(), id);
                    self.words.push(w);
                    id
                }
            })
            .collect();
        terms.sort_unstable();
        terms.dedup();
        terms
    }
}

/// Cluster of each vector after k-means with a k-means++ start from `seed`.
fn kmeans(vectors: &[&[f32]], k: usize, seed: u64, iterations: usize) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dims = vectors[0].len();
    let mut centroids: Vec<Vec<f32>> = vec![vectors[rng.usize(..vectors.len())].to_vec()];
    let mut nearest: Vec<f64> = vectors.iter().map(|v| distance(v, &centroids[0])).collect();
    while centroids.len() < k {
        let sum: f64 = nearest.iter().sum();
        let next = if sum <= 0.0 {
            // Every point sits on a centroid already: take the first not chosen.
            centroids.len()
        } else {
            let mut target = rng.f64() * sum;
            nearest
                .iter()
                .position(|d| {
                    target -= d;
                    target <= 0.0
                })
                .unwrap_or(vectors.len() - 1)
        };
        centroids.push(vectors[next.min(vectors.len() - 1)].to_vec());
        let last = centroids.len() - 1;
        for (d, v) in nearest.iter_mut().zip(vectors) {
            *d = d.min(distance(v, &centroids[last]));
        }
    }
    let mut assignment = vec![usize::MAX; vectors.len()];
    for _ in 0..iterations {
        let mut moved = false;
        for (slot, v) in assignment.iter_mut().zip(vectors) {
            let best =
                (0..k).min_by(|&a, &b| distance(v, &centroids[a]).total_cmp(&distance(v, &centroids[b]))).unwrap_or(0);
            if *slot != best {
                *slot = best;
                moved = true;
            }
        }
        if !moved {
            break;
        }
        let mut sums = vec![vec![0f64; dims]; k];
        let mut sizes = vec![0usize; k];
        for (&cluster, v) in assignment.iter().zip(vectors) {
            sizes[cluster] += 1;
            for (s, x) in sums[cluster].iter_mut().zip(v.iter()) {
                *s += f64::from(*x);
            }
        }
        for ((centroid, sum), size) in centroids.iter_mut().zip(sums).zip(sizes) {
            // An emptied cluster keeps its centroid.
            if size > 0 {
                *centroid = sum.into_iter().map(|s| (s / size as f64) as f32).collect();
            }
        }
    }
    assignment
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(vocabulary: &mut Vocabulary, id: &str, embedding: Vec<f32>, text: &str) -> Member {
        Member {
            id: id.into(),
            embedding,
            terms: vocabulary.terms_of(text),
            category: Some("bug".into()),
            annotations: serde_json::Map::new(),
        }
    }

    fn three_groups() -> (Vec<Member>, Vocabulary) {
        let mut v = Vocabulary::default();
        let mut members = Vec::new();
        for i in 0..10 {
            let jitter = i as f32 * 0.01;
            members.push(member(
                &mut v,
                &format!("a{i}"),
                vec![1.0 + jitter, 0.0, 0.0],
                "invoice refund charged twice",
            ));
            members.push(member(
                &mut v,
                &format!("b{i}"),
                vec![0.0, 1.0 + jitter, 0.0],
                "password login locked account",
            ));
            members.push(member(
                &mut v,
                &format!("c{i}"),
                vec![0.0, 0.0, 1.0 + jitter],
                "dashboard loading slowly timeout",
            ));
        }
        (members, v)
    }

    #[test]
    fn separated_groups_become_themes_labelled_by_their_terms() {
        let (members, v) = three_groups();
        let out = themes_of(members, &v, &ThemeConfig { themes: 3, ..ThemeConfig::default() }, "s");
        assert_eq!(out.results.len(), 3);
        assert_eq!(out.counts.stored, 30);
        let mut labels: Vec<String> = Vec::new();
        for theme in &out.results {
            assert_eq!(theme.value["size"], 10);
            let ids = theme.value["document_ids"].as_array().unwrap();
            let prefix = ids[0].as_str().unwrap().chars().next().unwrap();
            assert!(ids.iter().all(|id| id.as_str().unwrap().starts_with(prefix)), "one group per theme");
            labels.push(theme.value["label"].as_str().unwrap().to_string());
        }
        assert!(labels.iter().any(|l| l.contains("invoice") || l.contains("refund")), "{labels:?}");
        assert!(out.updates.iter().all(|u| u.annotations["theme"]["id"].as_str().unwrap().starts_with("theme-")));
    }

    #[test]
    fn the_same_seed_gives_the_same_themes_and_more_themes_than_documents_is_fine() {
        let config = ThemeConfig { themes: 4, seed: 7, ..ThemeConfig::default() };
        let (members, v) = three_groups();
        let a = themes_of(members, &v, &config, "s");
        let (members, v) = three_groups();
        let b = themes_of(members, &v, &config, "s");
        assert_eq!(a.results, b.results);
        let (members, v) = three_groups();
        let two = themes_of(members.into_iter().take(2).collect(), &v, &config, "s");
        assert_eq!(two.results.len(), 2);
        assert!(themes_of(Vec::new(), &v, &config, "s").results.is_empty());
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let err = ThemeExtraction::new(ThemeConfig { themes: 0, ..ThemeConfig::default() }).err().unwrap();
        assert!(err.0.contains("themes = 0"), "{err}");
    }
}
