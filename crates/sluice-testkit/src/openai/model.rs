//! The fake model: pure, deterministic functions from a prompt to an answer,
//! and from a text to an embedding. Public so tests can compute what the fake
//! server will answer.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rng::{Rng, text_hash, text_hash_of};
use crate::theme::{Theme, detect_theme, strip_html};

/// What kind of answer a chat request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `{"category", "confidence", "reason"}`.
    Classify,
    /// `{"product_area", "sentiment", "intent"}`.
    Facets,
    /// `{"label", "summary"}`.
    ThemeLabel,
}

/// Picks the mode of a request.
///
/// A `json_schema` response format decides first, by its property names:
/// `category` -> classify; `product_area`, `sentiment` or `intent` -> facets;
/// `label` or `summary` -> theme label. Otherwise words of the system prompt
/// (case-insensitive), in this order: "facet" -> facets; "categor" ->
/// classify; "label" or "summar" -> theme label; anything else -> classify.
pub fn detect_mode(system_prompt: &str, schema: Option<&Value>) -> Mode {
    if let Some(props) = schema.and_then(schema_properties) {
        if props.get("category").is_some() {
            return Mode::Classify;
        }
        if ["product_area", "sentiment", "intent"].iter().any(|k| props.contains_key(*k)) {
            return Mode::Facets;
        }
        if props.get("label").is_some() || props.get("summary").is_some() {
            return Mode::ThemeLabel;
        }
    }
    let s = system_prompt.to_lowercase();
    if s.contains("facet") {
        Mode::Facets
    } else if s.contains("categor") {
        Mode::Classify
    } else if s.contains("label") || s.contains("summar") {
        Mode::ThemeLabel
    } else {
        Mode::Classify
    }
}

fn schema_properties(schema: &Value) -> Option<&serde_json::Map<String, Value>> {
    // Accept the `response_format.json_schema` object or the bare schema.
    let schema = schema.get("schema").unwrap_or(schema);
    schema.get("properties")?.as_object()
}

/// The category list of a request, if it gives one.
///
/// Looked for, in order:
/// 1. `properties.category.enum` of a `json_schema` response format;
/// 2. a JSON array of strings anywhere in the system prompt
///    (`["billing", "bug", "other"]`);
/// 3. a system-prompt line containing "categor" followed by a colon: the
///    items after the colon, split on `,` `|` `/` `;` (quotes, backticks
///    and a final period are trimmed), or, when nothing follows the colon,
///    the bulleted (`-`, `*`, `•`) or numbered lines right after it.
pub fn parse_categories(system_prompt: &str, schema: Option<&Value>) -> Option<Vec<String>> {
    if let Some(list) = schema
        .and_then(schema_properties)
        .and_then(|p| p.get("category"))
        .and_then(|c| c.get("enum"))
        .and_then(Value::as_array)
    {
        let items: Vec<String> = list.iter().filter_map(Value::as_str).map(str::to_string).collect();
        if !items.is_empty() {
            return Some(items);
        }
    }
    if let Some(items) = json_string_array(system_prompt) {
        return Some(items);
    }
    let lines: Vec<&str> = system_prompt.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let lower = line.to_lowercase();
        let Some(pos) = lower.find("categor") else { continue };
        let Some(colon) = line[pos..].find(':').map(|c| pos + c) else {
            continue;
        };
        let rest = line[colon + 1..].trim();
        if !rest.is_empty() {
            let items: Vec<String> = rest
                .split([',', '|', '/', ';'])
                .map(clean_item)
                .filter(|s| !s.is_empty() && !s.contains(':') && s.split_whitespace().count() <= 3)
                .collect();
            if items.len() >= 2 {
                return Some(items);
            }
            continue;
        }
        let mut items = Vec::new();
        for next in &lines[i + 1..] {
            let t = next.trim();
            if t.is_empty() {
                if items.is_empty() {
                    continue;
                }
                break;
            }
            let stripped =
                t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")).or_else(|| t.strip_prefix("• ")).or_else(|| {
                    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
                    if digits > 0 {
                        t[digits..].strip_prefix(". ").or_else(|| t[digits..].strip_prefix(") "))
                    } else {
                        None
                    }
                });
            match stripped {
                Some(item) => {
                    // "billing: money problems" -> "billing"
                    let name = item.split([':', '—']).next().unwrap_or(item);
                    let name = name.split(" - ").next().unwrap_or(name);
                    let name = clean_item(name);
                    if !name.is_empty() {
                        items.push(name);
                    }
                }
                None => break,
            }
        }
        if items.len() >= 2 {
            return Some(items);
        }
    }
    None
}

