//! The CLI talking to a running `sluice serve` (`--server URL`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::StopArgs;
use crate::commands::output::print_json;
use crate::env::env_var;
use crate::error::{CliError, code};
use crate::status::RunStatusDoc;

fn client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::runtime(format!("cannot build an HTTP client: {e}")))
}

/// Sends a request and reads the JSON answer; an error answer becomes a CLI error with its message.
async fn call<T: DeserializeOwned>(mut request: reqwest::RequestBuilder, what: &str) -> Result<T, CliError> {
    // Reads need it too when the server protects them.
    if let Some(token) = env_var("SLUICE_API_TOKEN").filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| CliError::runtime(format!("{what}: {e}")))?;
    let status = response.status();
    let body: Value =
        response.json().await.map_err(|e| CliError::runtime(format!("{what}: unreadable answer: {e}")))?;
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("request failed");
        let code = match status.as_u16() {
            400 | 401 | 404 => code::USAGE,
            409 => code::BUSY,
            _ => code::FAILED,
        };
        return Err(CliError { code, message: format!("{what}: {message} (HTTP {status})") });
    }
    serde_json::from_value(body).map_err(|e| CliError::runtime(format!("{what}: unexpected answer: {e}")))
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

pub async fn status(server: &str, run_id: i64) -> Result<RunStatusDoc, CliError> {
    call(client()?.get(url(server, &format!("/api/pipeline/status/{run_id}"))), server).await
}

/// The server's schedule (`serve --every` / `--cron`), as `/api/pipeline/active` shows it; `None` without one.
pub async fn schedule(server: &str) -> Result<Option<Value>, CliError> {
    let active: Value = call(client()?.get(url(server, "/api/pipeline/active")), server).await?;
    Ok(active.get("schedule").filter(|s| !s.is_null()).cloned())
}

/// One line for a schedule: what it is, the next tick, and the ticks so far.
pub fn schedule_text(schedule: &Value) -> String {
    let what = match (schedule["every_secs"].as_u64(), schedule["cron"].as_str()) {
        (Some(secs), _) => format!("every {secs}s"),
        (None, Some(expr)) => format!("cron {expr:?} (UTC)"),
        (None, None) => "unknown".into(),
    };
    let next = schedule["next_tick"].as_str().unwrap_or("none");
    let (started, skipped) = (schedule["started"].as_u64().unwrap_or(0), schedule["skipped"].as_u64().unwrap_or(0));
    format!("{what}, next tick {next} ({started} started, {skipped} skipped while a run was active)")
}

pub async fn history(server: &str, limit: u32) -> Result<Vec<RunStatusDoc>, CliError> {
    #[derive(serde::Deserialize)]
    struct History {
        runs: Vec<RunStatusDoc>,
    }
    let limit = limit.min(100);
    let history: History =
        call(client()?.get(url(server, &format!("/api/pipeline/history?limit={limit}"))), server).await?;
    Ok(history.runs)
}

pub async fn stop(args: StopArgs) -> Result<u8, CliError> {
    if let (Some(db), Some(run_id)) = (&args.db, args.run_id) {
        return crate::commands::worker::stop(db, run_id, args.json).await;
    }
    let request = client()?.post(url(&args.server, "/api/pipeline/stop"));
    let answer: Value = call(request, &args.server).await?;
    if args.json {
        print_json(&answer)?;
    } else {
        outln!("{}", answer["message"].as_str().unwrap_or("stopping"));
    }
    Ok(code::OK)
}
