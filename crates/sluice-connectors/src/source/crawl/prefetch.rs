//! Fetching ahead: while the engine consumes the page at the head of the
//! queue, the next URLs are already being fetched, so a crawl keeps up to
//! `concurrency` requests in flight although the engine asks for one page at
//! a time. Results are taken in queue order, so pages come out in the same
//! order however the requests finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use url::Url;

use super::fetch::{Fetched, Fetcher};

pub struct Prefetcher {
    fetcher: Arc<Fetcher>,
    inflight: Mutex<HashMap<String, JoinHandle<Fetched>>>,
}

impl Prefetcher {
    pub fn new(fetcher: Arc<Fetcher>) -> Self {
        Self { fetcher, inflight: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<Fetched>>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts fetching `upcoming` (the next URLs of the queue) and cancels
    /// fetches of URLs no longer among them (after a restart from another cursor).
    pub fn warm<'a>(&self, upcoming: impl Iterator<Item = &'a str>) {
        let wanted: Vec<&str> = upcoming.collect();
        let mut inflight = self.lock();
        inflight.retain(|url, handle| {
            let keep = wanted.contains(&url.as_str());
            if !keep {
                handle.abort();
            }
            keep
        });
        for url in wanted {
            if inflight.contains_key(url) {
                continue;
            }
            let Ok(parsed) = Url::parse(url) else { continue };
            let fetcher = self.fetcher.clone();
            inflight.insert(url.to_string(), tokio::spawn(async move { fetcher.fetch(parsed).await }));
        }
    }

    /// The page at `url`: the prefetched one, or fetched now.
    pub async fn take(&self, url: &Url) -> Fetched {
        let handle = self.lock().remove(url.as_str());
        match handle {
            Some(handle) => match handle.await {
                Ok(fetched) => fetched,
                Err(e) => Fetched::Failed {
                    url: url.clone(),
                    status: None,
                    error_type: "panic".into(),
                    error: format!("fetching {url} failed: {e}"),
                },
            },
            None => self.fetcher.fetch(url.clone()).await,
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        for handle in self.lock().values() {
            handle.abort();
        }
    }
}
