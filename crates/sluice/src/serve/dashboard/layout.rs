//! The page shell every dashboard page shares (navigation, the token field,
//! the embedded stylesheet and script), and small formatting helpers.

use maud::{DOCTYPE, Markup, html};
use sluice_connectors::dates::parse_date;

use crate::status::RunStatusDoc;

/// Which top-level section a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Run,
    Failures,
    Results,
    Search,
}

/// A whole page: `body` inside the shared shell. `run` adds the links of that run.
pub fn page(title: &str, section: Section, run: Option<i64>, body: Markup) -> Markup {
    let link = |href: String, label: &str, this: Section| {
        html! { a href=(href) class=[(section == this).then_some("current")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sluice" }
                // No favicon request (a 404 would be a console error).
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "sluice" }
                    nav {
                        (link("/".into(), "Runs", Section::Runs))
                        @if let Some(id) = run {
                            (link(format!("/runs/{id}"), &format!("Run {id}"), Section::Run))
                            (link(format!("/runs/{id}/failures"), "Failures", Section::Failures))
                            (link(format!("/runs/{id}/results"), "Results", Section::Results))
                        }
                        (link("/search".into(), "Search", Section::Search))
                    }
                    details.token {
                        summary { "API token" }
                        label { "Token for starting, stopping and retrying (kept in this browser)"
                            input #token type="password" autocomplete="off";
                        }
                    }
                }
                div #flash role="status" aria-live="polite" {}
                main { (body) }
            }
        }
    }
}

pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as the stores write
/// them (`2026-12-02T01:11:59.123Z`); `None` for anything else.
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    let days = parse_date("timestamp", ts.get(..10)?).ok()?;
    let time = ts.get(11..19)?;
    let mut parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    (ts.as_bytes().get(10) == Some(&b'T')).then_some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// How long the run has run: to its end, or to its last update while it goes on.
pub fn duration(doc: &RunStatusDoc) -> String {
    let end = doc.finished_at.as_deref().unwrap_or(&doc.updated_at);
    match (epoch_seconds(&doc.started_at), epoch_seconds(end)) {
        (Some(start), Some(end)) if end >= start => human_seconds(end - start),
        _ => "–".into(),
    }
}

pub fn human_seconds(total: i64) -> String {
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `2026-12-02T01:11:59.123Z` as `2026-12-02 01:11:59`.
pub fn short_time(ts: &str) -> String {
    ts.get(..19).map(|t| t.replacen('T', " ", 1)).unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_the_stores_are_read_and_others_refused() {
        assert_eq!(epoch_seconds("1970-01-02T00:00:01.000Z"), Some(86_401));
        assert_eq!(epoch_seconds("2026-12-02T01:11:59Z").map(|s| s % 86_400), Some(3600 + 11 * 60 + 59));
        for bad in ["", "2026-12-02", "2026-12-02 01:11:59", "2026-02-30T00:00:00Z", "2026-12-02Tab:cd:efZ"] {
            assert_eq!(epoch_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_seconds(7), "7s");
        assert_eq!(human_seconds(65), "1m 05s");
        assert_eq!(human_seconds(3 * 3600 + 120), "3h 02m");
    }
}
