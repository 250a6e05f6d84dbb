//! What only the PostgreSQL store has: pgvector columns, the advisory-lock
//! run slot across processes and lost connections, reconnecting, and a
//! commit whose answer was lost. Each test takes a database of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use serde_json::json;
use sluice_connectors::store::postgres::EmbeddingStorage;
use sluice_connectors::store::{InspectStore, PostgresStore};
use sluice_core::store::{CommitBatch, DocumentUpdate, PhaseResult, RunStatus, Store};
use sluice_core::{Chunk, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::harness::{PostgresHarness, StoreHarness, postgres_url};
use super::{batch, checkpoint, doc, docs, eventually, new_run};

async fn pg() -> Option<(PostgresHarness, PostgresStore)> {
    let h = PostgresHarness::fresh().await?;
    let store = PostgresStore::open(h.url()).await.expect("open store");
    Some((h, store))
}

/// The pgvector tests must run where .ci/postgres.sh built the extension.
fn vector_required() -> bool {
    std::env::var("SLUICE_TEST_PGVECTOR").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_columns_get_the_batch_dimension_and_an_hnsw_index() {
    let Some((h, store)) = pg().await else { return };
    let storage = store.embedding_storage().await.unwrap();
    if storage != EmbeddingStorage::Vector {
        assert!(!vector_required(), "SLUICE_TEST_PGVECTOR=1 but the store did not get the vector extension");
        eprintln!("skipped: the server has no pgvector (embeddings are real[] there)");
        return h.finish().await;
    }
    let column = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                  WHERE attrelid = 'TABLE'::regclass AND attname = 'embedding'";
    let type_of = async |table: &str| h.rows(&column.replace("TABLE", table)).await[0][0].clone().unwrap();
    assert_eq!(type_of("documents").await, "vector", "no dimension before the first embedding");

    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut near = doc("near", "x");
    near.embedding = Some(vec![1.0, 0.0, 0.0]);
    let mut far = doc("far", "y");
    far.embedding = Some(vec![0.0, 1.0, 0.0]);
    far.chunks = vec![Chunk { index: 0, offset: 0, text: "y".into(), embedding: Some(vec![0.5; 4]) }];
    store.commit(run.id, &batch(vec![near, far, doc("none", "z")]), &checkpoint(1)).await.unwrap();
    assert_eq!(type_of("documents").await, "vector(3)");
    assert_eq!(type_of("chunks").await, "vector(4)");
    let indexes = h.rows("SELECT indexname, indexdef FROM pg_indexes WHERE indexdef LIKE '%hnsw%' ORDER BY 1").await;
    let names: Vec<_> = indexes.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(names, ["chunks_embedding_hnsw", "documents_embedding_hnsw"], "{indexes:?}");
    assert!(indexes.iter().all(|r| r[1].as_deref().unwrap().contains("vector_cosine_ops")));

    // The embeddings can be searched as stored.
    let nearest = h.rows("SELECT id FROM documents ORDER BY embedding <=> '[0.9, 0.1, 0]' LIMIT 1").await;
    assert_eq!(nearest[0][0].as_deref(), Some("near"));
    h.exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET enable_seqscan = off', current_database()); END $$")
        .await;
    let plan = h.rows("EXPLAIN SELECT id FROM documents ORDER BY embedding <=> '[1,0,0]' LIMIT 1").await;
    let plan: Vec<String> = plan.into_iter().filter_map(|r| r[0].clone()).collect();
    assert!(plan.iter().any(|l| l.contains("documents_embedding_hnsw")), "{plan:?}");

    // A reopened store keeps them as they are.
    let again = PostgresStore::open(h.url()).await.unwrap();
    assert_eq!(again.embedding_storage().await.unwrap(), EmbeddingStorage::Vector);
    assert_eq!(again.get_document("src", "near").await.unwrap().unwrap().embedding, Some(vec![1.0, 0.0, 0.0]));

    // Another dimension is refused, saying why, and changes nothing.
    let mut other = doc("other", "w");
    other.embedding = Some(vec![1.0, 2.0]);
    let err = store.commit(run.id, &batch(vec![other]), &checkpoint(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }) && err.to_string().contains("dimensions"), "{err}");
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_vector_extension_embeddings_are_real_arrays() {
    if postgres_url().is_none() {
        return;
    }
    // A role that may not create the (untrusted) vector extension, owning its database.
    let role = format!("sluice_plain_{}", std::process::id());
    let setup = PostgresHarness::fresh().await.unwrap();
    setup
        .exec(&format!("DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"))
        .await;
    setup.finish().await;
    let h = PostgresHarness::owned_by(&role).await.unwrap();
    let store = PostgresStore::open(h.url()).await.unwrap();
    assert_eq!(store.embedding_storage().await.unwrap(), EmbeddingStorage::RealArray);
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut d = doc("a", "x");
    d.embedding = Some(vec![0.25, -1.0]);
    d.chunks = vec![Chunk { index: 0, offset: 0, text: "x".into(), embedding: Some(vec![]) }];
    store.commit(run.id, &batch(vec![d.clone()]), &checkpoint(1)).await.unwrap();
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().embedding, d.embedding);
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks, "an empty embedding stays empty in real[]");
    let kind = h.rows("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'").await;
    assert_eq!(kind[0][0].as_deref(), Some("real[]"));
    // A later phase's update sets the embedding in real[] too; one without an embedding keeps it.
    let update = |embedding: Option<Vec<f32>>| CommitBatch {
        updates: vec![DocumentUpdate {
            source: "src".into(),
            id: "a".into(),
            embedding,
            annotations: Default::default(),
        }],
        ..CommitBatch::default()
    };
    store.commit(run.id, &update(Some(vec![2.0, 0.5])), &checkpoint(2)).await.unwrap();
    store.commit(run.id, &update(None), &checkpoint(3)).await.unwrap();
    let stored = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((stored.embedding, stored.write_count), (Some(vec![2.0, 0.5]), 1));
    drop(store);
    h.finish().await;
    let cleanup = PostgresHarness::fresh().await.unwrap();
    let _ = cleanup.try_exec(&format!("DROP ROLE IF EXISTS {role}")).await;
    cleanup.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_sluice_is_refused() {
    let Some((h, store)) = pg().await else { return };
    drop(store);
    h.exec("INSERT INTO schema_migrations (version) VALUES (99)").await;
    let err = PostgresStore::open(h.url()).await.unwrap_err().to_string();
    assert!(err.contains("schema version 99") && err.contains("newer sluice"), "{err}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_new_database_at_once_all_set_it_up() {
    let Some(h) = PostgresHarness::fresh().await else { return };
    let url = h.url().to_string();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every concurrent open succeeds");
    }
    let versions = h.rows("SELECT count(*), count(DISTINCT version), max(version) FROM schema_migrations").await;
    assert_eq!(versions[0][0].as_deref(), Some("9"), "each of the nine migrations applied once");
    assert_eq!(versions[0][1].as_deref(), Some("9"), "each of the nine migrations applied once");
    assert_eq!(versions[0][2].as_deref(), Some("10"), "up to 0010_phase_partitions");
    h.finish().await;
}

/// Kills the other connections to the test database, as a server restart would.
async fn kill_connections(h: &PostgresHarness, filter: &str) -> usize {
    let rows = h
        .rows(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() {filter}"
        ))
        .await;
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_between_commits_are_replaced_by_the_pool() {
    let Some((h, store)) = pg().await else { return };
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a"]), &checkpoint(1)).await.unwrap();
    assert!(kill_connections(&h, "").await >= 1);
    // Whatever the first attempt meets is retryable, and a retry commits.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match store.commit(run.id, &docs(&["b"]), &checkpoint(2)).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(message)) if attempts < 5 => eprintln!("retrying: {message}"),
            Err(e) => panic!("attempt {attempts}: {e:?}"),
        }
    }
    assert_eq!(store.document_count().await.unwrap(), 2);
    assert_eq!(store.get_document("src", "b").await.unwrap().unwrap().write_count, 1);
    h.finish().await;
}

