//! Per-host politeness: at most `per_host_concurrency` requests to a host at
//! once, and request starts to it spaced by `delay` (the configured delay, or
//! robots.txt's `Crawl-delay` when longer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

struct HostGate {
    permits: Arc<Semaphore>,
    /// When the next request to this host may start.
    next_start: Mutex<Instant>,
}

pub struct HostGates {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<HostGate>>>,
}

impl HostGates {
    pub fn new(per_host: usize) -> Self {
        Self { per_host: per_host.max(1), hosts: Mutex::new(HashMap::new()) }
    }

    /// Waits for a slot on `host` and for its turn; the permit is held for the request.
    pub async fn acquire(&self, host: &str, delay: Duration) -> OwnedSemaphorePermit {
        let gate = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts
                .entry(host.to_string())
                .or_insert_with(|| {
                    Arc::new(HostGate {
                        permits: Arc::new(Semaphore::new(self.per_host)),
                        next_start: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        let permit = gate.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let start = {
            let mut next = gate.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + delay;
            start
        };
        tokio::time::sleep_until(start).await;
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn request_starts_to_a_host_are_spaced_by_the_delay_and_hosts_are_independent() {
        let gates = HostGates::new(4);
        let t0 = Instant::now();
        let delay = Duration::from_millis(100);
        for _ in 0..3 {
            drop(gates.acquire("a", delay).await);
        }
        // Virtual time: the third start waits two delays after the first.
        assert_eq!(Instant::now() - t0, Duration::from_millis(200));
        drop(gates.acquire("b", delay).await);
        assert_eq!(Instant::now() - t0, Duration::from_millis(200), "another host does not wait");
    }
}
