//! Faithful fakes of the remote services sluice talks to, for tests and for
//! trying things by hand.
//!
//! - [`intercom::FakeIntercom`]: the Intercom REST API (2.11 shapes) for a
//!   conversation backfill: `POST /conversations/search` with cursor
//!   pagination, `GET /conversations/{id}`, bearer auth, `Accept`
//!   negotiation, per-token rate limits with Intercom's headers, and a
//!   deterministic generated workspace whose themes tests can read.
//! - [`openai::FakeOpenAi`]: an OpenAI-compatible API:
//!   `POST /v1/chat/completions` that classifies by keywords (or extracts
//!   facets, or labels a theme) and answers JSON content,
//!   `POST /v1/embeddings` with deterministic normalised vectors, bearer
//!   auth, and OpenAI's rate-limit headers.
//! - [`site::FakeSite`]: a generated web site of interlinked HTML pages with
//!   a robots.txt, redirects, a 404, a slow page and a dropped connection,
//!   per-path fetch counts, and the set of pages a correct crawl stores.
//!
//! Both bind 127.0.0.1 only (an ephemeral port by default), run on the
//! caller's tokio runtime, stop when their handle is dropped, count what
//! they see, and inject faults deterministically (every Nth request, or a
//! script; see [`faults`]): latency, 500, 429, dropped connections and
//! malformed bodies. Faults can be changed at run time through the handle
//! or with `POST /_testkit/faults` on the same server.
//!
//! Time-dependent behaviour (rate-limit windows, cursor expiry) reads a
//! [`Clock`]; give the fake [`Clock::manual`] to cross a window or expire a
//! cursor instantly.

pub mod clock;
pub mod faults;
pub mod intercom;
pub mod openai;
pub mod setting;
pub mod site;
pub mod theme;

mod rng;
mod server;

pub use clock::Clock;
pub use faults::{DropMode, FaultCounts, FaultKind};
pub use intercom::{FakeIntercom, IntercomConfig, IntercomFaults};
pub use openai::{FakeOpenAi, OpenAiConfig, OpenAiFaults};
pub use rng::text_hash;
pub use site::{FakeSite, SiteConfig};
pub use theme::Theme;
