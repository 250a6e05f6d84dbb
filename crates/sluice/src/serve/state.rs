//! What the server keeps between requests: the store, the pipeline file runs
//! start from, the run this process is driving, and the recent runs' event
//! channels for live streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use sluice_connectors::store::PostgresStore;
use sluice_connectors::{PipelineFile, build_pipeline};
use sluice_core::{Event, RunId, RunInfo, RunWindow, Start, Store};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::dates::{parse_day, range_for_days};
use super::error::ApiError;
use super::incremental::ScheduleDoc;
use super::metrics::RunMetrics;
pub use super::request::RunRequest;
use crate::resume::{find_resumable, why_not_resumable};

/// Event channels kept for runs that ended, so a late subscriber still gets their history.
const CHANNELS_KEPT: usize = 16;
/// Lifecycle events replayed to a subscriber that joins late, per run.
const HISTORY_KEPT: usize = 10_000;

pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The pipeline file new runs start from (environment already applied).
    pub file: PipelineFile,
    /// `SLUICE_API_TOKEN`: required on mutating endpoints when set.
    pub token: Option<String>,
    pub metrics: PrometheusHandle,
    pub active: Mutex<Option<ActiveRun>>,
    channels: Mutex<BTreeMap<RunId, Arc<RunChannel>>>,
    /// Serializes starts in this process (the store's lock serializes processes).
    starting: tokio::sync::Mutex<()>,
    /// `--every`: the incremental runs on schedule.
    schedule: Mutex<Option<ScheduleDoc>>,
    /// The store as PostgreSQL, for distributed runs (`None`: SQLite, single-process only).
    pub distributed: Option<PostgresStore>,
    /// The distributed runs this server created or resumed, oldest first (what its stop endpoint stops).
    pub(super) distributed_runs: Mutex<Vec<RunId>>,
}

/// The run this process drives.
pub struct ActiveRun {
    pub run_id: RunId,
    pub stop: CancellationToken,
    pub follower: Option<JoinHandle<()>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    pub run_id: Option<RunId>,
    /// `started`, `resumed` or `dry_run`.
    pub status: String,
    pub message: String,
    /// A distributed run: how many partitions its workers share (the later phases' task included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<usize>,
}

/// An event with its number in the run's stream (the SSE id).
pub type Sequenced = (u64, Arc<Event>);

/// Events of one run, for live streams: a broadcast for subscribers and the
/// run's lifecycle events for those who join late.
pub struct RunChannel {
    live: broadcast::Sender<Sequenced>,
    history: Mutex<VecDeque<Sequenced>>,
    next_seq: AtomicU64,
}

impl RunChannel {
    fn new() -> Self {
        Self { live: broadcast::channel(4096).0, history: Mutex::new(VecDeque::new()), next_seq: AtomicU64::new(1) }
    }

