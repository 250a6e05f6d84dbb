//! `sluice serve`: the HTTP control API of the runbooks. Runs go on in the
//! background of the server process, one at a time per store.

mod dates;
mod error;
mod handlers;
mod metrics;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::assemble::{env_var, open_store_for};
use crate::cli::ServeArgs;
use crate::error::{CliError, code};
use sluice_connectors::PipelineFile;
pub use state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
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
    let state = Arc::new(AppState::new(store.clone(), file, token, metrics));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| CliError::runtime(e.to_string()))?;
    tracing::info!(store = %store.describe(), "sluice serve listening on http://{local}");
    // Scripts and tests read the address from this line (the port may be 0 = any).
    println!("listening on http://{local}");

    let shutdown_state = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            crate::commands::run::wait_for_signal().await;
            tracing::warn!("shutting down: stopping the active run at a batch boundary (signal again to abort)");
            tokio::spawn(async {
                crate::commands::run::wait_for_signal().await;
                eprintln!("aborted; the last committed checkpoint is kept");
                std::process::exit(130);
            });
            shutdown_state.shutdown().await;
        })
        .await
        .map_err(|e| CliError::runtime(format!("server error: {e}")))?;
    Ok(code::OK)
}
