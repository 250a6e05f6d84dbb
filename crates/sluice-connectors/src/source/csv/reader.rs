//! Reading one page of one CSV file from a cursor.
//!
//! The cursor of a page is `"<byte offset>:<line number>"` where its first row
//! starts (the `csv` crate's `Position`), so a resume seeks straight there and
//! failure locators keep the right line across pages, even after quoted
//! fields with embedded newlines.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use csv::{ByteRecord, ErrorKind, Position, ReaderBuilder};
use sluice_core::{Page, SourceError, SourceItem};

use super::columns::{Columns, Wanted};
use super::row::{self, BadRow, Locator};
pub(super) use crate::util::line_cursor::LineCursor as Cursor;
use crate::util::text::{MAX_RAW_BYTES, raw_of};

/// A page closes early once its rows reach this many bytes, so a page of
/// long rows stays small (the engine's default `max_batch_bytes`).
pub(super) const PAGE_BYTES: u64 = 8 * 1024 * 1024;

/// What reading a page needs from the settings.
#[derive(Clone, Debug)]
pub(super) struct ReadSettings {
    pub source_name: String,
    pub delimiter: u8,
    pub page_size: usize,
    pub max_row_bytes: u64,
    pub wanted: Wanted,
}

/// The cursor of the page that starts at `position`.
fn cursor_of(position: &Position) -> Cursor {
    Cursor { offset: position.byte(), line: position.line() }
}

/// The marker of the I/O error [`Bounded`] returns for a row over the limit.
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("row too long")
    }
}

impl std::error::Error for RowTooLong {}

/// A file that hands the CSV parser no byte past `limit`: one row (from
/// where it starts) can never grow past `max_row_bytes`, so an unclosed quote
/// cannot pull the rest of a large file into memory.
struct Bounded {
    file: File,
    /// Offset of the next byte `read` returns.
    pos: u64,
    limit: u64,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.limit.saturating_sub(self.pos);
        let n = if room == 0 {
            // At the limit: the end of the file is fine, one more byte is not.
            match self.file.read(&mut [0u8; 1])? {
                0 => 0,
                _ => return Err(io::Error::other(RowTooLong)),
            }
        } else {
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
            self.file.read(&mut buf[..take])?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Bounded {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

type CsvReader = csv::Reader<Bounded>;

fn is_row_too_long(error: &csv::Error) -> bool {
    matches!(error.kind(), ErrorKind::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<RowTooLong>()))
}

/// Opens `path` and reads its header row (empty for an empty file).
fn open(path: &Path, delimiter: u8, max_row_bytes: u64) -> io::Result<(CsvReader, Result<ByteRecord, csv::Error>)> {
    let file = File::open(path)?;
    let bounded = Bounded { file, pos: 0, limit: max_row_bytes };
    let mut reader = ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .buffer_capacity(64 * 1024)
        .from_reader(bounded);
    let header = reader.byte_headers().cloned();
    Ok((reader, header))
}

/// The header of `path`, resolved against `wanted`; `None` for an empty file.
/// The error says what is wrong, naming the file.
pub(super) fn check_header(name: &str, path: &Path, settings: &ReadSettings) -> Result<Option<Columns>, String> {
    let (_, header) =
        open(path, settings.delimiter, settings.max_row_bytes).map_err(|e| format!("cannot read {name}: {e}"))?;
    let header = header.map_err(|e| header_error(name, settings, &e))?;
    if header.is_empty() {
        return Ok(None);
    }
    Columns::resolve(name, &header, &settings.wanted).map(Some)
}

fn header_error(name: &str, settings: &ReadSettings, error: &csv::Error) -> String {
    if is_row_too_long(error) {
        format!("{name}: the header row is longer than csv.max_row_bytes = {}", settings.max_row_bytes)
    } else {
        format!("cannot read the header of {name}: {error}")
    }
}

/// Reads the page of `path` (partition `name`) that starts at `start`.
pub(super) fn read_page(settings: &ReadSettings, name: &str, path: &Path, start: Cursor) -> Result<Page, SourceError> {
    let fatal = |e: io::Error| SourceError::fatal(format!("csv: cannot read {name}: {e}"));
    let len = std::fs::metadata(path).map_err(fatal)?.len();
    if start.offset > len {
        return Err(SourceError::CursorInvalid {
            message: format!("csv cursor offset {} is past the end of {name} ({len} bytes)", start.offset),
        });
    }
    if start.offset > 0 && !after_line_end(path, start.offset).map_err(fatal)? {
        return Err(SourceError::CursorInvalid {
            message: format!("csv cursor offset {} of {name} is not at the start of a row", start.offset),
        });
    }
    let (mut reader, header) = open(path, settings.delimiter, settings.max_row_bytes).map_err(fatal)?;
    let header = header.map_err(|e| SourceError::fatal(format!("csv: {}", header_error(name, settings, &e))))?;
    if header.is_empty() {
        return Ok(Page::default());
    }
    // Checked when the source was built; a file rewritten since then is refused here.
    let columns = Columns::resolve(name, &header, &settings.wanted)
        .map_err(|e| SourceError::fatal(format!("csv: {e} (the file changed since the run started?)")))?;
    if start.offset > 0 {
        if start.offset < reader.position().byte() {
            return Err(SourceError::CursorInvalid {
                message: format!("csv cursor offset {} of {name} is inside its header row", start.offset),
            });
        }
        let mut at = Position::new();
        at.set_byte(start.offset).set_line(start.line);
        reader.seek(at).map_err(|e| SourceError::fatal(format!("csv: cannot seek in {name}: {e}")))?;
    }
    Pager { settings, name, path, columns: &columns, reader, page_start: start.offset }.run()
}

/// Whether the byte before `offset` ends a line, as the byte before any row after the header does.
fn after_line_end(path: &Path, offset: u64) -> io::Result<bool> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset - 1))?;
    let mut before = [0u8; 1];
    file.read_exact(&mut before)?;
    Ok(matches!(before[0], b'\n' | b'\r'))
}

