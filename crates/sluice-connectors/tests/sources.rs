//! Behaviour of the basic sources: jsonl, files, generate (each of the
//! first two with its cargo feature).

use std::collections::BTreeSet;
#[cfg(any(feature = "jsonl", feature = "files"))]
use std::fs;
#[cfg(any(feature = "jsonl", feature = "files"))]
use std::path::Path;

use serde_json::json;
#[cfg(feature = "files")]
use sluice_connectors::source::files::{FilesConfig, FilesSource};
use sluice_connectors::source::generate::{GenerateConfig, GenerateSource};
#[cfg(feature = "jsonl")]
use sluice_connectors::source::jsonl::{JsonlConfig, JsonlSource};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

/// Every page of a partition, following cursors from the first page.
async fn drain(source: &dyn Source, partition: &str) -> Vec<(Option<String>, Page)> {
    drain_from(source, partition, None).await
}

async fn drain_from(source: &dyn Source, partition: &str, start: Option<String>) -> Vec<(Option<String>, Page)> {
    let ctx = Context::detached();
    let mut pages = Vec::new();
    let mut cursor = start;
    loop {
        let page = source.fetch(&ctx, partition, cursor.as_deref()).await.expect("fetch");
        let next = page.next.clone();
        pages.push((cursor, page));
        match next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "cursor loop");
    }
}

fn items(pages: &[(Option<String>, Page)]) -> Vec<SourceItem> {
    pages.iter().flat_map(|(_, p)| p.items.clone()).collect()
}

