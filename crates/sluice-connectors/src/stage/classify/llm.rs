//! Classification by an LLM behind any OpenAI-compatible
//! `/chat/completions` endpoint, with structured JSON answers.
//!
//! Each document is one request: a system prompt naming the categories and
//! the answer's shape, and a user message with the document's id, its
//! subject or title when it has one, and its text (cut to
//! `max_input_chars`). The answer must be JSON
//! `{"category", "confidence", "reason"}` with a category from the list
//! (compared case-insensitively, stored as configured).
//!
//! - Concurrency: at most `concurrency` requests at once over all batches
//!   this stage works on.
//! - 429, 5xx, time-outs, dropped connections and truncated bodies are
//!   retried inside the stage, `max_attempts` tries per call, with
//!   exponential backoff and jitter that honours `retry-after`; each wait is
//!   an `AdapterStateChange` event. Still failing: the record fails as
//!   retryable (the engine tries it again later, then records it).
//! - An answer that is not JSON, lacks a field, or names a category not in
//!   the list is asked again (`parse_attempts` tries in all); then the record
//!   fails, not retryable, with `error_type` `parse` or `invalid_category`.
//! - 401/403 (key refused), 404 (wrong URL or model) and 429
//!   `insufficient_quota` fail the whole batch, and so the run, with a
//!   message naming the setting to fix (never the key).
//! - Every answered call is recorded in the cost ledger with the `usage`
//!   tokens the API reports (unparseable answers too: they were paid for).
//! - The content-hash memo: the fingerprint hashes model, prompt, category
//!   list and the other settings that shape the answer, so the engine reuses
//!   a stored classification for unchanged content and re-asks when any of
//!   them changes. Each classification is stored through the run's
//!   write-ahead the moment its answer is in, before its call's slot is
//!   freed (with the ledger, also for unusable answers), so a crash re-pays
//!   at most the `concurrency` calls in flight.
//!   Results made earlier in the same process but not yet
//!   committed (a cursor fallback re-reads pages that are still in flight)
//!   are reused from a bounded in-memory cache.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::{Classification, Context, Document, Memo, Outcome, Stage, StageCounter, StageError};
use sluice_core::{RetryPolicy, Verdict, with_retries, write_ahead};
use tokio::sync::Semaphore;

use crate::ConfigError;
use crate::remote::http::excerpt;
use crate::remote::openai::{ApiError, OpenAiApi, OpenAiEndpoint};
use crate::util::hash::sha256_hex;
use crate::util::validate::check_range;

/// Response formats `response_format` accepts.
pub const RESPONSE_FORMATS: [&str; 2] = ["json_schema", "json_object"];

/// The instruction used when the configuration gives no `prompt`.
pub const DEFAULT_PROMPT: &str = "You classify customer support conversations. Pick the one category that fits the \
    customer's main issue best.";

/// Version of the request template (user message layout, answer
/// instructions); part of the fingerprint, bumped when they change.
const TEMPLATE_VERSION: &str = "v1";

/// Classifications kept in memory for reuse before they are committed.
const RECENT_CAPACITY: usize = 16_384;

fn default_model() -> String {
    "gpt-4o-mini".to_string()
}
fn default_response_format() -> String {
    "json_schema".to_string()
}
fn default_concurrency() -> usize {
    8
}
fn default_parse_attempts() -> u32 {
    2
}
fn default_max_input_chars() -> usize {
    12_000
}
fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// `[[stages]] kind = "classify"` with `provider = "llm"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmClassifyConfig {
    /// The categories the answer must pick from (at least two, distinct).
    pub categories: Vec<String>,
    /// Model name sent to the API. Default `gpt-4o-mini`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where the API is, its key, tries per call and time-out (`base_url`,
    /// `api_key_env`, `api_key`, `max_attempts`, `timeout_secs`).
    #[serde(flatten)]
    pub endpoint: OpenAiEndpoint,
    /// The instruction of the system prompt; the category list and the answer
    /// format are always appended. Default [`DEFAULT_PROMPT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `json_schema` (strict structured output, default) or `json_object`.
    #[serde(default = "default_response_format")]
    pub response_format: String,
    /// Requests at once over all batches (1..=256). Default 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Calls per record when answers cannot be used (1..=5). Default 2.
    #[serde(default = "default_parse_attempts")]
    pub parse_attempts: u32,
    /// The text is cut to this many characters (100..=1000000). Default 12000.
    #[serde(default = "default_max_input_chars")]
    pub max_input_chars: usize,
    /// Sampling temperature (0..=2). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub temperature: f32,
}

