//! Watch mode of the files source (`watch = true`, `sluice run --watch`):
//! after the first listing it keeps waiting for new and changed files and
//! yields each one once it has settled, until the run is stopped.
//!
//! How a resume knows what was committed, without keeping a file list: every
//! file has a change stamp (its inode change time in ns, which the kernel sets
//! on every write, rename or link, and which a user cannot set back, unlike the
//! mtime). A file is taken once its stamp is `debounce` old (it has stopped
//! changing: a file written in parts is read once, whole), so at any moment
//! the files taken are exactly those stamped up to `now - debounce`, and any
//! later change stamps later than all of them. The watch therefore yields
//! files in (stamp, path) order, one per page, and the next page's cursor is
//! the last (stamp, path) yielded: a committed checkpoint says "everything up
//! to here is stored", and a resumed run yields only what changed after it.
//! One file per page also keeps a committed position at a page boundary,
//! never inside a page whose order could change when a file changes again.
//!
//! The first listing goes by path as without watch, but takes only files
//! settled when it began (its `listing:<instant>:<path>` cursors carry that
//! instant, so a resumed listing takes the same files), then hands over to the
//! watch at `watch:<instant>`.
//!
//! A file whose content is as it was when last stored or yielded (touched,
//! rewritten unchanged: its record hashes alike but for its mtime) is
//! skipped; the memory of what was stored is read from the store before the
//! run, so it survives restarts. A file that appears with an old stamp (a
//! directory moved in keeps its files' stamps) is still taken.
//!
//! **Deleted files** (with `on_delete` set): every scan compares the files
//! present with the previous scan (the first scan of a process with what the
//! store holds, so files deleted while sluice was down count too), and each
//! file gone is yielded as deleted before anything else, the cursor staying
//! where it is (a deletion has no stamp). One lost to a crash is found again
//! by the next process's first scan. Unset, deleted files stay in the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::Watcher as _;
use sluice_core::store::OnDelete;
use sluice_core::{Context, Page, SourceError, SourceItem};
use tokio::sync::{Mutex, Notify};

use super::listing::{Entry, StoredFile, entry_of_bytes, io_failure, walk};

/// Scans prompted by change notifications are at least this far apart, so a
/// burst of events (a large file being written) costs one listing, not hundreds.
const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

/// What a watching files source is told by its configuration.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// The source name stored with every record.
    pub source: String,
    pub root: PathBuf,
    /// Lowercase, without dots.
    pub extensions: Arc<Vec<String>>,
    /// Files per page of the first listing.
    pub page_size: usize,
    /// A file is taken once it has not changed for this long.
    pub debounce: Duration,
    /// The directory is listed again this often even without a notification.
    pub rescan: Duration,
    /// What becomes of the document of a deleted file; `None`: it stays.
    pub on_delete: Option<OnDelete>,
}

/// Serves every fetch of a files source in watch mode.
#[derive(Debug)]
pub struct Watcher {
    settings: WatchSettings,
    state: Mutex<State>,
    /// Woken by the notify thread on any change under the root.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    notifier_started: bool,
    /// Dropping it ends the OS watch.
    notifier: Option<notify::RecommendedWatcher>,
    /// The first listing, by the instant it took settled files up to.
    listing: Option<(i64, Arc<Vec<Stamped>>)>,
    /// Settled files after the cursor, in (stamp, path) order, from the last scan.
    queue: VecDeque<Stamped>,
    /// Files that appeared with a stamp at or before the cursor; yielded first.
    late: VecDeque<Entry>,
    /// Every path a listing or scan of this process has seen.
    seen: HashSet<String>,
    /// Per path, the `updated_at` and content hash it was last stored (or yielded) with.
    known: HashMap<String, (Option<i64>, String)>,
    /// The paths of the last scan; `None` before the first of this process.
    present: Option<HashSet<String>>,
    /// Files found deleted, not yielded yet.
    gone: VecDeque<String>,
    /// Stored documents marked deleted, to remove (see [`Watcher::remember`]).
    marked: Vec<String>,
    last_scan: Option<Instant>,
    /// When the next unsettled file settles.
    settle_at: Option<Instant>,
    /// A change was notified since the last scan.
    dirty: bool,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State").field("queue", &self.queue.len()).field("seen", &self.seen.len()).finish()
    }
}

