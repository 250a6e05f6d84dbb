//! How long and how much the server waits for a client: the settings of
//! `sluice serve` against slow or silent connections, and the request body
//! reader that enforces the body's size and deadline.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures::StreamExt;

use super::error::ApiError;

/// A run request is a few hundred bytes; this bounds the memory a full set of connections can hold.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body over the limit is read (and dropped) up to this size before the 413, so the client,
/// still sending, reads the answer instead of a reset connection; a larger one is not read at all.
pub const DRAINED_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpLimits {
    /// From the connection's start (or the first byte of a later request) to the end of the request's headers.
    pub header_read_timeout: Duration,
    /// From the end of the headers to the end of the request body.
    pub body_timeout: Duration,
    /// A kept-alive connection with no request in flight and nothing sent for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// Reads a whole request body within `limits.body_timeout` and `MAX_BODY_BYTES`.
pub async fn read_body(body: Body, limits: &HttpLimits) -> Result<Bytes, ApiError> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("the request body could not be read").with_detail(e.to_string().into())
            })?;
            seen += chunk.len() as u64;
            if seen > DRAINED_BYTES {
                break;
            }
            if seen <= MAX_BODY_BYTES as u64 {
                buf.extend_from_slice(&chunk);
            }
        }
        if seen > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {} s", limits.body_timeout.as_secs_f64()),
        )),
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY_BYTES} bytes"))
        .with_detail(serde_json::json!({ "limit_bytes": MAX_BODY_BYTES }))
}
