//! Stages: what happens to records between source and store. Each implements
//! [`sluice_core::Stage`] and returns one outcome per document, in order.
//!
//! - [`normalize::NormalizeStage`]: HTML to text, whitespace cleanup.
//! - [`extract_html::ExtractHtmlStage`]: a web page's main text, title and description.
//! - [`filter::FilterStage`]: drops documents by length, content or missing fields.
//! - [`classify::rules::RulesClassifier`]: keyword rules to a category.
//! - [`classify::llm::LlmClassifier`]: an OpenAI-compatible chat model picks the category.
//! - [`chunk::ChunkStage`]: splits texts into chunks by characters or tokens.
//! - [`embed::EmbedStage`]: embeds chunks (or whole texts) with an [`crate::embedder::Embedder`].
//!
//! `extract_html` comes with the `crawl` feature and the LLM classifier with
//! `openai`; the others are always built.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

pub mod chunk;
pub mod classify;
pub mod embed;
#[cfg(feature = "crawl")]
pub mod extract_html;
pub mod filter;
pub mod normalize;
#[cfg(feature = "test-faults")]
pub mod test_panic;

/// The old path of [`classify::llm`], kept until every caller uses the new one.
#[cfg(feature = "openai")]
#[doc(hidden)]
pub use classify::llm as classify_llm;
/// The old path of [`classify::rules`], kept until every caller uses the new one.
#[doc(hidden)]
pub use classify::rules as classify_rules;

/// A stage's [`sluice_core::Stage::fingerprint`]: its behaviour's version
/// (raised when the code starts making different rows from the same
/// configuration) and its configuration as JSON.
pub(crate) fn config_fingerprint(version: u32, config: &impl serde::Serialize) -> Option<String> {
    serde_json::to_string(config).ok().map(|config| format!("v{version} {config}"))
}

/// Case-insensitive matching of many keywords in one pass. ASCII letters are
/// compared case-insensitively by the automaton; when a keyword has non-ASCII
/// letters, keywords and (non-ASCII) texts are lowercased first.
#[derive(Clone, Debug)]
pub(crate) struct KeywordMatcher {
    automaton: AhoCorasick,
    lowercase_texts: bool,
}

impl KeywordMatcher {
    pub(crate) fn new(keywords: &[String], kind: MatchKind) -> Result<Self, String> {
        let lowercase_texts = keywords.iter().any(|k| !k.is_ascii());
        // Lowercase patterns over lowercased texts rather than a case-insensitive
        // automaton: a case-sensitive one keeps aho-corasick's SIMD prefilter; the
        // other has none, and its byte-by-byte scan was 13% of the engine bench's CPU.
        let patterns: Vec<String> =
            keywords.iter().map(|k| if lowercase_texts { k.to_lowercase() } else { k.to_ascii_lowercase() }).collect();
        let automaton = AhoCorasickBuilder::new().match_kind(kind).build(&patterns).map_err(|e| e.to_string())?;
        Ok(Self { automaton, lowercase_texts })
    }

    fn haystack<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.lowercase_texts && !text.is_ascii() {
            Cow::Owned(text.to_lowercase())
        } else if has_ascii_uppercase(text) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    }

    /// The index of the first keyword found, if any.
    pub(crate) fn first(&self, text: &str) -> Option<usize> {
        self.automaton.find(self.haystack(text).as_ref()).map(|m| m.pattern().as_usize())
    }

    /// Calls `hit` with the keyword index of every non-overlapping match.
    pub(crate) fn for_each(&self, text: &str, mut hit: impl FnMut(usize)) {
        for m in self.automaton.find_iter(self.haystack(text).as_ref()) {
            hit(m.pattern().as_usize());
        }
    }
}

/// Whether any byte of `text` is `A`-`Z`. No early exit: the loop then
/// compiles to SIMD, several times faster over a whole text than `any`.
fn has_ascii_uppercase(text: &str) -> bool {
    text.bytes().fold(false, |found, b| found | b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_is_case_insensitive_for_ascii_and_unicode() {
        let m = KeywordMatcher::new(&["Refund".into(), "ÉCHEC".into()], MatchKind::LeftmostLongest).unwrap();
        assert_eq!(m.first("please REFUND me"), Some(0));
        assert_eq!(m.first("un échec total"), Some(1));
        assert_eq!(m.first("nothing here"), None);
        let mut hits = Vec::new();
        m.for_each("refund, Échec, refund", |k| hits.push(k));
        assert_eq!(hits, [0, 1, 0]);
        let ascii = KeywordMatcher::new(&["Login".into(), "log".into()], MatchKind::LeftmostLongest).unwrap();
        assert_eq!(ascii.first("cannot LOGIN"), Some(0));
        assert_eq!(ascii.first("the Log says"), Some(1));
        assert_eq!(ascii.first("Émile cannot lOgIn"), Some(0), "ASCII case is folded in any text");
        assert_eq!(ascii.first("nothing"), None);
    }
}
