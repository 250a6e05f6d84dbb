//! Normalization: HTML to plain text, then whitespace cleanup.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;

use async_trait::async_trait;
use html2text::render::TrivialDecorator;
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Document, Outcome, Stage, StageError};

use crate::ConfigError;
use crate::util::html::{decode_entities, looks_like_html};

/// Wrap width handed to html2text: wide enough that paragraphs are not wrapped.
const HTML_WIDTH: usize = 10_000;

/// Batches whose HTML adds up to more than this are converted on a blocking thread.
const INLINE_HTML_BYTES: usize = 16 * 1024;
/// Batches with more text than this are cleaned on a blocking thread (tens of ms and up).
const INLINE_TEXT_BYTES: usize = 1024 * 1024;

fn default_true() -> bool {
    true
}

/// `[[stages]] kind = "normalize"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Convert texts that look like HTML to plain text (script and style dropped).
    #[serde(default = "default_true")]
    pub html: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self { html: true }
    }
}

/// Turns HTML into text and cleans whitespace: runs of spaces and tabs become
/// one space, lines are trimmed, at most one blank line is kept in a row, and
/// the text is trimmed. Never fails.
#[derive(Clone, Debug)]
pub struct NormalizeStage {
    config: NormalizeConfig,
}

impl NormalizeStage {
    pub fn new(config: NormalizeConfig) -> Result<Self, ConfigError> {
        Ok(Self { config })
    }

    /// The normalized form of `text`.
    pub fn normalize_text(&self, text: &str) -> String {
        normalize(text, self.config.html).into_owned()
    }
}

#[async_trait]
impl Stage for NormalizeStage {
    fn name(&self) -> &str {
        "normalize"
    }

    fn fingerprint(&self) -> Option<String> {
        super::config_fingerprint(1, &self.config)
    }

    async fn process(&self, _ctx: &Context, mut docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        // Which texts are HTML is decided once, here: the scan is a good part of the stage's work.
        let is_html: Vec<bool> = docs.iter().map(|d| self.config.html && looks_like_html(&d.record.text)).collect();
        let html_bytes: usize =
            docs.iter().zip(&is_html).filter(|(_, html)| **html).map(|(d, _)| d.record.text.len()).sum();
        let text_bytes: usize = docs.iter().map(|d| d.record.text.len()).sum();
        if html_bytes > INLINE_HTML_BYTES || text_bytes > INLINE_TEXT_BYTES {
            // html2text and cleaning megabytes are CPU work: keep them off the async workers.
            docs = tokio::task::spawn_blocking(move || {
                normalize_all(&mut docs, &is_html);
                docs
            })
            .await
            .map_err(|e| StageError::permanent("panic", format!("normalize panicked: {e}")))?;
        } else {
            normalize_all(&mut docs, &is_html);
        }
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

/// Normalizes each document; `is_html[i]`: the i-th text is converted from HTML first.
fn normalize_all(docs: &mut [Document], is_html: &[bool]) {
    for (doc, &html) in docs.iter_mut().zip(is_html) {
        if let Cow::Owned(text) = normalize_known(&doc.record.text, html) {
            doc.record.text = text;
        }
    }
}

/// `text` normalized; borrowed when it already was.
pub fn normalize(text: &str, html: bool) -> Cow<'_, str> {
    normalize_known(text, html && looks_like_html(text))
}

/// `text` normalized, converted from HTML first if `is_html`.
fn normalize_known(text: &str, is_html: bool) -> Cow<'_, str> {
    if is_html {
        let plain = html_to_text(text);
        return Cow::Owned(collapse_whitespace(&plain).into_owned());
    }
    collapse_whitespace(text)
}

/// Deeper element nesting than this is converted by stripping tags: html2text
/// takes time quadratic in the depth (seconds for a few thousand levels).
const MAX_HTML_DEPTH: usize = 256;

/// Bigger HTML than this is converted by stripping tags, to bound memory.
const MAX_HTML_BYTES: usize = 8 * 1024 * 1024;

