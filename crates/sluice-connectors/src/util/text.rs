//! Cutting texts and bytes to a size without splitting a character.

// Which helpers a build uses depends on the sources it has (their features).
#![cfg_attr(not(all(feature = "jsonl", feature = "files", feature = "csv", feature = "intercom")), allow(dead_code))]

/// The most bytes of a malformed input kept in `SourceItem::Invalid::raw`.
pub(crate) const MAX_RAW_BYTES: usize = 64 * 1024;

/// `s` cut to at most `max` bytes, on a char boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lossy UTF-8 of `bytes`, cut to [`MAX_RAW_BYTES`], for the failures table.
pub(crate) fn raw_of(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
    let lossy = String::from_utf8_lossy(cut);
    truncate_utf8(&lossy, MAX_RAW_BYTES).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(raw_of(&[b'a', 0xff]), "a\u{fffd}");
    }
}