impl LlmClassifyConfig {
    pub fn new(categories: Vec<String>) -> Self {
        Self {
            categories,
            model: default_model(),
            endpoint: OpenAiEndpoint::default(),
            prompt: None,
            response_format: default_response_format(),
            concurrency: default_concurrency(),
            parse_attempts: default_parse_attempts(),
            max_input_chars: default_max_input_chars(),
            temperature: 0.0,
        }
    }
}

/// The LLM classifier stage. See the module docs.
pub struct LlmClassifier {
    config: LlmClassifyConfig,
    api: OpenAiApi,
    system_prompt: String,
    fingerprint: String,
    permits: Arc<Semaphore>,
    retry: RetryPolicy,
    /// Lower-cased category -> the configured spelling.
    lookup: HashMap<String, String>,
    recent: Mutex<Recent>,
    classifier: String,
}

impl std::fmt::Debug for LlmClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClassifier")
            .field("base_url", &self.api.base_url())
            .field("model", &self.config.model)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl LlmClassifier {
    /// Checks the settings and resolves base URL and key (see [`crate::remote::openai`]).
    pub fn new(config: LlmClassifyConfig) -> Result<Self, ConfigError> {
        let api = config.endpoint.api("classify")?;
        Self::with_api(config, api)
    }

    /// The stage over an already resolved API (tests, embedding in other tools).
    pub fn with_api(config: LlmClassifyConfig, api: OpenAiApi) -> Result<Self, ConfigError> {
        if config.categories.len() < 2 {
            return Err(ConfigError(format!(
                "classify.categories = {:?} must list at least two categories",
                config.categories
            )));
        }
        let mut lookup = HashMap::new();
        for category in &config.categories {
            if category.trim().is_empty() || category.trim() != category {
                return Err(ConfigError(format!(
                    "classify.categories contains {category:?}; categories must be non-empty and without surrounding spaces"
                )));
            }
            if lookup.insert(category.to_lowercase(), category.clone()).is_some() {
                return Err(ConfigError(format!("classify.categories lists {category:?} twice")));
            }
        }
        if config.model.trim().is_empty() {
            return Err(ConfigError("classify.model = \"\" must name a model".into()));
        }
        if !RESPONSE_FORMATS.contains(&config.response_format.as_str()) {
            return Err(ConfigError(format!(
                "classify.response_format = {:?} is not supported (allowed: {})",
                config.response_format,
                RESPONSE_FORMATS.join(", ")
            )));
        }
        if let Some(prompt) = &config.prompt
            && prompt.trim().is_empty()
        {
            return Err(ConfigError("classify.prompt = \"\" is empty; leave it out for the default".into()));
        }
        check_range("classify.concurrency", config.concurrency, 1, 256)?;
        check_range("classify.max_attempts", config.endpoint.max_attempts, 1, 20)?;
        check_range("classify.parse_attempts", config.parse_attempts, 1, 5)?;
        check_range("classify.max_input_chars", config.max_input_chars, 100, 1_000_000)?;
        check_range("classify.timeout_secs", config.endpoint.timeout_secs, 1, 600)?;
        if !(0.0..=2.0).contains(&config.temperature) {
            return Err(ConfigError(format!(
                "classify.temperature = {} is out of range (allowed: 0..=2)",
                config.temperature
            )));
        }
        let system_prompt = system_prompt(&config);
        let fingerprint = format!(
            "llm:{}:{}",
            config.model,
            sha256_hex(
                &json!({
                    "template": TEMPLATE_VERSION,
                    "model": config.model,
                    "system": system_prompt,
                    "categories": config.categories,
                    "response_format": config.response_format,
                    "temperature": config.temperature,
                    "max_input_chars": config.max_input_chars,
                })
                .to_string(),
                16
            )
        );
        let retry = RetryPolicy {
            max_retries: config.endpoint.max_attempts.saturating_sub(1),
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        };
        Ok(Self {
            classifier: format!("llm:{}", config.model),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            recent: Mutex::new(Recent::default()),
            system_prompt,
            fingerprint,
            retry,
            lookup,
            api,
            config,
        })
    }

    /// The system prompt sent with every request.
    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }

    /// The request body for `doc`.
    pub fn request(&self, doc: &Document) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": user_message(doc, self.config.max_input_chars)},
            ],
            "temperature": self.config.temperature,
        });
        body["response_format"] = match self.config.response_format.as_str() {
            "json_object" => json!({"type": "json_object"}),
            _ => json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "classification",
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "category": {"type": "string", "enum": self.config.categories},
                            "confidence": {"type": "number"},
                            "reason": {"type": "string"},
                        },
                        "required": ["category", "confidence", "reason"],
                        "additionalProperties": false,
                    },
                },
            }),
        };
        body
    }

    /// Reads a chat completion: records its usage, then parses its answer.
    fn read_answer(&self, ctx: &Context, answer: &Value) -> Result<Classification, StageError> {
        let usage = answer.get("usage");
        let tokens = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64).unwrap_or(0);
        ctx.usage.llm_call(tokens("prompt_tokens"), tokens("completion_tokens"));
        let message = answer.pointer("/choices/0/message");
        if let Some(refusal) = message.and_then(|m| m.get("refusal")).and_then(Value::as_str) {
            return Err(StageError::permanent("refusal", format!("the model refused: {}", excerpt(refusal, 200))));
        }
        let Some(content) = message.and_then(|m| m.get("content")).and_then(Value::as_str) else {
            return Err(StageError::permanent("parse", "the answer has no choices[0].message.content"));
        };
        parse_answer(content, &self.lookup, &self.classifier)
    }

    /// Classifies one document. The outer error fails the whole batch.
    async fn classify(&self, ctx: &Context, doc: &Document) -> Result<Result<Classification, StageError>, StageError> {
        let _permit = self.permits.acquire().await.map_err(|_| StageError::permanent("closed", "stage is closed"))?;
        let body = self.request(doc);
        let mut last = None;
        for _ in 0..self.config.parse_attempts {
            let answer = with_retries(
                &self.retry,
                ctx,
                "classify",
                &ctx.abort,
                || self.api.post_paced(ctx, "classify", "/chat/completions", &body),
                |e: &ApiError| match e {
                    ApiError::Retryable { retry_after, .. } => Verdict::Retry(*retry_after),
                    _ => Verdict::Fatal,
                },
            )
            .await;
            match answer {
                // Stored before the call's slot is freed, so the calls paid and not
                // stored are never more than `concurrency`: a crash re-pays at most those.
                Ok(answer) => match self.read_answer(ctx, &answer) {
                    Ok(classification) => {
                        if ctx.write_ahead.is_enabled() {
                            let mut kept = doc.clone();
                            kept.classification = Some(classification.clone());
                            write_ahead(ctx, self, &kept).await;
                        }
                        return Ok(Ok(classification));
                    }
                    Err(error) => {
                        tracing::warn!(doc_id = doc.id(), error = %error, "unusable LLM answer");
                        // Billed all the same: its count goes to the ledger now.
                        ctx.write_ahead.flush().await;
                        last = Some(error);
                    }
                },
                Err(ApiError::Batch(error)) => return Err(error),
                Err(other) => return Ok(Err(other.into_stage_error())),
            }
        }
        Ok(Err(last.unwrap_or_else(|| StageError::permanent("parse", "no usable answer"))))
    }
}

