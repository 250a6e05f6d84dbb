//! What the user sees while a run goes: a progress bar on a terminal, plain
//! progress lines otherwise, and the JSONL event log when asked.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_connectors::phase::{EMBEDDING_GENERATION, FACET_EXTRACTION, STORY_CREATION, THEME_EXTRACTION};
use sluice_core::{CostLedger, Counts, Event, EventKind};

use crate::cli::ColorChoice;

/// The bar logs must step around, when one is shown.
static ACTIVE_BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active_bar() -> &'static Mutex<Option<ProgressBar>> {
    ACTIVE_BAR.get_or_init(|| Mutex::new(None))
}

/// A log writer for tracing that hides the progress bar while it writes.
/// A log line that cannot be written (stderr closed) is dropped: logs must
/// never fail or block the engine.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = active_bar().lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Writes one line on stderr, stepping around the progress bar when one is
/// drawn (a line written under it would share its terminal row).
pub fn note_line(line: &str) {
    let _ = LogWriter.write_all(format!("{line}\n").as_bytes());
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether to colour the output: `--color always|never`, else `NO_COLOR`
/// (any non-empty value) turns colour off, else colour on a terminal.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stderr_is_terminal(),
    }
}

/// Whether the view is coloured, decided once at start ([`set_color`]).
static COLOR: OnceLock<bool> = OnceLock::new();

pub fn set_color(color: bool) {
    let _ = COLOR.set(color);
    console::set_colors_enabled_stderr(color);
}

/// Set once a stop was asked for: when, and the batches then in flight.
static STOPPING: OnceLock<Mutex<Option<(Instant, u64)>>> = OnceLock::new();

/// Tells the view that a stop was asked for, so it counts the wait down.
pub fn note_stopping(batches_in_flight: u64) {
    *STOPPING.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner()) =
        Some((Instant::now(), batches_in_flight));
}