fn clean_item(s: &str) -> String {
    s.trim().trim_end_matches('.').trim_matches(|c| c == '"' || c == '\'' || c == '`' || c == '*').trim().to_string()
}

fn json_string_array(text: &str) -> Option<Vec<String>> {
    let mut from = 0;
    while let Some(start) = text[from..].find('[').map(|i| from + i) {
        if let Some(len) = text[start..].find(']') {
            if let Ok(items) = serde_json::from_str::<Vec<String>>(&text[start..=start + len])
                && items.len() >= 2
            {
                return Some(items);
            }
        } else {
            return None;
        }
        from = start + 1;
    }
    None
}

/// The fake classifier's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub category: String,
    pub confidence: f64,
    pub reason: String,
}

/// The theme the fake model sees in a text (HTML is stripped first).
pub fn theme_of_text(text: &str) -> Option<Theme> {
    detect_theme(text).map(|m| m.theme)
}

/// Classifies `text` (the last user message). With a category list, the
/// answer is always one of its items: one whose name contains a synonym of
/// the detected theme (see [`Theme::category_synonyms`]; the first of those
/// naming the fewest other themes), else
/// the first "other"-like item (other, general, misc, unknown,
/// uncategorized), else the last item. Without a list, the theme's
/// [`Theme::category`] or "other".
pub fn classify(categories: Option<&[String]>, text: &str) -> Classification {
    let hit = detect_theme(text);
    let category = pick_category(hit.as_ref().map(|m| m.theme), categories);
    match hit {
        Some(m) => Classification {
            category,
            confidence: ((0.6 + 0.1 * m.hits as f64).min(0.95) * 100.0).round() / 100.0,
            reason: format!("mentions '{}'", m.keyword),
        },
        None => Classification { category, confidence: 0.3, reason: "no recognisable topic".to_string() },
    }
}

/// The category the fake picks for a theme from a list (see [`classify`]).
pub fn pick_category(theme: Option<Theme>, categories: Option<&[String]>) -> String {
    let Some(list) = categories.filter(|l| !l.is_empty()) else {
        return theme.map(|t| t.category().to_string()).unwrap_or_else(|| "other".to_string());
    };
    let norm = |s: &str| s.to_lowercase().replace(['_', '-'], " ");
    let themes_of = |c: &str| -> Vec<Theme> {
        let c = norm(c);
        Theme::ALL.into_iter().filter(|t| t.category_synonyms().iter().any(|syn| c.contains(syn))).collect()
    };
    if let Some(t) = theme {
        // Among the categories naming this theme, the one naming the fewest
        // other themes ("Login issues" beats "Login or billing").
        let best =
            list.iter().map(|c| (c, themes_of(c))).filter(|(_, ts)| ts.contains(&t)).min_by_key(|(_, ts)| ts.len());
        if let Some((c, _)) = best {
            return c.clone();
        }
    }
    const OTHER: [&str; 5] = ["other", "general", "misc", "unknown", "uncategor"];
    list.iter()
        .find(|c| OTHER.iter().any(|o| norm(c).contains(o)))
        .unwrap_or_else(|| list.last().expect("non-empty"))
        .clone()
}

