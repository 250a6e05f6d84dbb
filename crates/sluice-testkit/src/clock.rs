//! A clock the fakes read for everything time-dependent except sleeping:
//! rate-limit windows, cursor issue times and expiry, `created` fields.
//!
//! The default is the system clock. A manual clock lets a test cross a
//! rate-limit window or expire a cursor instantly and without flakiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shared clock in epoch milliseconds. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a manual clock, in epoch ms.
    manual: Option<Arc<AtomicI64>>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A manual clock starting at `epoch_secs`; it only moves when told to.
    pub fn manual(epoch_secs: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(epoch_secs * 1000))) }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
        }
    }

    /// Now, in epoch seconds (floored).
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves a manual clock forward. Panics on the system clock: a test that
    /// means to move time must build its fake with [`Clock::manual`].
    pub fn advance(&self, by: Duration) {
        let ms = self.manual.as_ref().expect("Clock::advance needs a manual clock (Clock::manual)");
        ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Sets a manual clock to `epoch_ms`. Panics on the system clock.
    pub fn set_ms(&self, epoch_ms: i64) {
        let ms = self.manual.as_ref().expect("Clock::set_ms needs a manual clock (Clock::manual)");
        ms.store(epoch_ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        let shared = c.clone();
        assert_eq!(c.now_secs(), 1_000);
        shared.advance(Duration::from_millis(1_500));
        assert_eq!(c.now_ms(), 1_001_500);
        assert_eq!(c.now_secs(), 1_001);
        c.set_ms(5_000);
        assert_eq!(shared.now_secs(), 5);
    }

    #[test]
    fn system_clock_is_recent() {
        assert!(Clock::system().now_secs() > 1_600_000_000);
    }
}
