//! `sluice-testkit`: run a fake service by hand.
//!
//! ```text
//! sluice-testkit intercom --port 8001 --conversations 5000 --seed 7 --latency-ms 20
//! sluice-testkit openai --port 8002 --key sk-test --fail-every 10
//! sluice-testkit site --port 8003 --pages 300 --latency-ms 20
//! ```
//!
//! Prints the base URL and serves on 127.0.0.1 until Ctrl-C. Faults can be
//! changed while it runs: `curl -d '{"fail_every":3}' $URL/_testkit/faults`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_testkit::intercom::{DatasetSpec, IntercomTarget};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::site::{FakeSite, SiteConfig};
use sluice_testkit::{
    Clock, DropMode, FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults,
};

#[derive(Parser, Debug)]
#[command(name = "sluice-testkit", version, about = "Fake Intercom and OpenAI-compatible APIs with fault injection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A fake Intercom API (conversations search and get).
    Intercom(IntercomArgs),
    /// A fake OpenAI-compatible API (chat completions, embeddings).
    Openai(OpenAiArgs),
    /// A generated web site to crawl (robots.txt, redirects, a 404, a slow and a dropping page).
    Site(SiteArgs),
}

#[derive(Args, Debug)]
struct SiteArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8003)]
    port: u16,
    /// How many /docs/N pages.
    #[arg(long, default_value_t = 300)]
    pages: usize,
    /// Seed of the texts and links.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Wait before answering each request (robots.txt excepted).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// How long /slow takes.
    #[arg(long, default_value_t = 300)]
    slow_ms: u64,
}