/// A TCP proxy between the store and the server that can cut a connection
/// right after forwarding the client's COMMIT, so the server commits and
/// the client never hears of it; or cut it before a statement reaches the server.
struct Proxy {
    port: u16,
    /// While set, connections are refused (accepted and dropped), as by a server that is down.
    down: Arc<AtomicBool>,
    pumps: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// 0: pass everything; 1: cut after the next COMMIT; 2: cut before the upsert of document `c`.
    mode: Arc<AtomicU8>,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let pumps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, c, d, p) = (mode.clone(), cut.clone(), down.clone(), pumps.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else { continue };
                let task = tokio::spawn(pump(client, server, m.clone(), c.clone()));
                p.lock().unwrap().push(task);
            }
        });
        Proxy { port, mode, cut, down, pumps }
    }

    /// The "server" goes down: every connection is cut and new ones are refused.
    fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.pumps.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn url(&self, url: &str) -> String {
        let (host, port) = host_port(url);
        url.replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{}", self.port), 1)
    }
}

async fn pump(client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>, cut: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mute = Arc::new(AtomicBool::new(false));
    let muted = mute.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if muted.load(Ordering::SeqCst) || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        let contains = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        match mode.load(Ordering::SeqCst) {
            1 if contains(b"COMMIT") => {
                mode.store(0, Ordering::SeqCst);
                cut.store(true, Ordering::SeqCst);
                mute.store(true, Ordering::SeqCst); // the answer never reaches the client
                let _ = server_write.write_all(data).await;
                tokio::time::sleep(Duration::from_millis(300)).await; // the server commits
                break;
            }
            // The documents' values, bound to the upsert (its text is sent only once per connection).
            2 if contains(b"text of c") => {
                mode.store(0, Ordering::SeqCst);
                mute.store(true, Ordering::SeqCst);
                cut.store(true, Ordering::SeqCst);
                break;
            }
            _ => {}
        }
        if server_write.write_all(data).await.is_err() {
            break;
        }
    }
    down.abort();
}

