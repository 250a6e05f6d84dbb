//! Behaviour of the csv source: paging, resuming by row, malformed rows,
//! what the `csv` crate handles (quotes, embedded newlines, CRLF, a BOM),
//! bounded memory, and configuration errors.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use sluice_connectors::source::csv::{CsvConfig, CsvSource};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

async fn drain(source: &dyn Source, partition: &str) -> Vec<(Option<String>, Page)> {
    drain_from(source, partition, None).await
}

/// Every page of a partition from `start`, following cursors.
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

/// (id, error_type) per item: error_type `None` for a record.
fn outline(items: &[SourceItem]) -> Vec<(String, Option<String>)> {
    items
        .iter()
        .map(|item| match item {
            SourceItem::Record(r) => (r.id.clone(), None),
            SourceItem::Invalid { id, error_type, .. } => (id.clone(), Some(error_type.clone())),
            SourceItem::Document(_) | SourceItem::Unchanged { .. } | SourceItem::Deleted { .. } => {
                unreachable!("a file source yields records")
            }
        })
        .collect()
}

fn config(path: &Path) -> CsvConfig {
    CsvConfig::new(path.to_str().unwrap(), "id", vec!["title".into(), "body".into()])
}

fn source(path: &Path, page_size: usize) -> CsvSource {
    let mut config = config(path);
    config.page_size = page_size;
    CsvSource::new(config).unwrap()
}

fn write_rows(path: &Path, from: usize, to: usize) {
    let mut text = String::from("id,title,body,n\n");
    for i in from..to {
        text.push_str(&format!("r{i:03},Title {i},\"Body, number {i}\",{i}\n"));
    }
    fs::write(path, text).unwrap();
}

#[tokio::test]
async fn pages_reach_every_row_exactly_once_with_string_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    write_rows(&path, 0, 25);
    let source = source(&path, 10);
    assert_eq!(source.name(), "csv");
    let partitions = source.partitions().await.unwrap();
    assert_eq!(partitions, [path.to_str().unwrap()]);

    let pages = drain(&source, &partitions[0]).await;
    assert_eq!(pages.iter().map(|(_, p)| p.items.len()).collect::<Vec<_>>(), [10, 10, 5]);
    assert!(pages.last().unwrap().1.next.is_none());
    let all = records(&items(&pages));
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        (0..25).map(|i| format!("r{i:03}")).collect::<Vec<_>>()
    );
    let first = &all[0];
    assert_eq!((first.source.as_str(), first.text.as_str()), ("csv", "Title 0\n\nBody, number 0"));
    assert_eq!(first.fields.len(), 1, "{:?}", first.fields);
    assert_eq!(first.fields["n"], json!("0"), "other columns are kept as strings");
    assert_eq!(first.updated_at, None);
}

#[tokio::test]
async fn resuming_from_a_mid_file_cursor_gives_exactly_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    // Multi-line quoted bodies, so byte offsets and line numbers drift apart.
    let mut text = String::from("id,title,body\n");
    for i in 0..23 {
        text.push_str(&format!("r{i:03},t{i},\"line one\nline two of {i}\"\n"));
    }
    fs::write(&path, text).unwrap();
    let name = path.to_str().unwrap();
    let first_run = drain(&source(&path, 5), name).await;
    assert_eq!(first_run.len(), 5);
    let cursor = first_run[2].0.clone().expect("the third page has a cursor");
    assert_eq!(cursor.split_once(':').unwrap().1, "22", "rows 0..10 take lines 2..21, so row 10 starts on line 22");

    // A new source (a restarted process) continues from the cursor, and re-reads nothing before it.
    let resumed = drain_from(&source(&path, 5), name, Some(cursor)).await;
    let expected: Vec<String> = (10..23).map(|i| format!("r{i:03}")).collect();
    assert_eq!(ids(&items(&resumed)), expected);
    assert_eq!(ids(&items(&first_run[2..])), expected);
    assert_eq!(records(&items(&resumed))[0].text, "t10\n\nline one\nline two of 10");
}