fn stopping() -> Option<(Instant, u64)> {
    *STOPPING.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Progress measured from this process's own start (or the start of a
/// phase): after a resume the count carried over is not work done now.
#[derive(Clone, Copy)]
struct Baseline {
    at: Instant,
    position: u64,
}

impl Baseline {
    fn new(position: u64) -> Self {
        Self { at: Instant::now(), position }
    }

    /// Records per second since the baseline; `None` until there is a second of data.
    fn rate(&self, position: u64) -> Option<f64> {
        let secs = self.at.elapsed().as_secs_f64();
        (secs >= 1.0 && position > self.position).then(|| (position - self.position) as f64 / secs)
    }
}

pub struct Reporter {
    bar: Option<ProgressBar>,
    color: bool,
    plain: bool,
    last_line: Instant,
    events_out: Option<(BufWriter<File>, String)>,
    counts: Counts,
    /// The counts of the last plain progress line.
    printed: Counts,
    /// The phase under way, as the run names it.
    phase_name: String,
    /// The later phase under way, if any (its counts are shown).
    phase: Option<String>,
    baseline: Option<Baseline>,
    /// What this phase will finish in all: the source's raw estimate in the
    /// first phase, the stored documents a later per-document phase reads.
    estimate: Option<u64>,
    /// A later phase that computes over everything and commits once (its count
    /// moves at the end only, so no rate or ETA): since when it runs.
    task_since: Option<Instant>,
    /// Records the source dropped at page level: in the estimate, never stored.
    dropped: u64,
    cost: CostLedger,
    /// An adapter pausing for a rate limit, and when the pause ends (if said).
    paced: Option<(String, Option<Instant>)>,
    /// Whether the bar shows a length (a total is known).
    bar_has_length: bool,
}

impl Reporter {
    pub fn new(quiet: bool, events_out: Option<&Path>) -> std::io::Result<Self> {
        let color = COLOR.get().copied().unwrap_or(false);
        let events_out = match events_out {
            Some(path) => {
                let file = File::create(path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot write events file {}: {e}", path.display()))
                })?;
                Some((BufWriter::new(file), path.display().to_string()))
            }
            None => None,
        };
        let terminal = stderr_is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(color, false));
            bar.enable_steady_tick(Duration::from_millis(200));
            *active_bar().lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Ok(Self {
            bar,
            color,
            plain: !quiet && !terminal,
            last_line: Instant::now(),
            events_out,
            counts: Counts::default(),
            printed: Counts::default(),
            phase_name: String::new(),
            phase: None,
            baseline: None,
            estimate: None,
            task_since: None,
            dropped: 0,
            cost: CostLedger::default(),
            paced: None,
            bar_has_length: false,
        })
    }

    pub fn on_event(&mut self, event: &Event) -> std::io::Result<()> {
        if let Some((out, path)) = &mut self.events_out {
            let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
            // Flushed per line: a crash loses no event that was emitted, so the
            // log tells exactly what the crashed run had done.
            let write = writeln!(out, "{line}").and_then(|_| out.flush());
            write.map_err(|e| std::io::Error::new(e.kind(), format!("cannot write events file {path}: {e}")))?;
        }
        match &event.kind {
            EventKind::RunStarted { counts, phase, cost, .. } => {
                self.counts = *counts;
                self.phase_name = phase.clone();
                self.cost = *cost;
                self.baseline = Some(Baseline::new(counts.finished()));
            }
            EventKind::BatchCommitted { checkpoint, .. } => {
                self.counts = checkpoint.current_counts();
                self.cost = checkpoint.cost;
                if checkpoint.in_later_phase() {
                    self.phase = Some(checkpoint.phase.clone());
                }
            }
            EventKind::PageFetched { dropped, .. } => self.dropped += dropped,
            EventKind::PhaseStarted { phase, counts, documents, .. } => {
                // The source's stored documents (this run's and earlier runs'), which
                // the phase reads; a resumed phase starts from its carried counts.
                self.estimate = documents.filter(|_| counts_every_document(phase));
                self.task_since = is_task(phase).then(Instant::now);
                self.phase = Some(phase.clone());
                self.phase_name = phase.clone();
                self.counts = *counts;
                self.dropped = 0;
                self.baseline = Some(Baseline::new(counts.finished()));
            }
            EventKind::BatchProgress { estimated_total: Some(total), .. } if self.phase.is_none() => {
                self.estimate = Some(*total);
            }
            EventKind::AdapterStateChange { adapter, new_state, reason, .. } => {
                self.paced = (new_state == "rate_limited")
                    .then(|| (adapter.clone(), reason.as_deref().and_then(wait_in).map(|d| Instant::now() + d)));
            }
            _ => {}
        }
        self.refresh();
        Ok(())
    }

    /// Updates the bar (countdowns move on a quiet run too), or prints a plain
    /// progress line when the counts moved and the last line is 2 s old.
    /// Called on events and on a timer, so a run that goes quiet (a watch
    /// waiting for files) still shows where it stands.
    pub fn tick(&mut self) {
        self.refresh();
    }

    fn refresh(&mut self) {
        let position = self.counts.finished();
        if let Some(bar) = &self.bar {
            let total = self.total();
            if total.is_some() != self.bar_has_length {
                self.bar_has_length = total.is_some();
                bar.set_style(style(self.color, self.bar_has_length));
            }
            if let Some(total) = total {
                bar.set_length(total.max(position));
            }
            bar.set_position(position);
            bar.set_message(self.message());
        } else if self.plain && self.counts != self.printed && self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            self.printed = self.counts;
            let rate = self.baseline.and_then(|b| b.rate(position)).unwrap_or(0.0);
            let line = match &self.phase {
                Some(phase) => format!("{phase}: {}", live_line(&self.counts)),
                None => live_line(&self.counts),
            };
            errln!("progress: {line} rate={rate:.0}/s");
        }
    }

    /// What will be finished when the phase ends: the source's estimate less
    /// what it dropped at page level (never stored, never counted).
    fn total(&self) -> Option<u64> {
        self.estimate.map(|e| e.saturating_sub(self.dropped))
    }

    /// The bar's short message: rate and ETA (or the pause, or the stop),
    /// the phase, the non-zero counters, the remote calls.
    fn message(&self) -> String {
        let position = self.counts.finished();
        let mut parts: Vec<String> = Vec::new();
        if let Some((since, batches)) = stopping() {
            let noun = if batches == 1 { "batch" } else { "batches" };
            parts.push(format!(
                "stopping: {batches} {noun} in flight, {} s; Ctrl-C again aborts",
                since.elapsed().as_secs()
            ));
        } else if let Some((adapter, until)) = &self.paced {
            match until.map(|u| u.saturating_duration_since(Instant::now())) {
                Some(left) if !left.is_zero() => parts.push(format!(
                    "waiting for the rate limit (resets in {} s, {adapter})",
                    left.as_secs_f64().ceil() as u64
                )),
                _ => parts.push(format!("waiting for the rate limit ({adapter})")),
            }
        } else if let Some(since) = self.task_since {
            parts.push(format!("computing, {}", duration(since.elapsed().as_secs_f64())));
        } else if let Some(rate) = self.baseline.and_then(|b| b.rate(position)) {
            let eta = self
                .total()
                .filter(|&t| t > position)
                .map(|t| format!(" eta {}", duration((t - position) as f64 / rate)))
                .unwrap_or_default();
            parts.push(format!("{}/s{eta}", rate_text(rate)));
        }
        if !self.phase_name.is_empty() {
            parts.push(self.phase_name.clone());
        }
        let mut api = Vec::new();
        if self.cost.llm_calls > 0 {
            api.push(format!("llm {}", si(self.cost.llm_calls)));
        }
        if self.cost.embedding_calls > 0 {
            api.push(format!("embed {}", si(self.cost.embedding_calls)));
        }
        let tokens = self.cost.tokens_in + self.cost.tokens_out;
        if tokens > 0 {
            api.push(format!("{} tok", si(tokens)));
        }
        // The money goes before the counters: at 80 columns the end is cut.
        if !api.is_empty() {
            parts.push(api.join(" "));
        }
        let c = &self.counts;
        let counters: Vec<String> = [
            ("stored", c.stored),
            ("filtered", c.filtered),
            ("failed", c.failed),
            ("classified", c.classified),
            ("chunks", c.chunks),
            ("embedded", c.embedded),
            ("unchanged", c.unchanged),
            ("reused", c.skipped_unchanged),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
        if !counters.is_empty() {
            parts.push(counters.join(" "));
        }
        parts.join(" · ")
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *active_bar().lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if let Some((out, _)) = &mut self.events_out {
            out.flush()?;
        }
        Ok(())
    }
}

