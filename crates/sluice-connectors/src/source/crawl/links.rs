//! What the crawler reads in an HTML page: its title and its links, in
//! document order, resolved (against `<base href>` when there is one) and
//! canonical.

use scraper::{Html, Selector};
use url::Url;

use super::canonical::resolve;

pub struct ParsedPage {
    pub title: Option<String>,
    pub links: Vec<Url>,
}

/// Title and followable links of `html`, fetched from `page_url`.
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
        .filter(|a| !a.value().attr("rel").is_some_and(|rel| rel.split_whitespace().any(|r| r == "nofollow")))
        .filter_map(|a| a.value().attr("href"))
        .filter_map(|href| resolve(&base, href))
        .filter(|url| seen.insert(url.as_str().to_string()))
        .collect();
    ParsedPage { title, links }
}
