//! `sluice init [jsonl|files|crawl|intercom]`: writes a commented
//! `pipeline.toml` that runs as written (with a small sample input where the
//! source reads local files), and a `.env.example` where secrets are needed.
//! Existing files are never overwritten unless `--force`.

use std::path::{Path, PathBuf};

use crate::cli::{InitArgs, Template};
use crate::error::{CliError, code};

pub fn init(args: InitArgs) -> Result<u8, CliError> {
    let dir = &args.dir;
    if !dir.is_dir() {
        return Err(CliError::usage(format!("{} is not a directory (create it first)", dir.display())));
    }
    let scaffold = scaffold(args.template);
    let config = dir.join(&args.output);
    let mut writes: Vec<(PathBuf, &str)> = vec![(config.clone(), scaffold.pipeline)];
    if let Some(env) = scaffold.env_example {
        writes.push((dir.join(".env.example"), env));
    }
    // Sample inputs are written only when missing: they are data, never overwritten.
    let samples: Vec<(PathBuf, &str)> =
        scaffold.samples.iter().map(|(path, text)| (dir.join(path), *text)).filter(|(p, _)| !p.exists()).collect();
    if !args.force
        && let Some((existing, _)) = writes.iter().find(|(path, _)| path.exists())
    {
        return Err(CliError::usage(format!(
            "{} exists; use --force to overwrite it, or -o to write another file",
            existing.display()
        )));
    }
    for (path, text) in writes.iter().chain(samples.iter()) {
        write(path, text)?;
        outln!("wrote {}", path.display());
    }
    let shown = if args.output == Path::new("pipeline.toml") {
        String::new()
    } else {
        format!(" -c {}", args.output.display())
    };
    outln!("\nNext:");
    // Read-only commands do not read ./pipeline.toml by default: name it.
    let file = format!(" -c {}", args.output.display());
    for step in scaffold.next {
        outln!("  {}", step.replace("{c}", &shown).replace("{f}", &file));
    }
    Ok(code::OK)
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(|e| CliError::runtime(format!("cannot write {}: {e}", path.display())))
}

/// What `init` writes for one template.
struct Scaffold {
    pipeline: &'static str,
    env_example: Option<&'static str>,
    /// Relative paths and contents of sample inputs.
    samples: &'static [(&'static str, &'static str)],
    /// The commands to try next; `{c}` is ` -c FILE` when the file is not `pipeline.toml`, `{f}` always.
    next: &'static [&'static str],
}

fn scaffold(template: Template) -> Scaffold {
    match template {
        Template::Jsonl => Scaffold {
            pipeline: JSONL,
            env_example: None,
            samples: &[("data/records.jsonl", JSONL_SAMPLE)],
            next: &["sluice check{c}", "sluice run{c}", "sluice status 1{f}"],
        },
        Template::Files => Scaffold {
            pipeline: FILES,
            env_example: None,
            samples: &[("docs-in/welcome.md", FILES_SAMPLE_MD), ("docs-in/faq.txt", FILES_SAMPLE_TXT)],
            next: &["sluice check{c}", "sluice run{c}", "sluice run{c} --watch   # keep picking up new files"],
        },
        Template::Crawl => Scaffold {
            pipeline: CRAWL,
            env_example: None,
            samples: &[],
            next: &[
                "sluice-testkit site --port 8003 &   # a local site to crawl, or edit start_urls",
                "sluice check{c}",
                "sluice run{c}",
                "sluice failures{f}   # pages that failed; `sluice failures retry 1{f}` fetches them again",
            ],
        },
        Template::Intercom => Scaffold {
            pipeline: INTERCOM,
            env_example: Some(INTERCOM_ENV),
            samples: &[],
            next: &[
                "cp .env.example .env   # then put your token and key in .env",
                "sluice check{c}   # calls Intercom GET /me and GET /models once each",
                "sluice run{c}",
            ],
        },
    }
}

const JSONL: &str = r#"# A sluice pipeline: JSON lines in, normalized, filtered, chunked and
# embedded offline, into a SQLite file. Runs as written (no network):
#
#   sluice check     # validates this file and the store, changes nothing
#   sluice run       # Ctrl-C stops at the next batch; `sluice run --resume` goes on
#
# Environment variables override this file: PIPELINE_MODE=streaming|batch,
# PIPELINE_STREAMING_BATCH_SIZE=10..500, DATABASE_URL=sqlite:PATH|postgres://...

name = "records"          # runs are resumed by pipeline name
mode = "streaming"        # "batch": read everything first, then process
batch_size = 50           # records per committed batch (10-500)

[source]
kind = "jsonl"
path = "data/records.jsonl"   # a file or a glob: "data/*.jsonl"
id_field = "id"               # a string or a number
text_field = "text"

[[stages]]
kind = "normalize"            # strips HTML and collapses whitespace

[[stages]]
kind = "filter"
min_chars = 20                # shorter records are counted as filtered, not stored

[[stages]]
kind = "chunk"
by = "chars"
size = 500
overlap = 50

