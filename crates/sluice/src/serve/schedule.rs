//! `sluice serve --every 15m` or `--cron "0 */15 * * * *"`: an incremental
//! run of the served pipeline on schedule. A tick while a run is active is
//! skipped (logged); the schedule and the next tick show in
//! `/api/pipeline/active` (and so in `sluice status --server`).
//!
//! Cron expressions are read by `croner` (five fields, minute first, or six
//! with seconds first; `@hourly` and the like), evaluated in UTC.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;

use super::incremental::ScheduleDoc;
use super::request::RunRequest;
use super::state::AppState;

/// When the ticks come.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A fixed interval from the server's start.
    Every(Duration),
    /// The times a cron expression names (UTC).
    Cron { expr: String, cron: Box<croner::Cron> },
}

impl Schedule {
    /// `--cron EXPR`: five fields (`m h dom mon dow`) or six (seconds first).
    pub fn cron(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        let cron = croner::Cron::from_str(expr).map_err(|e| {
            format!("--cron {expr:?} is not a cron expression ({e}); e.g. \"*/15 * * * *\" or \"0 */15 * * * *\"")
        })?;
        let schedule = Schedule::Cron { expr: expr.to_string(), cron: Box::new(cron) };
        if schedule.after(SystemTime::now()).is_none() {
            return Err(format!("--cron {expr:?} names no time from now on"));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `at`.
    fn after(&self, at: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(every) => Some(at + *every),
            Schedule::Cron { cron, .. } => {
                let at: chrono::DateTime<chrono::Utc> = at.into();
                cron.find_next_occurrence(&at, false).ok().map(SystemTime::from)
            }
        }
    }

    /// The tick after `last`, not before now: a tick missed (a slow start) is not made up for.
    fn following(&self, last: SystemTime, now: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(every) => {
                let mut next = last + *every;
                while next <= now {
                    next += *every;
                }
                Some(next)
            }
            Schedule::Cron { .. } => self.after(last.max(now)),
        }
    }

    fn doc(&self) -> ScheduleDoc {
        match self {
            Schedule::Every(every) => ScheduleDoc { every_secs: Some(every.as_secs()), ..ScheduleDoc::default() },
            Schedule::Cron { expr, .. } => ScheduleDoc { cron: Some(expr.clone()), ..ScheduleDoc::default() },
        }
    }
}

/// `15m`, `30s`, `2h`, `1d` or plain seconds; at least one second.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("--every {text:?} is not an interval (e.g. 15m, 30s, 2h, 1d)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        Some(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("--every {text:?} is out of range (allowed: 1s to many days)")),
    }
}

fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    sluice_connectors::util::time::format_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Starts an incremental run at every tick of `schedule` until `stop`.
pub fn spawn(state: Arc<AppState>, schedule: Schedule, stop: CancellationToken) {
    state.set_schedule(schedule.doc());
    tokio::spawn(async move {
        let mut next = schedule.after(SystemTime::now());
        while let Some(at) = next {
            state.edit_schedule(|d| d.next_tick = Some(rfc3339(at)));
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            tracing::info!(tick = rfc3339(at), "schedule: tick");
            let request = RunRequest { incremental: Some(true), ..RunRequest::default() };
            match state.start(request).await {
                Ok(response) => {
                    tracing::info!(run_id = response.run_id, "schedule: incremental run started");
                    state.edit_schedule(|d| d.started += 1);
                }
                Err(e) if e.status == StatusCode::CONFLICT => {
                    tracing::info!("schedule: tick skipped: {}", e.error);
                    state.edit_schedule(|d| d.skipped += 1);
                }
                Err(e) => tracing::warn!("schedule: the incremental run did not start: {}", e.error),
            }
            next = schedule.following(at, SystemTime::now());
        }
        tracing::warn!("schedule: the cron expression names no later time; no more ticks");
        state.edit_schedule(|d| d.next_tick = None);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_units() {
        assert_eq!(parse_every("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_every("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_every("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "m", "0s", "5w", "-3", "1.5h"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cron_ticks_fall_on_the_times_the_expression_names() {
        // 2026-01-01T00:07:30Z
        let start = at(1_767_225_600 + 7 * 60 + 30);
        let five = Schedule::cron("*/15 * * * *").unwrap();
        assert_eq!(five.after(start), Some(at(1_767_225_600 + 15 * 60)));
        let six = Schedule::cron("0 */15 * * * *").unwrap();
        assert_eq!(six.after(start), Some(at(1_767_225_600 + 15 * 60)));
        // A tick that came late: the next is after now, the missed ones are not made up for.
        let late = at(1_767_225_600 + 50 * 60);
        assert_eq!(six.following(at(1_767_225_600 + 15 * 60), late), Some(at(1_767_225_600 + 60 * 60)));
        let every = Schedule::Every(Duration::from_secs(900));
        assert_eq!(every.following(at(1000), at(1000 + 2000)), Some(at(1000 + 2700)));
        for bad in ["", "* * *", "61 * * * *", "*/15 * * * * * * *", "nonsense"] {
            let err = Schedule::cron(bad).unwrap_err();
            assert!(err.contains("--cron"), "{err}");
        }
    }
}