#[tokio::test]
async fn malformed_rows_are_invalid_items_with_the_right_line_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.csv");
    let mut bytes: Vec<u8> = b"\xEF\xBB\xBFid,title,body,lang\r\n".to_vec(); // BOM and CRLF
    let rows: [&[u8]; 9] = [
        b"1,First,plain,en\r\n",                               // line 2
        b"2,\"Quoted, with comma\",\"say \"\"hi\"\"\",en\r\n", // line 3
        b"3,Multi,\"one\r\ntwo\r\nthree\",fr\r\n",             // lines 4-6
        b"4,Too,few\r\n",                                      // line 7: 3 fields
        b"\r\n",                                               // line 8: blank, skipped
        b"5,Bad,\"caf\xE9\",de\r\n",                           // line 9: Latin-1, not UTF-8
        b",No id,here,en\r\n",                                 // line 10: empty id
        b"6,Too,many,fields,here\r\n",                         // line 11
        b"7,Last,\"no line end,\nafter a newline\",en",        // lines 12-13, no final newline
    ];
    for row in rows {
        bytes.extend_from_slice(row);
    }
    fs::write(&path, &bytes).unwrap();
    let name = path.to_str().unwrap().to_string();
    let at = |line: u32| format!("{name}:{line}");

    for page_size in [1, 2, 3, 100] {
        let all = items(&drain(&source(&path, page_size), &name).await);
        let expected: Vec<(String, Option<String>)> = vec![
            ("1".into(), None),
            ("2".into(), None),
            ("3".into(), None),
            (at(7), Some("parse".into())),
            (at(9), Some("encoding".into())),
            (at(10), Some("missing_field".into())),
            (at(11), Some("parse".into())),
            ("7".into(), None),
        ];
        assert_eq!(outline(&all), expected, "page_size {page_size}");
        let recs = records(&all);
        assert_eq!(
            recs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            [
                "First\n\nplain",
                "Quoted, with comma\n\nsay \"hi\"",
                "Multi\n\none\r\ntwo\r\nthree",
                "Last\n\nno line end,\nafter a newline"
            ]
        );
        assert_eq!(recs[0].fields["lang"], json!("en"), "the BOM is not part of the first column's name");
        let SourceItem::Invalid { raw, error, .. } = &all[3] else { unreachable!() };
        assert_eq!(raw, "4,Too,few");
        assert_eq!(error, &format!("{}: the row has 3 fields, the header has 4", at(7)));
        let SourceItem::Invalid { raw, error, .. } = &all[4] else { unreachable!() };
        assert_eq!(raw, "5,Bad,\"caf\u{fffd}\",de");
        assert!(error.starts_with(&format!("{}: column \"body\" is not valid UTF-8", at(9))), "{error}");
        let SourceItem::Invalid { error, .. } = &all[5] else { unreachable!() };
        assert_eq!(error, &format!("{}: column \"id\" (the id) is empty", at(10)));
    }
}

#[tokio::test]
async fn a_repeated_id_comes_out_twice_in_file_order_for_the_store_to_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.csv");
    fs::write(&path, "id,title,body\na,first,x\nb,other,y\na,second,z\n").unwrap();
    let all = records(&items(&drain(&source(&path, 2), path.to_str().unwrap()).await));
    assert_eq!(
        all.iter().map(|r| (r.id.as_str(), r.text.as_str())).collect::<Vec<_>>(),
        [("a", "first\n\nx"), ("b", "other\n\ny"), ("a", "second\n\nz")],
        "both rows are records; the store keeps the later one under (source, id)"
    );
}

