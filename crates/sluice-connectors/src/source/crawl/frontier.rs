//! The crawl frontier: every URL seen so far and the queue still to fetch,
//! with each one's depth. It is the crawl's cursor: serialized after every
//! page, committed with the batch that holds the page, and read back on
//! resume, so a resumed crawl starts exactly where the committed pages end.
//!
//! Encoded as JSON, `{"v":1,"emitted":N,"done":[...],"queue":[[url,depth],...]}`
//! where `done` is the seen URLs not in the queue (so no URL is written
//! twice). Its size grows with the site; each page's cursor is a full copy.

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Encoded {
    v: u32,
    emitted: u64,
    done: Vec<String>,
    queue: Vec<(String, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    seen: HashSet<String>,
    queue: VecDeque<(String, u32)>,
    /// Pages that became items (records or failures): what `max_pages` counts.
    pub emitted: u64,
}

impl Frontier {
    /// A frontier holding the start URLs at depth 0.
    pub fn start<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut frontier = Frontier::default();
        for url in urls {
            frontier.push(url, 0);
        }
        frontier
    }

    /// Queues `url` at `depth` unless it was seen before; true when queued.
    pub fn push(&mut self, url: &str, depth: u32) -> bool {
        if !self.seen.insert(url.to_string()) {
            return false;
        }
        self.queue.push_back((url.to_string(), depth));
        true
    }

    /// Marks `url` seen without queueing it (a redirect's target, fetched
    /// already); false when it was seen before.
    pub fn mark_seen(&mut self, url: &str) -> bool {
        self.seen.insert(url.to_string())
    }

    pub fn pop(&mut self) -> Option<(String, u32)> {
        self.queue.pop_front()
    }

    /// The next `n` queued URLs with their depths, in the order they will be popped.
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = (&str, u32)> {
        self.queue.iter().take(n).map(|(url, depth)| (url.as_str(), *depth))
    }

    pub fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Whether `url` was seen (fetched or queued).
    pub fn has_seen(&self, url: &str) -> bool {
        self.seen.contains(url)
    }

    /// Every URL seen: fetched or queued.
    pub fn seen_urls(&self) -> impl Iterator<Item = &str> {
        self.seen.iter().map(String::as_str)
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub fn encode(&self) -> String {
        let queued: HashSet<&str> = self.queue.iter().map(|(url, _)| url.as_str()).collect();
        let done: BTreeSet<&String> = self.seen.iter().filter(|url| !queued.contains(url.as_str())).collect();
        let encoded = Encoded {
            v: VERSION,
            emitted: self.emitted,
            done: done.into_iter().cloned().collect(),
            queue: self.queue.iter().cloned().collect(),
        };
        serde_json::to_string(&encoded).unwrap_or_default()
    }

    /// Reads a cursor written by [`Frontier::encode`]; the error says why it is not one.
    pub fn decode(cursor: &str) -> Result<Self, String> {
        let encoded: Encoded =
            serde_json::from_str(cursor).map_err(|e| format!("the crawl cursor is not a frontier: {e}"))?;
        if encoded.v != VERSION {
            return Err(format!("crawl frontier version {} is not supported (expected {VERSION})", encoded.v));
        }
        let mut seen: HashSet<String> = encoded.done.into_iter().collect();
        seen.extend(encoded.queue.iter().map(|(url, _)| url.clone()));
        Ok(Frontier { seen, queue: encoded.queue.into(), emitted: encoded.emitted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_round_trips_and_dedupes() {
        let mut f = Frontier::start(["http://a/"]);
        assert!(f.push("http://a/x", 1));
        assert!(!f.push("http://a/", 1));
        assert_eq!(f.pop(), Some(("http://a/".to_string(), 0)));
        f.emitted = 1;
        assert!(f.mark_seen("http://a/moved"));
        let back = Frontier::decode(&f.encode()).unwrap();
        assert_eq!(back, f);
        assert!(!back.clone().push("http://a/moved", 2));
        assert!(Frontier::decode("nope").unwrap_err().contains("not a frontier"));
        assert!(Frontier::decode(r#"{"v":9,"emitted":0,"done":[],"queue":[]}"#).unwrap_err().contains("version 9"));
    }
}
