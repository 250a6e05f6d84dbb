//! The cursor of the line-based file sources (jsonl, csv): where a page starts.

use sluice_core::SourceError;

/// Where a page starts: the byte offset of its first line (or row) and that
/// line's number (1-based), written `"<byte offset>:<line number>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineCursor {
    pub offset: u64,
    pub line: u64,
}

impl LineCursor {
    pub const START: LineCursor = LineCursor { offset: 0, line: 1 };

    /// Reads a cursor of the source `kind` (named in the error); `None` is the start.
    pub fn parse(kind: &str, cursor: Option<&str>) -> Result<Self, SourceError> {
        let Some(text) = cursor else { return Ok(Self::START) };
        let invalid = || SourceError::CursorInvalid {
            message: format!("{kind} cursor {text:?} is not \"<byte offset>:<line number>\""),
        };
        let (offset, line) = text.split_once(':').ok_or_else(invalid)?;
        let offset = offset.parse::<u64>().map_err(|_| invalid())?;
        let line = line.parse::<u64>().map_err(|_| invalid())?;
        if line == 0 || (offset == 0) != (line == 1) {
            return Err(invalid());
        }
        Ok(Self { offset, line })
    }

    pub fn render(self) -> String {
        format!("{}:{}", self.offset, self.line)
    }
}
