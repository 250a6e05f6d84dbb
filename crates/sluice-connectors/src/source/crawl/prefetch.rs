//! Fetching ahead, so that a slow page does not hold the crawl back.
//!
//! The engine asks for one page at a time and pages come out in queue order
//! (so a cursor always names the same page, and a resumed crawl yields what
//! an uninterrupted one does). Meanwhile up to `concurrency` requests run:
//! first for the URLs at the head of the frontier's queue, then, while the
//! page at the head is still pending, for the pages the fetched-ahead pages
//! link to (and redirect to) that the frontier has not seen, as far as the
//! crawl's depth limit lets them go. Finished pages wait here, in memory
//! bounded by [`READY_PAGES`] and [`READY_BYTES`], until the crawl reaches
//! them. Nothing here is part of the cursor: a crash loses only pages that
//! were not committed, which a resumed crawl fetches again; a committed page
//! is in the frontier's seen set and is never fetched ahead again.
//!
//! With `max_pages`, fetching ahead stays within the pages the limit can
//! still reach (plus `concurrency - 1`), so a limited crawl fetches little
//! more than it stores.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

use super::fetch::{Fetched, FetchedPage, Fetcher};
use super::frontier::Frontier;

/// Finished pages held at most before the crawl reaches them.
pub const READY_PAGES: usize = 1024;
/// Bytes of finished pages' text held at most.
pub const READY_BYTES: usize = 64 << 20;

pub struct Prefetcher {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Arc<Fetcher>,
    concurrency: usize,
    max_depth: Option<u32>,
    state: Mutex<State>,
    /// Told whenever a fetch finishes.
    finished: Notify,
}

#[derive(Default)]
struct State {
    /// The URL the crawl waits for (it goes first, past every bound but `concurrency`).
    urgent: Option<(String, u32)>,
    /// The head of the frontier's queue, in order, with depths.
    head: VecDeque<(String, u32)>,
    /// URLs the fetched-ahead pages lead to, in the order found, with depths.
    further: VecDeque<(String, u32)>,
    further_set: HashSet<String>,
    /// The frontier's seen URLs when this process first saw it (or restarted):
    /// done or queued, never fetched as a `further` URL.
    known: HashSet<String>,
    known_seen_len: usize,
    /// URLs the crawl took from here in this process.
    taken: HashSet<String>,
    /// Running fetches, with the depth their page will have.
    running: HashMap<String, (JoinHandle<()>, u32)>,
    ready: HashMap<String, Fetched>,
    ready_bytes: usize,
    /// Requests still useful under `max_pages`: at most this many in all for
    /// head URLs, and `further` ones only while the queue is shorter.
    head_allowance: Option<usize>,
    further_allowance: Option<usize>,
    /// `further` URLs running or ready.
    further_outstanding: HashSet<String>,
}

