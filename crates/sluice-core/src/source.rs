//! The `Source` role: fetch one page of records at a position.

use std::time::Duration;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::SourceError;
use crate::record::{Document, Record};
use crate::store::{OnDelete, Store};

/// One entry of a page: a record, or something the source could not turn
/// into one (a malformed line, an unreadable file). Invalid entries go to the
/// failures table; they occupy a place in the page like records do.
#[derive(Clone, Debug)]
pub enum SourceItem {
    Record(Record),
    /// A stored document read back by a later phase, with what earlier
    /// phases added to it (classification, embedding, annotations).
    Document(Box<Document>),
    Invalid {
        /// The record id when it could be recovered, else a locator (file:line).
        id: String,
        /// The raw input, kept in the failures table for inspection.
        raw: String,
        error_type: String,
        error: String,
    },
    /// The item is as the store has it (a crawled page answered `304 Not
    /// Modified`): no stage work, nothing written; counted as `unchanged`.
    Unchanged {
        id: String,
    },
    /// The item is gone at the source (a page now 404/410, a deleted file):
    /// its stored document is marked or removed with the batch; counted as `deleted`.
    Deleted {
        id: String,
        action: OnDelete,
    },
}

impl SourceItem {
    pub fn id(&self) -> &str {
        match self {
            SourceItem::Record(r) => &r.id,
            SourceItem::Document(d) => d.id(),
            SourceItem::Invalid { id, .. } | SourceItem::Unchanged { id } | SourceItem::Deleted { id, .. } => id,
        }
    }
}

/// A page of a partition.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<SourceItem>,
    /// Cursor naming the next page; `None` on the last page.
    pub next: Option<String>,
    /// Records the source dropped at page level (quality filter). Streaming
    /// does not count them; batch mode (legacy) counts them as fetched and
    /// filtered, once per page read from its top.
    pub dropped: u64,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// The source name stored with every record (`Record::source`).
    fn name(&self) -> &str;

    /// Independent slices of the work, each with its own position in the
    /// checkpoint, fetched concurrently. Must be the same on every call for
    /// the same configuration.
    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(vec!["main".to_string()])
    }

    /// Called once before a run's first fetch, with the store it writes to:
    /// a source that reads differently depending on what is stored (a crawl
    /// sending conditional requests for the pages it has) reads it here.
    async fn prepare(&self, store: &dyn Store) -> Result<(), SourceError> {
        let _ = store;
        Ok(())
    }

    /// Fetches the page at `cursor` (`None`: the first page) of `partition`.
    async fn fetch(&self, ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError>;

    /// Total records the source expects to yield, when it knows (for ETAs).
    async fn estimated_total(&self) -> Option<u64> {
        None
    }

    /// For a live source (one that waits for new data, e.g. a watched
    /// directory): how long the engine holds a partial batch open for more
    /// records before committing it anyway. `None` (the default): a batch
    /// closes only when full or when the source is read to its end.
    fn batch_linger(&self) -> Option<Duration> {
        None
    }
}