/// Facets of a text: `{"product_area", "sentiment", "intent"}`.
pub fn facets(text: &str) -> Value {
    let theme = theme_of_text(text);
    json!({
        "product_area": theme.map(Theme::product_area).unwrap_or("general"),
        "sentiment": sentiment(text),
        "intent": theme.map(Theme::intent).unwrap_or("other"),
    })
}

/// "negative", "neutral" or "positive", from counting a few marker words.
pub fn sentiment(text: &str) -> &'static str {
    const POSITIVE: [&str; 6] = ["thanks", "thank you", "great", "love", "happy", "worked"];
    const NEGATIVE: [&str; 14] = [
        "urgent", "never", "can't", "cannot", "wrong", "damaged", "missing", "crash", "broken", "failed", "twice",
        "stuck", "frustrat", "terrible",
    ];
    let t = strip_html(text).to_lowercase();
    let pos: usize = POSITIVE.iter().map(|w| t.matches(w).count()).sum();
    let neg: usize = NEGATIVE.iter().map(|w| t.matches(w).count()).sum();
    if neg > pos {
        "negative"
    } else if pos > neg {
        "positive"
    } else {
        "neutral"
    }
}

/// A theme label for a text that may hold many conversations:
/// `{"label", "summary"}` named after the theme with the most keyword hits.
pub fn theme_label(text: &str) -> Value {
    match detect_theme(text) {
        Some(m) => json!({
            "label": m.theme.label(),
            "summary": format!(
                "Customers write about {} ({} mentions, e.g. '{}').",
                m.theme.label().to_lowercase(),
                m.hits,
                m.keyword
            ),
        }),
        None => json!({"label": "Miscellaneous", "summary": "No recurring topic."}),
    }
}

/// The `message.content` the fake answers (a JSON text) for a mode.
pub fn answer(mode: Mode, categories: Option<&[String]>, user_text: &str) -> String {
    let v = match mode {
        Mode::Classify => json!(classify(categories, user_text)),
        Mode::Facets => facets(user_text),
        Mode::ThemeLabel => theme_label(user_text),
    };
    v.to_string()
}

/// The content of an injected malformed answer: prose, not JSON.
pub fn malformed_answer(mode: Mode, categories: Option<&[String]>, user_text: &str) -> String {
    match mode {
        Mode::Classify => {
            format!("Sure! I think this conversation is about {}.", classify(categories, user_text).category)
        }
        Mode::Facets => "The customer seems unhappy about the product.".to_string(),
        Mode::ThemeLabel => "These conversations share a common theme.".to_string(),
    }
}

/// A rough token count, ~4 characters per token, at least 1.
pub fn approx_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// A deterministic, L2-normalised embedding of `text` with `dims` numbers.
///
/// Feature hashing of lower-cased words (weight 1) and character trigrams
/// (weight 0.5), each to a signed bucket, so texts sharing words have a high
/// cosine similarity and identical texts identical vectors. A text with no
/// letters or digits gets a pseudo-random vector seeded by its hash.
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.max(1);
    let mut v = vec![0f32; dims];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut add = |h: u64, weight: f32| {
        let idx = (h % dims as u64) as usize;
        let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
        v[idx] += sign * weight;
    };
    for w in &words {
        add(text_hash(w), 1.0);
    }
    let joined = words.join(" ");
    let chars: Vec<char> = joined.chars().collect();
    for tri in chars.windows(3) {
        add(text_hash_of("#", tri), 0.5);
    }
    if words.is_empty() {
        let mut rng = Rng::new(text_hash(text));
        for x in v.iter_mut() {
            *x = (rng.unit() * 2.0 - 1.0) as f32;
        }
    }
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    } else {
        v[0] = 1.0;
    }
    v
}

