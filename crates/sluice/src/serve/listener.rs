//! The accept loop of `sluice serve`, with the limits `axum::serve` lacks: a
//! cap on open connections, and per connection a deadline for the request's
//! headers and one for an idle kept-alive connection. (The body's deadline is
//! the body reader's, in `limits.rs`.) A connection past its deadline is
//! dropped, which closes its socket.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::limits::HttpLimits;

/// How long open connections may take to finish after the server is asked to stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open
/// connections finish the request they are on (for at most `DRAIN`).
pub async fn serve(listener: TcpListener, app: Router, limits: HttpLimits, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the cap, new connections wait in the kernel's listen backlog until one closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, app.clone(), limits, shutdown.clone(), slot));
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open {} s after shutdown; closing them", DRAIN.as_secs());
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(requests.clone());
        let app = app.clone();
        async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // The request counts as in flight until its response body is sent (an event stream's, too).
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _in_flight: in_flight })))
        }
    });
    // hyper's own header timer is off: it also runs while a kept-alive connection is idle, so it
    // would cut idle connections at the header deadline; `Activity` keeps the two apart.
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = activity.expired(&limits) => {
                tracing::debug!(why, "closing a connection");
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection stands, for its deadlines.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Reading a request's headers: since the connection opened, or since the first byte after an idle spell.
    Head(Instant),
    /// No request in flight and no byte of the next one, since then.
    Idle(Instant),
    /// This many requests in flight: no deadline here (the body reader has its own).
    Busy(usize),
}

struct Activity {
    wait: Mutex<Wait>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self { wait: Mutex::new(Wait::Head(Instant::now())), changed: Notify::new() }
    }

    fn update(&self, next: impl FnOnce(Wait) -> Wait) {
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        *wait = next(*wait);
        drop(wait);
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        let idle = matches!(*self.wait.lock().unwrap_or_else(|e| e.into_inner()), Wait::Idle(_));
        if idle {
            self.update(|wait| match wait {
                Wait::Idle(_) => Wait::Head(Instant::now()),
                other => other,
            });
        }
    }

    fn request_started(&self) {
        self.update(|wait| match wait {
            Wait::Busy(n) => Wait::Busy(n + 1),
            _ => Wait::Busy(1),
        });
    }

    fn request_finished(&self) {
        self.update(|wait| match wait {
            Wait::Busy(n) if n > 1 => Wait::Busy(n - 1),
            _ => Wait::Idle(Instant::now()),
        });
    }

    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        match *self.wait.lock().unwrap_or_else(|e| e.into_inner()) {
            Wait::Head(since) => Some((since + limits.header_read_timeout, "request headers not received in time")),
            Wait::Idle(since) => Some((since + limits.idle_timeout, "idle keep-alive connection")),
            Wait::Busy(_) => None,
        }
    }

    /// Resolves when the connection has passed its deadline, with the reason.
    async fn expired(&self, limits: &HttpLimits) -> &'static str {
        loop {
            // Taken before reading the state, so a change in between still wakes us.
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks a request in flight while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's socket, telling the connection's `Activity` when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
