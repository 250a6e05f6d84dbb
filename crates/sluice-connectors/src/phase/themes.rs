//! `theme_extraction`: groups the stored documents into themes by k-means
//! over their embeddings (k-means++ start from a fixed seed, so the same
//! data gives the same themes), and labels each theme with the terms that
//! set its documents apart. Writes one `theme` result per theme (with its
//! centroid and radius) and each document's theme into its annotations, in
//! one commit.
//!
//! **On an incremental run** the themes are not fitted again: each new or
//! changed document (no theme annotation, or one made for other content) goes
//! to the nearest centroid of the last fit ([`theme_fit`](super::theme_fit)),
//! and the others keep theirs. The fit is made again when the documents
//! assigned since the last fit pass `refit_new_share` of all, when those far
//! from every centroid (beyond [`FAR_RADII`] radii) pass `refit_far_share`,
//! when there is no earlier fit, or when asked (`refit = true`, `sluice run
//! --refit-themes`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::{
    Context, Counts, DocumentUpdate, EngineError, PhaseInput, PhaseOutput, PhaseResult, PhaseTask, StoreError,
};

use super::THEME_EXTRACTION;
use super::theme_fit::{FAR_RADII, Fit, centroid_and_radius, distance, previous_fit};
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
    /// Incremental runs fit again once the documents assigned since the last fit pass this share of all (0-1).
    #[serde(default = "default_refit_new_share")]
    pub refit_new_share: f64,
    /// ... or once those far from every centroid pass this share of all (0-1).
    #[serde(default = "default_refit_far_share")]
    pub refit_far_share: f64,
    /// Fit again on this run whatever the drift (`sluice run --refit-themes` sets it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refit: bool,
    /// Set for the runs of an incremental pipeline: assign instead of fitting (see the module).
    #[serde(skip)]
    pub incremental: bool,
}

impl Default for ThemeConfig {
    fn default() -> Self {
        Self {
            themes: default_themes(),
            seed: default_seed(),
            iterations: default_iterations(),
            label_terms: default_label_terms(),
            refit_new_share: default_refit_new_share(),
            refit_far_share: default_refit_far_share(),
            refit: false,
            incremental: false,
        }
    }
}

fn default_refit_new_share() -> f64 {
    0.5
}
fn default_refit_far_share() -> f64 {
    0.1
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
        for (key, share) in [("refit_new_share", config.refit_new_share), ("refit_far_share", config.refit_far_share)] {
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError(format!(
                    "phases.theme_extraction.{key} = {share} is out of range (allowed: 0-1, a share of the documents)"
                )));
            }
        }
        Ok(Self { config })
    }
}

/// A document taking part in clustering.
struct Member {
    id: String,
    /// The content hash it had when placed: a theme annotation made for other content is stale.
    hash: String,
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
                    hash: doc.content_hash,
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
        let dims = members.first().map_or(0, |m| m.embedding.len());
        let fit = match self.config.incremental && !self.config.refit && dims > 0 {
            true => previous_fit(&input, dims).await?,
            false => None,
        };
        if self.config.incremental && fit.is_none() && !self.config.refit {
            tracing::info!("theme_extraction: no earlier fit of this pipeline with centroids: fitting the themes");
        }
        let config = self.config.clone();
        let source = input.source.to_string();
        let run_id = input.run_id;
        let output = tokio::task::spawn_blocking(move || match fit {
            Some(fit) => match assign(members, &fit, &config, &source) {
                Ok(output) => output,
                Err((members, why)) => {
                    tracing::info!("theme_extraction: fitting the themes again: {why}");
                    themes_of(members, &vocabulary, &config, &source, run_id)
                }
            },
            None => themes_of(members, &vocabulary, &config, &source, run_id),
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("theme_extraction ended abnormally: {e}")))?;
        let mut output = output;
        output.counts.filtered = without_embedding;
        Ok(output)
    }
}

/// Where an incremental run puts a document: a theme of the fit, whether it
/// is far from it, whether it was assigned since the fit, and whether this run placed it.
struct Placement {
    theme: usize,
    far: bool,
    assigned: bool,
    placed_now: bool,
}