[[stages]]
kind = "embed"
provider = "hashing"          # offline; "openai" calls an OpenAI-compatible /v1/embeddings
dimensions = 256

[store]
kind = "sqlite"
path = "sluice.db"            # or kind = "postgres" with url = "postgres://user@host:5432/db"
"#;

const JSONL_SAMPLE: &str = r#"{"id": "r-1", "text": "I was charged twice for my subscription this month, please refund one of the payments."}
{"id": "r-2", "text": "The export button shows a blank page in the dashboard since yesterday's update."}
{"id": "r-3", "text": "ok"}
{"id": "r-4", "text": "Could you add a dark mode? It would be great for working late at night."}
"#;

const FILES: &str = r#"# A sluice pipeline: the text, Markdown and HTML files under a directory,
# chunked and embedded offline, into a SQLite file. Runs as written:
#
#   sluice check
#   sluice run              # one pass over the directory
#   sluice run --watch      # then keep picking up new and changed files (Ctrl-C stops)

name = "files"
mode = "streaming"
batch_size = 50

[source]
kind = "files"
path = "docs-in"                                  # walked recursively; hidden files skipped
extensions = ["txt", "md", "markdown", "html", "htm"]
# watch = true                                    # same as `sluice run --watch`

[[stages]]
kind = "normalize"

[[stages]]
kind = "chunk"
by = "chars"
size = 800
overlap = 80

[[stages]]
kind = "embed"
provider = "hashing"
dimensions = 256

[store]
kind = "sqlite"
path = "sluice-files.db"
"#;

const FILES_SAMPLE_MD: &str =
    "# Welcome\n\nThis directory is read by `sluice run`. Put your own Markdown, text or HTML files here.\n";
const FILES_SAMPLE_TXT: &str =
    "Q: How do I resume a stopped run?\nA: sluice run --resume continues from the last committed batch.\n";

const CRAWL: &str = r#"# A sluice pipeline: crawl a site, keep each page's main text, chunk and
# embed it, into a SQLite file. As written it crawls the test kit's local
# site (`sluice-testkit site --port 8003`, or
# `cargo run --release -p sluice-testkit -- site --port 8003` in a checkout);
# put your own site in start_urls.
#
#   sluice check
#   sluice run
#   sluice failures          # the pages that failed (404, dropped connections)

name = "crawl"
mode = "streaming"
batch_size = 20

[source]
kind = "crawl"
start_urls = ["http://127.0.0.1:8003/"]
# allowed_hosts = ["docs.example.com"]    # default: the start URLs' hosts
# max_depth = 3                            # links away from a start URL
max_pages = 500                            # across resumes
concurrency = 8                            # requests in flight
per_host_concurrency = 4
delay_ms = 100                             # between request starts to one host (robots.txt Crawl-delay wins when longer)
timeout_ms = 10000
retries = 2

[[stages]]
kind = "extract_html"                      # main text; title and meta description as fields

[[stages]]
kind = "chunk"
by = "chars"
size = 500
overlap = 50

[[stages]]
kind = "embed"
provider = "hashing"
dimensions = 256

[store]
kind = "sqlite"
path = "crawl.db"
"#;

const INTERCOM: &str = r#"# A sluice pipeline: Intercom conversations of the last 30 days, HTML
# stripped, classified by an LLM behind an OpenAI-compatible API, into a
# SQLite file, checkpointed with every batch.
#
# Secrets come from the environment or .env (see .env.example), never from
# this file:
#
#   cp .env.example .env     # then fill in the token and the key
#   sluice check             # one GET /me to Intercom, one GET /models to the LLM API
#   sluice run

name = "intercom"
mode = "streaming"
batch_size = 50

[source]
kind = "intercom"
days = 30                       # or date_from = "2025-10-01" and date_to = "2025-12-30" (UTC)
# base_url: default INTERCOM_BASE_URL, else https://api.intercom.io (EU: https://api.eu.intercom.io)
# token_env = "INTERCOM_ACCESS_TOKEN"
intercom_version = "2.11"
per_page = 150
min_chars = 20                  # shorter conversations are not worth classifying
# max_conversations = 1000

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "gpt-4o-mini"
# base_url: default OPENAI_BASE_URL, else https://api.openai.com/v1; key: OPENAI_API_KEY
concurrency = 4
categories = ["billing", "account_access", "bug", "feature_request", "performance", "other"]

[store]
kind = "sqlite"
path = "intercom.db"
"#;

const INTERCOM_ENV: &str = r#"# Copy to .env (sluice reads it at start) and fill in. Never commit .env.

# An Intercom access token (Settings > Integrations > Developer Hub > your app > Authentication).
INTERCOM_ACCESS_TOKEN=
# The region's API: https://api.intercom.io (US, default), https://api.eu.intercom.io, https://api.au.intercom.io
# INTERCOM_BASE_URL=https://api.intercom.io

# The key of your OpenAI-compatible API.
OPENAI_API_KEY=
# Another provider's /v1 endpoint:
# OPENAI_BASE_URL=https://api.openai.com/v1

# The store, instead of [store] in pipeline.toml:
# DATABASE_URL=sqlite:intercom.db
"#;