/// HTML to plain text with html2text (script, style and head dropped). Falls
/// back to stripping tags if html2text fails or panics on the input, or if the
/// input nests too deep to convert in reasonable time.
fn html_to_text(html: &str) -> String {
    if html.len() > MAX_HTML_BYTES || nesting_exceeds(html, MAX_HTML_DEPTH) {
        tracing::debug!(bytes = html.len(), "HTML too big or too deep for html2text, stripping tags instead");
        return strip_tags(html);
    }
    let converted = std::panic::catch_unwind(AssertUnwindSafe(|| {
        html2text::config::with_decorator(TrivialDecorator::new())
            .raw_mode(true)
            .allow_width_overflow()
            .string_from_read(html.as_bytes(), HTML_WIDTH)
    }));
    match converted {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "html2text failed, stripping tags instead");
            strip_tags(html)
        }
        Err(_) => {
            tracing::warn!("html2text panicked, stripping tags instead");
            strip_tags(html)
        }
    }
}

/// Elements without content.
const VOID_ELEMENTS: [&str; 14] =
    ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"];
/// Elements a parser closes by itself when a sibling starts: they do not nest.
const AUTO_CLOSED: [&str; 12] =
    ["p", "li", "dt", "dd", "tr", "td", "th", "option", "thead", "tbody", "tfoot", "colgroup"];

/// Formatting elements: closing one leaves the elements opened inside it open
/// (the "adoption agency" of HTML parsing).
const FORMATTING: [&str; 14] =
    ["a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u"];

/// An estimate, linear in the input, of whether elements nest deeper than
/// `limit`: a stack of open elements that a closing tag pops through its
/// match (an unmatched closing tag is ignored, as parsers do).
fn nesting_exceeds(html: &str, limit: usize) -> bool {
    let b = html.as_bytes();
    let is = |name: &str, list: &[&str]| list.iter().any(|x| x.eq_ignore_ascii_case(name));
    let mut open: Vec<&str> = Vec::new();
    let mut i = 0;
    while let Some(at) = b[i..].iter().position(|&c| c == b'<') {
        let lt = i + at;
        let mut j = lt + 1;
        let closing = b.get(j) == Some(&b'/');
        if closing {
            j += 1;
        }
        let name_start = j;
        while j < b.len() && b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        if j == name_start {
            i = lt + 1;
            continue;
        }
        let name = &html[name_start..j];
        let Some(gt) = b[j..].iter().position(|&c| c == b'>').map(|p| j + p) else { return false };
        i = gt + 1;
        if is(name, &AUTO_CLOSED) || is(name, &VOID_ELEMENTS) {
            continue;
        }
        if closing {
            if let Some(k) = open.iter().rposition(|o| o.eq_ignore_ascii_case(name)) {
                if is(name, &FORMATTING) {
                    // The parser keeps the blocks opened inside a formatting element open.
                    open.remove(k);
                } else {
                    open.truncate(k);
                }
            }
            continue;
        }
        if b[gt - 1] == b'/' {
            continue;
        }
        if name.eq_ignore_ascii_case("script") || name.eq_ignore_ascii_case("style") {
            // Skip the raw content up to the closing tag.
            let close = name.len() + 2;
            match (i..b.len().saturating_sub(close - 1)).find(|&k| {
                b[k] == b'<' && b[k + 1] == b'/' && b[k + 2..k + close].eq_ignore_ascii_case(name.as_bytes())
            }) {
                Some(k) => i = k,
                None => return false,
            }
            continue;
        }
        open.push(name);
        if open.len() > limit {
            return true;
        }
    }
    false
}

/// A crude HTML to text: drops tags, comments and script/style contents, and
/// decodes the common entities.
fn strip_tags(html: &str) -> String {
    decode_entities(&strip_tags_raw(html))
}

fn strip_tags_raw(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let Some(lt) = html[i..].find('<').map(|p| p + i) else {
            out.push_str(&html[i..]);
            break;
        };
        out.push_str(&html[i..lt]);
        let rest = &lower[lt..];
        let skip_to = if rest.starts_with("<!--") {
            rest.find("-->").map(|p| lt + p + 3)
        } else if rest.starts_with("<script") || rest.starts_with("<style") {
            let close = if rest.starts_with("<script") { "</script" } else { "</style" };
            rest.find(close).and_then(|p| lower[lt + p..].find('>').map(|q| lt + p + q + 1))
        } else {
            rest.find('>').map(|p| lt + p + 1)
        };
        match skip_to {
            Some(next) => {
                out.push(' ');
                i = next;
            }
            None => break,
        }
    }
    out
}