#[tokio::test]
async fn updated_at_column_delimiter_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("semi.tsv");
    fs::write(
        &path,
        "key\tsubject\tchanged\tteam\n\
         k1\tHello\t1700000000\tblue\n\
         k2\tWorld\t2024-05-01T12:30:00Z\tred\n\
         k3\tBlank\t\tred\n\
         k4\tOops\tlast tuesday\tred\n",
    )
    .unwrap();
    let mut config = CsvConfig::new(path.to_str().unwrap(), "key", vec!["subject".into()]);
    config.delimiter = "\t".into();
    config.updated_at_column = Some("changed".into());
    config.name = "tickets".into();
    let source = CsvSource::new(config).unwrap();
    assert_eq!(source.name(), "tickets");
    let all = items(&drain(&source, path.to_str().unwrap()).await);
    let recs = records(&all);
    assert_eq!(recs.iter().map(|r| r.updated_at).collect::<Vec<_>>(), [Some(1_700_000_000), Some(1_714_566_600), None]);
    assert_eq!(recs[0].source, "tickets");
    assert_eq!(recs[0].fields.keys().collect::<Vec<_>>(), ["team"], "the time column is not also a field");
    match &all[3] {
        SourceItem::Invalid { id, error_type, error, .. } => {
            assert_eq!((id.as_str(), error_type.as_str()), (format!("{}:5", path.display()).as_str(), "parse"));
            assert!(error.contains("\"changed\" = \"last tuesday\" is not a time"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn empty_header_only_and_bom_only_files_have_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 5] = [
        ("empty.csv", b""),
        ("bom.csv", b"\xEF\xBB\xBF"),
        ("blank.csv", b"\n\r\n\n"),
        ("header.csv", b"id,title,body"),
        ("header-nl.csv", b"id,title,body\r\n\r\n"),
    ];
    for (file, bytes) in cases {
        let path = dir.path().join(file);
        fs::write(&path, bytes).unwrap();
        let pages = drain(&source(&path, 10), path.to_str().unwrap()).await;
        assert_eq!(pages.len(), 1, "{file}");
        assert!(pages[0].1.items.is_empty() && pages[0].1.next.is_none(), "{file}: {:?}", pages[0].1);
    }
}

#[tokio::test]
async fn a_10_mb_field_is_read_and_pages_of_long_rows_close_early() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let big = "x".repeat(10 * 1024 * 1024);
    fs::write(&path, format!("id,title,body\nbig,t,\"{big}\"\nsmall,t,b\n")).unwrap();
    let all = records(&items(&drain(&source(&path, 100), path.to_str().unwrap()).await));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].text.len(), 3 + big.len());

    // Rows of 1 MB: a page closes once its rows reach 8 MiB, whatever page_size says.
    let path = dir.path().join("long.csv");
    let body = "y".repeat(1_000_000);
    let mut text = String::from("id,title,body\n");
    for i in 0..20 {
        text.push_str(&format!("r{i:02},t,{body}\n"));
    }
    fs::write(&path, text).unwrap();
    let pages = drain(&source(&path, 100), path.to_str().unwrap()).await;
    assert_eq!(pages.iter().map(|(_, p)| p.items.len()).collect::<Vec<_>>(), [9, 9, 2]);
    assert_eq!(ids(&items(&pages)), (0..20).map(|i| format!("r{i:02}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_row_over_max_row_bytes_stops_with_its_line_instead_of_reading_the_file_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unclosed.csv");
    let mut text = String::from("id,title,body\nok,t,b\nbroken,t,\"never closed\n");
    for i in 0..400_000 {
        text.push_str(&format!("r{i},t,b\n")); // 4 MB swallowed by the open quote
    }
    fs::write(&path, text).unwrap();
    let mut config = config(&path);
    config.max_row_bytes = 1024 * 1024;
    let source = CsvSource::new(config).unwrap();
    let name = path.to_str().unwrap();
    let ctx = Context::detached();
    // The rows before it come out in a page of their own, so they commit; then the run stops there.
    let page = source.fetch(&ctx, name, None).await.unwrap();
    assert_eq!(ids(&page.items), ["ok"]);
    let next = page.next.expect("a cursor at the long row");
    match source.fetch(&ctx, name, Some(&next)).await {
        Err(SourceError::Fatal { message }) => {
            assert!(
                message.contains(&format!("{name}:3: a row is longer than csv.max_row_bytes = 1048576")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_glob_gives_one_sorted_partition_per_file() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(&dir.path().join("b.csv"), 10, 13);
    write_rows(&dir.path().join("a.csv"), 0, 4);
    write_rows(&dir.path().join("c.csv"), 20, 21);
    fs::write(dir.path().join("notes.txt"), "not csv").unwrap();
    let pattern = format!("{}/*.csv", dir.path().display());
    let source = CsvSource::new(config(Path::new(&pattern))).unwrap();
    let partitions = source.partitions().await.unwrap();
    let expected: Vec<String> =
        ["a", "b", "c"].iter().map(|f| dir.path().join(format!("{f}.csv")).to_str().unwrap().to_string()).collect();
    assert_eq!(partitions, expected);
    assert_eq!(source.partitions().await.unwrap(), expected, "stable");
    let mut all = Vec::new();
    for partition in &partitions {
        all.extend(ids(&items(&drain(&source, partition).await)));
    }
    assert_eq!(all, ["r000", "r001", "r002", "r003", "r010", "r011", "r012", "r020"]);
    assert!(matches!(source.fetch(&Context::detached(), "elsewhere.csv", None).await, Err(SourceError::Fatal { .. })));
}

#[tokio::test]
async fn a_vanished_file_is_fatal_and_bad_cursors_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.csv");
    write_rows(&path, 0, 30);
    let source = source(&path, 10);
    let name = path.to_str().unwrap();
    let ctx = Context::detached();
    let second = source.fetch(&ctx, name, None).await.unwrap().next.unwrap();

    // Garbage, mid-row, inside the header, past the end.
    for bad in ["banana", "20:2", "5:2", "999999:3", "0:7"] {
        match source.fetch(&ctx, name, Some(bad)).await {
            Err(SourceError::CursorInvalid { .. }) => {}
            other => panic!("cursor {bad}: {other:?}"),
        }
    }

    fs::remove_file(&path).unwrap();
    for cursor in [None, Some(second.as_str())] {
        match source.fetch(&ctx, name, cursor).await {
            Err(SourceError::Fatal { message }) => assert!(message.contains(name), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_header_changed_after_the_start_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swap.csv");
    write_rows(&path, 0, 3);
    let source = source(&path, 10);
    fs::write(&path, "key,title,body\n1,a,b\n").unwrap();
    match source.fetch(&Context::detached(), path.to_str().unwrap(), None).await {
        Err(SourceError::Fatal { message }) => assert!(message.contains("csv.id_column = \"id\""), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn config_errors_name_the_key_the_value_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let error = |config: CsvConfig| CsvSource::new(config).unwrap_err().to_string();

    let pattern = format!("{}/nothing-*.csv", dir.path().display());
    let e = error(config(Path::new(&pattern)));
    assert!(e.contains("csv.path") && e.contains(&pattern) && e.contains("no file matches"), "{e}");
    let e = error(config(dir.path()));
    assert!(e.contains("is a directory") && e.contains("/*.csv"), "{e}");

    let path = dir.path().join("ok.csv");
    fs::write(&path, "id,title,body,lang\n1,a,b,en\n").unwrap();
    let e = error(CsvConfig::new(path.to_str().unwrap(), "key", vec!["body".into()]));
    assert_eq!(
        e,
        format!(
            r#"csv.id_column = "key" is not a column of {} (its header: "id", "title", "body", "lang")"#,
            path.display()
        )
    );
    let e = error(CsvConfig::new(path.to_str().unwrap(), "id", vec!["body".into(), "summary".into()]));
    assert!(e.contains(r#"csv.text_columns = "summary" is not a column of"#), "{e}");
    let mut c = config(&path);
    c.updated_at_column = Some("modified".into());
    assert!(error(c).contains(r#"csv.updated_at_column = "modified" is not a column of"#));
    let semi = dir.path().join("semi.csv");
    fs::write(&semi, "id;title;body\n1;a;b\n").unwrap();
    assert!(error(config(&semi)).contains("is csv.delimiter right"));

    let mut c = config(&path);
    c.page_size = 0;
    let e = error(c.clone());
    assert!(e.contains("csv.page_size = 0") && e.contains("1..=100000"), "{e}");
    c.page_size = 10;
    c.max_row_bytes = 10;
    assert!(error(c).contains("csv.max_row_bytes = 10 is out of range (allowed: 1024..=1073741824)"));
    for bad in ["", ";;", "\"", "\n", "é"] {
        let mut c = config(&path);
        c.delimiter = bad.into();
        let e = error(c);
        assert!(e.contains(&format!("csv.delimiter = {bad:?}")) && e.contains("one ASCII character"), "{e}");
    }
    let mut c = config(&path);
    c.text_columns = vec![];
    assert!(error(c).contains("csv.text_columns = []"));
    let mut c = config(&path);
    c.text_columns = vec!["body".into(), "body".into()];
    assert!(error(c).contains("\"body\" twice"));
    let mut c = config(&path);
    c.text_columns = vec!["id".into()];
    assert!(error(c).contains("which is csv.id_column"));
    let mut c = config(&path);
    c.updated_at_column = Some("title".into());
    assert!(error(c).contains("csv.updated_at_column = \"title\""));
    let mut c = config(&path);
    c.id_column = " ".into();
    assert!(error(c).contains("csv.id_column"));
    let dup = dir.path().join("dup.csv");
    fs::write(&dup, "id,title,body,title\n").unwrap();
    assert!(error(config(&dup)).contains("\"title\" appears twice in the header (columns 2 and 4)"));

    // Defaults and unknown keys, as the registry deserializes them.
    let c: CsvConfig =
        serde_json::from_value(json!({"path": "x.csv", "id_column": "id", "text_columns": ["t"]})).unwrap();
    assert_eq!(
        (c.delimiter.as_str(), c.updated_at_column, c.page_size, c.name.as_str(), c.max_row_bytes),
        (",", None, 500, "csv", 16 * 1024 * 1024)
    );
    let unknown = json!({"path": "x", "id_column": "id", "text_columns": ["t"], "text_column": "t"});
    assert!(serde_json::from_value::<CsvConfig>(unknown).is_err());
    assert!(
        serde_json::from_value::<CsvConfig>(json!({"path": "x", "text_columns": ["t"]})).is_err(),
        "id_column is required"
    );
    let round: Value = serde_json::to_value(config(&path)).unwrap();
    assert!(round.get("updated_at_column").is_none());
    serde_json::from_value::<CsvConfig>(round).unwrap();
}