    fn publish(&self, event: Event) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let event = Arc::new(event);
        if !event.kind.is_per_document() {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == HISTORY_KEPT {
                history.pop_front();
            }
            history.push_back((seq, event.clone()));
        }
        let _ = self.live.send((seq, event));
    }

    /// Subscribes, then returns the history so far: together they miss nothing.
    pub fn subscribe(&self) -> (broadcast::Receiver<Sequenced>, Vec<Sequenced>) {
        let rx = self.live.subscribe();
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        (rx, history)
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, file: PipelineFile, token: Option<String>, metrics: PrometheusHandle) -> Self {
        Self {
            store,
            file,
            token,
            metrics,
            active: Mutex::new(None),
            channels: Mutex::new(BTreeMap::new()),
            starting: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(None),
            distributed: None,
            distributed_runs: Mutex::new(Vec::new()),
        }
    }

    /// Lets `{"distributed": true}` create runs in `store` (the same database as [`Self::store`]).
    pub fn with_distributed(mut self, store: Option<PostgresStore>) -> Self {
        self.distributed = store;
        self
    }

    pub fn schedule(&self) -> Option<ScheduleDoc> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_schedule(&self, doc: ScheduleDoc) {
        *self.schedule.lock().unwrap_or_else(|e| e.into_inner()) = Some(doc);
    }

    pub fn edit_schedule(&self, edit: impl FnOnce(&mut ScheduleDoc)) {
        if let Some(doc) = self.schedule.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            edit(doc);
        }
    }

    pub fn channel(&self, run_id: RunId) -> Option<Arc<RunChannel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).get(&run_id).cloned()
    }

    pub fn active_run_id(&self) -> Option<RunId> {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|a| a.run_id)
    }

    /// Starts or resumes a run as the runbook describes.
    pub async fn start(self: &Arc<Self>, request: RunRequest) -> Result<RunResponse, ApiError> {
        let range = validate(&request)?;
        super::resume::check_request(&request)?;
        if request.distributed == Some(true) {
            return self.start_distributed(&request, range).await;
        }
        let _starting = self.starting.lock().await;
        if let Some(active) = self.active_run_id() {
            self.wait_if_ended(active).await?;
        }
        // Takes and frees the store's run slot: answers 409 if another process
        // runs, and marks runs left running by a dead process as failed.
        drop(self.store.acquire_active().await?);

        let resume = request.resume.unwrap_or(false);
        let (file, start, date_range, verb): (PipelineFile, Start, DateRange, &str) = if resume {
            let run = self.find_resumable(&request).await?;
            let mut file = PipelineFile::from_saved(&run.config)?;
            super::resume::apply(&request, range.as_ref(), &run, &mut file)?;
            (file, Start::Resume(run.id), (run.date_from.clone(), run.date_to.clone()), "resumed")
        } else {
            let mut file = self.file.clone();
            if let Some(max) = request.max_conversations {
                file.max_records = Some(max as u64);
            }
            if request.auto_create_stories.is_some() {
                file.auto_create_stories = request.auto_create_stories;
            }
            // The request's range goes to the source (for those that page by date) and is stored with the run.
            if let Some((from, to)) = &range
                && let Some(dated) = file.source.kind_mut().dated()
            {
                dated.set_range(from, to)?;
            }
            if request.incremental.unwrap_or(false)
                || (range.is_none() && sluice_connectors::incremental::is_incremental(&file))
            {
                super::incremental::plan_incremental(self.store.as_ref(), &mut file).await?;
            }
            (file, Start::New, range.map_or((None, None), |(f, t)| (Some(f), Some(t))), "started")
        };

        let mut pipeline = build_pipeline(&file, self.store.clone())?;
        // Sources without dates still record the requested range, so `days` can find the run to resume.
        if let (Some(from), Some(to)) = date_range.clone() {
            let mut settings = pipeline.settings_ref().clone();
            settings.labels.window = Some(RunWindow { from, to });
            pipeline = pipeline.settings(settings);
        }
        let date_range =
            pipeline.settings_ref().labels.window.clone().map_or((None, None), |w| (Some(w.from), Some(w.to)));

        if request.dry_run.unwrap_or(false) {
            return Ok(RunResponse {
                run_id: match start {
                    Start::Resume(id) => Some(id),
                    Start::New => None,
                },
                status: "dry_run".into(),
                message: format!(
                    "the request and pipeline {:?} are valid; nothing was started",
                    pipeline.settings_ref().name
                ),
                partitions: None,
            });
        }

        let mut handle = pipeline.start(start).await?;
        let run_id = handle.run_id;
        let stop = handle.stop_token();
        let channel = Arc::new(RunChannel::new());
        {
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.insert(run_id, channel.clone());
            while channels.len() > CHANNELS_KEPT {
                channels.pop_first();
            }
        }
        let state = self.clone();
        let follower = tokio::spawn(async move {
            let mut metrics = RunMetrics::default();
            while let Some(event) = handle.next_event().await {
                metrics.observe(&event);
                channel.publish(event);
            }
            let summary = handle.wait().await;
            tracing::info!(run_id, status = %summary.status, "run ended");
            let mut active = state.active.lock().unwrap_or_else(|e| e.into_inner());
            if active.as_ref().is_some_and(|a| a.run_id == run_id) {
                *active = None;
            }
        });
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(ActiveRun { run_id, stop, follower: Some(follower) });

        let range_text = match &date_range {
            (Some(from), Some(to)) => format!(" for {from}..{to}"),
            _ => String::new(),
        };
        let message = if verb == "resumed" {
            format!("run {run_id} resumed from its checkpoint{range_text}; monitor /api/pipeline/status/{run_id}")
        } else {
            format!("run {run_id} started{range_text}; monitor /api/pipeline/status/{run_id}")
        };
        Ok(RunResponse { run_id: Some(run_id), status: verb.into(), message, partitions: None })
    }

    /// The run a resume request means: by id, or by the date range of `days`.
    async fn find_resumable(&self, request: &RunRequest) -> Result<RunInfo, ApiError> {
        if let Some(id) = request.resume_run_id {
            // The runbook: "If no matching run found, you'll get a 400 error".
            let run = self.store.get_run(id).await?.ok_or_else(|| {
                ApiError::bad_request(format!("run {id} not found: resume_run_id = {id} names no run"))
            })?;
            return match why_not_resumable(&run) {
                Some(why) => Err(ApiError::bad_request(why)),
                None => Ok(run),
            };
        }
        let Some(days) = request.days else {
            return Err(ApiError::bad_request("resume=true needs days (to match a run's date range) or resume_run_id"));
        };
        let (from, to) = range_for_days(days as u32);
        let same_range =
            |r: &RunInfo| r.date_from.as_deref() == Some(from.as_str()) && r.date_to.as_deref() == Some(to.as_str());
        find_resumable(self.store.as_ref(), same_range).await?.map_err(|newest| {
            let why = match newest {
                Some(run) => why_not_resumable(&run).map_or_else(String::new, |why| format!(" ({why})")),
                None => " (no run has that date range; a run started on another day: use resume_run_id)".into(),
            };
            ApiError::bad_request(format!("No resumable run found for days={days} ({from}..{to}){why}"))
        })
    }

    /// The active run's row can say it ended (its status is written last)
    /// while its follower still hands on its final events: such a run is
    /// waited for, a run still going answers 409.
    async fn wait_if_ended(&self, active: RunId) -> Result<(), ApiError> {
        let ended = matches!(self.store.get_run(active).await?, Some(run) if !run.status.is_active());
        if !ended {
            return Err(busy(active));
        }
        let follower = {
            let mut slot = self.active.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_mut().filter(|a| a.run_id == active).and_then(|a| a.follower.take())
        };
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        let mut slot = self.active.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(a) if a.run_id == active => *slot = None,
            Some(a) => return Err(busy(a.run_id)),
            None => {}
        }
        Ok(())
    }

    /// Asks the active run of this process to stop at the next batch boundary.
    pub fn stop(&self) -> Option<RunId> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.as_ref().map(|a| {
            a.stop.cancel();
            a.run_id
        })
    }

    /// Stops the active run and waits until it has committed and ended.
    pub async fn shutdown(&self) {
        let follower = {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active.as_mut().and_then(|a| {
                a.stop.cancel();
                a.follower.take()
            })
        };
        if let Some(follower) = follower {
            tracing::info!("waiting for the active run to commit its batches in flight");
            let _ = follower.await;
        }
    }
}