#[derive(Args, Debug, Clone)]
struct CommonFaults {
    /// Sleep this long before each targeted request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Every Nth targeted request answers 500.
    #[arg(long)]
    fail_every: Option<u64>,
    /// Every Nth targeted request answers 429.
    #[arg(long)]
    rate_limit_every: Option<u64>,
    /// Every Nth targeted request has its connection dropped.
    #[arg(long)]
    drop_every: Option<u64>,
    /// How a dropped connection looks.
    #[arg(long, value_enum, default_value_t = DropModeArg::MidBody)]
    drop_mode: DropModeArg,
    /// Every Nth targeted request answers a malformed 200.
    #[arg(long)]
    malformed_every: Option<u64>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum DropModeArg {
    MidBody,
    BeforeHeaders,
}

impl From<DropModeArg> for DropMode {
    fn from(m: DropModeArg) -> DropMode {
        match m {
            DropModeArg::MidBody => DropMode::MidBody,
            DropModeArg::BeforeHeaders => DropMode::BeforeHeaders,
        }
    }
}

#[derive(Args, Debug)]
struct IntercomArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// The accepted access token.
    #[arg(long, default_value = "test-token", env = "INTERCOM_ACCESS_TOKEN")]
    token: String,
    /// How many conversations to generate.
    #[arg(long, default_value_t = 5000)]
    conversations: usize,
    /// Spread updated_at over this many days before --now.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// End of the data, epoch seconds (default: the current time, so that a
    /// backfill of the last N days finds data).
    #[arg(long)]
    now: Option<i64>,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Fraction of too-short conversations.
    #[arg(long, default_value_t = 0.10)]
    short_fraction: f64,
    /// Requests per 10-second window.
    #[arg(long, default_value_t = 1000)]
    rate_limit: u32,
    /// Refuse search cursors older than this many seconds.
    #[arg(long)]
    cursor_ttl_secs: Option<u64>,
    /// Also send Retry-After with 429s.
    #[arg(long)]
    retry_after: bool,
    /// Read `>`/`<` on timestamps as "greater/less (or equal) than".
    #[arg(long)]
    inclusive_comparisons: bool,
    /// Refused cursors get 400 parameter_invalid "Invalid request" instead of client_error.
    #[arg(long)]
    generic_cursor_errors: bool,
    /// Endpoints the faults apply to.
    #[arg(long, value_enum, default_value_t = IntercomTargetArg::All)]
    fault_endpoints: IntercomTargetArg,
    #[command(flatten)]
    faults: CommonFaults,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum IntercomTargetArg {
    All,
    Search,
    Get,
}

#[derive(Args, Debug)]
struct OpenAiArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8002)]
    port: u16,
    /// The accepted API key.
    #[arg(long, default_value = "sk-test")]
    key: String,
    /// Requests per minute.
    #[arg(long, default_value_t = 10_000)]
    rpm: u32,
    /// Embedding size when a request gives none.
    #[arg(long, default_value_t = 64)]
    dimensions: usize,
    /// retry-after of injected 429s, seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Embeddings: the model's context in tokens; a request with a longer input gets 400.
    #[arg(long, default_value_t = sluice_testkit::openai::EMBEDDING_CONTEXT_TOKENS)]
    max_input_tokens: u64,
    /// Endpoints the faults apply to.
    #[arg(long, value_enum, default_value_t = OpenAiTargetArg::All)]
    fault_endpoints: OpenAiTargetArg,
    #[command(flatten)]
    faults: CommonFaults,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum OpenAiTargetArg {
    All,
    Chat,
    Embeddings,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("sluice-testkit: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    match cli.command {
        Command::Intercom(a) => {
            let now = a.now.unwrap_or_else(|| Clock::system().now_secs());
            let faults = IntercomFaults {
                endpoints: match a.fault_endpoints {
                    IntercomTargetArg::All => IntercomTarget::All,
                    IntercomTargetArg::Search => IntercomTarget::Search,
                    IntercomTargetArg::Get => IntercomTarget::Get,
                },
                latency_ms: a.faults.latency_ms,
                fail_every: a.faults.fail_every,
                rate_limit_every: a.faults.rate_limit_every,
                drop_every: a.faults.drop_every,
                drop_mode: a.faults.drop_mode.into(),
                malformed_every: a.faults.malformed_every,
                script: Vec::new(),
                cursor_ttl_secs: a.cursor_ttl_secs,
                retry_after: a.retry_after,
                inclusive_comparisons: a.inclusive_comparisons,
                generic_cursor_errors: a.generic_cursor_errors,
            };
            let config = IntercomConfig {
                dataset: DatasetSpec {
                    conversations: a.conversations,
                    days: a.days,
                    now,
                    seed: a.seed,
                    short_fraction: a.short_fraction,
                    ..DatasetSpec::default()
                },
                token: a.token,
                rate_limit: a.rate_limit,
                faults,
                clock: Clock::system(),
                port: a.port,
            };
            let fake = FakeIntercom::start(config).await?;
            let ds = fake.dataset();
            println!("{}", fake.base_url());
            eprintln!(
                "fake Intercom on {} (token {:?}, {} conversations, updated_at {}..={}, {} too short)",
                fake.base_url(),
                fake.token(),
                ds.len(),
                ds.all().first().map(|c| c.updated_at).unwrap_or(now),
                ds.all().last().map(|c| c.updated_at).unwrap_or(now),
                ds.short_ids().len()
            );
            eprintln!("faults: {}", serde_json::to_string(&fake.faults()).unwrap_or_default());
            eprintln!(
                "control: GET/POST {0}/_testkit/faults, GET {0}/_testkit/counters; Ctrl-C stops",
                fake.base_url()
            );
            tokio::signal::ctrl_c().await?;
            eprintln!("counters: {}", serde_json::to_string(&fake.counters()).unwrap_or_default());
            fake.shutdown().await;
        }
        Command::Openai(a) => {
            let faults = OpenAiFaults {
                endpoints: match a.fault_endpoints {
                    OpenAiTargetArg::All => OpenAiTarget::All,
                    OpenAiTargetArg::Chat => OpenAiTarget::Chat,
                    OpenAiTargetArg::Embeddings => OpenAiTarget::Embeddings,
                },
                latency_ms: a.faults.latency_ms,
                fail_every: a.faults.fail_every,
                rate_limit_every: a.faults.rate_limit_every,
                drop_every: a.faults.drop_every,
                drop_mode: a.faults.drop_mode.into(),
                malformed_every: a.faults.malformed_every,
                script: Vec::new(),
                retry_after_secs: a.retry_after_secs,
                max_input_tokens: a.max_input_tokens,
                refuse_inputs_containing: Vec::new(),
                refuse_base64: false,
            };
            let config = OpenAiConfig {
                key: a.key,
                rpm_limit: a.rpm,
                default_dimensions: a.dimensions,
                faults,
                port: a.port,
                ..OpenAiConfig::default()
            };
            let fake = FakeOpenAi::start(config).await?;
            println!("{}/v1", fake.base_url());
            eprintln!("fake OpenAI on {}/v1 (key {:?})", fake.base_url(), fake.key());
            eprintln!("faults: {}", serde_json::to_string(&fake.faults()).unwrap_or_default());
            eprintln!(
                "control: GET/POST {0}/_testkit/faults, GET {0}/_testkit/counters; Ctrl-C stops",
                fake.base_url()
            );
            tokio::signal::ctrl_c().await?;
            eprintln!("counters: {}", serde_json::to_string(&fake.counters()).unwrap_or_default());
            fake.shutdown().await;
        }
        Command::Site(a) => {
            let config = SiteConfig {
                pages: a.pages,
                seed: a.seed,
                latency_ms: a.latency_ms,
                slow_ms: a.slow_ms,
                port: a.port,
                ..SiteConfig::default()
            };
            let site = FakeSite::start(config).await?;
            let expected = site.expected(None);
            println!("{}/", site.base_url());
            eprintln!(
                "fake site on {}/ ({} pages a full crawl stores, {} failures); Ctrl-C stops",
                site.base_url(),
                expected.stored().len(),
                expected.failed().len()
            );
            tokio::signal::ctrl_c().await?;
            eprintln!("{} requests served", site.total_fetches());
            site.shutdown().await;
        }
    }
    Ok(())
}
