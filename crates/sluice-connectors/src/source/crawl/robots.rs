//! robots.txt, fetched once per origin and obeyed for every URL of it
//! (texting_robots, matching the `sluice` product token).
//!
//! As RFC 9309 says: a robots.txt that does not exist (4xx) allows
//! everything; one that cannot be read (5xx after retries, connection
//! errors) disallows everything, since the site may be unable to say no.
//!
//! Paths are compared as octets, as RFC 9309 §2.2.2 says: the `Allow` and
//! `Disallow` paths are percent-encoded where they are not ASCII and their
//! escapes normalised like canonical URLs are ([`normalize_escapes`]), so
//! `Disallow: /caf%C3%A9/` stops `/caf%c3%a9/menu.html` and `/café/` alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use texting_robots::Robot;
use tokio::sync::OnceCell;

use super::canonical::normalize_escapes;

/// The product token robots.txt groups are matched against.
pub const ROBOTS_AGENT: &str = "sluice";

pub enum Rules {
    AllowAll,
    DisallowAll { reason: String },
    Parsed(Box<Robot>),
}

impl Rules {
    /// Rules from a robots.txt answer. An unparsable file allows everything
    /// (the crawler cannot tell what it forbids; logged).
    pub fn from_answer(origin: &str, status: u16, body: &[u8]) -> Rules {
        match status {
            200..=299 => match Robot::new(ROBOTS_AGENT, &normalize_rule_paths(body)) {
                Ok(robot) => Rules::Parsed(Box::new(robot)),
                Err(e) => {
                    tracing::warn!(origin, error = %e, "robots.txt could not be parsed: crawling as if there were none");
                    Rules::AllowAll
                }
            },
            400..=499 => Rules::AllowAll,
            _ => Rules::DisallowAll { reason: format!("robots.txt answered HTTP {status}") },
        }
    }

    pub fn allows(&self, url: &str) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::DisallowAll { .. } => false,
            Rules::Parsed(robot) => robot.allowed(&normalize_escapes(url)),
        }
    }

    /// `Crawl-delay`, when robots.txt gives one.
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Parsed(robot) => robot.delay.filter(|d| d.is_finite() && *d > 0.0).map(|d| {
                // A site asking for more than a minute between requests is capped, not obeyed literally.
                Duration::from_secs_f32(d.min(60.0))
            }),
            _ => None,
        }
    }
}

/// `body` with the path of every `Allow`/`Disallow` line percent-encoded
/// where it is not ASCII and its escapes normalised; other lines as they are.
fn normalize_rule_paths(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            out.extend_from_slice(line);
            continue;
        };
        let key = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
        if key != "allow" && key != "disallow" {
            out.extend_from_slice(line);
            continue;
        }
        out.extend_from_slice(&line[..=colon]);
        let mut value = String::new();
        for &byte in &line[colon + 1..] {
            if byte.is_ascii() {
                value.push(byte as char);
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
        out.extend_from_slice(normalize_escapes(&value).as_bytes());
    }
    out
}

/// robots.txt rules by origin (`scheme://host:port`), each fetched once even
/// when many requests ask at the same moment.
#[derive(Default)]
pub struct RobotsCache {
    by_origin: Mutex<HashMap<String, Arc<OnceCell<Arc<Rules>>>>>,
}

impl RobotsCache {
    pub async fn get_or_fetch<F, Fut>(&self, origin: &str, fetch: F) -> Arc<Rules>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Rules>,
    {
        let cell = {
            let mut map = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(origin.to_string()).or_default().clone()
        };
        cell.get_or_init(|| async { Arc::new(fetch().await) }).await.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_paths_and_urls_are_compared_with_their_escapes_normalised() {
        let body = "User-agent: *\nDisallow: /caf%C3%A9/\nDISALLOW : /na\u{ef}ve/\nAllow: /%7euser/\nDisallow: /\n";
        let rules = Rules::from_answer("http://h", 200, body.as_bytes());
        assert!(!rules.allows("http://h/caf%c3%a9/menu.html"));
        assert!(!rules.allows("http://h/caf%C3%A9/menu.html"));
        assert!(!rules.allows("http://h/na%C3%AFve/x"));
        assert!(rules.allows("http://h/~user/x"), "an escaped unreserved character is that character");
        assert!(rules.allows("http://h/%7Euser/x"));
        assert!(!rules.allows("http://h/other"));
        let normalized = normalize_rule_paths(b"Disallow: /a%2fb\r\nSitemap: http://h/%7e\n");
        assert_eq!(normalized, b"Disallow: /a%2Fb\r\nSitemap: http://h/%7e\n");
    }
}