/// Cosine similarity of two vectors (dot product; both are normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn modes() {
        assert_eq!(detect_mode("Classify into one category.", None), Mode::Classify);
        assert_eq!(detect_mode("Extract facets: product_area, sentiment", None), Mode::Facets);
        assert_eq!(detect_mode("Give the theme a short label and a summary", None), Mode::ThemeLabel);
        assert_eq!(detect_mode("You are helpful.", None), Mode::Classify);
        let schema =
            json!({"name": "x", "schema": {"type": "object", "properties": {"sentiment": {"type": "string"}}}});
        assert_eq!(detect_mode("Pick a category", Some(&schema)), Mode::Facets);
    }

    #[test]
    fn category_lists_from_prompts() {
        let want = strs(&["billing", "bug", "other"]);
        assert_eq!(parse_categories("Categories: billing, bug, other.", None), Some(want.clone()));
        assert_eq!(parse_categories("Valid categories: `billing` | `bug` | `other`", None), Some(want.clone()));
        assert_eq!(
            parse_categories("Answer with one of [\"billing\", \"bug\", \"other\"] as JSON", None),
            Some(want.clone())
        );
        assert_eq!(
            parse_categories("Classify.\nCategories:\n- billing: money\n- bug\n- other\n\nReturn JSON.", None),
            Some(want.clone())
        );
        assert_eq!(parse_categories("Categories:\n1. billing\n2. bug\n3. other", None), Some(want.clone()));
        let schema =
            json!({"schema": {"properties": {"category": {"type": "string", "enum": ["billing", "bug", "other"]}}}});
        assert_eq!(parse_categories("nothing here", Some(&schema)), Some(want));
        assert_eq!(parse_categories("Classify the message into a category.", None), None);
        assert_eq!(parse_categories("Return JSON: category: string, confidence: number", None), None);
        assert_eq!(parse_categories("{\"category\": \"billing\", \"confidence\": 0.9}", None), None);
    }

    #[test]
    fn classification_picks_from_the_list() {
        let list = strs(&["Refunds & Billing", "Login issues", "Technical problem", "Other"]);
        assert_eq!(classify(Some(&list), "<p>I was charged twice</p>").category, "Refunds & Billing");
        assert_eq!(classify(Some(&list), "I can't log in").category, "Login issues");
        assert_eq!(classify(Some(&list), "the app crashes").category, "Technical problem");
        assert_eq!(classify(Some(&list), "where is my package").category, "Other");
        assert_eq!(classify(Some(&list), "hi").category, "Other");
        assert_eq!(classify(None, "where is my package").category, "shipping");
        assert_eq!(classify(None, "hi").category, "other");
        let c = classify(None, "refund my invoice please, I was charged twice");
        assert_eq!(c.confidence, 0.9);
        assert_eq!(c.reason, "mentions 'charged'");
    }

    #[test]
    fn answers_are_json_and_malformed_are_not() {
        for mode in [Mode::Classify, Mode::Facets, Mode::ThemeLabel] {
            let a = answer(mode, None, "the app crashes");
            assert!(serde_json::from_str::<Value>(&a).is_ok(), "{a}");
            let m = malformed_answer(mode, None, "the app crashes");
            assert!(serde_json::from_str::<Value>(&m).is_err(), "{m}");
        }
        assert_eq!(facets("the app crashes")["intent"], "report_bug");
        assert_eq!(facets("the app crashes")["sentiment"], "negative");
        assert_eq!(theme_label("slow, slow, and a refund")["label"], "Slow performance");
    }

    #[test]
    fn embeddings_are_normalised_and_similar_for_similar_texts() {
        for dims in [1, 8, 64, 1536] {
            let v = embed("I was charged twice", dims);
            assert_eq!(v.len(), dims);
            assert!((cosine(&v, &v) - 1.0).abs() < 1e-5);
        }
        let a = embed("I was charged twice for my invoice", 64);
        assert_eq!(a, embed("I was charged twice for my invoice", 64));
        let b = embed("I was charged twice for my last invoice", 64);
        let c = embed("The mobile app freezes when I upload a photo", 64);
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.3, "{} vs {}", cosine(&a, &b), cosine(&a, &c));
        let e = embed("", 16);
        assert!((cosine(&e, &e) - 1.0).abs() < 1e-5);
    }
}