/// A file with its change stamp.
#[derive(Clone, Debug)]
struct Stamped {
    stamp: i64,
    entry: Entry,
}

/// Where a watching files source stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WatchCursor {
    /// The first listing, taking files stamped up to `settled`, at the page starting with path `from`.
    Listing { settled: i64, from: String },
    /// Everything up to this point was yielded.
    Watch(After),
}

/// A point in (stamp, path) order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct After {
    stamp: i64,
    /// `None`: every path of `stamp`.
    rel: Option<String>,
}

impl After {
    /// Whether a file stamped `stamp` at path `rel` comes after this point.
    fn precedes(&self, stamp: i64, rel: &str) -> bool {
        stamp > self.stamp || (stamp == self.stamp && self.rel.as_deref().is_some_and(|after| rel > after))
    }
}

impl fmt::Display for WatchCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchCursor::Listing { settled, from } => write!(f, "listing:{settled}:{from}"),
            WatchCursor::Watch(After { stamp, rel: None }) => write!(f, "watch:{stamp}"),
            WatchCursor::Watch(After { stamp, rel: Some(rel) }) => write!(f, "watch:{stamp}:{rel}"),
        }
    }
}

impl WatchCursor {
    fn parse(cursor: &str) -> Result<Self, SourceError> {
        let invalid = || SourceError::CursorInvalid {
            message: format!("files: {cursor:?} is not a watch cursor (listing:<ns>:<path> or watch:<ns>[:<path>])"),
        };
        let (kind, rest) = cursor.split_once(':').ok_or_else(invalid)?;
        let (stamp, rel) = match rest.split_once(':') {
            Some((stamp, rel)) => (stamp, Some(rel)),
            None => (rest, None),
        };
        let stamp: i64 = stamp.parse().map_err(|_| invalid())?;
        match (kind, rel) {
            ("listing", Some(from)) => Ok(WatchCursor::Listing { settled: stamp, from: from.to_string() }),
            ("watch", rel) => Ok(WatchCursor::Watch(After { stamp, rel: rel.map(str::to_string) })),
            _ => Err(invalid()),
        }
    }
}

/// The change stamp of a file: inode change time on Unix, else modification time; ns since the epoch.
fn stamp_of(meta: &std::fs::Metadata) -> i64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec())
    }
    #[cfg(not(unix))]
    {
        meta.modified().map(nanos_since_epoch).unwrap_or_default()
    }
}