/// Assigns the new and changed documents to the fit's themes, or answers why
/// the themes must be fitted again (handing the members back).
fn assign(
    members: Vec<Member>,
    fit: &Fit,
    config: &ThemeConfig,
    source: &str,
) -> Result<PhaseOutput, (Vec<Member>, String)> {
    let mut placements = Vec::with_capacity(members.len());
    for member in &members {
        let kept = member.annotations.get("theme").filter(|a| {
            a["hash"].as_str() == Some(member.hash.as_str()) && a["fitted_run"].as_i64() == Some(fit.fitted_run)
        });
        let kept = kept.and_then(|a| {
            let theme = fit.index_of(a["id"].as_str()?)?;
            let flag = |key: &str| a[key].as_bool().unwrap_or(false);
            Some(Placement { theme, far: flag("far"), assigned: flag("assigned"), placed_now: false })
        });
        let placement = match kept {
            Some(placement) => placement,
            None => match fit.nearest(&member.embedding) {
                Some((theme, far)) => Placement { theme, far, assigned: true, placed_now: true },
                None => return Err((members, "the last fit has no themes".into())),
            },
        };
        placements.push(placement);
    }
    let total = members.len() as f64;
    let since_fit = placements.iter().filter(|p| p.assigned).count();
    let far = placements.iter().filter(|p| p.assigned && p.far).count();
    if since_fit as f64 / total > config.refit_new_share {
        let why = format!(
            "{since_fit} of {} documents came since the fit of run {} (refit_new_share = {})",
            members.len(),
            fit.fitted_run,
            config.refit_new_share
        );
        return Err((members, why));
    }
    if far as f64 / total > config.refit_far_share {
        let why = format!(
            "{far} of {} documents are farther than {FAR_RADII} radii from every theme (refit_far_share = {})",
            members.len(),
            config.refit_far_share
        );
        return Err((members, why));
    }
    let placed_now = placements.iter().filter(|p| p.placed_now).count();
    tracing::info!(
        placed_now,
        since_fit,
        far,
        fitted_run = fit.fitted_run,
        "theme_extraction: new and changed documents assigned to the themes of the last fit"
    );
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); fit.themes.len()];
    for (index, placement) in placements.iter().enumerate() {
        groups[placement.theme].push(index);
    }
    let results = fit
        .themes
        .iter()
        .zip(&groups)
        .map(|(theme, group)| {
            let mut value = theme.value.clone();
            let ids: Vec<&str> = group.iter().map(|&i| members[i].id.as_str()).collect();
            value["size"] = json!(group.len());
            value["document_ids"] = json!(ids);
            value["top_category"] = json!(top_category(group, &members));
            PhaseResult { kind: "theme".into(), key: theme.key.clone(), value }
        })
        .collect();
    let updates = members
        .into_iter()
        .zip(&placements)
        .filter(|(_, p)| p.placed_now)
        .map(|(member, p)| {
            let theme = &fit.themes[p.theme];
            let mut annotations = member.annotations;
            let note = json!({"id": theme.key, "label": theme.label, "hash": member.hash,
                              "fitted_run": fit.fitted_run, "assigned": true, "far": p.far});
            annotations.insert("theme".into(), note);
            DocumentUpdate { source: source.to_string(), id: member.id, embedding: None, annotations }
        })
        .collect();
    Ok(PhaseOutput { updates, results, counts: Counts { stored: placed_now as u64, ..Counts::default() } })
}

/// The category most of a group's documents have.
fn top_category<'a>(group: &[usize], members: &'a [Member]) -> Option<&'a str> {
    let mut categories: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in group {
        if let Some(category) = &members[i].category {
            *categories.entry(category).or_default() += 1;
        }
    }
    categories.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(c, _)| *c)
}

