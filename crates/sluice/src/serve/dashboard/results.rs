//! What a run found (themes, stories, and the conversations of one), and the
//! text search over stored documents. Links and GET forms only: both read
//! without JavaScript.

use maud::{Markup, html};
use serde_json::Value;

use super::layout::{Section, page as shell};
use crate::serve::results::{DocumentView, ResultGroup, ResultsResponse, SearchResponse};
use crate::status::RunStatusDoc;

pub fn page(doc: &RunStatusDoc, results: &ResultsResponse, open: Option<&str>) -> Markup {
    let id = doc.run_id;
    let opened = results.themes.iter().chain(&results.stories).find(|g| Some(g.key.as_str()) == open);
    let body = html! {
        h1 { "Results of run " (id) }
        @if results.themes.is_empty() && results.stories.is_empty() {
            p.empty { "No themes or stories: the run has no theme_extraction phase, or has not reached it." }
        }
        @if !results.themes.is_empty() {
            h2 { "Themes" }
            div.scroll { table #themes {
                thead { tr { th { "Theme" } th.num { "Conversations" } th { "Mostly" } th { "Terms" } th {} } }
                tbody { @for theme in &results.themes {
                    tr class=[(Some(theme.key.as_str()) == open).then_some("active")] {
                        td { (theme.title()) }
                        td.num { (theme.value.get("size").and_then(Value::as_u64).unwrap_or(theme.member_ids().len() as u64)) }
                        td { (theme.value.get("top_category").and_then(Value::as_str).unwrap_or("–")) }
                        td { (terms(&theme.value)) }
                        td { a.open href={ "?key=" (theme.key) "#conversations" } { "Conversations" } }
                    }
                } }
            } }
        }
        @if !results.stories.is_empty() {
            h2 { "Stories" }
            ul.stories { @for story in &results.stories {
                li { strong { (story.title()) } " — "
                    (story.value.get("summary").and_then(Value::as_str).unwrap_or(""))
                    " " a.open href={ "?key=" (story.key) "#conversations" } { "Conversations" } }
            } }
        }
        @if let Some(group) = opened { (conversations(group)) }
    };
    shell(&format!("Results of run {id}"), Section::Results, Some(id), body)
}

fn terms(value: &Value) -> String {
    value
        .get("terms")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn conversations(group: &ResultGroup) -> Markup {
    let docs = group.conversations.as_deref().unwrap_or_default();
    html! {
        section #conversations {
            h2 { "Conversations of " (group.kind) " “" (group.title()) "”" }
            p { (docs.len()) " of " (group.member_ids().len()) " found in the store." }
            (documents(docs))
        }
    }
}

/// A table of documents: title, classification, facets, the start of the text.
pub fn documents(docs: &[DocumentView]) -> Markup {
    html! {
        div.scroll { table.documents {
            thead { tr { th { "Conversation" } th { "Classification" } th { "Facets" } th { "Theme" } th { "Text" } } }
            tbody { @for d in docs {
                tr {
                    td { strong { (d.title) } br; small.mono { (d.id) } }
                    td { (d.category.as_deref().unwrap_or("–")) }
                    td { @if let Some(Value::Object(facets)) = &d.facets {
                        @for (k, v) in facets { span.facet { (k) ": " (v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())) } " " }
                    } @else { "–" } }
                    td { (d.theme.as_deref().unwrap_or("–")) }
                    td.snippet { (d.snippet) }
                }
            } }
        } }
    }
}

pub fn search_page(text: &str, found: Option<&SearchResponse>) -> Markup {
    let body = html! {
        h1 { "Search stored documents" }
        form.filter method="get" action="/search" {
            label { "Text " input #q type="search" name="q" value=(text) autofocus; }
            button type="submit" { "Search" }
        }
        @if let Some(found) = found {
            p #search-count { (found.documents.len()) " documents of " code { (found.source) } " contain “" (found.query) "”"
                @if found.truncated { " (the search stopped early on a large store; refine it)" } "." }
            (documents(&found.documents))
        }
    };
    shell("Search", Section::Search, None, body)
}