fn nanos_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn now_ns() -> i64 {
    nanos_since_epoch(SystemTime::now())
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Notifications worth a scan: anything but our own (and others') reads.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Lists the matching files under the root with their stamps, by path.
/// A file that vanished between listing and stat is left out.
fn scan(settings: &WatchSettings) -> std::io::Result<Vec<Stamped>> {
    let entries = walk(&settings.root, &settings.extensions)?;
    Ok(entries
        .into_iter()
        .filter_map(|entry| {
            let meta = std::fs::metadata(&entry.path).ok()?;
            Some(Stamped { stamp: stamp_of(&meta), entry })
        })
        .collect())
}

/// What one scan found, relative to the cursor.
#[derive(Debug, Default)]
struct ScanOutcome {
    /// Settled files after the cursor, in (stamp, path) order.
    ready: Vec<Stamped>,
    /// Settled files never seen before whose stamp is at or before the cursor.
    late: Vec<Entry>,
    /// The earliest stamp, among unsettled files, plus the debounce: when to look again.
    settles_at_ns: Option<i64>,
}

/// Sorts a scan into what is ready, what arrived late and when the rest settles.
/// `seen` is updated; `baseline` says whether this process listed the directory before.
fn sort_scan(
    scanned: Vec<Stamped>,
    after: &After,
    now_ns: i64,
    debounce: Duration,
    seen: &mut HashSet<String>,
    baseline: bool,
) -> ScanOutcome {
    let debounce = nanos(debounce);
    let settled_up_to = now_ns.saturating_sub(debounce);
    let mut outcome = ScanOutcome::default();
    for file in scanned {
        let new_path = seen.insert(file.entry.rel.clone());
        if file.stamp > settled_up_to {
            let settles = file.stamp.saturating_add(debounce);
            outcome.settles_at_ns = Some(outcome.settles_at_ns.map_or(settles, |at| at.min(settles)));
        } else if after.precedes(file.stamp, &file.entry.rel) {
            outcome.ready.push(file);
        } else if new_path && baseline {
            outcome.late.push(file.entry);
        }
    }
    outcome.ready.sort_by(|a, b| (a.stamp, &a.entry.rel).cmp(&(b.stamp, &b.entry.rel)));
    outcome
}

impl Watcher {
    /// How long the engine waits for more files before committing a partial batch.
    pub const LINGER: Duration = Duration::from_millis(250);

    pub fn new(settings: WatchSettings) -> Self {
        Self { settings, state: Mutex::new(State::default()), changed: Arc::new(Notify::new()) }
    }

    /// What the store holds of this source, read before the run, and the ids
    /// of its documents marked deleted that the first scan should report again
    /// if their files are still gone (with `on_delete = "remove"`).
    pub(crate) async fn remember(&self, stored: Vec<StoredFile>, marked: Vec<String>) {
        let mut state = self.state.lock().await;
        state.known = stored.into_iter().map(|(id, updated_at, hash)| (id, (updated_at, hash))).collect();
        state.marked = marked;
    }

    /// Notes the files a scan found, and queues those gone since the last
    /// scan (the first: since the store's documents) when deletions are on.
    fn note_present(&self, state: &mut State, scanned: &[Stamped]) {
        if self.settings.on_delete.is_none() {
            return;
        }
        let current: HashSet<String> = scanned.iter().map(|f| f.entry.rel.clone()).collect();
        let before: HashSet<String> =
            state.present.take().unwrap_or_else(|| state.known.keys().chain(state.marked.iter()).cloned().collect());
        let mut gone: Vec<String> = before.difference(&current).cloned().collect();
        gone.sort();
        state.gone.retain(|rel| !current.contains(rel));
        for rel in gone {
            if !state.gone.contains(&rel) {
                state.gone.push_back(rel);
            }
        }
        state.present = Some(current);
    }

    pub async fn fetch(&self, ctx: &Context, cursor: Option<&str>) -> Result<Page, SourceError> {
        let mut state = self.state.lock().await;
        self.start_notifier(&mut state);
        let Some(cursor) = cursor else {
            // The first page only fixes the listing's instant, so a resumed listing takes the same files.
            let settled = now_ns().saturating_sub(nanos(self.settings.debounce));
            let next = WatchCursor::Listing { settled, from: String::new() };
            return Ok(Page { items: Vec::new(), next: Some(next.to_string()), dropped: 0 });
        };
        match WatchCursor::parse(cursor)? {
            WatchCursor::Listing { settled, from } => self.listing_page(&mut state, settled, &from).await,
            WatchCursor::Watch(after) => self.watch_page(ctx, &mut state, after).await,
        }
    }

    fn start_notifier(&self, state: &mut State) {
        if std::mem::replace(&mut state.notifier_started, true) {
            return;
        }
        let changed = self.changed.clone();
        let handler = move |result: notify::Result<notify::Event>| match result {
            Ok(event) if is_change(&event.kind) => changed.notify_one(),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "files: change notification error; rescanning");
                changed.notify_one();
            }
        };
        let root = &self.settings.root;
        let watcher = notify::recommended_watcher(handler)
            .and_then(|mut watcher| watcher.watch(root, notify::RecursiveMode::Recursive).map(|()| watcher));
        match watcher {
            Ok(watcher) => {
                tracing::info!(
                    root = %root.display(),
                    debounce_ms = self.settings.debounce.as_millis() as u64,
                    "Watching for new and changed files"
                );
                state.notifier = Some(watcher);
            }
            Err(error) => tracing::warn!(
                root = %root.display(),
                %error,
                "files: cannot watch for changes; rescanning every {} ms instead",
                self.settings.rescan.as_millis()
            ),
        }
    }

    async fn scan(&self) -> Result<Vec<Stamped>, SourceError> {
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || scan(&settings))
            .await
            .map_err(|e| SourceError::fatal(format!("files: listing panicked: {e}")))?
            .map_err(|e| SourceError::fatal(format!("files: cannot list {:?}: {e}", self.settings.root)))
    }

    async fn listing_page(&self, state: &mut State, settled: i64, from: &str) -> Result<Page, SourceError> {
        let listing = match &state.listing {
            Some((at, listing)) if *at == settled => listing.clone(),
            _ => {
                let scanned = self.scan().await?;
                self.note_present(state, &scanned);
                state.seen.extend(scanned.iter().map(|f| f.entry.rel.clone()));
                state.last_scan = Some(Instant::now());
                let listing: Arc<Vec<Stamped>> = Arc::new(scanned.into_iter().filter(|f| f.stamp <= settled).collect());
                state.listing = Some((settled, listing.clone()));
                listing
            }
        };
        let start = listing.partition_point(|f| f.entry.rel.as_str() < from);
        let end = (start + self.settings.page_size).min(listing.len());
        let mut items = Vec::with_capacity(end - start);
        let mut dropped = 0;
        for file in &listing[start..end] {
            match self.read(state, &file.entry).await {
                Some(item) => items.push(item),
                None => dropped += 1,
            }
        }
        let next = match listing.get(end) {
            Some(file) => WatchCursor::Listing { settled, from: file.entry.rel.clone() },
            None => {
                state.listing = None;
                // Files that were still changing during the listing are looked at at once.
                state.settle_at = Some(Instant::now());
                WatchCursor::Watch(After { stamp: settled, rel: None })
            }
        };
        Ok(Page { items, next: Some(next.to_string()), dropped })
    }

    /// The next settled file after `after`, waiting for one as long as it takes or until a stop.
    async fn watch_page(&self, ctx: &Context, state: &mut State, after: After) -> Result<Page, SourceError> {
        let page = |item: Option<SourceItem>, next: &After| Page {
            dropped: u64::from(item.is_none()),
            items: item.into_iter().collect(),
            next: Some(WatchCursor::Watch(next.clone()).to_string()),
        };
        loop {
            if let (Some(rel), Some(action)) = (state.gone.pop_front(), self.settings.on_delete) {
                // No stamp to order it by: the cursor stays where it is.
                tracing::info!(path = rel, action = ?action, "files: file gone");
                state.known.remove(&rel);
                return Ok(page(Some(SourceItem::Deleted { id: rel, action }), &after));
            }
            if let Some(entry) = state.late.pop_front() {
                // Before the cursor in stamp order: the cursor stays where it is.
                let item = self.read(state, &entry).await;
                return Ok(page(item, &after));
            }
            while state.queue.front().is_some_and(|f| !after.precedes(f.stamp, &f.entry.rel)) {
                state.queue.pop_front();
            }
            if let Some(file) = state.queue.pop_front() {
                let item = self.read(state, &file.entry).await;
                return Ok(page(item, &After { stamp: file.stamp, rel: Some(file.entry.rel) }));
            }
            let scan_at = self.next_scan_at(state);
            if Instant::now() >= scan_at {
                let scanned = self.scan().await?;
                self.note_present(state, &scanned);
                let baseline = state.last_scan.is_some();
                let outcome = sort_scan(scanned, &after, now_ns(), self.settings.debounce, &mut state.seen, baseline);
                state.queue = outcome.ready.into();
                state.late = outcome.late.into();
                state.settle_at = outcome.settles_at_ns.map(|at| {
                    // A little past the instant, so the file is settled when we look.
                    let wait = Duration::from_nanos(u64::try_from(at.saturating_sub(now_ns())).unwrap_or(0));
                    Instant::now() + wait + Duration::from_millis(5)
                });
                state.last_scan = Some(Instant::now());
                state.dirty = false;
                continue;
            }
            tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(page_none(&after)),
                _ = self.changed.notified() => state.dirty = true,
                _ = tokio::time::sleep_until(scan_at.into()) => {}
            }
        }
    }

    /// When to list the directory again: at the periodic rescan, when an
    /// unsettled file settles, or soon after a notified change.
    fn next_scan_at(&self, state: &State) -> Instant {
        let Some(last) = state.last_scan else { return Instant::now() };
        let mut at = last + self.settings.rescan;
        if let Some(settle) = state.settle_at {
            at = at.min(settle);
        }
        if state.dirty {
            at = at.min(last + MIN_SCAN_GAP);
        }
        at
    }

    /// Reads a file for yielding: `None` when it is gone or its bytes are
    /// those last yielded for its path.
    async fn read(&self, state: &mut State, entry: &Entry) -> Option<SourceItem> {
        let path = entry.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::debug!(path = entry.rel, "files: gone before it was read, skipped");
                return None;
            }
            Err(e) => return Some(io_failure(&entry.rel, &e)),
        };
        let mut item = entry_of_bytes(&self.settings.source, &self.settings.root, entry, bytes);
        if let SourceItem::Record(record) = &mut item {
            let hash = record.content_hash();
            let unchanged = state.known.get(&entry.rel).is_some_and(|(updated_at, known)| {
                *known == hash || (!is_json(&entry.rel) && hash_as_of(record, *updated_at) == *known)
            });
            state.known.insert(entry.rel.clone(), (record.updated_at, hash));
            if unchanged {
                tracing::debug!(path = entry.rel, "files: content unchanged, skipped");
                return None;
            }
        }
        Some(item)
    }
}

