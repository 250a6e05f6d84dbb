//! Canonical URLs: one spelling per page, so the frontier fetches a page once
//! and the store keys it once.
//!
//! The `url` crate already lowercases the host, drops the scheme's default
//! port and resolves `.` and `..` segments. On top of that the fragment is
//! dropped, an empty query removed, and the query's `&`-separated parameters
//! sorted as written (no re-encoding, so `a=1&b=2` and `b=2&a=1` are one page
//! and nothing the server could tell apart is merged).

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
    let query = url.query().map(|q| {
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
