//! The quality filter: a conversation whose text is too short to be worth
//! classifying ("hi", "<p>ok</p>", an empty body) is dropped.
//!
//! Length is counted in visible characters: HTML tags removed (a tag counts
//! as a space), an entity (`&amp;`) as one character, runs of whitespace as
//! one space, leading and trailing whitespace not at all. The text measured
//! is the record's whole text: the opening message, plus the replies when
//! `include_parts` is on.
//!
//! The source drops short conversations at page level (`Page::dropped`) in
//! every mode; the engine decides the counters. Streaming (the streaming
//! runbook): `fetched` counts quality conversations and `filtered` stays 0.
//! Batch (legacy): the executor counts the dropped ones as fetched and
//! filtered, so `fetched` is the raw count. Both modes store the same
//! conversations.

/// Visible characters of an HTML (or plain) text.
pub fn visible_chars(text: &str) -> usize {
    let mut count = 0usize;
    let mut pending_space = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let visible = match c {
            '<' => {
                // A tag: skip to its end; it separates words like a space.
                for t in chars.by_ref() {
                    if t == '>' {
                        break;
                    }
                }
                pending_space = count > 0;
                continue;
            }
            '&' => {
                // An entity of up to 10 name characters counts as one character.
                let mut lookahead = chars.clone();
                let mut len = 0;
                let mut entity = false;
                while let Some(&n) = lookahead.peek() {
                    if n == ';' && len > 0 {
                        entity = true;
                        break;
                    }
                    if !(n.is_ascii_alphanumeric() || n == '#') || len >= 10 {
                        break;
                    }
                    lookahead.next();
                    len += 1;
                }
                if entity {
                    for _ in 0..=len {
                        chars.next();
                    }
                }
                true
            }
            c if c.is_whitespace() => {
                pending_space = count > 0;
                false
            }
            _ => true,
        };
        if visible {
            if pending_space {
                count += 1;
                pending_space = false;
            }
            count += 1;
        }
    }
    count
}

/// Whether `text` is long enough to keep (`min_chars = 0` keeps everything).
pub fn is_quality(text: &str, min_chars: usize) -> bool {
    min_chars == 0 || visible_chars(text) >= min_chars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_characters_ignore_markup_and_extra_space() {
        assert_eq!(visible_chars(""), 0);
        assert_eq!(visible_chars("<p>hi</p>"), 2);
        assert_eq!(visible_chars("<p>hello?</p>"), 6);
        assert_eq!(visible_chars("  a   b  "), 3);
        assert_eq!(visible_chars("<p>a</p><p>b</p>"), 3);
        assert_eq!(visible_chars("Fish &amp; chips"), 12);
        assert_eq!(visible_chars("a & b"), 5);
        assert_eq!(visible_chars("<br/><br/>"), 0);
        assert_eq!(visible_chars("héllo"), 5);
        assert!(is_quality("<p>I was charged twice for my invoice this month.</p>", 20));
        assert!(!is_quality("<p>thanks</p>", 20));
        assert!(is_quality("", 0));
    }
}