/// A run's date range as stored with it (`YYYY-MM-DD`), when it has one.
type DateRange = (Option<String>, Option<String>);

pub fn busy(active: RunId) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, format!("run {active} is already active; stop it or wait for it"))
        .with_detail(serde_json::json!({ "active_run_id": active }))
}

/// Checks a run request; returns the date range it names, if any.
fn validate(r: &RunRequest) -> Result<Option<(String, String)>, ApiError> {
    if let Some(days) = r.days
        && !(1..=3650).contains(&days)
    {
        return Err(ApiError::bad_request(format!("days = {days} is out of range (allowed: 1-3650)")));
    }
    if let Some(max) = r.max_conversations
        && max < 1
    {
        return Err(ApiError::bad_request(format!("max_conversations = {max} must be at least 1")));
    }
    if r.incremental == Some(true) {
        if r.resume == Some(true) {
            return Err(ApiError::bad_request("incremental=true starts a new run: not with resume=true"));
        }
        if r.days.is_some() || r.date_from.is_some() || r.date_to.is_some() {
            return Err(ApiError::bad_request(
                "incremental=true reads from the pipeline's high-water mark: give no days or date_from/date_to",
            ));
        }
    }
    if let Some(id) = r.resume_run_id {
        if id < 1 {
            return Err(ApiError::bad_request(format!("resume_run_id = {id} is not a run id")));
        }
        if r.resume != Some(true) {
            return Err(ApiError::bad_request("resume_run_id is only used with resume=true"));
        }
    }
    let parse = |key: &str, value: &Option<String>| -> Result<Option<i64>, ApiError> {
        value
            .as_deref()
            .map(|v| {
                parse_day(v)
                    .ok_or_else(|| ApiError::bad_request(format!("{key} = {v:?} is not a date (expected YYYY-MM-DD)")))
            })
            .transpose()
    };
    let (from, to) = (parse("date_from", &r.date_from)?, parse("date_to", &r.date_to)?);
    match (r.days, from, to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            Err(ApiError::bad_request("give either days or date_from/date_to, not both"))
        }
        (Some(days), None, None) => Ok(Some(range_for_days(days as u32))),
        (None, Some(f), Some(t)) if f > t => Err(ApiError::bad_request(format!(
            "date_from = {} is after date_to = {}",
            r.date_from.as_deref().unwrap_or(""),
            r.date_to.as_deref().unwrap_or("")
        ))),
        (None, Some(_), Some(_)) => {
            Ok(Some((r.date_from.clone().unwrap_or_default(), r.date_to.clone().unwrap_or_default())))
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            Err(ApiError::bad_request("date_from and date_to go together"))
        }
        (None, None, None) => Ok(None),
    }
}