fn records(items: &[SourceItem]) -> Vec<Record> {
    items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Record(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn ids(items: &[SourceItem]) -> Vec<String> {
    items.iter().map(|i| i.id().to_string()).collect()
}

#[cfg(feature = "jsonl")]
fn write_jsonl(path: &Path, from: usize, to: usize) {
    let mut text = String::new();
    for i in from..to {
        text.push_str(&json!({"id": format!("r{i:03}"), "text": format!("record number {i}"), "n": i}).to_string());
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

#[cfg(feature = "jsonl")]
fn jsonl(path: &Path, page_size: usize) -> JsonlSource {
    let mut config = JsonlConfig::new(path.to_str().unwrap());
    config.page_size = page_size;
    JsonlSource::new(config).unwrap()
}

// ---------------------------------------------------------------- jsonl

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_pages_reach_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    write_jsonl(&path, 0, 25);
    let source = jsonl(&path, 10);
    let partitions = source.partitions().await.unwrap();
    assert_eq!(partitions, [path.to_str().unwrap()]);

    let pages = drain(&source, &partitions[0]).await;
    assert_eq!(pages.iter().map(|(_, p)| p.items.len()).collect::<Vec<_>>(), [10, 10, 5]);
    assert_eq!(pages[0].0, None);
    assert!(pages.last().unwrap().1.next.is_none());
    let all = records(&items(&pages));
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        (0..25).map(|i| format!("r{i:03}")).collect::<Vec<_>>()
    );
    let first = &all[0];
    assert_eq!(first.source, "jsonl");
    assert_eq!(first.text, "record number 0");
    assert_eq!(first.fields.get("n"), Some(&json!(0)));
    assert!(!first.fields.contains_key("id") && !first.fields.contains_key("text"));
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_resumes_from_a_mid_file_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    write_jsonl(&path, 0, 23);
    let first_run = drain(&jsonl(&path, 5), path.to_str().unwrap()).await;
    let mid_cursor = first_run[2].0.clone().expect("third page has a cursor");

    // A new source (a restarted process) continues from the cursor.
    let resumed = drain_from(&jsonl(&path, 5), path.to_str().unwrap(), Some(mid_cursor)).await;
    let expected: Vec<String> = (10..23).map(|i| format!("r{i:03}")).collect();
    assert_eq!(ids(&items(&resumed)), expected);
    assert_eq!(ids(&items(&first_run[2..])), expected);
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_malformed_lines_become_invalid_items_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    let mut bytes: Vec<u8> = Vec::new();
    let lines: [&[u8]; 12] = [
        br#"{"id": 1, "text": "first"}"#,                                        // 1
        br#"{"id": 2, "text": "broken"#,                                         // 2: parse
        b"",                                                                     // 3: blank, skipped
        br#"{"id": "three", "text": "third", "updated_at": 1700000000}"#,        // 4
        br#"{"id": 5}"#,                                                         // 5: missing text
        b"{\"id\": 6, \"text\": \"bad \xff byte\"}",                             // 6: encoding
        b"[1, 2, 3]",                                                            // 7: parse (not an object)
        b"   \t",                                                                // 8: blank
        br#"{"text": "no id"}"#,                                                 // 9: missing id
        br#"{"id": 10, "text": "tenth", "updated_at": "2024-05-01T12:30:00Z"}"#, // 10
        br#"{"id": 11, "text": "eleventh"}"#,                                    // 11
        br#"{"id": 12, "text": "last, no newline"}"#,                            // 12
    ];
    for (i, line) in lines.iter().enumerate() {
        bytes.extend_from_slice(line);
        if i + 1 < lines.len() {
            bytes.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
        }
    }
    fs::write(&path, bytes).unwrap();
    let name = path.to_str().unwrap().to_string();

    for page_size in [1, 2, 3, 100] {
        let pages = drain(&jsonl(&path, page_size), &name).await;
        let all = items(&pages);
        let got: Vec<(String, Option<String>)> = all
            .iter()
            .map(|item| match item {
                SourceItem::Record(r) => (r.id.clone(), None),
                SourceItem::Invalid { id, error_type, .. } => (id.clone(), Some(error_type.clone())),
                SourceItem::Document(_) | SourceItem::Unchanged { .. } | SourceItem::Deleted { .. } => {
                    unreachable!("a file source yields records")
                }
            })
            .collect();
        let at = |line: u32| format!("{name}:{line}");
        let expected: Vec<(String, Option<String>)> = vec![
            ("1".into(), None),
            (at(2), Some("parse".into())),
            ("three".into(), None),
            (at(5), Some("missing_field".into())),
            (at(6), Some("encoding".into())),
            (at(7), Some("parse".into())),
            (at(9), Some("missing_field".into())),
            ("10".into(), None),
            ("11".into(), None),
            ("12".into(), None),
        ];
        assert_eq!(got, expected, "page_size {page_size}");

        let recs = records(&all);
        assert_eq!(
            recs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            ["first", "third", "tenth", "eleventh", "last, no newline"]
        );
        assert_eq!(recs[1].updated_at, Some(1_700_000_000));
        assert_eq!(recs[2].updated_at, Some(1_714_566_600));
        assert!(!recs[2].fields.contains_key("updated_at"));
        if let SourceItem::Invalid { raw, error, .. } = &all[1] {
            assert_eq!(raw, r#"{"id": 2, "text": "broken"#);
            assert!(error.contains("invalid JSON"), "{error}");
        }
        if let SourceItem::Invalid { error, .. } = &all[3] {
            assert!(error.contains("\"text\""), "{error}");
        }
    }
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_truncates_huge_raw_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let huge = format!("{{\"id\": 1, \"text\": \"{}", "é".repeat(100_000)); // unterminated
    fs::write(&path, format!("{huge}\n")).unwrap();
    let pages = drain(&jsonl(&path, 10), path.to_str().unwrap()).await;
    match &pages[0].1.items[0] {
        SourceItem::Invalid { raw, error_type, .. } => {
            assert_eq!(error_type, "parse");
            assert!(raw.len() <= 64 * 1024 && raw.len() > 60 * 1024, "{}", raw.len());
        }
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_glob_gives_one_partition_per_file() {
    let dir = tempfile::tempdir().unwrap();
    write_jsonl(&dir.path().join("b.jsonl"), 10, 13);
    write_jsonl(&dir.path().join("a.jsonl"), 0, 4);
    write_jsonl(&dir.path().join("c.jsonl"), 20, 21);
    fs::write(dir.path().join("notes.txt"), "not jsonl").unwrap();
    let pattern = format!("{}/*.jsonl", dir.path().display());
    let source = JsonlSource::new(JsonlConfig::new(pattern.clone())).unwrap();
    let partitions = source.partitions().await.unwrap();
    let expected: Vec<String> =
        ["a", "b", "c"].iter().map(|f| dir.path().join(format!("{f}.jsonl")).to_str().unwrap().to_string()).collect();
    assert_eq!(partitions, expected);
    let mut all = Vec::new();
    for partition in &partitions {
        all.extend(ids(&items(&drain(&source, partition).await)));
    }
    assert_eq!(all, ["r000", "r001", "r002", "r003", "r010", "r011", "r012", "r020"]);
    assert!(matches!(
        source.fetch(&Context::detached(), "elsewhere.jsonl", None).await,
        Err(SourceError::Fatal { .. })
    ));
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_config_errors_name_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/nothing-*.jsonl", dir.path().display());
    let error = JsonlSource::new(JsonlConfig::new(pattern.clone())).unwrap_err().to_string();
    assert!(error.contains("jsonl.path") && error.contains(&pattern) && error.contains("no file matches"), "{error}");

    let missing = dir.path().join("missing.jsonl");
    let error = JsonlSource::new(JsonlConfig::new(missing.to_str().unwrap())).unwrap_err().to_string();
    assert!(error.contains(missing.to_str().unwrap()), "{error}");

    let path = dir.path().join("ok.jsonl");
    write_jsonl(&path, 0, 1);
    let mut config = JsonlConfig::new(path.to_str().unwrap());
    config.page_size = 0;
    let error = JsonlSource::new(config.clone()).unwrap_err().to_string();
    assert!(error.contains("jsonl.page_size = 0") && error.contains("1..=100000"), "{error}");
    config.page_size = 100_001;
    assert!(JsonlSource::new(config).is_err());

    // Defaults and unknown keys, as the registry deserializes them.
    let config: JsonlConfig = serde_json::from_value(json!({"path": "x.jsonl"})).unwrap();
    assert_eq!(
        (config.page_size, config.name.as_str(), config.id_field.as_str(), config.text_field.as_str()),
        (500, "jsonl", "id", "text")
    );
    assert!(serde_json::from_value::<JsonlConfig>(json!({"path": "x", "pagesize": 3})).is_err());
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_custom_fields_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.jsonl");
    fs::write(&path, "{\"key\": 42, \"body\": \"hello\", \"text\": \"kept as a field\"}\n").unwrap();
    let mut config = JsonlConfig::new(path.to_str().unwrap());
    config.id_field = "key".into();
    config.text_field = "body".into();
    config.name = "tickets".into();
    let source = JsonlSource::new(config).unwrap();
    assert_eq!(source.name(), "tickets");
    let recs = records(&items(&drain(&source, path.to_str().unwrap()).await));
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].id.as_str(), recs[0].text.as_str(), recs[0].source.as_str()), ("42", "hello", "tickets"));
    assert_eq!(recs[0].fields.get("text"), Some(&json!("kept as a field")));
}

#[cfg(feature = "jsonl")]
#[tokio::test]
async fn jsonl_unreadable_file_is_fatal_and_bad_cursors_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.jsonl");
    write_jsonl(&path, 0, 30);
    let source = jsonl(&path, 10);
    let name = path.to_str().unwrap();
    let ctx = Context::detached();
    let second = source.fetch(&ctx, name, None).await.unwrap().next.unwrap();

    for bad in ["banana", "5:2", "999999:3", "0:7"] {
        match source.fetch(&ctx, name, Some(bad)).await {
            Err(SourceError::CursorInvalid { .. }) => {}
            other => panic!("cursor {bad}: {other:?}"),
        }
    }

    fs::remove_file(&path).unwrap();
    match source.fetch(&ctx, name, Some(&second)).await {
        Err(SourceError::Fatal { message }) => assert!(message.contains(name), "{message}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- files

#[cfg(feature = "files")]
fn files(root: &Path, page_size: usize) -> FilesSource {
    let mut config = FilesConfig::new(root.to_str().unwrap());
    config.page_size = page_size;
    FilesSource::new(config).unwrap()
}

#[cfg(feature = "files")]
#[tokio::test]
async fn files_walks_recursively_with_extensions_titles_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("sub/deep")).unwrap();
    fs::create_dir_all(root.join(".git")).unwrap();
    fs::write(root.join("a.md"), "intro\n\n# Title A\n\nbody of a").unwrap();
    fs::write(root.join("sub/b.txt"), "plain b").unwrap();
    fs::write(root.join("sub/deep/c.html"), "<html><head><title>Page &amp; C</title></head><body>c</body></html>")
        .unwrap();
    fs::write(root.join("d.json"), r#"{"text": "inner d", "author": "ann", "updated_at": 1600000000}"#).unwrap();
    fs::write(root.join("e.json"), r#"[1, 2, 3]"#).unwrap();
    fs::write(root.join("G.TXT"), "upper case extension").unwrap();
    fs::write(root.join("f.pdf"), "not listed").unwrap();
    fs::write(root.join(".hidden.txt"), "hidden").unwrap();
    fs::write(root.join(".git/config.txt"), "hidden dir").unwrap();
    fs::write(root.join("sub/noext"), "no extension").unwrap();

    let source = files(root, 100);
    assert_eq!(source.partitions().await.unwrap(), ["main"]);
    assert_eq!(source.estimated_total().await, Some(6));
    let all = records(&items(&drain(&source, "main").await));
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["G.TXT", "a.md", "d.json", "e.json", "sub/b.txt", "sub/deep/c.html"]
    );
    let by_id = |id: &str| all.iter().find(|r| r.id == id).unwrap().clone();

    let a = by_id("a.md");
    assert_eq!(a.source, "files");
    assert_eq!(a.text, "intro\n\n# Title A\n\nbody of a");
    assert_eq!(a.fields["title"], "Title A");
    assert_eq!(a.fields["extension"], "md");
    assert_eq!(a.fields["bytes"], a.text.len());
    assert_eq!(a.fields["path"], root.join("a.md").to_str().unwrap());
    let mtime = fs::metadata(root.join("a.md")).unwrap().modified().unwrap();
    let secs = mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(a.updated_at, Some(secs));

    assert_eq!(by_id("sub/deep/c.html").fields["title"], "Page & C");
    assert!(!by_id("sub/b.txt").fields.contains_key("title"));
    assert_eq!(by_id("G.TXT").fields["extension"], "txt");

    let d = by_id("d.json");
    assert_eq!(d.text, "inner d");
    assert_eq!(d.fields["author"], "ann");
    assert_eq!(d.updated_at, Some(1_600_000_000));
    assert!(!d.fields.contains_key("text"));
    let e = by_id("e.json");
    assert_eq!(e.text, "[1, 2, 3]");

    // Only some extensions.
    let mut config = FilesConfig::new(root.to_str().unwrap());
    config.extensions = vec![".MD".into(), "html".into()];
    let only = FilesSource::new(config).unwrap();
    assert_eq!(ids(&items(&drain(&only, "main").await)), ["a.md", "sub/deep/c.html"]);
}

#[cfg(feature = "files")]
#[tokio::test]
async fn files_unreadable_and_non_utf8_files_are_invalid_items() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("a.txt"), "fine").unwrap();
    fs::write(root.join("b.txt"), b"bad \xff\xfe bytes").unwrap();
    std::os::unix::fs::symlink(root.join("nowhere.txt"), root.join("c.txt")).unwrap();
    fs::write(root.join("d.txt"), "also fine").unwrap();

    let all = items(&drain(&files(root, 2), "main").await);
    assert_eq!(ids(&all), ["a.txt", "b.txt", "c.txt", "d.txt"]);
    match &all[1] {
        SourceItem::Invalid { id, raw, error_type, error } => {
            assert_eq!((id.as_str(), error_type.as_str()), ("b.txt", "encoding"));
            assert!(raw.starts_with("bad "), "{raw}");
            assert!(error.contains("b.txt") && error.contains("UTF-8"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    match &all[2] {
        SourceItem::Invalid { id, error_type, error, .. } => {
            assert_eq!((id.as_str(), error_type.as_str()), ("c.txt", "io"));
            assert!(error.contains("c.txt"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(records(&all).len(), 2);
}

#[cfg(feature = "files")]
#[tokio::test]
async fn files_cursor_is_stable_when_files_are_added_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in ["a", "b", "c", "d", "e"] {
        fs::write(root.join(format!("{name}.txt")), format!("file {name}")).unwrap();
    }
    let source = files(root, 2);
    let ctx = Context::detached();
    let first = source.fetch(&ctx, "main", None).await.unwrap();
    assert_eq!(ids(&first.items), ["a.txt", "b.txt"]);
    let cursor = first.next.unwrap();
    assert_eq!(cursor, "c.txt");

    // A file sorted before the cursor appears, one after it too; a restarted run resumes at the cursor.
    fs::write(root.join("b2.txt"), "new before").unwrap();
    fs::write(root.join("c2.txt"), "new after").unwrap();
    let second = source.fetch(&ctx, "main", Some(&cursor)).await.unwrap();
    assert_eq!(ids(&second.items), ["c.txt", "d.txt"]);
    let restarted = files(root, 2);
    let resumed = drain_from(&restarted, "main", Some(cursor.clone())).await;
    assert_eq!(ids(&items(&resumed)), ["c.txt", "c2.txt", "d.txt", "e.txt"]);

    // The cursor's own file removed: the page starts at the next one.
    fs::remove_file(root.join("c.txt")).unwrap();
    let page = files(root, 2).fetch(&ctx, "main", Some(&cursor)).await.unwrap();
    assert_eq!(ids(&page.items), ["c2.txt", "d.txt"]);

    // A fetch of the first page lists the directory again.
    let relisted = drain(&source, "main").await;
    assert_eq!(ids(&items(&relisted)), ["a.txt", "b.txt", "b2.txt", "c2.txt", "d.txt", "e.txt"]);
}

#[cfg(feature = "files")]
#[tokio::test]
async fn files_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let error = FilesSource::new(FilesConfig::new(missing.to_str().unwrap())).unwrap_err().to_string();
    assert!(error.contains("files.path") && error.contains(missing.to_str().unwrap()), "{error}");
    let file = dir.path().join("file.txt");
    fs::write(&file, "x").unwrap();
    let error = FilesSource::new(FilesConfig::new(file.to_str().unwrap())).unwrap_err().to_string();
    assert!(error.contains("not a directory"), "{error}");
    let mut config = FilesConfig::new(dir.path().to_str().unwrap());
    config.extensions = vec![];
    assert!(FilesSource::new(config.clone()).unwrap_err().to_string().contains("files.extensions"));
    config.extensions = vec!["txt".into()];
    config.page_size = 0;
    assert!(FilesSource::new(config).unwrap_err().to_string().contains("files.page_size = 0"));
    let config: FilesConfig = serde_json::from_value(json!({"path": "docs"})).unwrap();
    assert_eq!(config.page_size, 100);
    assert_eq!(config.extensions, ["txt", "md", "markdown", "html", "htm", "json"]);
    assert!(serde_json::from_value::<FilesConfig>(json!({"path": "docs", "recursive": true})).is_err());
}

// ---------------------------------------------------------------- generate

fn generate(count: u64, seed: u64, partitions: usize, page_size: usize) -> GenerateSource {
    let mut config = GenerateConfig::new(count);
    config.seed = seed;
    config.partitions = partitions;
    config.page_size = page_size;
    GenerateSource::new(config).unwrap()
}

async fn generate_all(source: &GenerateSource) -> Vec<Record> {
    let mut all = Vec::new();
    for partition in source.partitions().await.unwrap() {
        all.extend(records(&items(&drain(source, &partition).await)));
    }
    all
}

#[tokio::test]
async fn generate_is_deterministic_per_seed() {
    let a = generate_all(&generate(300, 7, 1, 100)).await;
    let b = generate_all(&generate(300, 7, 3, 17)).await;
    assert_eq!(a, b, "same seed, different paging and partitioning: same records");
    let c = generate_all(&generate(300, 8, 1, 100)).await;
    assert_eq!(a.len(), c.len());
    let same_text = a.iter().zip(&c).filter(|(x, y)| x.text == y.text).count();
    assert!(same_text < 5, "{same_text} texts identical across seeds");
    let distinct: BTreeSet<&str> = a.iter().map(|r| r.text.as_str()).collect();
    assert!(distinct.len() > 295, "texts should vary between records");

    let r = &a[42];
    assert_eq!(r.id, "gen-000000042");
    assert_eq!(r.source, "generate");
    assert_eq!(r.fields["n"], 42);
    assert!(r.fields["title"].as_str().unwrap().ends_with("#42"));
    assert_eq!(r.updated_at, Some(1_700_000_042));
    assert_eq!(r.text.split(' ').count(), 40);
}

#[tokio::test]
async fn generate_ids_are_unique_across_partitions_and_count_is_exact() {
    let source = generate(1003, 0, 4, 50);
    assert_eq!(source.estimated_total().await, Some(1003));
    assert_eq!(source.partitions().await.unwrap(), ["p0", "p1", "p2", "p3"]);
    let all = generate_all(&source).await;
    assert_eq!(all.len(), 1003);
    let unique: BTreeSet<String> = all.iter().map(|r| r.id.clone()).collect();
    assert_eq!(unique.len(), 1003);
    let expected: BTreeSet<String> = (0..1003).map(|i| format!("gen-{i:09}")).collect();
    assert_eq!(unique, expected);

    // Cursors are global indexes; a resumed fetch continues there.
    let ctx = Context::detached();
    let page = source.fetch(&ctx, "p1", None).await.unwrap();
    assert_eq!(page.items[0].id(), "gen-000000250");
    assert_eq!(page.next.as_deref(), Some("300"));
    let page = source.fetch(&ctx, "p1", Some("490")).await.unwrap();
    assert_eq!(ids(&page.items), (490..501).map(|i| format!("gen-{i:09}")).collect::<Vec<_>>());
    assert_eq!(page.next, None);
    assert!(matches!(source.fetch(&ctx, "p1", Some("900")).await, Err(SourceError::CursorInvalid { .. })));
    assert!(matches!(source.fetch(&ctx, "p9", None).await, Err(SourceError::Fatal { .. })));

    let empty = generate(0, 0, 1, 10);
    assert!(generate_all(&empty).await.is_empty());
}

#[tokio::test]
async fn generate_html_and_short_records_and_keywords() {
    let mut config = GenerateConfig::new(1000);
    config.html_every = 5;
    config.short_every = 7;
    config.text_words = 30;
    let all = generate_all(&GenerateSource::new(config).unwrap()).await;
    for (i, r) in all.iter().enumerate() {
        let n = i + 1;
        if n % 7 == 0 {
            assert_eq!(r.text.split(' ').count(), 3, "{}", r.text);
            assert!(r.text.chars().count() < 20);
        } else if n % 5 == 0 {
            assert!(r.text.starts_with("<html>") && r.text.contains("<script>") && r.text.contains("<style>"));
        } else {
            assert!(!r.text.contains('<'));
            assert_eq!(r.text.split(' ').count(), 30);
        }
    }
    let keywords = ["refund", "invoice", "login", "password", "crash", "error", "bug", "feature", "slow"];
    for keyword in keywords {
        let hits = all.iter().filter(|r| r.text.contains(keyword)).count();
        assert!(hits > 10, "{keyword}: {hits}");
    }

    let mut bad = GenerateConfig::new(10);
    bad.partitions = 0;
    let error = GenerateSource::new(bad).unwrap_err().to_string();
    assert!(error.contains("generate.partitions = 0"), "{error}");
    assert!(serde_json::from_value::<GenerateConfig>(json!({"seed": 1})).is_err(), "count is required");
    let config: GenerateConfig = serde_json::from_value(json!({"count": 5})).unwrap();
    assert_eq!(
        (config.page_size, config.partitions, config.text_words, config.name.as_str()),
        (100, 1, 40, "generate")
    );
}

#[tokio::test]
async fn generate_latency_is_applied_per_page() {
    let mut config = GenerateConfig::new(30);
    config.page_size = 10;
    config.latency_ms = 20;
    let source = GenerateSource::new(config).unwrap();
    let started = std::time::Instant::now();
    let pages = drain(&source, "p0").await;
    assert_eq!(pages.len(), 3);
    assert!(started.elapsed() >= std::time::Duration::from_millis(60));
}

/// `cargo test --release -p sluice-connectors --test sources -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a benchmark: run in release"]
async fn generate_throughput() {
    let mut config = GenerateConfig::new(1_000_000);
    config.page_size = 500;
    config.html_every = 10;
    config.short_every = 20;
    let source = GenerateSource::new(config).unwrap();
    let ctx = Context::detached();
    let started = std::time::Instant::now();
    let (mut cursor, mut n, mut bytes) = (None, 0usize, 0usize);
    loop {
        let page = source.fetch(&ctx, "p0", cursor.as_deref()).await.unwrap();
        n += page.items.len();
        bytes += page.items.iter().map(|i| if let SourceItem::Record(r) = i { r.text.len() } else { 0 }).sum::<usize>();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{n} records, {} MB of text in {secs:.2}s: {:.0} records/s", bytes / 1_000_000, n as f64 / secs);
    assert_eq!(n, 1_000_000);
}