fn host_port(url: &str) -> (String, u16) {
    let rest = &url[url.find("://").unwrap() + 3..];
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    (host.to_string(), port.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_not_written_twice() {
    let Some(h) = PostgresHarness::fresh().await else { return };
    let url = h.url().to_string();
    let (host, port) = host_port(&url);
    let proxy = Proxy::start((host, port)).await;
    let proxied = proxy.url(&url);
    let store = PostgresStore::open(&proxied).await.unwrap();
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a"]), &checkpoint(1)).await.unwrap();

    // The COMMIT reaches the server, its answer does not: the store cannot know.
    proxy.mode.store(1, Ordering::SeqCst);
    let err = store.commit(run.id, &docs(&["a", "b"]), &checkpoint(2)).await.unwrap_err();
    assert!(proxy.cut.swap(false, Ordering::SeqCst), "the proxy cut the connection at COMMIT: {err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)), "a lost answer is retryable: {err:?}");
    let direct = PostgresStore::open(&url).await.unwrap();
    assert_eq!(direct.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(2)), "it landed");

    // The engine retries the same commit: it is recognised, not written again.
    store.commit(run.id, &docs(&["a", "b"]), &checkpoint(2)).await.unwrap();
    assert_eq!(direct.get_document("src", "a").await.unwrap().unwrap().write_count, 2, "once per commit");
    assert_eq!(direct.get_document("src", "b").await.unwrap().unwrap().write_count, 1, "not twice");

    // Cut before the documents reach the server: nothing landed, the retry writes it all.
    proxy.mode.store(2, Ordering::SeqCst);
    let err = store.commit(run.id, &docs(&["b", "c"]), &checkpoint(3)).await.unwrap_err();
    assert!(proxy.cut.swap(false, Ordering::SeqCst));
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(direct.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(2)));
    store.commit(run.id, &docs(&["b", "c"]), &checkpoint(3)).await.unwrap();
    assert_eq!(direct.get_document("src", "b").await.unwrap().unwrap().write_count, 2);
    assert_eq!(direct.get_document("src", "c").await.unwrap().unwrap().write_count, 1);
    assert_eq!(direct.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(3)));

    // A later phase's commit (updates and results, no documents): recognised by its checkpoint too.
    let mut annotations = serde_json::Map::new();
    annotations.insert("theme".into(), json!("t0"));
    let later = CommitBatch {
        updates: vec![DocumentUpdate { source: "src".into(), id: "a".into(), embedding: None, annotations }],
        results: vec![PhaseResult { kind: "theme".into(), key: "t0".into(), value: json!({"size": 1}) }],
        ..CommitBatch::default()
    };
    proxy.mode.store(1, Ordering::SeqCst);
    let err = store.commit(run.id, &later, &checkpoint(4)).await.unwrap_err();
    assert!(proxy.cut.swap(false, Ordering::SeqCst), "the proxy cut the connection at COMMIT: {err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(direct.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(4)), "it landed");
    store.commit(run.id, &later, &checkpoint(4)).await.unwrap();
    let a = direct.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((a.annotations["theme"].as_str(), a.write_count), (Some("t0"), 2), "updated, not written again");
    assert_eq!(direct.phase_results(run.id, "theme").await.unwrap(), later.results);
    h.finish().await;
}

/// The slot is a session lock: held by another process, the store is busy;
/// once that process is killed with SIGKILL, the server frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_slot_is_freed_when_the_holding_process_is_killed() {
    let Some((h, store)) = pg().await else { return };
    let url = h.url().to_string();
    // psql takes the lock, then waits for more input on its stdin (kept open):
    // an idle session, as sluice's lock connection is between its checks.
    let child = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        assert!(std::env::var_os("CI").is_none(), "psql is needed in CI");
        eprintln!("skipped: psql not found");
        return h.finish().await;
    };
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(b"SELECT pg_advisory_lock(1936487779, hashtext(coalesce(current_schema(), '')));\n").unwrap();
    stdin.flush().unwrap();
    let busy = eventually(Duration::from_secs(10), async || match store.acquire_active().await {
        Err(StoreError::Busy { .. }) => true,
        Ok(guard) => {
            drop(guard); // psql has not taken it yet
            false
        }
        Err(e) => panic!("{e}"),
    })
    .await;
    assert!(busy, "psql never took the lock");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    drop(stdin);
    let free = eventually(Duration::from_secs(10), async || store.acquire_active().await.is_ok()).await;
    assert!(free, "the server released the dead session's lock");
    h.finish().await;
}