fn themes_of(
    members: Vec<Member>,
    vocabulary: &Vocabulary,
    config: &ThemeConfig,
    source: &str,
    run_id: sluice_core::store::RunId,
) -> PhaseOutput {
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
        let top_category = top_category(group, &members);
        let ids: Vec<&str> = group.iter().map(|&i| members[i].id.as_str()).collect();
        let vectors: Vec<&[f32]> = group.iter().map(|&i| members[i].embedding.as_slice()).collect();
        let (centroid, radius) = centroid_and_radius(&vectors);
        results.push(PhaseResult {
            kind: "theme".into(),
            key: key.clone(),
            value: json!({
                "label": label,
                "terms": terms,
                "size": group.len(),
                "top_category": top_category,
                "document_ids": ids,
                "centroid": centroid,
                "radius": radius,
                "fitted_run": run_id,
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
            let note = json!({"id": key, "label": label, "hash": member.hash, "fitted_run": run_id,
                              "assigned": false, "far": false});
            annotations.insert("theme".into(), note);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(vocabulary: &mut Vocabulary, id: &str, embedding: Vec<f32>, text: &str) -> Member {
        Member {
            id: id.into(),
            hash: format!("h-{id}"),
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
        let out = themes_of(members, &v, &ThemeConfig { themes: 3, ..ThemeConfig::default() }, "s", 1);
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
        let a = themes_of(members, &v, &config, "s", 1);
        let (members, v) = three_groups();
        let b = themes_of(members, &v, &config, "s", 1);
        assert_eq!(a.results, b.results);
        let (members, v) = three_groups();
        let two = themes_of(members.into_iter().take(2).collect(), &v, &config, "s", 1);
        assert_eq!(two.results.len(), 2);
        assert!(themes_of(Vec::new(), &v, &config, "s", 1).results.is_empty());
    }

    /// The fit `themes_of` made, as an incremental run reads it back.
    fn fit_of(out: &PhaseOutput) -> Fit {
        let themes = out
            .results
            .iter()
            .map(|r| crate::phase::theme_fit::FitTheme {
                key: r.key.clone(),
                label: r.value["label"].as_str().unwrap().to_string(),
                centroid: r.value["centroid"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
                radius: r.value["radius"].as_f64().unwrap(),
                value: r.value.clone(),
            })
            .collect();
        Fit { fitted_run: 1, themes }
    }

    /// The members as stored after `out`: each with the annotation the output gave it.
    fn annotated(out: &PhaseOutput, vocabulary: &mut Vocabulary) -> Vec<Member> {
        let (members, _) = three_groups();
        members
            .into_iter()
            .map(|mut m| {
                if let Some(u) = out.updates.iter().find(|u| u.id == m.id) {
                    m.annotations = u.annotations.clone();
                }
                m.terms = vocabulary.terms_of("x");
                m
            })
            .collect()
    }

    #[test]
    fn an_incremental_run_assigns_new_documents_to_the_nearest_theme_and_refits_past_the_drift() {
        let config = ThemeConfig { themes: 3, ..ThemeConfig::default() };
        let (members, v) = three_groups();
        let fitted = themes_of(members, &v, &config, "s", 1);
        let fit = fit_of(&fitted);
        fn theme_of(out: &PhaseOutput, id: &str) -> String {
            let has = |r: &&PhaseResult| r.value["document_ids"].as_array().unwrap().iter().any(|d| d == id);
            out.results.iter().find(has).unwrap().key.clone()
        }
        let a_theme = theme_of(&fitted, "a0");

        // Two new documents, one near the invoice group and one far from everything.
        let mut v2 = Vocabulary::default();
        let mut members = annotated(&fitted, &mut v2);
        members.push(member(&mut v2, "new-near", vec![1.02, 0.01, 0.0], "invoice"));
        members.push(member(&mut v2, "new-far", vec![9.0, 9.0, 9.0], "elsewhere"));
        let out = assign(members, &fit, &config, "s").map_err(|(_, why)| why).unwrap();
        assert_eq!(out.updates.len(), 2, "only the new documents are written");
        assert_eq!(out.updates[0].annotations["theme"]["id"], a_theme.as_str());
        assert_eq!(out.updates[1].annotations["theme"]["far"], true);
        assert_eq!(theme_of(&out, "new-near"), a_theme, "nearest centroid");
        assert_eq!(out.results.iter().map(|r| r.value["size"].as_u64().unwrap()).sum::<u64>(), 32);
        assert_eq!(out.results[0].value["label"], fitted.results[0].value["label"], "labels stay");

        // A changed document (its hash moved) is placed again; the unchanged are not.
        let mut members = annotated(&fitted, &mut Vocabulary::default());
        members[0].hash = "changed".into();
        let out = assign(members, &fit, &config, "s").map_err(|(_, why)| why).unwrap();
        assert_eq!(out.updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["a0"]);

        // Far documents past refit_far_share (10%): fit again.
        let mut v3 = Vocabulary::default();
        let mut members = annotated(&fitted, &mut v3);
        for i in 0..4 {
            members.push(member(&mut v3, &format!("far-{i}"), vec![9.0, 9.0, 9.0 + i as f32], "elsewhere"));
        }
        let Err((_, why)) = assign(members, &fit, &config, "s") else { panic!("drifted") };
        assert!(why.contains("farther than"), "{why}");

        // New documents past refit_new_share: fit again.
        let strict = ThemeConfig { refit_new_share: 0.05, ..config.clone() };
        let mut v4 = Vocabulary::default();
        let mut members = annotated(&fitted, &mut v4);
        for i in 0..2 {
            members.push(member(&mut v4, &format!("n-{i}"), vec![0.0, 1.0, 0.0], "login"));
        }
        let Err((_, why)) = assign(members, &fit, &strict, "s") else { panic!("drifted") };
        assert!(why.contains("came since the fit of run 1"), "{why}");
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let err = ThemeExtraction::new(ThemeConfig { themes: 0, ..ThemeConfig::default() }).err().unwrap();
        assert!(err.0.contains("themes = 0"), "{err}");
        let err = ThemeExtraction::new(ThemeConfig { refit_far_share: 1.5, ..ThemeConfig::default() }).err().unwrap();
        assert!(err.0.contains("refit_far_share = 1.5"), "{err}");
    }
}
