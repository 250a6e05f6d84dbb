//! A run's dead-letter queue, filtered by a plain GET form (no JavaScript
//! needed), with a retry button for what is unresolved.

use std::collections::BTreeSet;

use maud::{Markup, html};
use sluice_core::FailureRow;

use super::layout::{Section, page as shell, short_time};
use crate::serve::results::FailureFilter;
use crate::status::RunStatusDoc;

pub fn page(doc: &RunStatusDoc, rows: &[FailureRow], filter: &FailureFilter) -> Markup {
    let id = doc.run_id;
    let types: BTreeSet<&str> = rows.iter().map(|r| r.failure.error_type.as_str()).collect();
    let stages: BTreeSet<&str> = rows.iter().map(|r| r.failure.stage.as_str()).collect();
    let shown: Vec<&FailureRow> = rows.iter().filter(|r| filter.keeps(r)).collect();
    let open = rows.iter().filter(|r| r.resolved_by.is_none()).count();
    let body = html! {
        h1 { "Failures of run " (id) }
        p #failure-counts { (rows.len()) " failed records, " (open) " unresolved; " (shown.len()) " shown." }
        form.filter method="get" {
            label { "Error type " select name="error_type" {
                option value="" { "any" }
                @for t in &types { option value=(t) selected[filter.error_type.as_deref() == Some(*t)] { (t) } }
            } }
            label { "Stage " select name="stage" {
                option value="" { "any" }
                @for s in &stages { option value=(s) selected[filter.stage.as_deref() == Some(*s)] { (s) } }
            } }
            label { "Text " input type="search" name="q" value=(filter.text.as_deref().unwrap_or("")); }
            label { input type="checkbox" name="unresolved" value="true" checked[filter.unresolved]; " unresolved only" }
            button type="submit" { "Filter" }
        }
        @if open > 0 {
            p { button #retry data-action="retry" data-run=(id) { "Retry " (open) " unresolved" } }
        }
        @if shown.is_empty() {
            p.empty { "No failures to show." }
        } @else {
            div.scroll { table #failures {
                thead { tr { th { "#" } th { "Record" } th { "Stage" } th { "Error type" } th { "Message" } th.num { "Tries" }
                    th { "Retryable" } th { "When" } th { "Resolved" } } }
                tbody { @for row in &shown {
                    @let f = &row.failure;
                    tr class=[row.resolved_by.map(|_| "resolved")] {
                        td { (row.id) } td.mono { (f.source) "/" (f.record_id) } td { (f.stage) }
                        td { code { (f.error_type) } } td.message { (f.error) } td.num { (f.retry_count) }
                        td { @if f.retryable { "yes" } @else { "no" } }
                        td { (short_time(&row.created_at)) }
                        td.resolved-by { @match row.resolved_by {
                            Some(r) => { "by run " a href={ "/runs/" (r) } { (r) } },
                            None => "no",
                        } }
                    }
                } }
            } }
        }
    };
    shell(&format!("Failures of run {id}"), Section::Failures, Some(id), body)
}
