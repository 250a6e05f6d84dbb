//! Chunking a long text window by window, so the time is linear in its length.
//!
//! text-splitter looks for the next boundary of every level from the cursor to
//! the end of the text for each chunk it makes: on text without sentence or
//! word breaks (base64, minified code) each chunk costs the whole rest of the
//! text, quadratic in all (72 s for 1 MB). Given a window of three chunk
//! bounds instead, it makes the same first chunks, since a section running past
//! the window is longer than a chunk bound either way and cannot fit; only the
//! chunks that start in the first two bounds are kept, and the next window
//! starts where the first chunk not kept does.

/// How far a chunk can reach: the byte offset `bounds` chunk bounds after a
/// byte offset of the text (at most the text's length).
pub(super) trait Reach {
    fn reach(&self, text: &str, from: usize, bounds: usize) -> usize;
}

/// A chunk bound of `size` characters.
pub(super) struct CharBound(pub usize);

impl Reach for CharBound {
    fn reach(&self, text: &str, from: usize, bounds: usize) -> usize {
        let chars = self.0.saturating_mul(bounds);
        text[from..].char_indices().nth(chars).map_or(text.len(), |(i, _)| from + i)
    }
}

/// A chunk bound of `size` tokens, taken as at most this many bytes each: a
/// longer token only makes a window hold fewer chunks (still within size).
const TOKEN_BYTES: usize = 8;

/// A chunk bound of `size` tokens.
pub(super) struct TokenBound(pub usize);

impl Reach for TokenBound {
    fn reach(&self, text: &str, from: usize, bounds: usize) -> usize {
        let end = from.saturating_add(self.0.saturating_mul(bounds).saturating_mul(TOKEN_BYTES));
        floor_char_boundary(text, end)
    }
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Chunk bounds a window spans; chunks starting in all but the last are kept.
const WINDOW_BOUNDS: usize = 3;

/// The chunks of `text` as (byte offset, piece), `split` being the splitter
/// (which gives offsets relative to the slice it is handed).
pub(super) fn split_in_windows<'t>(
    text: &'t str,
    bound: &dyn Reach,
    split: impl Fn(&'t str) -> Vec<(usize, &'t str)>,
) -> Vec<(usize, &'t str)> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = bound.reach(text, start, WINDOW_BOUNDS);
        if end == text.len() {
            chunks.extend(split(&text[start..]).into_iter().map(|(offset, piece)| (start + offset, piece)));
            break;
        }
        let keep_before = bound.reach(text, start, WINDOW_BOUNDS - 1);
        let mut next = end;
        for (offset, piece) in split(&text[start..end]) {
            let at = start + offset;
            if at >= keep_before {
                next = at;
                break;
            }
            chunks.push((at, piece));
            // A window ending in blanks: go on after the last chunk kept.
            next = at + piece.len();
        }
        // Always forward: a kept chunk is not empty, a chunk not kept starts past `keep_before`.
        start = next.max(start + 1).min(text.len());
        while !text.is_char_boundary(start) {
            start += 1;
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_split(text: &str) -> Vec<(usize, &str)> {
        toy_split_at(text, 4)
    }

    /// Pieces of at most `size` chars, cut at the last space where there is one.
    fn toy_split_at(text: &str, size: usize) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            while text[at..].starts_with(' ') {
                at += 1;
            }
            if at >= text.len() {
                break;
            }
            let end = CharBound(size).reach(text, at, 1);
            let cut = text[at..end].rfind(' ').filter(|&i| i > 0 && end < text.len()).map_or(end, |i| at + i);
            out.push((at, &text[at..cut]));
            at = cut;
        }
        out
    }

    #[test]
    fn windows_give_the_chunks_of_the_whole_text() {
        for text in
            ["ab cd efgh ij k lmnop qrstuvwxyz a b c d e f g", "é日本語テキストです、とても長い", "    a    ", ""]
        {
            let whole = toy_split(text);
            let windowed = split_in_windows(text, &CharBound(4), toy_split);
            assert_eq!(windowed, whole, "{text:?}");
        }
    }

    /// The splitter sees each part of the text about twice, never the rest of
    /// the text per chunk: the work is linear in the length.
    #[test]
    fn the_splitter_sees_each_byte_a_bounded_number_of_times() {
        for text in ["x".repeat(100_000), "word ".repeat(20_000), "日本語".repeat(30_000)] {
            let seen = std::cell::Cell::new(0usize);
            let chunks = split_in_windows(&text, &CharBound(100), |t| {
                seen.set(seen.get() + t.len());
                toy_split_at(t, 100)
            });
            assert!(seen.get() <= 2 * text.len(), "{} bytes seen for {}", seen.get(), text.len());
            let covered: usize = chunks.iter().map(|(_, piece)| piece.len()).sum();
            assert!(covered >= text.trim().len() * 3 / 4, "{covered} of {}", text.len());
            assert!(chunks.windows(2).all(|w| w[0].0 + w[0].1.len() <= w[1].0), "in order, no overlap");
        }
    }

    #[test]
    fn token_bounds_stay_on_char_boundaries() {
        let text = "日本語".repeat(100);
        for from in [0, 3, 30] {
            let end = TokenBound(1).reach(&text, from, 1);
            assert!(text.is_char_boundary(end) && end > from && end <= from + TOKEN_BYTES, "{from} -> {end}");
        }
        assert_eq!(TokenBound(1000).reach(&text, 0, 3), text.len());
    }
}
