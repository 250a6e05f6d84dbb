//! What the user sees while a run goes: a progress bar on a terminal, plain
//! progress lines otherwise, and the JSONL event log when asked.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_core::{Counts, Event, EventKind};

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

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

pub struct Reporter {
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Instant,
    events_out: Option<(BufWriter<File>, String)>,
    counts: Counts,
    /// The counts of the last plain progress line.
    printed: Counts,
    rate: f64,
    /// The later phase under way, if any (its counts are shown).
    phase: Option<String>,
}

impl Reporter {
    pub fn new(quiet: bool, events_out: Option<&Path>) -> std::io::Result<Self> {
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
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            *active_bar().lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Ok(Self {
            bar,
            plain: !quiet && !terminal,
            last_line: Instant::now(),
            events_out,
            counts: Counts::default(),
            printed: Counts::default(),
            rate: 0.0,
            phase: None,
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
            EventKind::RunStarted { counts, .. } => self.counts = *counts,
            EventKind::BatchCommitted { checkpoint, .. } => {
                self.counts = checkpoint.current_counts();
                self.phase = checkpoint.in_later_phase().then(|| checkpoint.phase.clone());
            }
            EventKind::PhaseStarted { phase, .. } => {
                // A later phase goes over what the first one stored.
                if self.phase.is_none()
                    && let Some(bar) = &self.bar
                {
                    bar.set_length(self.counts.stored);
                }
                self.phase = Some(phase.clone());
                self.counts = Counts::default();
            }
            EventKind::BatchProgress { estimated_total, rate, .. } => {
                self.rate = *rate;
                if let (Some(bar), Some(total)) = (&self.bar, estimated_total) {
                    bar.set_length(*total);
                }
            }
            _ => {}
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.counts.finished());
            bar.set_message(self.message());
        } else {
            self.tick();
        }
        Ok(())
    }

    /// Prints a plain progress line when the counts moved and the last line
    /// is 2 s old. Called on events and on a timer, so a run that goes quiet
    /// (a watch waiting for files) still shows where it stands.
    pub fn tick(&mut self) {
        if self.plain && self.counts != self.printed && self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            self.printed = self.counts;
            errln!("progress: {} rate={:.0}/s", self.message(), self.rate);
        }
    }

    fn message(&self) -> String {
        match &self.phase {
            Some(phase) => format!("{phase}: {}", live_line(&self.counts)),
            None => live_line(&self.counts),
        }
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

/// The live stats of a run, as the seed's monitor shows them (files, docs,
/// chunks, embeddings, errors), under the checkpoint's names: always all of them.
pub fn live_line(c: &Counts) -> String {
    format!(
        "fetched={} stored={} chunks={} embedded={} failed={} filtered={} classified={} skipped_unchanged={}",
        c.fetched, c.stored, c.chunks, c.embedded, c.failed, c.filtered, c.classified, c.skipped_unchanged
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
    line
}
