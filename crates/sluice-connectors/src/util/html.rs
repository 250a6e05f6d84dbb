//! HTML helpers shared by the sources that read HTML and the stages that
//! convert it: entity decoding and a cheap "is this HTML?" test.

/// A quick check: a `<` followed by a letter, `/` or `!`, and a `>` after it.
pub fn looks_like_html(text: &str) -> bool {
    let bytes = text.as_bytes();
    for lt in memchr::memchr_iter(b'<', bytes) {
        match bytes.get(lt + 1) {
            Some(b) if b.is_ascii_alphabetic() || *b == b'/' || *b == b'!' => {
                return memchr::memchr(b'>', &bytes[lt + 2..]).is_some();
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// Decodes the few HTML entities a title commonly holds.
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Entities are short: look for the ';' close by only (linear time on any input).
        let end = rest.as_bytes().iter().take(12).position(|&b| b == b';');
        let decoded = end.and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "nbsp" => ' ',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        entity.strip_prefix('#').and_then(|dec| dec.parse::<u32>().ok())
                    };
                    char::from_u32(code?).filter(|c| *c != '\0')?
                }
            };
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_detection() {
        assert!(looks_like_html("<p>hi</p>"));
        assert!(looks_like_html("text <br/> more"));
        assert!(looks_like_html("<!DOCTYPE html><html>"));
        assert!(!looks_like_html("a < b and c > d"));
        assert!(!looks_like_html("1<2"));
        assert!(!looks_like_html("x <y"));
        assert!(!looks_like_html("no tags at all"));
        assert!(!looks_like_html("<"));
        assert!(!looks_like_html(""));
        assert!(!looks_like_html("<b"), "no closing >");
        assert!(looks_like_html("x < y and <br>"), "a later < starts a tag");
        assert!(!looks_like_html("é <é>"), "a tag name starts with an ASCII letter");
    }

    #[test]
    fn entities_are_decoded_and_broken_ones_kept() {
        assert_eq!(decode_entities("a &lt;b&gt; &#x41; &unknown; & x"), "a <b> A &unknown; & x");
    }
}