/// The guard's connection dies (a server restart, a network cut) while the
/// run goes on: the guard takes the lock back when it reconnects; if another
/// process got it first, that one marks the run failed and the run's next
/// commit fails instead of writing beside the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_lock_is_taken_back_or_the_run_ends_when_another_process_took_it() {
    let Some((h, first)) = pg().await else { return };
    let lock_holder = "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)";
    let locks_here = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

    // Lost, then taken back by the guard: others are still kept out.
    let guard = first.acquire_active().await.unwrap();
    let run = first.create_run(&new_run("p")).await.unwrap();
    assert_eq!(kill_connections(&h, lock_holder).await, 1);
    let other: Arc<dyn InspectStore> = h.open().await;
    let retaken = eventually(Duration::from_secs(15), async || h.rows(locks_here).await.len() == 1).await;
    assert!(retaken, "the guard took the lock back");
    assert!(matches!(other.acquire_active().await, Err(StoreError::Busy { active_run_id }) if active_run_id == run.id));
    first.commit(run.id, &docs(&["a"]), &checkpoint(1)).await.unwrap();

    // Lost, and another process takes the slot before the guard can (the
    // guard checks its connection every 2 s; if it wins the race, again).
    let mut taken = None;
    for _ in 0..5 {
        assert!(eventually(Duration::from_secs(15), async || h.rows(locks_here).await.len() == 1).await);
        assert_eq!(kill_connections(&h, lock_holder).await, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while taken.is_none() && std::time::Instant::now() < deadline {
            match other.acquire_active().await {
                Ok(guard) => taken = Some(guard),
                Err(StoreError::Busy { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        if taken.is_some() {
            break;
        }
    }
    let taken = taken.expect("another store took the slot while the guard's connection was down");
    assert_eq!(other.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Failed);
    let err = first.commit(run.id, &docs(&["b"]), &checkpoint(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Contract { .. }) && err.to_string().contains("another process"), "{err}");
    assert_eq!(other.get_document("src", "b").await.unwrap(), None);
    assert_eq!(other.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
    drop(guard);
    drop(taken);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_closes_its_connection() {
    let Some((h, store)) = pg().await else { return };
    let sessions = async || {
        h.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sluice'",
        )
        .await[0][0]
            .clone()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let before = sessions().await;
    let guard = store.acquire_active().await.unwrap();
    assert_eq!(sessions().await, before + 1, "the lock has a connection of its own");
    drop(guard);
    assert!(eventually(Duration::from_secs(5), async || sessions().await == before).await, "and it is closed");
    let locks = h
        .rows(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
    assert!(locks.is_empty(), "{locks:?}");
    h.finish().await;
}

/// The store goes down in the middle of a run and stays down: the engine
/// retries each commit with backoff, then ends the run `failed` with the last
/// checkpoint it committed intact in the store; once the server is back, the
/// run is found failed (its process could not say so) and resumes to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_store_stays_down_fails_with_its_last_checkpoint_intact_and_resumes() {
    use sluice_connectors::source::generate::{GenerateConfig, GenerateSource};
    use sluice_core::{Pipeline, RetryPolicy, Settings, Start};

    let Some(h) = PostgresHarness::fresh().await else { return };
    let url = h.url().to_string();
    let proxy = Proxy::start(host_port(&url)).await;
    let store = Arc::new(PostgresStore::open(&proxy.url(&url)).await.unwrap());
    let pipeline = |store: Arc<PostgresStore>| {
        let mut config = GenerateConfig::new(4_000);
        config.page_size = 50;
        config.latency_ms = 10;
        let source = Arc::new(GenerateSource::new(config).unwrap());
        Pipeline::new(source, store).settings(Settings {
            name: "down".into(),
            batch_size: 50,
            per_document_events: false,
            retry: RetryPolicy {
                max_retries: 3,
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            ..Settings::default()
        })
    };
    let handle = pipeline(store.clone()).start(Start::New).await.unwrap();
    let run_id = handle.run_id;
    let direct = PostgresStore::open(&url).await.unwrap();
    let committed = eventually(Duration::from_secs(20), async || {
        direct.get_run(run_id).await.unwrap().and_then(|r| r.checkpoint).is_some_and(|c| c.batches >= 3)
    })
    .await;
    assert!(committed, "the run committed before the store went down");
    proxy.go_down();
    let summary = tokio::time::timeout(Duration::from_secs(120), handle.wait()).await.expect("the run gives up");
    assert_eq!(summary.status, RunStatus::Failed);
    let error = summary.error.clone().unwrap_or_default();
    assert!(error.contains("unavailable"), "{error}");

    let row = direct.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(row.checkpoint.as_ref(), Some(&summary.checkpoint), "the last committed checkpoint is the store's");
    assert_eq!(direct.document_count().await.unwrap(), summary.checkpoint.counts.stored);
    assert_eq!(row.status, RunStatus::Running, "the failed process could not write its end");

    // The server is back: the next run slot holder marks the run failed, and it resumes.
    proxy.come_back();
    drop(store);
    let again = Arc::new(PostgresStore::open(&url).await.unwrap());
    let summary = pipeline(again.clone()).run(Start::Resume(run_id)).await.unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    assert_eq!(again.document_count().await.unwrap(), 4_000);
    h.finish().await;
}

/// Two workers' pacers on one run draw from one bucket row: together they
/// get the burst and no more, and a pause one of them sets holds the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_rate_bucket_and_its_pauses() {
    use sluice_connectors::store::postgres::distributed::SharedPacer;
    use sluice_core::{Pacer, RateLimit};
    let Some((h, store)) = pg().await else { return };
    let run = store.create_run(&new_run("p")).await.unwrap();
    let a = SharedPacer::new(store.clone(), run.id);
    let b = SharedPacer::new(PostgresStore::open(h.url()).await.unwrap(), run.id);

    // 6 a minute: a burst of 1, then one every 10 s, for both workers together.
    let slow = RateLimit::new("openai slow", Some(6.0));
    let mut went = 0;
    let mut waits = Vec::new();
    for pacer in [&a, &b, &a, &b, &a, &b] {
        match pacer.reserve(&slow).await {
            Duration::ZERO => went += 1,
            wait => waits.push(wait),
        }
    }
    assert_eq!(went, 1, "one request of six goes; the others wait: {waits:?}");
    assert!(waits.iter().all(|w| *w > Duration::from_secs(5) && *w <= Duration::from_secs(10)), "{waits:?}");
    let taken = h.rows("SELECT taken, rate_per_s::text FROM rate_buckets WHERE service = 'openai slow'").await;
    assert_eq!(taken[0][0].as_deref(), Some("1"));
    assert_eq!(taken[0][1].as_deref().map(|r| r.parse::<f64>().unwrap()), Some(0.1));

    // A fast bucket is taken in chunks (1/20 s of the rate), spent locally.
    let fast = RateLimit::new("openai fast", Some(6000.0));
    for _ in 0..5 {
        assert_eq!(a.reserve(&fast).await, Duration::ZERO);
    }
    let taken = h.rows("SELECT taken FROM rate_buckets WHERE service = 'openai fast'").await;
    assert_eq!(taken[0][0].as_deref(), Some("5"), "one statement took five tokens");

    // A 429 met by worker a (no rate of ours for this service) holds worker b until it ends.
    let unrated = RateLimit::new("intercom x", None);
    assert_eq!(b.reserve(&unrated).await, Duration::ZERO);
    a.pause("intercom x", Duration::from_secs(30)).await;
    // b spends what it took before the pause for at most STASH_TTL.
    tokio::time::sleep(sluice_connectors::store::postgres::distributed::STASH_TTL).await;
    let wait = b.reserve(&unrated).await;
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
    assert_eq!(b.reserve(&fast).await, Duration::ZERO, "other services go on");
    let pauses = h.rows("SELECT pauses FROM rate_buckets WHERE service = 'intercom x'").await;
    assert_eq!(pauses[0][0].as_deref(), Some("1"));
    h.finish().await;
}

/// A later phase split by id range: about equal ranges in the scan's byte order, the last one open, and
/// every stored document (tombstones left out) in exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_id_ranges_split_the_stored_documents_evenly() {
    let Some((_h, store)) = pg().await else { return };
    let run = store.create_run(&new_run("p")).await.unwrap();
    assert_eq!(store.document_id_ranges("src", 4).await.unwrap(), vec![None], "no documents: one open range");
    // Byte order puts "B" before "a"; 10 ids in 4 ranges: 3, 3, 2, 2.
    let ids: Vec<String> = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "B1", "B2", "B3"].map(String::from).to_vec();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.commit(run.id, &docs(&refs), &checkpoint(1)).await.unwrap();
    let bounds = store.document_id_ranges("src", 4).await.unwrap();
    assert_eq!(bounds, vec![Some("B3".into()), Some("a3".into()), Some("a5".into()), None]);
    assert_eq!(store.document_id_ranges("src", 20).await.unwrap().len(), 10, "at most one range a document");
    assert_eq!(store.document_id_ranges("other", 4).await.unwrap(), vec![None]);
}

/// A distributed run's later steps: none claimable while the source's partitions run; the next step's rows
/// (id ranges of the stored documents, then the one whole-corpus task) made exactly once when the last two
/// rows of a step are marked done at the same moment by two workers; a stale claim marks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_rows_are_made_once_when_the_last_rows_before_it_finish_together() {
    use sluice_connectors::store::postgres::distributed::PhasePlan;
    let Some((h, store)) = pg().await else { return };
    let other = PostgresStore::open(h.url()).await.unwrap();
    let earlier = store.create_run(&new_run("p")).await.unwrap();
    let ids: Vec<String> = (1..=9).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.commit(earlier.id, &docs(&refs), &checkpoint(1)).await.unwrap();
    let phases = [("embedding_generation".to_string(), true), ("theme_extraction".to_string(), false)];
    let plan = PhasePlan::new("classification", &phases, "src", 3);
    let parts = ["p1".to_string(), "p2".to_string()];
    let run = store.submit_distributed(&new_run("p"), &parts, &plan).await.unwrap().id;
    let rows = |sql: &'static str| {
        let h = &h;
        async move { h.rows(&format!("SELECT count(*) FROM run_partitions WHERE run_id = {run} AND {sql}")).await }
    };
    assert_eq!(rows("true").await[0][0].as_deref(), Some("2"), "only the source's partitions at first");

    let a = store.claim_partition("a", 30.0, &[]).await.unwrap().expect("a claims p1");
    let b = other.claim_partition("b", 30.0, &[]).await.unwrap().expect("b claims p2");
    assert!(store.claim_partition("c", 30.0, &[]).await.unwrap().is_none(), "nothing else to claim yet");
    let mut stale = a.fence.clone();
    stale.epoch -= 1;
    assert!(!store.finish_partition(&stale).await.unwrap(), "a stale claim marks nothing done");
    let (x, y) = tokio::join!(store.finish_partition(&a.fence), other.finish_partition(&b.fence));
    assert!(x.unwrap() && y.unwrap());
    let ranges = h
        .rows(&format!(
            "SELECT name, coalesce(range_last, '-'), checkpoint->'partitions'->'main'->>'cursor' FROM run_partitions
             WHERE run_id = {run} AND phase = 'embedding_generation' ORDER BY name"
        ))
        .await;
    let ranges: Vec<Vec<Option<&str>>> = ranges.iter().map(|r| r.iter().map(Option::as_deref).collect()).collect();
    assert_eq!(
        ranges,
        [
            [Some("embedding_generation:1"), Some("d3"), None],
            [Some("embedding_generation:2"), Some("d6"), Some("d3")],
            [Some("embedding_generation:3"), Some("-"), Some("d6")],
        ],
        "three ranges, made once, each starting where the one before ends"
    );

    let mut claims = Vec::new();
    for worker in ["a", "b", "c"] {
        let claim = store.claim_partition(worker, 30.0, &[]).await.unwrap().expect("a range to claim");
        assert_eq!(claim.range.as_ref().map(|r| r.phase.as_str()), Some("embedding_generation"));
        claims.push(claim);
    }
    assert!(store.claim_partition("d", 30.0, &[]).await.unwrap().is_none());
    assert_eq!(store.settle_run(run).await.unwrap(), Some(RunStatus::Running));
    let (x, y, z) = tokio::join!(
        store.finish_partition(&claims[0].fence),
        other.finish_partition(&claims[1].fence),
        store.finish_partition(&claims[2].fence)
    );
    assert!(x.unwrap() && y.unwrap() && z.unwrap());
    assert_eq!(rows("later AND phase IS NULL").await[0][0].as_deref(), Some("1"), "one whole-corpus task");
    let task = store.claim_partition("a", 30.0, &[]).await.unwrap().expect("the task");
    assert_eq!((task.fence.partition.as_str(), task.range.is_none()), ("__phases__", true));
    assert_eq!(task.checkpoint.phase, "theme_extraction");
    assert!(task.checkpoint.phase_done("embedding_generation"));
    assert!(store.finish_partition(&task.fence).await.unwrap());
    assert_eq!(store.settle_run(run).await.unwrap(), Some(RunStatus::Completed));
    assert_eq!(rows("true").await[0][0].as_deref(), Some("6"), "nothing made twice");
    h.finish().await;
}
