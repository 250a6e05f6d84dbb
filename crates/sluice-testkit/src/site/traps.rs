//! The site's traps for a crawler that reads standards loosely, linked from
//! `/`:
//!
//! - pages in other charsets, declared by the `Content-Type` header, a BOM,
//!   `<meta charset>` or `<meta http-equiv>`, or not at all (ISO-8859-1,
//!   windows-1252, Shift_JIS): each one's text is [`CAFE`] or [`NIHONGO`];
//! - a link with `rel="NoFollow"` and one with `rel="external NOFOLLOW"`
//!   (to pages that exist: a crawler that follows them stores them);
//! - `/caf%c3%a9/menu.html`, under robots.txt's `Disallow: /caf%C3%A9/`;
//! - `/traps/pct-%74arget.html` and `/traps/pct-target.html`: one page (RFC 3986 §6.2.2.2);
//! - `/traps/refresh.html`: a `<meta http-equiv="refresh">` to
//!   `/traps/refreshed.html` (reachable only through it), and
//!   `/traps/refresh-away.html`, one to another host.

use std::collections::BTreeMap;

use super::{Link, Node, Target, link};

/// The text of the Latin pages.
pub const CAFE: &str = "Café crème";
/// The text of the Japanese pages.
pub const NIHONGO: &str = "日本語のページです。";

/// [`CAFE`] in ISO-8859-1 (and windows-1252).
const CAFE_LATIN1: &[u8] = b"Caf\xe9 cr\xe8me";
/// [`NIHONGO`] in Shift_JIS.
const NIHONGO_SJIS: &[u8] = b"\x93\xfa\x96{\x8c\xea\x82\xcc\x83y\x81[\x83W\x82\xc5\x82\xb7\x81B";

/// A page whose `<head>` holds `head` and whose `<main>` says `text` (bytes in the page's charset).
fn page(head: &str, title: &str, text: &[u8], repeat: usize) -> Vec<u8> {
    let mut body =
        format!("<!DOCTYPE html>\n<html><head>{head}<title>{title}</title></head><body><main><p>").into_bytes();
    for i in 0..repeat {
        if i > 0 {
            body.push(b' ');
        }
        body.extend_from_slice(text);
    }
    body.extend_from_slice(b"</p></main></body></html>\n");
    body
}

/// Adds the trap pages to `nodes`; gives the links `/` carries to them.
pub(super) fn add(nodes: &mut BTreeMap<String, Node>) -> Vec<Link> {
    let encoded: [(&str, &'static str, Vec<u8>); 7] = [
        ("/charset/latin1-header.html", "text/html; charset=ISO-8859-1", page("", "Latin-1 by header", CAFE_LATIN1, 1)),
        (
            "/charset/latin1-meta.html",
            "text/html",
            page("<meta charset=\"iso-8859-1\">", "Latin-1 by meta", CAFE_LATIN1, 1),
        ),
        (
            "/charset/cp1252-http-equiv.html",
            "text/html",
            page(
                "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\">",
                "windows-1252 by http-equiv",
                CAFE_LATIN1,
                1,
            ),
        ),
        (
            "/charset/utf8-bom.html",
            "text/html",
            [b"\xef\xbb\xbf".as_slice(), &page("", "UTF-8 with a BOM", CAFE.as_bytes(), 1)].concat(),
        ),
        ("/charset/sjis-header.html", "text/html; charset=Shift_JIS", page("", "Shift_JIS by header", NIHONGO_SJIS, 1)),
        (
            "/charset/sjis-meta.html",
            "text/html",
            page("<meta charset=\"Shift_JIS\">", "Shift_JIS by meta", NIHONGO_SJIS, 1),
        ),
        // Detection needs a few sentences to be sure.
        ("/charset/sjis-undeclared.html", "text/html", page("", "Shift_JIS undeclared", NIHONGO_SJIS, 4)),
    ];
    let mut links = Vec::new();
    for (path, content_type, body) in encoded {
        links.push(link(path, path));
        nodes.insert(path.to_string(), Node::Encoded { content_type, body });
    }
    for (path, rel) in [("/traps/nofollow-a.html", "NoFollow"), ("/traps/nofollow-b.html", "external NOFOLLOW")] {
        links.push(Link { target: Target::Elsewhere, href: path.to_string(), rel: Some(rel) });
        nodes.insert(path.to_string(), encoded_page(path));
    }
    links.push(link("/caf%C3%A9/menu.html", "/caf%c3%a9/menu.html"));
    nodes.insert("/caf%C3%A9/menu.html".to_string(), encoded_page("Menu"));
    links.push(link("/traps/pct-target.html", "/traps/pct-%74arget.html"));
    links.push(link("/traps/pct-target.html", "/traps/pct-target.html"));
    nodes.insert("/traps/pct-target.html".to_string(), encoded_page("Percent target"));
    links.push(link("/traps/refresh.html", "/traps/refresh.html"));
    nodes.insert(
        "/traps/refresh.html".to_string(),
        Node::Refresh { to: Target::Path("/traps/refreshed.html".into()), href: "0; URL='refreshed.html'".into() },
    );
    nodes.insert("/traps/refreshed.html".to_string(), encoded_page("Refreshed"));
    links.push(link("/traps/refresh-away.html", "/traps/refresh-away.html"));
    nodes.insert(
        "/traps/refresh-away.html".to_string(),
        Node::Refresh { to: Target::Elsewhere, href: "1;url=http://example.invalid/away".into() },
    );
    links
}

/// A plain UTF-8 page titled `title`.
fn encoded_page(title: &str) -> Node {
    let text = format!("The page {title} says {CAFE}.");
    Node::Encoded { content_type: "text/html; charset=utf-8", body: page("", title, text.as_bytes(), 1) }
}

/// The HTML of a refresh page.
pub(super) fn refresh_html(content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta http-equiv=\"Refresh\" content=\"{content}\"><title>Moving</title></head>\
         <body><p>This page has moved.</p></body></html>\n"
    )
}