struct Pager<'a> {
    settings: &'a ReadSettings,
    name: &'a str,
    path: &'a Path,
    columns: &'a Columns,
    reader: CsvReader,
    page_start: u64,
}

impl Pager<'_> {
    fn run(mut self) -> Result<Page, SourceError> {
        let mut items: Vec<SourceItem> = Vec::with_capacity(self.settings.page_size.min(4096));
        let mut row = ByteRecord::new();
        loop {
            let row_start = self.reader.position().clone();
            let full = items.len() >= self.settings.page_size
                || row_start.byte().saturating_sub(self.page_start) >= PAGE_BYTES;
            self.reader.get_mut().limit = row_start.byte().saturating_add(self.settings.max_row_bytes);
            let read = self.reader.read_byte_record(&mut row);
            if full {
                // One row past the page, read only to know whether there is one: the next page starts at it.
                let next = (!matches!(read, Ok(false))).then(|| cursor_of(&row_start).render());
                return Ok(Page { items, next, dropped: 0 });
            }
            match read {
                Ok(false) => return Ok(Page { items, next: None, dropped: 0 }),
                Ok(true) => match row::to_record(&self.settings.source_name, &row, self.columns) {
                    Ok(record) => items.push(SourceItem::Record(record)),
                    Err(bad) => items.push(self.bad_row(&row_start, bad)),
                },
                Err(e) => match e.kind() {
                    ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        let reason = format!("the row has {len} fields, the header has {expected_len}");
                        items.push(self.bad_row(&row_start, BadRow { error_type: "parse", reason }));
                    }
                    // The rows before it are handed out first, so their page commits; the next fetch fails.
                    _ if !items.is_empty() => {
                        return Ok(Page { items, next: Some(cursor_of(&row_start).render()), dropped: 0 });
                    }
                    _ if is_row_too_long(&e) => {
                        let (line, _) = self.raw_row(&row_start);
                        return Err(SourceError::fatal(format!(
                            "csv: {}: a row is longer than csv.max_row_bytes = {} (an unclosed quote?); fix the file or raise max_row_bytes, then resume",
                            self.locator(line),
                            self.settings.max_row_bytes
                        )));
                    }
                    _ => return Err(SourceError::fatal(format!("csv: cannot read {}: {e}", self.name))),
                },
            }
        }
    }

    fn locator(&self, line: u64) -> Locator<'_> {
        Locator { file: self.name, line }
    }

    /// The invalid item of the row that started at `start` (the reader is now past it).
    fn bad_row(&self, start: &Position, bad: BadRow) -> SourceItem {
        let (line, raw) = self.raw_row(start);
        row::invalid(self.locator(line), raw, bad)
    }

    /// The line a row's first field is on and its raw bytes (at most
    /// `MAX_RAW_BYTES`), read again from the file: the parser keeps neither.
    /// A row's start position is right after the previous row, so blank lines
    /// between them come first and are skipped here.
    fn raw_row(&self, start: &Position) -> (u64, String) {
        let end = self.reader.position().byte();
        let read = || -> io::Result<(u64, Vec<u8>)> {
            let mut file = File::open(self.path)?;
            file.seek(SeekFrom::Start(start.byte()))?;
            let mut rest = io::BufReader::new(file.take(end.saturating_sub(start.byte())));
            let mut line = start.line();
            let mut raw = Vec::new();
            let mut byte = [0u8; 1];
            while rest.read(&mut byte)? == 1 {
                match byte[0] {
                    b'\n' if raw.is_empty() => line += 1,
                    b'\r' if raw.is_empty() => {}
                    b => {
                        raw.push(b);
                        break;
                    }
                }
            }
            rest.take(MAX_RAW_BYTES as u64).read_to_end(&mut raw)?;
            while let [head @ .., b'\n' | b'\r'] = raw.as_slice() {
                raw.truncate(head.len());
            }
            Ok((line, raw))
        };
        match read() {
            Ok((line, raw)) => (line, raw_of(&raw)),
            Err(_) => (start.line(), String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        assert_eq!(Cursor::parse("csv", None).unwrap(), Cursor::START);
        let c = Cursor { offset: 120, line: 7 };
        assert_eq!(Cursor::parse("csv", Some(&c.render())).unwrap(), c);
        for bad in ["", "12", "a:b", "12:0", "0:5", "12:1", "-1:2", "1:2:3"] {
            assert!(matches!(Cursor::parse("csv", Some(bad)), Err(SourceError::CursorInvalid { .. })), "{bad}");
        }
    }
}
