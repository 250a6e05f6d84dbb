//! `sluice serve`: the HTTP control API of the runbooks. Runs go on in the
//! background of the server process, one at a time per store.

mod access;
mod api_doc;
mod dashboard;
mod dates;
mod distributed;
mod error;
mod handlers;
mod incremental;
mod limits;
mod listener;
mod metrics;
mod rejection;
mod request;
mod results;
mod results_doc;
mod resume;
mod retry;
mod schedule;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use self::access::Access;
use self::limits::HttpLimits;

use crate::cli::ServeArgs;
use crate::env::env_var;
use crate::error::{CliError, code};
use crate::store_args::open_store_for;
use sluice_connectors::PipelineFile;
pub use state::AppState;

/// The routes, behind the access check and, in front of all, the layer that
/// reads bodies within their limits and makes every error answer JSON. The
/// two wrap the router from outside (not `Router::layer`, under which axum
/// leaves the `Allow` header out of its 405s).
pub fn app(state: Arc<AppState>, access: Access, limits: HttpLimits) -> Router {
    let guarded = from_fn_with_state(access, access::guard).layer(router(state));
    Router::new().fallback_service(from_fn_with_state(limits, rejection::guard).layer(guarded))
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/pipeline/run", post(handlers::run))
        .route("/api/pipeline/status/{run_id}", get(handlers::status))
        .route("/api/pipeline/active", get(handlers::active))
        .route("/api/pipeline/history", get(handlers::history))
        .route("/api/pipeline/stop", post(handlers::stop))
        .route("/api/pipeline/{run_id}/events", get(handlers::events))
        .route("/api/pipeline/{run_id}", get(handlers::run_document))
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/openapi.json", get(handlers::openapi))
        .merge(results::routes())
        .route("/api/pipeline/{run_id}/failures/retry", post(retry::retry))
        .merge(dashboard::routes())
        .fallback(handlers::not_found)
        .with_state(state)
}

pub async fn serve(args: ServeArgs) -> Result<u8, CliError> {
    let addr: SocketAddr = args
        .bind
        .parse()
        .map_err(|_| CliError::usage(format!("--bind {} is not an address like 127.0.0.1:8000", args.bind)))?;
    let token = env_var("SLUICE_API_TOKEN").filter(|t| !t.is_empty());
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(CliError::usage(format!(
            "refusing to serve on {addr} without SLUICE_API_TOKEN: anyone who can reach it could start and stop runs; \
             set SLUICE_API_TOKEN or bind to 127.0.0.1"
        )));
    }
    if token.is_none() && args.protect_reads {
        return Err(CliError::usage(
            "--protect-reads needs SLUICE_API_TOKEN: the token is what reads are protected by",
        ));
    }
    // Beyond loopback, run errors and the store's description are no one else's business.
    let access = Access {
        token: token.as_deref().map(Into::into),
        protect_reads: args.protect_reads || !addr.ip().is_loopback(),
    };
    let limits = HttpLimits {
        header_read_timeout: args.header_timeout_secs,
        body_timeout: args.body_timeout_secs,
        idle_timeout: args.idle_timeout_secs,
        max_connections: args.max_connections as usize,
    };
    let schedule = match (&args.every, &args.cron) {
        (Some(every), _) => Some(schedule::Schedule::Every(schedule::parse_every(every).map_err(CliError::usage)?)),
        (None, Some(expr)) => Some(schedule::Schedule::cron(expr).map_err(CliError::usage)?),
        (None, None) => None,
    };
    let mut file = PipelineFile::load(&args.config)?;
    crate::env::apply_env(&mut file, &env_var)?;
    let store: Arc<dyn sluice_core::Store> = open_store_for(args.db.as_deref(), Some(&file))?;
    // A run left `running` by a process that died is marked failed (resumable) now, not at the first request.
    match store.acquire_active().await {
        Ok(guard) => drop(guard),
        Err(sluice_core::StoreError::Busy { active_run_id }) => {
            tracing::warn!(active_run_id, "another process is running a run on this store")
        }
        Err(e) => return Err(e.into()),
    }
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::runtime(format!("cannot set up metrics: {e}")))?;
    // The same database as PostgreSQL, for distributed runs (`{"distributed": true}`).
    let distributed =
        crate::commands::worker::serve_store(crate::store_args::resolve(args.db.as_deref(), Some(&file))?.0)?;
    let state = Arc::new(AppState::new(store.clone(), file, token, metrics).with_distributed(distributed));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| CliError::runtime(e.to_string()))?;
    tracing::info!(store = %store.describe(), "sluice serve listening on http://{local}");
    // Scripts and tests read the address from this line (the port may be 0 = any).
    outln!("listening on http://{local}");

    let shutdown_state = state.clone();
    let shutdown = CancellationToken::new();
    let stop_serving = shutdown.clone();
    tokio::spawn(async move {
        crate::commands::run::wait_for_signal().await;
        tracing::warn!("shutting down: stopping the active run at a batch boundary (signal again to abort)");
        tokio::spawn(async {
            crate::commands::run::wait_for_signal().await;
            errln!("aborted; the last committed checkpoint is kept");
            std::process::exit(130);
        });
        shutdown_state.shutdown().await;
        stop_serving.cancel();
    });
    if let Some(schedule) = schedule {
        schedule::spawn(state.clone(), schedule, shutdown.clone());
    }
    listener::serve(listener, app(state, access, limits), limits, shutdown).await;
    Ok(code::OK)
}
