//! The runs page: the history, the active run highlighted, and the runbook's
//! start, stop and resume.

use maud::{Markup, html};

use super::layout::{Section, duration, page as shell, short_time, status_badge};
use crate::status::RunStatusDoc;

pub fn page(runs: &[RunStatusDoc], token_required: bool) -> Markup {
    let active = runs.iter().find(|r| r.status.is_active());
    let body = html! {
        h1 { "Runs" }
        section.start {
            h2 { "Start a run" }
            @if token_required {
                p.empty { "This server has an API token: enter it under “API token” (top right) for the buttons." }
            }
            form #start-form {
                fieldset {
                    legend { "Range" }
                    label { input type="radio" name="range" value="days" checked; " last " }
                    label.inline { input #days type="number" name="days" min="1" max="3650" value="90"; " days" }
                    label { input type="radio" name="range" value="dates"; " from " }
                    label.inline { input #date_from type="date" name="date_from"; }
                    label.inline { " to " input #date_to type="date" name="date_to"; }
                    label { input type="radio" name="range" value="none"; " the pipeline's own" }
                }
                label { "Stories "
                    select #auto_create_stories name="auto_create_stories" {
                        option value="" { "as the pipeline says" }
                        option value="true" { "create (auto_create_stories)" }
                        option value="false" { "do not create" }
                    }
                }
                label { "At most " input #max_conversations type="number" name="max_conversations" min="1" placeholder="all"; " conversations" }
                button #start type="submit" disabled[active.is_some()] { "Start" }
            }
        }
        section #runs data-refresh="2000" {
            @if let Some(run) = active {
                p.active-note { "Run " a href={ "/runs/" (run.run_id) } { (run.run_id) } " is " (run.status) " in " (run.current_phase) "."
                    " " button.stop data-action="stop" { "Stop" } }
            }
            (table(runs))
        }
    };
    shell("Runs", Section::Runs, None, body)
}

fn table(runs: &[RunStatusDoc]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.empty { "No runs yet." }
        } @else {
            div.scroll {
                table.runs {
                    thead { tr {
                        th { "Run" } th { "Pipeline" } th { "Status" } th { "Phase" } th.num { "Fetched" }
                        th.num { "Stored" } th.num { "Failed" } th { "Duration" } th { "Cost" } th { "Range" } th { "Started" } th {}
                    } }
                    tbody {
                        @for run in runs {
                            tr id={ "run-" (run.run_id) } class=[run.status.is_active().then_some("active")] data-status=(run.status) {
                                td { a href={ "/runs/" (run.run_id) } { (run.run_id) } }
                                td { (run.pipeline) }
                                td { (status_badge(run.status.as_str())) }
                                td { (run.current_phase) }
                                td.num { (run.counts.fetched) }
                                td.num { (run.counts.stored) }
                                td.num {
                                    @if run.counts.failed > 0 {
                                        a href={ "/runs/" (run.run_id) "/failures" } { (run.counts.failed) }
                                    } @else { "0" }
                                }
                                td { (duration(run)) }
                                td { (run.cost.llm_calls + run.cost.embedding_calls) " calls · "
                                     (run.cost.tokens_in + run.cost.tokens_out) " tokens"
                                     @if let Some(usd) = run.cost_usd { " · ≈ $" (format!("{usd:.2}")) } }
                                td { @if let (Some(f), Some(t)) = (&run.date_from, &run.date_to) { (f) " – " (t) } @else { "–" } }
                                td { (short_time(&run.started_at)) }
                                td.actions {
                                    @if run.status.is_active() {
                                        button.stop data-action="stop" { "Stop" }
                                    } @else if run.status.is_resumable() {
                                        button.resume data-action="resume" data-run=(run.run_id) { "Resume" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