fn is_space(c: char) -> bool {
    c != '\n' && c != '\r' && c.is_whitespace()
}

/// Whether `text` is already in normal form (nothing for [`collapse_whitespace`] to do).
fn is_normal(text: &str) -> bool {
    if !text.is_ascii() {
        return is_normal_unicode(text);
    }
    // ASCII (nearly every text): a few SIMD scans for what collapsing would change,
    // several times faster than stepping through the bytes.
    let bytes = text.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|&b| b == b' ' || b == b'\n');
    !(edge(bytes.first())
        || edge(bytes.last())
        || memchr::memchr3(b'\r', b'\t', 0x0b, bytes).is_some()
        || memchr::memchr(0x0c, bytes).is_some()
        || NOT_NORMAL.iter().any(|finder| finder.find(bytes).is_some()))
}

/// Runs collapsing shortens: two spaces, a space at either end of a line, a third line break.
static NOT_NORMAL: LazyLock<[memchr::memmem::Finder<'static>; 4]> =
    LazyLock::new(|| ["  ", " \n", "\n ", "\n\n\n"].map(|run| memchr::memmem::Finder::new(run.as_bytes())));

/// [`is_normal`] for any text, byte by byte: an ASCII byte is one character,
/// and only a byte of a longer UTF-8 sequence needs its character decoded
/// (some are whitespace: U+00A0, U+2003).
fn is_normal_unicode(text: &str) -> bool {
    let bytes = text.as_bytes();
    // As if the text started after two line breaks: no leading space or newline allowed.
    let mut prev = b'\n';
    let mut newlines = 2;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                if prev == b' ' {
                    return false;
                }
                newlines += 1;
                if newlines > 2 {
                    return false;
                }
            }
            b' ' => {
                if prev == b' ' || prev == b'\n' {
                    return false;
                }
                newlines = 0;
            }
            b'\r' | b'\t' | 0x0b | 0x0c => return false,
            0x80.. => {
                let Some(c) = text[i..].chars().next() else { return false };
                if c.is_whitespace() {
                    return false;
                }
                newlines = 0;
                prev = b;
                i += c.len_utf8();
                continue;
            }
            _ => newlines = 0,
        }
        prev = b;
        i += 1;
    }
    prev != b' ' && prev != b'\n' || text.is_empty()
}

/// Spaces and tabs (any non-newline whitespace) collapse to one space, lines
/// are trimmed, 3+ line breaks become 2, and the whole text is trimmed.
/// `\r\n` and `\r` count as line breaks.
pub fn collapse_whitespace(text: &str) -> Cow<'_, str> {
    if is_normal(text) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(collapsed(text))
}

/// [`collapse_whitespace`]'s work, done whether or not there is any.
fn collapsed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_breaks = 0usize;
    let mut rest = text;
    loop {
        let (line, after) = match rest.find(['\n', '\r']) {
            Some(at) => {
                let len = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..at], Some(at + len))
            }
            None => (rest, None),
        };
        let mut words = line.split(is_space).filter(|w| !w.is_empty()).peekable();
        if words.peek().is_some() {
            if !out.is_empty() {
                for _ in 0..pending_breaks.clamp(1, 2) {
                    out.push('\n');
                }
            }
            pending_breaks = 0;
            for (i, word) in words.enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        match after {
            Some(next) => {
                pending_breaks += 1;
                rest = &rest[next..];
            }
            None => break,
        }
    }
    out
}