/// The system prompt: the instruction, the categories as a JSON array, and
/// the answer's shape.
fn system_prompt(config: &LlmClassifyConfig) -> String {
    let instruction = config.prompt.as_deref().unwrap_or(DEFAULT_PROMPT).trim();
    let categories = serde_json::to_string(&config.categories).unwrap_or_default();
    format!(
        "{instruction}\nCategories: {categories}\nAnswer with a JSON object only, of the form \
         {{\"category\": <one of the categories, spelled as listed>, \"confidence\": <a number from 0 to 1>, \
         \"reason\": <why, in at most 20 words>}}."
    )
}

/// The user message: id, subject or title when there is one, and the text.
pub fn user_message(doc: &Document, max_chars: usize) -> String {
    let mut message = format!("Conversation {}\n", doc.id());
    for key in ["subject", "title"] {
        if let Some(value) = doc.record.fields.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty()) {
            message.push_str(&format!("Subject: {}\n", excerpt(value, 300)));
            break;
        }
    }
    message.push('\n');
    let text = doc.record.text.trim();
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => message.push_str(&text[..at]),
        None => message.push_str(text),
    }
    message
}

/// Parses an answer's content into a classification.
pub fn parse_answer(
    content: &str,
    categories: &HashMap<String, String>,
    classifier: &str,
) -> Result<Classification, StageError> {
    let value = json_in(content).ok_or_else(|| {
        StageError::permanent("parse", format!("the answer is not a JSON object: {:?}", excerpt(content, 120)))
    })?;
    let category = value.get("category").and_then(Value::as_str).ok_or_else(|| {
        StageError::permanent(
            "parse",
            format!(
                "the answer has no \"category\" string: {}",
                excerpt(&Value::Object(value.clone()).to_string(), 120)
            ),
        )
    })?;
    let Some(category) = categories.get(&category.trim().to_lowercase()) else {
        return Err(StageError::permanent(
            "invalid_category",
            format!("the answer's category {:?} is not one of the configured categories", excerpt(category, 60)),
        ));
    };
    let confidence = match value.get("confidence") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|c| c.is_finite())
    .ok_or_else(|| StageError::permanent("parse", "the answer has no numeric \"confidence\""))?;
    let reason = value.get("reason").and_then(Value::as_str).map(|r| excerpt(r, 300)).filter(|r| !r.is_empty());
    Ok(Classification {
        category: category.clone(),
        confidence: confidence.clamp(0.0, 1.0) as f32,
        reason,
        classifier: classifier.to_string(),
    })
}

