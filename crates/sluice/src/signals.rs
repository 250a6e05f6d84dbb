//! The signals that stop a run: SIGINT, SIGTERM and SIGHUP (an ssh session
//! dropping) all ask for a stop at a batch boundary. GNU `timeout` signals the
//! child and then its group, so the same signal again within a second is one.

use std::time::{Duration, Instant};

/// The same signal again within this time is the same request.
const REPEAT_WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Interrupt,
    Terminate,
    Hangup,
}

#[cfg(unix)]
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Installs the handlers; from now on these signals no longer end the process.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> Kind {
        tokio::select! {
            _ = self.interrupt.recv() => Kind::Interrupt,
            _ = self.terminate.recv() => Kind::Terminate,
            _ = self.hangup.recv() => Kind::Hangup,
        }
    }
}

#[cfg(not(unix))]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    pub async fn next(&mut self) -> Kind {
        let _ = tokio::signal::ctrl_c().await;
        Kind::Interrupt
    }
}

impl Signals {
    /// The next signal that is not `first` repeated within a second of `at`.
    pub async fn next_after(&mut self, first: Kind, at: Instant) -> Kind {
        loop {
            let kind = self.next().await;
            if kind != first || at.elapsed() >= REPEAT_WINDOW {
                return kind;
            }
        }
    }
}
