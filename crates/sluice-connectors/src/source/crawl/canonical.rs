//! Canonical URLs: one spelling per page, so the frontier fetches a page once
//! and the store keys it once.
//!
//! The `url` crate already lowercases the host, drops the scheme's default
//! port and resolves `.` and `..` segments. On top of that:
//!
//! - percent-encodings are normalised as RFC 3986 §6.2.2.1 and §6.2.2.2 say:
//!   an escaped unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded
//!   (`/pct-%74arget` is `/pct-target`) and every other escape is written
//!   with upper-case hex digits (`%c3%a9` is `%C3%A9`), in the path and the query;
//! - the fragment is dropped and an empty query removed;
//! - the query's `&`-separated parameters are sorted as written (after the
//!   escape normalisation, with no other re-encoding), so `a=1&b=2` and
//!   `b=2&a=1` are one page and nothing the server could tell apart is merged.

use std::borrow::Cow;

use url::Url;

/// `href` resolved against `base` and made canonical; `None` for what a
/// crawler does not follow (not http or https, unparsable, empty).
pub fn resolve(base: &Url, href: &str) -> Option<Url> {
    let href = href.trim();
    if href.is_empty() {
        return None;
    }
    canonical(base.join(href).ok()?)
}

/// `url` made canonical; `None` when it is not http or https or has no host.
pub fn canonical(mut url: Url) -> Option<Url> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    url.set_fragment(None);
    if let Cow::Owned(path) = normalize_escapes(url.path()) {
        url.set_path(&path);
    }
    let query = url.query().map(|q| {
        let q = normalize_escapes(q);
        let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
        params.sort_unstable();
        params.join("&")
    });
    match query {
        Some(q) if !q.is_empty() => url.set_query(Some(&q)),
        _ => url.set_query(None),
    }
    Some(url)
}

/// Parses an absolute URL given in the configuration and makes it canonical.
pub fn parse_absolute(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{e}"))?;
    canonical(url).ok_or_else(|| "only http:// and https:// URLs with a host can be crawled".to_string())
}

/// `host` or `host:port` (the port only when it is not the scheme's default),
/// lowercased: what `allowed_hosts` entries are compared with.
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// `text` with its percent-escapes normalised (RFC 3986 §6.2.2.1–2): an
/// escaped unreserved character decoded, every other escape upper-cased.
/// A `%` not followed by two hex digits is left as it is.
pub fn normalize_escapes(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let escape_at = |i: usize| {
        bytes.get(i) == Some(&b'%')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    };
    let needs_work = (0..bytes.len()).any(|i| {
        escape_at(i) && {
            let (hi, lo) = (bytes[i + 1], bytes[i + 2]);
            hi.is_ascii_lowercase() || lo.is_ascii_lowercase() || is_unreserved(hex_value(hi) << 4 | hex_value(lo))
        }
    });
    if !needs_work {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if escape_at(i) {
            let byte = hex_value(bytes[i + 1]) << 4 | hex_value(bytes[i + 2]);
            if is_unreserved(byte) {
                out.push(byte as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy up to the next '%' (a char boundary: '%' is ASCII and `i` is on one).
            let next = bytes[i + 1..].iter().position(|b| *b == b'%').map_or(bytes.len(), |p| i + 1 + p);
            out.push_str(&text[i..next]);
            i = next;
        }
    }
    Cow::Owned(out)
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_the_others_upper_cased() {
        assert_eq!(normalize_escapes("/traps/pct-%74arget.html"), "/traps/pct-target.html");
        assert_eq!(normalize_escapes("/caf%c3%a9/%7e%2d%2E%5F"), "/caf%C3%A9/~-._");
        assert_eq!(normalize_escapes("/a%2fb%3Fc%25"), "/a%2Fb%3Fc%25");
        assert!(matches!(normalize_escapes("/plain/caf%C3%A9"), Cow::Borrowed(_)));
        assert_eq!(normalize_escapes("/100%/%zz/%4"), "/100%/%zz/%4", "a lone % is left alone");
        assert_eq!(normalize_escapes("é%41"), "éA");
    }
}
