//! What a source or stage gets from the engine while a run is going.

use tokio_util::sync::CancellationToken;

use crate::event::{EventKind, EventSink};

#[derive(Clone, Debug)]
pub struct Context {
    pub events: EventSink,
    /// Cancelled when the run is asked to stop; long waits should watch it.
    pub stop: CancellationToken,
}

impl Context {
    pub fn detached() -> Self {
        Self { events: EventSink::discard(), stop: CancellationToken::new() }
    }

    /// Reports a change of an adapter's state (rate limited, backing off...),
    /// as an event and a log line.
    pub async fn state_change(&self, adapter: &str, old_state: &str, new_state: &str, reason: Option<String>) {
        tracing::info!(adapter, old_state, new_state, reason = reason.as_deref().unwrap_or(""), "adapter state change");
        self.events
            .emit(EventKind::AdapterStateChange {
                adapter: adapter.to_string(),
                old_state: old_state.to_string(),
                new_state: new_state.to_string(),
                reason,
            })
            .await;
    }
}
