//! What the crawler reads in an HTML page: its title, its links, in
//! document order, resolved (against `<base href>` when there is one) and
//! canonical, and where a `<meta http-equiv="refresh">` sends the reader.
//!
//! A link whose `rel` lists `nofollow` (ASCII case-insensitive, among other
//! space-separated link types, as HTML says) is not followed.

use scraper::{ElementRef, Html, Selector};
use url::Url;

use super::canonical::resolve;

/// A refresh later than this is a page that reloads itself now and then, not
/// a redirect (Scrapy's `METAREFRESH_MAXDELAY`).
const MAX_REFRESH_DELAY_S: f64 = 100.0;

pub struct ParsedPage {
    pub title: Option<String>,
    pub links: Vec<Url>,
    /// The target of a `<meta http-equiv="refresh">` (canonical), when it
    /// names another page and does not wait longer than 100 s.
    pub refresh: Option<Url>,
}

/// Title, followable links and refresh target of `html`, fetched from `page_url`.
pub fn parse_html(html: &str, page_url: &Url) -> ParsedPage {
    let document = Html::parse_document(html);
    let select = |css: &str| Selector::parse(css).expect("a valid built-in selector");
    let title = document
        .select(&select("title"))
        .next()
        .map(|t| t.text().collect::<String>().split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let base = document
        .select(&select("base[href]"))
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| page_url.join(href.trim()).ok())
        .unwrap_or_else(|| page_url.clone());
    let mut seen = std::collections::HashSet::new();
    let links = document
        .select(&select("a[href], area[href]"))
        .filter(|a| !a.value().attr("rel").is_some_and(|rel| rel.split_ascii_whitespace().any(is_nofollow)))
        .filter_map(|a| a.value().attr("href"))
        .filter_map(|href| resolve(&base, href))
        .filter(|url| seen.insert(url.as_str().to_string()))
        .collect();
    let refresh = document
        .select(&select("meta[http-equiv][content]"))
        .filter(|m| m.value().attr("http-equiv").is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh")))
        .find(|m| !inside_noscript(m))
        .and_then(|m| refresh_target(m.value().attr("content").unwrap_or_default()))
        .and_then(|href| resolve(&base, href))
        .filter(|to| to != page_url);
    ParsedPage { title, links, refresh }
}

fn is_nofollow(link_type: &str) -> bool {
    link_type.eq_ignore_ascii_case("nofollow")
}

/// Browsers with scripts on ignore what `<noscript>` holds, and so does Scrapy.
fn inside_noscript(element: &ElementRef) -> bool {
    element.ancestors().filter_map(ElementRef::wrap).any(|a| a.value().name().eq_ignore_ascii_case("noscript"))
}

/// The URL of a refresh's `content` (`5; url=/next`, `0;URL='next'`,
/// `0, next`), as HTML's "shared declarative refresh steps" read it; `None`
/// without a URL (a reload) or beyond the largest delay.
fn refresh_target(content: &str) -> Option<&str> {
    let content = content.trim_start();
    let digits = content.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(content.len());
    let delay: f64 = content[..digits].parse().ok()?;
    if delay > MAX_REFRESH_DELAY_S {
        return None;
    }
    let rest = content[digits..].trim_start();
    let rest = rest.strip_prefix([';', ',']).unwrap_or(rest).trim_start();
    let rest = match rest.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("url") => {
            let after = rest[3..].trim_start();
            after.strip_prefix('=').map_or(rest, str::trim_start)
        }
        _ => rest,
    };
    let url = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => rest[1..].split(quote).next().unwrap_or_default(),
        _ => rest,
    };
    let url = url.trim();
    (!url.is_empty()).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_contents_are_read_as_html_says() {
        assert_eq!(refresh_target("0; url=/next"), Some("/next"));
        assert_eq!(refresh_target("0;URL='/next page'"), Some("/next page"));
        assert_eq!(refresh_target(" 3 , \"next\" "), Some("next"));
        assert_eq!(refresh_target("1.5; url = next"), Some("next"));
        assert_eq!(refresh_target("0; /next"), Some("/next"));
        assert_eq!(refresh_target("30"), None, "a reload");
        assert_eq!(refresh_target("101; url=/later"), None, "too late to be a redirect");
        assert_eq!(refresh_target("soon; url=/x"), None);
        assert_eq!(refresh_target(""), None);
    }

    #[test]
    fn rel_nofollow_is_case_insensitive_and_a_refresh_is_found_outside_noscript() {
        let page = Url::parse("http://h/dir/page").unwrap();
        let html = r#"<html><head><meta HTTP-EQUIV="Refresh" content="0; URL=../next">
            <noscript><meta http-equiv="refresh" content="0; url=/js-off"></noscript></head><body>
            <a href="/a" rel="NoFollow">a</a><a href="/b" rel="external  NOFOLLOW">b</a>
            <a href="/c" rel="noopener">c</a><a href="/d">d</a></body></html>"#;
        let parsed = parse_html(html, &page);
        let links: Vec<&str> = parsed.links.iter().map(Url::as_str).collect();
        assert_eq!(links, ["http://h/c", "http://h/d"]);
        assert_eq!(parsed.refresh.as_ref().map(Url::as_str), Some("http://h/next"));
        let itself = parse_html(r#"<meta http-equiv="refresh" content="5; url=page#top">"#, &page);
        assert!(itself.refresh.is_none(), "a refresh to the page itself is a reload");
    }
}
