//! Decoding a page's bytes to text as browsers do (the HTML Standard's
//! encoding sniffing, with `encoding_rs`): a byte order mark first, then the
//! `charset` of the `Content-Type` header, then (HTML only) a
//! `<meta charset>` or `<meta http-equiv="Content-Type">` in the first 1024
//! bytes, and else detection (`chardetng`, UTF-8 allowed). Labels are the
//! WHATWG Encoding Standard's, so `ISO-8859-1` decodes as windows-1252, as it
//! does in every browser.

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252, X_USER_DEFINED};

/// How far into an HTML page a `<meta>` declaration is looked for (HTML's prescan).
const PRESCAN_BYTES: usize = 1024;

/// `body` as text, and the encoding it was read in.
pub fn decode(content_type: &str, body: &[u8], is_html: bool) -> (String, &'static Encoding) {
    let encoding = sniff(content_type, body, is_html);
    // `decode` strips a BOM (and lets one win, as browsers do); bytes that
    // are not of the encoding become U+FFFD.
    let (text, used, _had_errors) = encoding.decode(body);
    (text.into_owned(), used)
}

fn sniff(content_type: &str, body: &[u8], is_html: bool) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(body) {
        return encoding;
    }
    if let Some(encoding) = header_charset(content_type) {
        return encoding;
    }
    if is_html && let Some(encoding) = meta_charset(&body[..body.len().min(PRESCAN_BYTES)]) {
        return encoding;
    }
    if std::str::from_utf8(body).is_ok() {
        return UTF_8;
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(body, true);
    detector.guess(None, true)
}

/// The `charset` parameter of a `Content-Type` value, when it names an encoding.
fn header_charset(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        Encoding::for_label(value.trim().trim_matches(['"', '\'']).as_bytes())
    })
}

/// The encoding a `<meta>` of `head` declares. As HTML's prescan says, a
/// declared UTF-16 means UTF-8 (the bytes at hand are not UTF-16, or there
/// would have been a BOM) and x-user-defined means windows-1252.
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<meta") {
        rest = &rest[start + 5..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        rest = &rest[end..];
        let declared = attribute(tag, "charset").or_else(|| {
            let is_content_type = attribute(tag, "http-equiv").is_some_and(|v| v.trim() == "content-type");
            is_content_type.then(|| attribute(tag, "content")).flatten().and_then(charset_in_content)
        });
        if let Some(encoding) = declared.and_then(|label| Encoding::for_label(label.trim().as_bytes())) {
            return Some(match encoding {
                e if e == UTF_16BE || e == UTF_16LE => UTF_8,
                e if e == X_USER_DEFINED => WINDOWS_1252,
                e => e,
            });
        }
    }
    None
}

/// The value of attribute `name` (lower-case) in the inside of a tag (after
/// `<meta`), quoted or not, read attribute by attribute as HTML's prescan does.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = tag;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let name_end = rest.find(|c: char| c.is_ascii_whitespace() || c == '=').unwrap_or(rest.len());
        let (key, after) = rest.split_at(name_end);
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('=') {
            None => ("", after),
            Some(value) => {
                let value = value.trim_start();
                match value.chars().next() {
                    Some(quote @ ('"' | '\'')) => {
                        let inner = &value[1..];
                        let close = inner.find(quote).unwrap_or(inner.len());
                        (&inner[..close], inner.get(close + 1..).unwrap_or_default())
                    }
                    _ => {
                        let end = value.find(|c: char| c.is_ascii_whitespace()).unwrap_or(value.len());
                        value.split_at(end)
                    }
                }
            }
        };
        if key == name {
            return Some(value);
        }
        if next.len() == rest.len() {
            return None; // no progress: not an attribute list
        }
        rest = next;
    }
}

/// `charset=…` inside a `content` value such as `text/html; charset=windows-1252`.
fn charset_in_content(content: &str) -> Option<&str> {
    let at = content.find("charset")?;
    let value = content[at + 7..].trim_start().strip_prefix('=')?.trim_start();
    let value = value.trim_start_matches(['"', '\'']);
    value.split(|c: char| c == ';' || c == '"' || c == '\'' || c.is_ascii_whitespace()).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATIN1: &[u8] = b"<p>Caf\xe9 cr\xe8me</p>";
    /// "日本語のページです。" in Shift_JIS.
    const SJIS: &[u8] = b"\x93\xfa\x96{\x8c\xea\x82\xcc\x83y\x81[\x83W\x82\xc5\x82\xb7\x81B";

    #[test]
    fn the_header_then_a_bom_then_meta_then_detection_decide() {
        let (text, used) = decode("text/html; charset=ISO-8859-1", LATIN1, true);
        assert_eq!((text.as_str(), used.name()), ("<p>Café crème</p>", "windows-1252"));
        let (text, _) = decode("text/html; charset=\"windows-1252\"", b"\x93quoted\x94 \x80", true);
        assert_eq!(text, "\u{201c}quoted\u{201d} €");
        let meta = [b"<html><head><META Charset='latin1'>".as_slice(), LATIN1].concat();
        assert_eq!(decode("text/html", &meta, true).0, "<html><head><META Charset='latin1'><p>Café crème</p>");
        let equiv =
            [b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\">".as_slice(), SJIS].concat();
        assert!(decode("text/html", &equiv, true).0.ends_with("日本語のページです。"));
        let bom = [b"\xef\xbb\xbf".as_slice(), "Café crème".as_bytes()].concat();
        assert_eq!(decode("text/html; charset=iso-8859-1", &bom, true).0, "Café crème", "a BOM wins");
        assert_eq!(decode("text/plain", "déjà vu".as_bytes(), false).0, "déjà vu");
        // Meta is HTML's: a text file's bytes are not searched for it.
        let plain = [b"<meta charset=shift_jis>".as_slice(), LATIN1].concat();
        assert!(decode("text/plain", &plain, false).0.ends_with("Café crème</p>"));
        let sjis_page: Vec<u8> = [b"<html><body><p>".as_slice(), SJIS, SJIS, SJIS, b"</p></body></html>"].concat();
        let (text, used) = decode("text/html", &sjis_page, true);
        assert_eq!(used.name(), "Shift_JIS", "detected");
        assert!(text.contains("日本語のページです。"));
        assert_eq!(meta_charset(b"<meta charset=\"utf-16le\">"), Some(UTF_8));
        assert_eq!(
            meta_charset(b"<meta name=x content=\"charset=koi8-r\">"),
            None,
            "content counts only with http-equiv"
        );
        assert_eq!(header_charset("text/html; charset=nonsense"), None);
    }
}