/// Later phases whose count, when they end, covers each stored document of
/// the source once (stored, filtered or failed): their total is that number.
/// Story creation counts stories and the documents left out of them: no total.
fn counts_every_document(phase: &str) -> bool {
    [EMBEDDING_GENERATION, FACET_EXTRACTION, THEME_EXTRACTION].contains(&phase)
}

/// Later phases that compute over everything and commit once.
fn is_task(phase: &str) -> bool {
    [THEME_EXTRACTION, STORY_CREATION].contains(&phase)
}

/// The bar's look: a bar and `pos/len` once a total is known, a spinner and a count before.
/// The bar is narrower on a narrow terminal, to leave the message room.
fn style(color: bool, with_length: bool) -> ProgressStyle {
    let narrow = console::Term::stderr().size_checked().is_none_or(|(_, cols)| cols < 100);
    let template = match (with_length, color, narrow) {
        (true, true, true) => "{spinner:.green} [{bar:12.cyan/blue}] {pos}/{len} {wide_msg}",
        (true, true, false) => "{spinner:.green} [{bar:24.cyan/blue}] {pos}/{len} {wide_msg}",
        (true, false, true) => "{spinner} [{bar:12}] {pos}/{len} {wide_msg}",
        (true, false, false) => "{spinner} [{bar:24}] {pos}/{len} {wide_msg}",
        (false, true, _) => "{spinner:.green} {pos} done {wide_msg}",
        (false, false, _) => "{spinner} {pos} done {wide_msg}",
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// The wait an adapter's reason names: "waiting 7250 ms" or "retry in 7250 ms".
fn wait_in(reason: &str) -> Option<Duration> {
    let before = &reason[..reason.find(" ms")?];
    let start = before.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    before[start..].parse().ok().map(Duration::from_millis)
}

fn rate_text(rate: f64) -> String {
    if rate >= 10.0 { format!("{rate:.0}") } else { format!("{rate:.1}") }
}

/// `42s`, `3m05s`, `2h07m`.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `950`, `12.3k`, `4.5M`.
fn si(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The live stats of a run, as the seed's monitor shows them (files, docs,
/// chunks, embeddings, errors), under the checkpoint's names: always all of them.
pub fn live_line(c: &Counts) -> String {
    format!(
        "fetched={} stored={} chunks={} embedded={} failed={} filtered={} classified={} skipped_unchanged={} \
         unchanged={}",
        c.fetched, c.stored, c.chunks, c.embedded, c.failed, c.filtered, c.classified, c.skipped_unchanged, c.unchanged
    )
}

pub fn summary_line(c: &Counts) -> String {
    let mut line = format!(
        "fetched={} stored={} filtered={} failed={} classified={}",
        c.fetched, c.stored, c.filtered, c.failed, c.classified
    );
    if c.chunks > 0 || c.embedded > 0 {
        line.push_str(&format!(" chunks={} embedded={}", c.chunks, c.embedded));
    }
    if c.skipped_unchanged > 0 {
        line.push_str(&format!(" skipped_unchanged={}", c.skipped_unchanged));
    }
    if c.unchanged > 0 {
        line.push_str(&format!(" unchanged={}", c.unchanged));
    }
    if c.deleted > 0 {
        line.push_str(&format!(" deleted={}", c.deleted));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_read_from_the_reason() {
        let reason = "X-RateLimit-Remaining is used up; waiting 7250 ms for the rate-limit window to reset";
        assert_eq!(wait_in(reason), Some(Duration::from_millis(7250)));
        assert_eq!(wait_in("Intercom search: 429; retry in 1500 ms"), Some(Duration::from_millis(1500)));
        assert_eq!(wait_in("no number here"), None);
    }

    #[test]
    fn durations_and_counts_are_short() {
        assert_eq!((duration(42.4), duration(185.0), duration(7620.0)), ("42s".into(), "3m05s".into(), "2h07m".into()));
        assert_eq!((si(950), si(12_345), si(4_500_000)), ("950".into(), "12.3k".into(), "4.5M".into()));
    }

    fn event(kind: EventKind) -> Event {
        Event { v: sluice_core::event::EVENT_VERSION, run_id: 1, ts: 0.0, kind }
    }

    fn phase_started(phase: &str, counts: Counts, documents: Option<u64>) -> Event {
        event(EventKind::PhaseStarted { phase: phase.into(), resumed: counts != Counts::default(), counts, documents })
    }

    #[test]
    fn a_later_phase_totals_the_stored_documents_it_reads() {
        let mut reporter = Reporter::new(true, None).unwrap();
        // This run stored 100 documents; the store holds 300 of the source, which the phases read.
        let first = Counts { fetched: 100, stored: 100, ..Counts::default() };
        reporter.on_event(&phase_started("ingest", Counts::default(), Some(0))).unwrap();
        reporter.counts = first;
        for phase in [EMBEDDING_GENERATION, FACET_EXTRACTION, THEME_EXTRACTION] {
            reporter.on_event(&phase_started(phase, Counts::default(), Some(300))).unwrap();
            assert_eq!(reporter.total(), Some(300), "{phase}");
            assert_eq!(reporter.counts.finished(), 0, "{phase} counts its own documents");
        }
        // Stories count stories and the documents left out of them: no total fits.
        reporter.on_event(&phase_started(STORY_CREATION, Counts::default(), Some(300))).unwrap();
        assert_eq!(reporter.total(), None);
        // A store that cannot count: no total rather than a wrong one.
        reporter.on_event(&phase_started(EMBEDDING_GENERATION, Counts::default(), None)).unwrap();
        assert_eq!(reporter.total(), None);
    }

    #[test]
    fn a_resumed_phase_rates_only_the_work_done_now() {
        let mut reporter = Reporter::new(true, None).unwrap();
        let carried = Counts { stored: 250, ..Counts::default() };
        reporter.on_event(&phase_started(EMBEDDING_GENERATION, carried, Some(300))).unwrap();
        assert_eq!((reporter.counts.finished(), reporter.total()), (250, Some(300)));
        let mut base = reporter.baseline.unwrap();
        base.at -= Duration::from_secs(10);
        // 250 were embedded by the process before: 20 more in 10 s is 2/s.
        let rate = base.rate(270).unwrap();
        assert!((rate - 2.0).abs() < 0.1, "{rate}");
    }

    #[test]
    fn a_task_phase_shows_its_time_not_a_rate() {
        let mut reporter = Reporter::new(true, None).unwrap();
        reporter.on_event(&phase_started(THEME_EXTRACTION, Counts::default(), Some(300))).unwrap();
        reporter.baseline.as_mut().unwrap().at -= Duration::from_secs(5);
        reporter.counts.stored = 280;
        let message = reporter.message();
        assert!(message.starts_with("computing, ") && !message.contains("/s"), "{message}");
    }

    #[test]
    fn the_rate_counts_only_this_process_work() {
        let mut base = Baseline::new(900);
        base.at -= Duration::from_secs(10);
        // 900 records were carried over by a resume: 100 in 10 s is 10/s, not 100/s.
        let rate = base.rate(1000).unwrap();
        assert!((rate - 10.0).abs() < 0.1, "{rate}");
        assert_eq!(Baseline::new(0).rate(50), None, "no rate before a second of data");
    }
}
