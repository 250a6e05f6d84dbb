//! `sluice serve --every 15m`: an incremental run of the served pipeline on
//! a fixed interval. A tick while a run is active is skipped (logged); the
//! interval and the next tick show in `/api/pipeline/active`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::incremental::ScheduleDoc;
use super::request::RunRequest;
use super::state::AppState;

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

/// Starts an incremental run every `every` until `stop`.
pub fn spawn(state: Arc<AppState>, every: Duration, stop: CancellationToken) {
    let doc = ScheduleDoc { every_secs: every.as_secs(), next_tick: None, started: 0, skipped: 0 };
    state.set_schedule(doc);
    tokio::spawn(async move {
        let mut next = Instant::now() + every;
        loop {
            state.edit_schedule(|d| d.next_tick = Some(rfc3339(SystemTime::now() + (next - Instant::now()))));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.cancelled() => return,
            }
            // A tick missed (a slow start) is not made up for.
            while next <= Instant::now() {
                next += every;
            }
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
        }
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
}
