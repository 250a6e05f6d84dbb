//! What a run's tokens cost: the models its saved pipeline file names (the
//! LLM classifier's and the OpenAI embedder's), priced by the file's
//! `[prices."MODEL"]` tables, else by the defaults below. The defaults are
//! list prices in US dollars per million tokens, which change: write your
//! own `[prices]` table to correct them.

use serde_json::Value;
use sluice_connectors::pipeline_file::ModelPrice;
use sluice_core::CostLedger;

/// List prices (USD per million tokens, input then output) of common OpenAI
/// models; `[prices."MODEL"]` in the pipeline file overrides any of them.
const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.0),
];

/// A run's cost, or why it cannot be told.
#[derive(Clone, Debug, PartialEq)]
pub enum Money {
    /// Nothing was paid for.
    Free,
    /// US dollars; `defaults` when a default price was used.
    Usd { amount: f64, defaults: bool },
    /// A paid model without a price: the names to add a `[prices]` table for.
    Unpriced(Vec<String>),
}

impl Money {
    pub fn text(&self) -> Option<String> {
        match self {
            Money::Free => None,
            Money::Usd { amount, defaults: true } => {
                Some(format!("cost ≈ ${amount:.4} (default prices; set [prices.\"MODEL\"] to correct them)"))
            }
            Money::Usd { amount, defaults: false } => Some(format!("cost ≈ ${amount:.4}")),
            Money::Unpriced(models) => Some(format!(
                "cost unknown: no price for {} (add [prices.\"MODEL\"] input_per_1m = ..., output_per_1m = ...)",
                models.join(", ")
            )),
        }
    }
}

/// Prices `cost` with the models and `[prices]` of `config` (a run's saved pipeline file).
pub fn money(config: &Value, cost: &CostLedger) -> Money {
    let llm_tokens_in = cost.tokens_in.saturating_sub(cost.embedding_tokens);
    let paid = [
        (llm_model(config), llm_tokens_in, cost.tokens_out, cost.llm_calls),
        (embedding_model(config), cost.embedding_tokens, 0, cost.embedding_calls),
    ];
    let mut amount = 0.0;
    let mut defaults = false;
    let mut unpriced = Vec::new();
    for (model, tokens_in, tokens_out, calls) in paid {
        if calls == 0 {
            continue;
        }
        let model = model.unwrap_or_else(|| "(unnamed model)".into());
        match price(config, &model) {
            Some((price, default)) => {
                amount += (tokens_in as f64 * price.input_per_1m + tokens_out as f64 * price.output_per_1m) / 1e6;
                defaults |= default;
            }
            None => unpriced.push(model),
        }
    }
    match (unpriced.is_empty(), cost.llm_calls + cost.embedding_calls) {
        (_, 0) => Money::Free,
        (true, _) => Money::Usd { amount, defaults },
        (false, _) => Money::Unpriced(unpriced),
    }
}

/// The price of `model`: the file's, else a default (`true`).
fn price(config: &Value, model: &str) -> Option<(ModelPrice, bool)> {
    if let Some(own) = config.get("prices").and_then(|p| p.get(model)) {
        return serde_json::from_value(own.clone()).ok().map(|p| (p, false));
    }
    DEFAULT_PRICES
        .iter()
        .find(|(name, ..)| *name == model)
        .map(|&(_, input_per_1m, output_per_1m)| (ModelPrice { input_per_1m, output_per_1m }, true))
}

/// The model of the first stage or phase that calls an LLM.
fn llm_model(config: &Value) -> Option<String> {
    let stages = config.get("stages").and_then(Value::as_array).into_iter().flatten();
    let phases = config.pointer("/phases/facet_extraction").into_iter();
    stages.chain(phases).find(|s| s.get("provider").and_then(Value::as_str) == Some("llm")).and_then(model_of)
}

/// The model of the first OpenAI embedder (a stage or the embedding phase).
fn embedding_model(config: &Value) -> Option<String> {
    let stages = config.get("stages").and_then(Value::as_array).into_iter().flatten();
    let phases = config.pointer("/phases/embedding_generation").into_iter();
    stages
        .filter(|s| s.get("kind").and_then(Value::as_str) == Some("embed"))
        .chain(phases)
        .find(|s| s.get("provider").and_then(Value::as_str) == Some("openai"))
        .and_then(model_of)
}

fn model_of(entry: &Value) -> Option<String> {
    entry.get("model").and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ledger(
        llm_calls: u64,
        embedding_calls: u64,
        tokens_in: u64,
        tokens_out: u64,
        embedding_tokens: u64,
    ) -> CostLedger {
        CostLedger { llm_calls, embedding_calls, tokens_in, tokens_out, embedding_tokens }
    }

    #[test]
    fn tokens_are_priced_per_model_with_the_files_prices_before_the_defaults() {
        let config = json!({
            "stages": [{"kind": "classify", "provider": "llm", "model": "gpt-4o-mini"}],
            "phases": {"embedding_generation": {"provider": "openai", "model": "text-embedding-3-small"}},
        });
        // 1M LLM tokens in, 1M out, 1M embedding tokens: 0.15 + 0.60 + 0.02.
        let cost = ledger(10, 5, 2_000_000, 1_000_000, 1_000_000);
        let Money::Usd { amount, defaults: true } = money(&config, &cost) else { panic!("priced by defaults") };
        assert!((amount - 0.77).abs() < 1e-9, "{amount}");

        let mut own = config.clone();
        own["prices"] = json!({"gpt-4o-mini": {"input_per_1m": 1.0, "output_per_1m": 2.0}, "text-embedding-3-small": {"input_per_1m": 0.5}});
        assert_eq!(money(&own, &cost), Money::Usd { amount: 3.5, defaults: false });
        assert!(money(&own, &cost).text().unwrap().starts_with("cost ≈ $3.5000"));
    }

    #[test]
    fn a_model_without_a_price_is_named_and_nothing_paid_is_free() {
        let config = json!({"stages": [{"kind": "classify", "provider": "llm", "model": "my-llm"}]});
        assert_eq!(money(&config, &ledger(3, 0, 300, 30, 0)), Money::Unpriced(vec!["my-llm".into()]));
        assert!(money(&config, &ledger(3, 0, 300, 30, 0)).text().unwrap().contains("no price for my-llm"));
        assert_eq!(money(&config, &CostLedger::default()), Money::Free);
        assert_eq!(Money::Free.text(), None);
    }
}
