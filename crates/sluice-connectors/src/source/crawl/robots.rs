//! robots.txt, fetched once per origin and obeyed for every URL of it
//! (texting_robots, matching the `sluice` product token).
//!
//! As RFC 9309 says: a robots.txt that does not exist (4xx) allows
//! everything; one that cannot be read (5xx after retries, connection
//! errors) disallows everything, since the site may be unable to say no.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use texting_robots::Robot;
use tokio::sync::OnceCell;

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
            200..=299 => match Robot::new(ROBOTS_AGENT, body) {
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
            Rules::Parsed(robot) => robot.allowed(url),
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
