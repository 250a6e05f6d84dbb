//! One run: its state as committed (rendered here, so it reads without
//! JavaScript) and, while this server drives it, the live throughput chart the
//! script draws from the run's event stream.

use maud::{Markup, html};
use sluice_core::Counts;

use super::layout::{Section, duration, page as shell, short_time, status_badge};
use crate::status::RunStatusDoc;

pub fn page(doc: &RunStatusDoc, live: bool) -> Markup {
    let id = doc.run_id;
    let body = html! {
        h1 #title { "Run " (id) " " (status_badge(doc.status.as_str())) }
        section.chart-box {
            h2 { "Throughput (records/s)" }
            @if live {
                div #live data-events={ "/api/pipeline/" (id) "/events" } data-run=(id) {
                    p.legend {
                        span.now { "now " strong #rate { "–" } " records/s" }
                        span.mark-key.rate_limited { "rate-limit wait" }
                        span.mark-key.backing_off { "retry" }
                        span.mark-key.phase { "phase" }
                    }
                    svg #chart viewBox="0 0 600 200" preserveAspectRatio="none" role="img"
                        aria-label="records per second over time" data-points="0" {}
                    p.axis #axis {}
                }
                noscript { p { "The live chart needs JavaScript; the tables below are as committed." } }
            } @else {
                p.empty { "This server did not drive the run since it started: no live events. "
                    "Its events are in its --events-out log." }
            }
        }
        section #summary data-run=(id) { (summary(doc)) }
    };
    shell(&format!("Run {id}"), Section::Run, Some(id), body)
}

/// What the run committed; swapped in place by the script while it runs.
pub fn summary(doc: &RunStatusDoc) -> Markup {
    let phases = phase_rows(doc);
    html! {
        div.cards {
            div.card { h3 { "Status" } p { (status_badge(doc.status.as_str())) " in " strong { (doc.current_phase) } }
                p { "Started " (short_time(&doc.started_at)) ", " (duration(doc)) }
                @if let (Some(f), Some(t)) = (&doc.date_from, &doc.date_to) { p { "Range " (f) " – " (t) } }
                @if let Some(error) = &doc.error { p.error { (error) } }
                @if doc.status.is_active() { p { button.stop data-action="stop" { "Stop" } } }
                @else if doc.status.is_resumable() { p { button.resume data-action="resume" data-run=(doc.run_id) { "Resume" } } }
            }
            div.card #cost { h3 { "Cost ledger" }
                table.kv {
                    tr { th { "LLM calls" } td #cost-llm { (doc.cost.llm_calls) } }
                    tr { th { "Embedding calls" } td { (doc.cost.embedding_calls) } }
                    tr { th { "Tokens in" } td { (doc.cost.tokens_in) } }
                    tr { th { "Tokens out" } td { (doc.cost.tokens_out) } }
                    tr { th { "Calls saved (unchanged content)" } td { (doc.cost.calls_saved) } }
                    @if let Some(usd) = doc.cost_usd { tr { th { "Cost" } td #cost-money title=[doc.cost_text.as_deref()] { "≈ $" (format!("{usd:.4}")) } } }
                }
            }
        }
        h2 { "Phases" }
        div.scroll { table #phases {
            thead { tr { th { "Phase" } th { "State" } th.num { "Fetched" } th.num { "Classified" } th.num { "Filtered" }
                th.num { "Stored" } th.num { "Failed" } th.num { "Embedded" } } }
            tbody { @for (name, state, counts) in &phases {
                tr class=[(*state == "current").then_some("active")] {
                    td { (name) } td { (state) }
                    td.num { (counts.fetched) } td.num { (counts.classified) } td.num { (counts.filtered) }
                    td.num { (counts.stored) }
                    td.num { @if counts.failed > 0 { a href={ "/runs/" (doc.run_id) "/failures" } { (counts.failed) } } @else { "0" } }
                    td.num { (counts.embedded) }
                }
            } }
        } }
        h2 { "Checkpoint" }
        @match &doc.checkpoint {
            None => p.empty { "Nothing committed yet." },
            Some(cp) => {
                p { (cp.batches) " batches committed; phase " strong { (cp.phase) } }
                @if cp.partitions.is_empty() { p.empty { "No partition position (at the start of the phase)." } }
                @else {
                    div.scroll { table #partitions {
                        thead { tr { th { "Partition" } th { "Cursor" } th.num { "Skip" } th { "Last id" } } }
                        tbody { @for (name, pos) in &cp.partitions {
                            tr { td { (name) } td.mono { (pos.cursor.as_deref().unwrap_or("(first page)")) }
                                 td.num { (pos.skip) } td.mono { (pos.last_id.as_deref().unwrap_or("–")) } }
                        } }
                    } }
                }
            }
        }
    }
}

/// Each phase the run went through or is in, with its counts: the first
/// phase's are the checkpoint's `counts`, later ones' are in `phase_counts`.
fn phase_rows(doc: &RunStatusDoc) -> Vec<(String, &'static str, Counts)> {
    let Some(cp) = &doc.checkpoint else {
        return vec![(doc.current_phase.clone(), "current", doc.counts)];
    };
    let first = cp.phases_done.first().unwrap_or(&cp.phase).clone();
    let counts_of = |name: &str| {
        if name == first { cp.counts } else { cp.phase_counts.get(name).copied().unwrap_or_default() }
    };
    let mut rows: Vec<_> = cp.phases_done.iter().map(|p| (p.clone(), "done", counts_of(p))).collect();
    if !cp.phases_done.contains(&cp.phase) {
        let state = if doc.status.is_active() { "current" } else { "next" };
        rows.push((
            cp.phase.clone(),
            if doc.status.as_str() == "completed" { "done" } else { state },
            counts_of(&cp.phase),
        ));
    }
    rows
}