/// `kind = "normalize"`.
impl crate::kind::StageKind for NormalizeConfig {
    fn build(&self) -> Result<std::sync::Arc<dyn Stage>, ConfigError> {
        Ok(std::sync::Arc::new(NormalizeStage::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_rules() {
        let cases = [
            ("  hello \t  world  ", "hello world"),
            ("a\n\n\n\nb", "a\n\nb"),
            ("a\n \n\t\n b", "a\n\nb"),
            ("a  \n  b", "a\nb"),
            ("a\r\nb\r\n\r\n\r\nc\rd", "a\nb\n\nc\nd"),
            ("\n\n  x\n\n", "x"),
            ("x\u{a0}\u{2003}y", "x y"),
            ("", ""),
            ("   \n\t ", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(collapse_whitespace(input), expected, "{input:?}");
        }
    }

    #[test]
    fn normal_text_is_borrowed_and_others_are_not() {
        for normal in ["", "a", "hello world", "a\nb", "a\n\nb c", "é ü"] {
            assert!(is_normal(normal), "{normal:?}");
            assert!(matches!(collapse_whitespace(normal), Cow::Borrowed(_)), "{normal:?}");
        }
        for not_normal in [" a", "a ", "a  b", "a\n\n\nb", "a \nb", "a\n b", "\na", "a\n", "a\tb", "a\r\nb", "\u{a0}"] {
            assert!(!is_normal(not_normal), "{not_normal:?}");
            assert_ne!(collapse_whitespace(not_normal), not_normal);
        }
    }

    /// Every string of up to four characters from an alphabet of the cases
    /// that matter (ASCII and multi-byte, whitespace or not, line breaks),
    /// and of up to six from a smaller one (runs inside a line): the fast
    /// checks say "normal" exactly when collapsing changes nothing.
    #[test]
    fn the_fast_check_agrees_with_collapsing() {
        let every = ["a", "é", "漢", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\u{85}", "\u{a0}", "\u{2003}", "\u{3000}"];
        for (alphabet, longest) in [(&every[..], 4), (&["a", "é", " ", "\n", "\u{a0}"][..], 6)] {
            let mut texts = vec![String::new()];
            for _ in 0..longest {
                let longer: Vec<String> =
                    texts.iter().flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}"))).collect();
                for text in &longer {
                    let normal = collapsed(text) == *text;
                    assert_eq!(is_normal(text), normal, "{text:?}");
                    assert_eq!(is_normal_unicode(text), normal, "{text:?}");
                }
                texts = longer;
            }
        }
    }

    #[test]
    fn nesting_estimate() {
        assert!(!nesting_exceeds("<div><p>a</p><br><img src=x/></div>", 1));
        assert!(nesting_exceeds("<div><section>a</section></div>", 1));
        assert!(!nesting_exceeds(&"<p>x".repeat(1000), 10));
        assert!(!nesting_exceeds(&"<div><p>x</p></div>".repeat(1000), 1));
        assert!(nesting_exceeds(&"<div><p>x</p>".repeat(1000), 500));
        assert!(!nesting_exceeds(&"<br/><hr>".repeat(1000), 1));
        assert!(!nesting_exceeds("<script>if (a<b && c<d) { x = '<div>'; }</script><div>ok</div>", 1));
        assert!(!nesting_exceeds("<style>div</style><div>", 1));
        assert!(nesting_exceeds("<STYLE>x</STYLE><div><div>", 1));
        assert!(!nesting_exceeds("<script>never closed <div><div><div>", 1));
        assert!(nesting_exceeds(&"<ul><li>".repeat(300), 256));
        assert!(nesting_exceeds(&"<div></span>".repeat(300), 256));
        assert!(nesting_exceeds(&"<font><div></font>".repeat(300), 256));
        assert!(!nesting_exceeds(&"<font><div></div></font>".repeat(300), 2));
        assert!(!nesting_exceeds(&"<div><b></div>".repeat(300), 256), "</div> closes the <b> inside it too");
    }

    #[test]
    fn strip_tags_fallback() {
        let text = strip_tags("<p>a<script>var x = '<b>';</script>b<!-- c -->d<style>p{}</style>e</p>");
        assert_eq!(collapse_whitespace(&text), "a b d e");
        assert_eq!(strip_tags("x <unclosed"), "x ");
        assert_eq!(strip_tags("<b>Tom &amp; Jerry</b>"), " Tom & Jerry ");
    }
}