/// A JSON file's `updated_at` may be its own (content); other files' is their mtime.
fn is_json(rel: &str) -> bool {
    rel.rsplit_once('.').is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("json"))
}

/// The record's content hash had it the `updated_at` (the mtime) it was stored with:
/// equal to the stored hash when only the mtime moved (a touch, an unchanged rewrite).
fn hash_as_of(record: &mut sluice_core::Record, updated_at: Option<i64>) -> String {
    let real = std::mem::replace(&mut record.updated_at, updated_at);
    let hash = record.content_hash();
    record.updated_at = real;
    hash
}

/// An empty page that leaves the cursor where it is (the run is stopping).
fn page_none(after: &After) -> Page {
    Page { items: Vec::new(), next: Some(WatchCursor::Watch(after.clone()).to_string()), dropped: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn file(stamp: i64, rel: &str) -> Stamped {
        Stamped { stamp, entry: Entry { rel: rel.into(), path: PathBuf::from(rel) } }
    }

    fn rels(files: &[Stamped]) -> Vec<&str> {
        files.iter().map(|f| f.entry.rel.as_str()).collect()
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_cursor_invalid() {
        for cursor in [
            WatchCursor::Listing { settled: 17, from: String::new() },
            WatchCursor::Listing { settled: -3, from: "a:b/c.md".into() },
            WatchCursor::Watch(After { stamp: 5, rel: None }),
            WatchCursor::Watch(After { stamp: 5, rel: Some("x:y.txt".into()) }),
        ] {
            assert_eq!(WatchCursor::parse(&cursor.to_string()).unwrap(), cursor);
        }
        for bad in ["", "a.txt", "watch:", "watch:x", "listing:5", "other:5:a", "listing:1.5:a"] {
            assert!(matches!(WatchCursor::parse(bad), Err(SourceError::CursorInvalid { .. })), "{bad}");
        }
    }

    #[test]
    fn after_orders_by_stamp_then_path() {
        let all_of_10 = After { stamp: 10, rel: None };
        assert!(!all_of_10.precedes(10, "zzz"));
        assert!(all_of_10.precedes(11, "a"));
        let at_b = After { stamp: 10, rel: Some("b".into()) };
        assert!(!at_b.precedes(10, "a"));
        assert!(!at_b.precedes(10, "b"));
        assert!(at_b.precedes(10, "c"));
        assert!(!at_b.precedes(9, "z"));
    }

    #[test]
    fn a_scan_takes_settled_files_after_the_cursor_in_stamp_order_and_waits_for_the_rest() {
        let now = 10_000 * MS;
        let debounce = Duration::from_millis(500);
        let mut seen = HashSet::new();
        let scanned = vec![
            file(1000 * MS, "old.txt"),           // at or before the cursor: committed already
            file(9000 * MS, "b.txt"),             // settled
            file(8000 * MS, "z.txt"),             // settled, earlier stamp: first
            file(9000 * MS, "a.txt"),             // same stamp as b: by path
            file(now - 100 * MS, "writing.txt"),  // changed 100 ms ago: still being written
            file(now - 300 * MS, "writing2.txt"), // settles first of the two
        ];
        let after = After { stamp: 2000 * MS, rel: None };
        let outcome = sort_scan(scanned, &after, now, debounce, &mut seen, false);
        assert_eq!(rels(&outcome.ready), ["z.txt", "a.txt", "b.txt"]);
        assert!(outcome.late.is_empty(), "the first scan of a process is its baseline");
        assert_eq!(outcome.settles_at_ns, Some(now - 300 * MS + 500 * MS));
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn a_file_written_in_parts_is_taken_only_after_it_stops_changing() {
        let debounce = Duration::from_millis(500);
        let after = After { stamp: 0, rel: None };
        let mut seen = HashSet::new();
        // First part at t=1000 ms, looked at 200 ms later: not settled.
        let first = sort_scan(vec![file(1000 * MS, "p.txt")], &after, 1200 * MS, debounce, &mut seen, false);
        assert!(first.ready.is_empty());
        assert_eq!(first.settles_at_ns, Some(1500 * MS));
        // Second part at t=1300 ms moves its stamp: at 1500 ms it is still not settled.
        let second = sort_scan(vec![file(1300 * MS, "p.txt")], &after, 1500 * MS, debounce, &mut seen, true);
        assert!(second.ready.is_empty());
        assert_eq!(second.settles_at_ns, Some(1800 * MS));
        // Quiet for the debounce: taken once.
        let third = sort_scan(vec![file(1300 * MS, "p.txt")], &after, 1800 * MS, debounce, &mut seen, true);
        assert_eq!(rels(&third.ready), ["p.txt"]);
        assert!(third.late.is_empty(), "a path seen before is not late");
    }

    #[test]
    fn a_new_path_with_an_old_stamp_is_late_only_after_the_baseline() {
        let debounce = Duration::from_millis(500);
        let after = After { stamp: 5000 * MS, rel: None };
        let mut seen = HashSet::new();
        let baseline = sort_scan(vec![file(1000 * MS, "kept.txt")], &after, 9000 * MS, debounce, &mut seen, false);
        assert!(baseline.ready.is_empty() && baseline.late.is_empty());
        let moved_in = vec![file(1000 * MS, "kept.txt"), file(2000 * MS, "moved/in.txt")];
        let outcome = sort_scan(moved_in, &after, 9000 * MS, debounce, &mut seen, true);
        assert!(outcome.ready.is_empty());
        assert_eq!(outcome.late.iter().map(|e| e.rel.as_str()).collect::<Vec<_>>(), ["moved/in.txt"]);
    }

    #[test]
    fn notifications_of_reads_do_not_wake_the_watch() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(!is_change(&notify::EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!is_change(&notify::EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(is_change(&notify::EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(is_change(&notify::EventKind::Create(CreateKind::File)));
        assert!(is_change(&notify::EventKind::Modify(ModifyKind::Any)));
    }
}
