//! Slow and silent clients against the real `sluice serve` over loopback TCP:
//! connections that trickle their headers, send nothing, trickle a body or
//! sit idle after a request are closed after their timeouts, and normal
//! requests keep being answered meanwhile; the connection cap holds.
//! Bounds are several times the configured timeouts, so a slow machine
//! cannot fail them.

mod common;
mod serve_kit;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use serve_kit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The configured timeouts (1 s) times ten.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A connection that sends `head`, then one byte of `drip` every 200 ms until
/// the server closes it; resolves to what the server sent, once closed.
async fn trickle(addr: String, head: Vec<u8>, drip: u8) -> Vec<u8> {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        if writer.write_all(&head).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(&[drip]).await.is_err() {
                return;
            }
        }
    });
    let answer = read_to_close(&mut reader).await;
    writing.abort();
    answer
}

async fn silent(addr: String) -> Vec<u8> {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut reader, _writer) = stream.into_split();
    read_to_close(&mut reader).await
}

/// One request on a kept-alive connection, then silence: the answer, and the rest until closed.
async fn idle_after_request(addr: String) -> (Vec<u8>, Duration) {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"status\":\"ok\"") {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    answer.extend(read_to_close(&mut reader).await);
    (answer, answered.elapsed())
}

fn start(dir: &std::path::Path, header_timeout_secs: &str, extra: &[&str]) -> Server {
    let config = generate_pipeline(dir, 100, 50, 0);
    let mut args =
        vec!["--header-timeout-secs", header_timeout_secs, "--body-timeout-secs", "1", "--idle-timeout-secs", "1"];
    args.extend_from_slice(extra);
    Server::start_with(&config, &dir.join("slow.db"), &[], &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_while_normal_requests_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "1", &[]);
    let opened = Instant::now();
    let mut tricklers = Vec::new();
    let mut silents = Vec::new();
    for _ in 0..40 {
        tricklers.push(tokio::spawn(trickle(
            server.addr.clone(),
            b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ".to_vec(),
            b'a',
        )));
        silents.push(tokio::spawn(silent(server.addr.clone())));
    }
    let body_trickler = tokio::spawn(trickle(
        server.addr.clone(),
        b"POST /api/pipeline/run HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            .to_vec(),
        b' ',
    ));
    let idle = tokio::spawn(idle_after_request(server.addr.clone()));

    // Normal requests are answered while those are open.
    let client = reqwest::Client::builder().timeout(CLOSED_WITHIN).build().unwrap();
    for _ in 0..5 {
        let (code, health) = get(&client, &server.url("/healthz")).await;
        assert_eq!((code, health["status"].clone()), (200, json!("ok")));
        let (code, dry) = post(&client, &server.url("/api/pipeline/run"), json!({"dry_run": true})).await;
        assert_eq!((code, dry["status"].clone()), (200, json!("dry_run")), "{dry}");
    }

    for (kind, handles) in [("trickling headers", tricklers), ("silent", silents)] {
        for handle in handles {
            let answer = tokio::time::timeout(CLOSED_WITHIN, handle)
                .await
                .unwrap_or_else(|_| panic!("a connection {kind} was still open after {CLOSED_WITHIN:?}"))
                .unwrap();
            // Cut off without an answer: no request was ever complete.
            assert!(answer.is_empty(), "{kind}: {}", String::from_utf8_lossy(&answer));
        }
    }
    let answer =
        tokio::time::timeout(CLOSED_WITHIN, body_trickler).await.expect("the body trickler was cut off").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_lowercase().contains("content-type: application/json"), "{answer}");
    assert!(answer.contains("\"error\":\"the request body did not arrive within 1 s\""), "{answer}");
    let (answer, idle_for) =
        tokio::time::timeout(CLOSED_WITHIN, idle).await.expect("the idle connection was closed").unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(idle_for < CLOSED_WITHIN, "idle for {idle_for:?}");
    assert!(opened.elapsed() < CLOSED_WITHIN * 2);

    // Still serving afterwards, on fresh connections.
    let (code, _) = get(&reqwest::Client::new(), &server.url("/healthz")).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees_as_slow_connections_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "2", &["--max-connections", "4"]);
    let mut silents = Vec::new();
    for _ in 0..4 {
        let stream = TcpStream::connect(&server.addr).await.unwrap();
        silents.push(tokio::spawn(async move {
            let (mut reader, _writer) = stream.into_split();
            read_to_close(&mut reader).await
        }));
    }
    // Give the server the time to take all four (it takes them in order, before this one).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let client = reqwest::Client::builder().timeout(CLOSED_WITHIN * 2).build().unwrap();
    let (code, _) = get(&client, &server.url("/healthz")).await;
    let waited = asked.elapsed();
    assert_eq!(code, 200);
    // The four took every slot until their 2 s header deadline: the request waited for one to be cut.
    assert!(waited >= Duration::from_secs(1), "answered after {waited:?} with every slot taken");
    for handle in silents {
        let answer = tokio::time::timeout(CLOSED_WITHIN, handle).await.expect("a silent connection was cut").unwrap();
        assert!(answer.is_empty());
    }
}

#[tokio::test]
async fn limits_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 10, 10, 0);
    for arg in ["--header-timeout-secs=0", "--body-timeout-secs=soon", "--idle-timeout-secs=-1", "--max-connections=0"]
    {
        let out = sluice()
            .args(["serve", "--bind", "127.0.0.1:0", "-c"])
            .arg(&config)
            .arg("--db")
            .arg(dir.path().join("x.db"))
            .arg(arg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{arg}: {}", stderr(&out));
        let flag = arg.split('=').next().unwrap();
        assert!(stderr(&out).contains(flag), "{arg}: {}", stderr(&out));
    }
}
