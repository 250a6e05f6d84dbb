//! The themes of an earlier fit, for an incremental run that assigns new and
//! changed documents to them instead of fitting again: each theme's centroid
//! and radius (the root mean square distance of its documents to the
//! centroid at the fit), read from the `theme` results of the pipeline's
//! latest completed run that has them.

use serde_json::Value;
use sluice_core::store::RunId;
use sluice_core::{PhaseInput, RunStatus, StoreError};

/// Earlier runs looked through for the last fit.
const RUNS_SEARCHED: usize = 200;

/// A document is far from its theme when its distance to the centroid passes this many radii.
pub const FAR_RADII: f64 = 2.0;

/// A theme as fitted.
#[derive(Clone, Debug)]
pub struct FitTheme {
    pub key: String,
    pub label: String,
    pub centroid: Vec<f32>,
    pub radius: f64,
    /// The stored result, carried over (terms, top category).
    pub value: Value,
}

/// The themes of the last fit, and the run that fitted them.
#[derive(Clone, Debug)]
pub struct Fit {
    pub fitted_run: RunId,
    pub themes: Vec<FitTheme>,
}

impl Fit {
    /// The nearest theme to `embedding`, with whether it is far from it.
    pub fn nearest(&self, embedding: &[f32]) -> Option<(usize, bool)> {
        let (index, d) = self
            .themes
            .iter()
            .enumerate()
            .map(|(i, t)| (i, distance(embedding, &t.centroid).sqrt()))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((index, d > FAR_RADII * self.themes[index].radius.max(f64::EPSILON)))
    }

    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.themes.iter().position(|t| t.key == key)
    }
}

/// The themes of the latest completed run of this pipeline before this one
/// that wrote themes with centroids; `None` when there is none (or they
/// have other dimensions than `dims`).
pub async fn previous_fit(input: &PhaseInput<'_>, dims: usize) -> Result<Option<Fit>, StoreError> {
    let Some(this) = input.store.get_run(input.run_id).await? else { return Ok(None) };
    for run in input.store.list_runs(RUNS_SEARCHED).await? {
        if run.id >= this.id || run.pipeline != this.pipeline || run.status != RunStatus::Completed {
            continue;
        }
        let results = input.store.phase_results(run.id, "theme").await?;
        if results.is_empty() {
            continue;
        }
        let mut themes = Vec::with_capacity(results.len());
        for result in results {
            let centroid: Option<Vec<f32>> = result.value["centroid"]
                .as_array()
                .map(|xs| xs.iter().filter_map(Value::as_f64).map(|x| x as f32).collect());
            let Some(centroid) = centroid.filter(|c| c.len() == dims) else { return Ok(None) };
            themes.push(FitTheme {
                label: result.value["label"].as_str().unwrap_or(&result.key).to_string(),
                radius: result.value["radius"].as_f64().unwrap_or(0.0),
                key: result.key,
                centroid,
                value: result.value,
            });
        }
        let fitted_run = themes.first().and_then(|t| t.value["fitted_run"].as_i64()).unwrap_or(run.id);
        return Ok(Some(Fit { fitted_run, themes }));
    }
    Ok(None)
}

/// Squared Euclidean distance.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// The mean of `vectors` and the root mean square distance to it.
pub fn centroid_and_radius(vectors: &[&[f32]]) -> (Vec<f32>, f64) {
    let Some(first) = vectors.first() else { return (Vec::new(), 0.0) };
    let mut sum = vec![0f64; first.len()];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v.iter()) {
            *s += f64::from(*x);
        }
    }
    let n = vectors.len() as f64;
    let centroid: Vec<f32> = sum.into_iter().map(|s| (s / n) as f32).collect();
    let radius = (vectors.iter().map(|v| distance(v, &centroid)).sum::<f64>() / n).sqrt();
    (centroid, radius)
}
