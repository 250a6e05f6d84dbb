//! Main-text extraction for web pages: the text a reader came for, without
//! the navigation, header, footer, sidebars, scripts and styles around it.
//!
//! For a document whose text is HTML: the `<title>` and `<meta
//! name="description">` become the fields `title` and `description` (a
//! `title` the source set is kept), the text is taken from `<main>` (or
//! `<article>`, or `[role=main]`, else `<body>`) with the `drop` elements
//! removed, block elements separated by line breaks, and whitespace
//! normalised language-neutrally (any Unicode space, non-breaking ones
//! included, collapses; no word or sentence rules of any language). Other
//! documents only have their whitespace normalised. Never fails.

use async_trait::async_trait;
use ego_tree::iter::Edge;
use scraper::{Html, Node, Selector};
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Document, Outcome, Stage, StageError};

use super::normalize::collapse_whitespace;
use crate::ConfigError;
use crate::util::html::looks_like_html;

/// Batches with more HTML than this are parsed on a blocking thread.
const INLINE_HTML_BYTES: usize = 16 * 1024;

/// Elements that end a line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "hr",
    "li",
    "main",
    "ol",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
];

/// Elements that end a paragraph.
const PARAGRAPHS: &[&str] = &["p", "h1", "h2", "h3", "h4", "h5", "h6"];

fn default_drop() -> Vec<String> {
    ["nav", "header", "footer", "aside", "script", "style", "noscript", "template", "svg", "iframe", "form"]
        .map(String::from)
        .to_vec()
}

fn default_true() -> bool {
    true
}

/// `[[stages]] kind = "extract_html"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractHtmlConfig {
    /// Elements removed with everything inside them.
    #[serde(default = "default_drop")]
    pub drop: Vec<String>,
    /// Take the text from `<main>`/`<article>`/`[role=main]` when the page has one.
    #[serde(default = "default_true")]
    pub prefer_main: bool,
}

impl Default for ExtractHtmlConfig {
    fn default() -> Self {
        Self { drop: default_drop(), prefer_main: true }
    }
}

/// What extraction found in a page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub title: Option<String>,
    pub description: Option<String>,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct ExtractHtmlStage {
    drop: Vec<String>,
    prefer_main: bool,
}

impl ExtractHtmlStage {
    pub fn new(config: ExtractHtmlConfig) -> Result<Self, ConfigError> {
        let mut drop = Vec::new();
        for name in config.drop {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError(format!(
                    "stages.extract_html.drop: {name:?} is not an element name (allowed: e.g. \"nav\", \"aside\")"
                )));
            }
            drop.push(name);
        }
        Ok(Self { drop, prefer_main: config.prefer_main })
    }

    /// The main text, title and description of `html`.
    pub fn extract(&self, html: &str) -> Extracted {
        let document = Html::parse_document(html);
        let select = |css: &str| Selector::parse(css).expect("a valid built-in selector");
        let clean = |s: String| Some(collapse_whitespace(&s).replace('\n', " ")).filter(|s| !s.is_empty());
        let title = document.select(&select("title")).next().and_then(|t| clean(t.text().collect()));
        let description = document
            .select(&select("meta[name=description], meta[name=Description], meta[property='og:description']"))
            .find_map(|m| m.value().attr("content").map(str::to_string))
            .and_then(clean);
        let root = self
            .prefer_main
            .then(|| document.select(&select("main, article, [role=main]")).next())
            .flatten()
            .or_else(|| document.select(&select("body")).next())
            .unwrap_or_else(|| document.root_element());
        let mut out = String::with_capacity(html.len() / 2);
        // Iterative walk: deep nesting in hostile input cannot overflow the stack.
        let mut skipping = None;
        for edge in root.traverse() {
            match edge {
                Edge::Open(node) if skipping.is_none() => match node.value() {
                    Node::Text(text) => out.push_str(text),
                    Node::Element(element) => {
                        let name = element.name();
                        if self.drop.iter().any(|d| d == name) {
                            skipping = Some(node.id());
                        } else if BLOCKS.contains(&name) {
                            out.push('\n');
                        } else if PARAGRAPHS.contains(&name) {
                            out.push_str("\n\n");
                        } else if name == "br" {
                            out.push('\n');
                        } else if matches!(name, "td" | "th") {
                            out.push(' ');
                        }
                    }
                    _ => {}
                },
                Edge::Close(node) if skipping == Some(node.id()) => skipping = None,
                Edge::Close(node) if skipping.is_none() => {
                    if let Node::Element(element) = node.value() {
                        let name = element.name();
                        if PARAGRAPHS.contains(&name) {
                            out.push_str("\n\n");
                        } else if BLOCKS.contains(&name) {
                            out.push('\n');
                        }
                    }
                }
                _ => {}
            }
        }
        Extracted { title, description, text: collapse_whitespace(&out).into_owned() }
    }

    fn apply(&self, doc: &mut Document) {
        if !looks_like_html(&doc.record.text) {
            if let std::borrow::Cow::Owned(text) = collapse_whitespace(&doc.record.text) {
                doc.record.text = text;
            }
            return;
        }
        let extracted = self.extract(&doc.record.text);
        doc.record.text = extracted.text;
        let fields = &mut doc.record.fields;
        let has_title = fields.get("title").and_then(|t| t.as_str()).is_some_and(|t| !t.is_empty());
        if let Some(title) = extracted.title.filter(|_| !has_title) {
            fields.insert("title".into(), title.into());
        }
        if let Some(description) = extracted.description {
            fields.insert("description".into(), description.into());
        }
    }
}

#[async_trait]
impl Stage for ExtractHtmlStage {
    fn name(&self) -> &str {
        "extract_html"
    }

    fn fingerprint(&self) -> Option<String> {
        Some(format!("v1 drop={:?} prefer_main={}", self.drop, self.prefer_main))
    }

    async fn process(&self, _ctx: &Context, mut docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let html_bytes: usize = docs.iter().map(|d| d.record.text.len()).sum();
        if html_bytes > INLINE_HTML_BYTES {
            // Parsing is CPU work: keep it off the async workers.
            let stage = self.clone();
            docs = tokio::task::spawn_blocking(move || {
                docs.iter_mut().for_each(|doc| stage.apply(doc));
                docs
            })
            .await
            .map_err(|e| StageError::permanent("panic", format!("extract_html panicked: {e}")))?;
        } else {
            docs.iter_mut().for_each(|doc| self.apply(doc));
        }
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

/// `kind = "extract_html"`.
impl crate::kind::StageKind for ExtractHtmlConfig {
    fn build(&self) -> Result<std::sync::Arc<dyn Stage>, ConfigError> {
        Ok(std::sync::Arc::new(ExtractHtmlStage::new(self.clone())?))
    }
}