/// The JSON object in `content`: the whole of it, or inside a ``` fence, or
/// from its first `{` to its last `}`.
fn json_in(content: &str) -> Option<serde_json::Map<String, Value>> {
    let trimmed = content.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok().and_then(|v| v.as_object().cloned());
    parse(unfenced).or_else(|| {
        let (start, end) = (unfenced.find('{')?, unfenced.rfind('}')?);
        (start < end).then(|| parse(&unfenced[start..=end])).flatten()
    })
}

/// Recently made classifications by (source, id, content hash), oldest evicted first.
#[derive(Default)]
struct Recent {
    map: HashMap<String, Classification>,
    order: VecDeque<String>,
}

impl Recent {
    fn key(doc: &Document) -> String {
        format!("{}\u{1f}{}\u{1f}{}", doc.source(), doc.id(), doc.content_hash)
    }

    fn get(&self, doc: &Document) -> Option<Classification> {
        self.map.get(&Self::key(doc)).cloned()
    }

    fn put(&mut self, doc: &Document, classification: &Classification) {
        let key = Self::key(doc);
        if self.map.insert(key.clone(), classification.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

#[async_trait]
impl Stage for LlmClassifier {
    fn name(&self) -> &str {
        "classify"
    }

    /// The memo's: model, prompt and categories make the label.
    fn fingerprint(&self) -> Option<String> {
        Some(Memo::fingerprint(self))
    }

    async fn process(&self, ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(docs.len());
        let mut todo = Vec::new();
        {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for (i, mut doc) in docs.into_iter().enumerate() {
                match recent.get(&doc) {
                    Some(classification) => {
                        doc.classification = Some(classification);
                        outcomes.push(Some(Outcome::Kept(doc)));
                    }
                    None => {
                        outcomes.push(None);
                        todo.push((i, doc));
                    }
                }
            }
        }
        // The same content twice in one batch is asked once.
        let mut asked = HashSet::new();
        let (first, repeats): (Vec<_>, Vec<_>) = todo.into_iter().partition(|(_, d)| asked.insert(Recent::key(d)));
        let mut answers = futures::stream::iter(first)
            .map(|(i, doc)| async move {
                let result = self.classify(ctx, &doc).await;
                (i, doc, result)
            })
            .buffer_unordered(self.config.concurrency);
        while let Some((i, mut doc, result)) = answers.next().await {
            match result? {
                Ok(classification) => {
                    self.recent.lock().unwrap_or_else(|e| e.into_inner()).put(&doc, &classification);
                    doc.classification = Some(classification);
                    outcomes[i] = Some(Outcome::Kept(doc));
                }
                Err(error) => outcomes[i] = Some(Outcome::Failed { doc, error }),
            }
        }
        drop(answers);
        for (i, mut doc) in repeats {
            let found = self.recent.lock().unwrap_or_else(|e| e.into_inner()).get(&doc);
            outcomes[i] = Some(match found {
                Some(classification) => {
                    doc.classification = Some(classification);
                    Outcome::Kept(doc)
                }
                None => Outcome::Failed {
                    doc,
                    error: StageError::retryable("repeat", "the same content earlier in the batch was not classified"),
                },
            });
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StageError::permanent("contract", "a document got no outcome")))
            .collect()
    }

    fn counter(&self) -> Option<StageCounter> {
        Some(StageCounter::Classified)
    }

    fn memo(&self) -> Option<&dyn Memo> {
        Some(self)
    }
}

impl Memo for LlmClassifier {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn value(&self, doc: &Document) -> Option<Value> {
        doc.classification.as_ref().and_then(|c| serde_json::to_value(c).ok())
    }

    fn apply(&self, doc: &mut Document, value: &Value) -> bool {
        match serde_json::from_value::<Classification>(value.clone()) {
            Ok(classification) if self.lookup.contains_key(&classification.category.to_lowercase()) => {
                doc.classification = Some(classification);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::Record;

    use super::*;

    fn lookup(categories: &[&str]) -> HashMap<String, String> {
        categories.iter().map(|c| (c.to_lowercase(), c.to_string())).collect()
    }

    #[test]
    fn answers_parse_leniently_but_categories_strictly() {
        let cats = lookup(&["billing", "Bug"]);
        let c = parse_answer(r#"{"category": "BUG", "confidence": 0.91, "reason": "crash"}"#, &cats, "llm:m").unwrap();
        assert_eq!((c.category.as_str(), c.reason.as_deref()), ("Bug", Some("crash")));
        assert!((c.confidence - 0.91).abs() < 1e-6);
        let fenced = "```json\n{\"category\": \"billing\", \"confidence\": \"2\"}\n```";
        let c = parse_answer(fenced, &cats, "llm:m").unwrap();
        assert_eq!((c.category.as_str(), c.confidence, c.reason), ("billing", 1.0, None));
        let prose = "Sure! Here it is: {\"category\": \"billing\", \"confidence\": 0.5} hope that helps";
        assert_eq!(parse_answer(prose, &cats, "m").unwrap().category, "billing");
        for (bad, kind) in [
            ("I think it is about billing.", "parse"),
            (r#"{"confidence": 0.5}"#, "parse"),
            (r#"{"category": "shipping", "confidence": 0.5}"#, "invalid_category"),
            (r#"{"category": "billing"}"#, "parse"),
        ] {
            let e = parse_answer(bad, &cats, "m").unwrap_err();
            assert_eq!(e.error_type, kind, "{bad}");
            assert!(!e.retryable);
        }
    }

    #[test]
    fn user_message_has_id_subject_and_cut_text() {
        let record = Record::new("intercom", "42", "héllo world").with_field("subject", "Refund");
        let doc = Document::from_record(record);
        assert_eq!(user_message(&doc, 100), "Conversation 42\nSubject: Refund\n\nhéllo world");
        assert_eq!(user_message(&doc, 2), "Conversation 42\nSubject: Refund\n\nhé");
    }
}
