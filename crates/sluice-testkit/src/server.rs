//! HTTP plumbing shared by the fakes: binding on loopback, serving until
//! shut down, and the odd responses fault injection needs.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::faults::DropMode;

/// A server task bound on 127.0.0.1. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Binds 127.0.0.1:`port` (0: an ephemeral port) and serves `router`.
    pub async fn start(port: u16, router: Router) -> io::Result<Running> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Running { addr, shutdown: Some(tx), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (for up to 5 s).
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Keep-alive connections would hold a graceful shutdown open; a
        // dropped fake must not linger.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A JSON response with extra headers.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value, headers: &[(HeaderName, String)]) -> Response {
    raw(status, Bytes::from(body.to_string()), headers)
}

/// A response with the given bytes, declared as JSON.
pub(crate) fn raw(status: StatusCode, body: Bytes, headers: &[(HeaderName, String)]) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    add_headers(h, headers);
    resp
}

pub(crate) fn add_headers(h: &mut HeaderMap, headers: &[(HeaderName, String)]) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
}

/// A 200 whose JSON body is cut in half: the transport is fine, parsing fails.
pub(crate) fn truncated(full: &serde_json::Value, headers: &[(HeaderName, String)]) -> Response {
    let text = full.to_string();
    let mut cut = (text.len() / 2).max(1).min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    raw(StatusCode::OK, Bytes::from(text[..cut].to_string()), headers)
}

/// A response whose connection is dropped (see [`DropMode`]).
pub(crate) fn dropped(mode: DropMode, full: &serde_json::Value, headers: &[(HeaderName, String)]) -> Response {
    let err = || io::Error::new(io::ErrorKind::ConnectionAborted, "sluice-testkit: injected connection drop");
    let body = match mode {
        DropMode::BeforeHeaders => Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(err()) })),
        DropMode::MidBody => {
            let text = full.to_string();
            let mut cut = (text.len() / 3).max(1).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let first = Bytes::from(text[..cut].to_string());
            let stream = futures::stream::unfold(0u8, move |step| {
                let first = first.clone();
                async move {
                    match step {
                        0 => Some((Ok(first), 1)),
                        1 => {
                            // Let the head and the first chunk reach the wire
                            // before the connection dies.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Some((Err(err()), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(stream)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    add_headers(h, headers);
    resp
}

/// A short, stable request id derived from a counter and a salt.
pub(crate) fn request_id(salt: u64, n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut x = crate::rng::mix(salt ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out = String::with_capacity(20);
    out.push_str("000");
    for _ in 0..17 {
        out.push(ALPHABET[(x % 36) as usize] as char);
        x /= 36;
        if x == 0 {
            x = crate::rng::mix(n ^ salt ^ out.len() as u64);
        }
    }
    out
}

/// The bearer token of a request: `None` when the header is absent or not
/// of the `Bearer` scheme.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") { Some(token.trim().to_string()) } else { None }
}

/// Whether an `Accept` header allows `application/json`. A missing header
/// does not (Intercom answers 406 to it).
pub(crate) fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        !q_zero && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_header_negotiation() {
        assert!(accepts_json(&accept("application/json")));
        assert!(accepts_json(&accept("*/*")));
        assert!(accepts_json(&accept("text/html, application/json;q=0.9")));
        assert!(accepts_json(&accept("application/*")));
        assert!(!accepts_json(&accept("text/html")));
        assert!(!accepts_json(&accept("application/json;q=0")));
        assert!(!accepts_json(&HeaderMap::new()));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn request_ids_are_stable_and_distinct() {
        assert_eq!(request_id(1, 1), request_id(1, 1));
        assert_ne!(request_id(1, 1), request_id(1, 2));
        assert_eq!(request_id(9, 3).len(), 20);
    }
}