impl Prefetcher {
    pub fn new(fetcher: Arc<Fetcher>, concurrency: usize, max_depth: Option<u32>) -> Self {
        let inner = Inner {
            fetcher,
            concurrency: concurrency.max(1),
            max_depth,
            state: Mutex::new(State::default()),
            finished: Notify::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Plans the fetches ahead of `next` (just popped at `depth`) from
    /// `frontier` (the queue after it); `remaining` is what `max_pages` still allows.
    pub fn warm(&self, next: &str, depth: u32, frontier: &Frontier, remaining: Option<u64>) {
        let mut st = self.inner.lock();
        if st.known.is_empty() || frontier.seen_len() < st.known_seen_len {
            // A first cursor, or one from before (a restart): what it has seen is off limits.
            st.known = frontier.seen_urls().map(str::to_string).collect();
            st.taken.clear();
        }
        st.known_seen_len = frontier.seen_len();
        let head_allowance = remaining.map(|r| (r as usize).saturating_add(self.inner.concurrency - 1));
        let window = head_allowance.unwrap_or(READY_PAGES).min(READY_PAGES);
        st.head = std::iter::once((next.to_string(), depth))
            .chain(frontier.upcoming(window.saturating_sub(1)).map(|(url, depth)| (url.to_string(), depth)))
            .collect();
        st.head_allowance = head_allowance;
        st.further_allowance = head_allowance.map(|a| a.saturating_sub(frontier.queue_len() + 1));
        if st.ready.len() >= READY_PAGES || st.ready_bytes >= READY_BYTES {
            // Full of pages the crawl may never take (after a restart): drop those of the frontier's
            // past or far queue; what it reaches later is fetched again then.
            let head: HashSet<&str> = st.head.iter().map(|(url, _)| url.as_str()).collect();
            let stale: Vec<String> =
                st.ready.keys().filter(|url| frontier.has_seen(url) && !head.contains(url.as_str())).cloned().collect();
            for url in stale {
                st.remove_ready(&url);
            }
        }
        self.inner.schedule(&mut st);
    }

    /// The page at `url` (to have `depth`): fetched ahead, or fetched now.
    pub async fn take(&self, url: &Url, depth: u32) -> Fetched {
        let key = url.as_str();
        loop {
            let finished = self.inner.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            {
                let mut st = self.inner.lock();
                if let Some(fetched) = st.remove_ready(key) {
                    st.taken.insert(key.to_string());
                    if st.urgent.as_ref().is_some_and(|(u, _)| u == key) {
                        st.urgent = None;
                    }
                    self.inner.schedule(&mut st);
                    return fetched;
                }
                if !st.running.contains_key(key) {
                    st.urgent = Some((key.to_string(), depth));
                    self.inner.schedule(&mut st);
                }
            }
            finished.await;
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts fetches while `concurrency`, the ready bounds and the page limit allow.
    fn schedule(self: &Arc<Self>, st: &mut State) {
        if let Some((url, depth)) = st.urgent.clone()
            && st.running.len() < self.concurrency
            && !st.running.contains_key(&url)
            && !st.ready.contains_key(&url)
        {
            self.start(st, url, depth);
        }
        while st.running.len() < self.concurrency && st.ready.len() < READY_PAGES && st.ready_bytes < READY_BYTES {
            if let Some((url, depth)) = st.head.pop_front() {
                if st.head_allowance.is_some_and(|a| a == 0) {
                    st.head.clear();
                    continue;
                }
                st.head_allowance = st.head_allowance.map(|a| a - 1);
                if !st.running.contains_key(&url) && !st.ready.contains_key(&url) && !st.taken.contains(&url) {
                    self.start(st, url, depth);
                }
                continue;
            }
            if st.further_allowance.is_some_and(|a| st.further_outstanding.len() >= a) {
                return;
            }
            let Some((url, depth)) = st.further.pop_front() else { return };
            st.further_set.remove(&url);
            if st.running.contains_key(&url)
                || st.ready.contains_key(&url)
                || st.taken.contains(&url)
                || st.known.contains(&url)
            {
                continue;
            }
            st.further_outstanding.insert(url.clone());
            self.start(st, url, depth);
        }
    }

    fn start(self: &Arc<Self>, st: &mut State, url: String, depth: u32) {
        let Ok(parsed) = Url::parse(&url) else { return };
        let inner = self.clone();
        let key = url.clone();
        let handle = tokio::spawn(async move {
            let fetched = match AssertUnwindSafe(inner.fetcher.fetch(parsed.clone())).catch_unwind().await {
                Ok(fetched) => fetched,
                Err(_) => Fetched::Failed {
                    error: format!("fetching {parsed} panicked"),
                    url: parsed,
                    status: None,
                    error_type: "panic".into(),
                },
            };
            inner.finish(key, fetched);
        });
        st.running.insert(url, (handle, depth));
    }

    /// Files a finished fetch, notes where it leads, and starts what may start now.
    fn finish(self: &Arc<Self>, url: String, fetched: Fetched) {
        let mut st = self.lock();
        let Some((_, depth)) = st.running.remove(&url) else { return };
        match &fetched {
            Fetched::Redirect { to, .. } => st.add_further(to, depth),
            Fetched::Page(FetchedPage { links, .. }) | Fetched::Unchanged { links, .. }
                if self.max_depth.is_none_or(|max| depth < max) =>
            {
                for link in links {
                    if self.fetcher.settings().allows_host(link) {
                        st.add_further(link, depth + 1);
                    }
                }
            }
            _ => {}
        }
        st.ready_bytes += size_of(&fetched);
        st.ready.insert(url, fetched);
        self.schedule(&mut st);
        drop(st);
        self.finished.notify_waiters();
    }
}

impl State {
    fn add_further(&mut self, url: &Url, depth: u32) {
        let url = url.as_str();
        if self.known.contains(url)
            || self.taken.contains(url)
            || self.running.contains_key(url)
            || self.ready.contains_key(url)
            || self.further_set.contains(url)
        {
            return;
        }
        self.further_set.insert(url.to_string());
        self.further.push_back((url.to_string(), depth));
    }

    fn remove_ready(&mut self, url: &str) -> Option<Fetched> {
        let fetched = self.ready.remove(url)?;
        self.ready_bytes -= size_of(&fetched);
        self.further_outstanding.remove(url);
        Some(fetched)
    }
}

fn size_of(fetched: &Fetched) -> usize {
    match fetched {
        Fetched::Page(page) => page.body.len() + page.links.iter().map(|l| l.as_str().len()).sum::<usize>(),
        _ => 0,
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        for (handle, _) in self.inner.lock().running.values() {
            handle.abort();
        }
    }
}
