//! `sluice check -c FILE`: everything a run needs, checked before anything is
//! paid for. The pipeline file and the environment's overrides are read and
//! every component is built; the store is looked at without being changed (a
//! missing SQLite file is not created, a PostgreSQL database is only queried);
//! each remote service gets one cheap authenticated request (Intercom
//! `GET /me`, the OpenAI-compatible `GET /models`). Each line says ok or the
//! exact problem; the exit code is 0 when all are ok, 2 for a bad
//! configuration or environment, 1 for a service or store that fails.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_connectors::PipelineFile;
use sluice_connectors::registry::{StoreConfig, build_stage};
use sluice_connectors::remote::endpoint::{BASE_URL_ENV, DEFAULT_BASE_URL, OpenAiEndpoint};

use crate::cli::CheckArgs;
use crate::env::{StoreOrigin, apply_env, env_var, store_config};
use crate::error::{CliError, code};

/// How long one remote check may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The outcome of one check.
enum Outcome {
    Ok(String),
    /// A configuration or environment problem (exit 2).
    Bad(String),
    /// A service or store that answers wrong or not at all (exit 1).
    Failed(String),
}

struct Report {
    worst: u8,
}

impl Report {
    fn line(&mut self, what: &str, outcome: Outcome) {
        let (tag, text, code) = match outcome {
            Outcome::Ok(text) => ("ok  ", text, code::OK),
            Outcome::Bad(text) => ("FAIL", text, code::USAGE),
            Outcome::Failed(text) => ("FAIL", text, code::FAILED),
        };
        outln!("{tag} {what}: {text}");
        // A configuration problem (2) outranks a failing service (1): it is fixed first.
        self.worst = self.worst.max(code);
    }
}

pub async fn check(args: CheckArgs) -> Result<u8, CliError> {
    let mut report = Report { worst: code::OK };
    let origin = args.config.display().to_string();
    let file = match load(&args.config) {
        Ok(file) => {
            report.line("config", Outcome::Ok(describe_file(&file, &origin)));
            file
        }
        Err(message) => {
            let hint = if args.config.exists() { "" } else { " (`sluice init` writes one)" };
            report.line("config", Outcome::Bad(format!("{message}{hint}")));
            return Ok(report.worst);
        }
    };
    report.line("components", build(&file, &origin));
    report.line("store", check_store(args.db.as_deref(), &file).await);
    let services = services(&file);
    if services.is_empty() {
        outln!("ok   services: none (this pipeline calls no remote API)");
    }
    for service in services {
        let outcome = service.probe().await;
        report.line(&service.label, outcome);
    }
    if report.worst == code::OK {
        outln!("all checks passed: `sluice run -c {origin}` can start");
    }
    Ok(report.worst)
}

fn load(path: &Path) -> Result<PipelineFile, String> {
    let mut file = PipelineFile::load(path).map_err(|e| e.0)?;
    apply_env(&mut file, &env_var).map_err(|e| e.0)?;
    Ok(file)
}

fn describe_file(file: &PipelineFile, origin: &str) -> String {
    let stages: Vec<&str> = file.stages.iter().map(|s| s.stage.tag()).collect();
    let settings = file.settings();
    format!(
        "{origin}: pipeline {:?}, {} source, stages [{}], {} mode, batches of {}",
        file.name.as_deref().unwrap_or(""),
        file.source.tag(),
        stages.join(", "),
        settings.mode.as_str(),
        settings.batch_size
    )
}

/// Builds the source, every stage and phase (as `run` would, without a store).
fn build(file: &PipelineFile, origin: &str) -> Outcome {
    let mut file = file.clone();
    let result = file
        .source
        .kind_mut()
        .pin()
        .and_then(|_| file.source.kind().build().map(|_| ()))
        .and_then(|_| file.stages.iter().try_for_each(|entry| build_stage(entry).map(|_| ())))
        .and_then(|_| {
            sluice_connectors::phase::build_phases(&file.phases, file.auto_create_stories.unwrap_or(false)).map(|_| ())
        })
        .and_then(|_| file.sink.as_ref().map_or(Ok(()), |sink| sink.build().map(|_| ())));
    match result {
        Ok(()) => Outcome::Ok("source, stages and phases build".into()),
        Err(e) => Outcome::Bad(format!("{} (in {origin})", e.0)),
    }
}

/// Looks at the store without changing it.
async fn check_store(db: Option<&str>, file: &PipelineFile) -> Outcome {
    let named = match db {
        Some(url) => StoreConfig::from_url(url).map(|config| (config, "--db".to_string())),
        None => store_config(Some(file), &env_var).map(|(config, origin)| {
            let from = match origin {
                StoreOrigin::Env(var) => format!("${var}"),
                StoreOrigin::Flag | StoreOrigin::File if file.store.is_some() => "the pipeline file".to_string(),
                StoreOrigin::Flag | StoreOrigin::File => "the default".to_string(),
            };
            (config, from)
        }),
    };
    let (config, from) = match named {
        Ok(named) => named,
        Err(e) => return Outcome::Bad(e.0),
    };
    let from = from.as_str();
    let json = serde_json::to_value(&config).unwrap_or(Value::Null);
    match json["kind"].as_str() {
        Some("sqlite") => sqlite(Path::new(json["path"].as_str().unwrap_or("")), from),
        Some("postgres") => postgres(json_url(&config), from).await,
        other => Outcome::Bad(format!("unknown store kind {other:?}")),
    }
}

/// The PostgreSQL URL itself (its saved form hides the password).
fn json_url(config: &StoreConfig) -> String {
    match config {
        StoreConfig::Postgres(c) => c.url.clone(),
        StoreConfig::Sqlite(_) => String::new(),
    }
}

fn sqlite(path: &Path, from: &str) -> Outcome {
    let shown = path.display();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Outcome::Bad(format!("SQLite {shown} (from {from}) is a directory")),
        Ok(meta) => {
            let mut header = [0u8; 16];
            let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut header));
            match read {
                Ok(0) => Outcome::Ok(format!("SQLite {shown} (from {from}) is empty; the first run sets it up")),
                Ok(_) if &header == b"SQLite format 3\0" => {
                    Outcome::Ok(format!("SQLite {shown} (from {from}) exists, {} bytes", meta.len()))
                }
                Ok(_) => Outcome::Bad(format!("{shown} (from {from}) is not a SQLite database")),
                Err(e) => Outcome::Failed(format!("SQLite {shown} (from {from}) cannot be read: {e}")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() && !meta.permissions().readonly() => {
                Outcome::Ok(format!("SQLite {shown} (from {from}) does not exist yet; the first run creates it"))
            }
            Ok(meta) if meta.is_dir() => Outcome::Bad(format!(
                "SQLite {shown} (from {from}) does not exist and its directory {} is read-only",
                dir.display()
            )),
            _ => Outcome::Bad(format!(
                "SQLite {shown} (from {from}): the directory {} does not exist (create it first)",
                dir.display()
            )),
        },
        Err(e) => Outcome::Failed(format!("SQLite {shown} (from {from}) cannot be accessed: {e}")),
    }
}

/// Connects and asks whether sluice's tables are there; creates nothing.
async fn postgres(url: String, from: &str) -> Outcome {
    use sqlx::Connection;
    let shown = redact(&url);
    let connect = sqlx::postgres::PgConnection::connect(&url);
    let mut conn = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return Outcome::Failed(format!(
                "PostgreSQL {shown} (from {from}): {}",
                e.to_string().replace(&url, &shown)
            ));
        }
        Err(_) => return Outcome::Failed(format!("PostgreSQL {shown} (from {from}): no answer in 15 s")),
    };
    let query = sqlx::query_scalar::<_, bool>("SELECT to_regclass('schema_migrations') IS NOT NULL");
    let outcome = match query.fetch_one(&mut conn).await {
        Ok(true) => Outcome::Ok(format!("PostgreSQL {shown} (from {from}) answers; sluice's tables are there")),
        Ok(false) => Outcome::Ok(format!(
            "PostgreSQL {shown} (from {from}) answers; no sluice tables yet (the first run creates them)"
        )),
        Err(e) => Outcome::Failed(format!("PostgreSQL {shown} (from {from}): {e}")),
    };
    let _ = conn.close().await;
    outcome
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// One remote API the pipeline calls, and the cheap request that proves access.
struct Service {
    label: String,
    url: String,
    key: Key,
    headers: Vec<(&'static str, String)>,
    kind: ServiceKind,
}

/// Where a service's secret is: the key the run will send, so the check proves that one.
#[derive(Clone, PartialEq)]
enum Key {
    /// In the environment variable of this name (or `.env`).
    Env(String),
    /// Written in the pipeline file, at `origin` (e.g. `classify.api_key`).
    Inline { origin: String, key: String },
}

impl Key {
    /// The key from the table's `api_key` when set (as the run reads it), else its `api_key_env`.
    fn of(what: &str, endpoint: &OpenAiEndpoint) -> Key {
        match endpoint.api_key.as_ref().filter(|k| !k.is_empty()) {
            Some(key) => Key::Inline { origin: format!("{what}.api_key"), key: key.expose().to_string() },
            None => Key::Env(endpoint.api_key_env.clone()),
        }
    }

    /// Where the key is, for messages (never the key itself).
    fn origin(&self) -> &str {
        match self {
            Key::Env(name) => name,
            Key::Inline { origin, .. } => origin,
        }
    }

    fn value(&self) -> Result<String, String> {
        match self {
            Key::Env(name) => env_var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("{name} is not set (environment or .env)")),
            Key::Inline { key, .. } => Ok(key.clone()),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ServiceKind {
    Intercom,
    OpenAi,
}

/// The remote services the pipeline calls, one per distinct endpoint and key.
fn services(file: &PipelineFile) -> Vec<Service> {
    let mut found: Vec<Service> = Vec::new();
    let source = serde_json::to_value(&file.source).unwrap_or(Value::Null);
    if source["kind"] == "intercom" {
        let base = setting(source["base_url"].as_str(), "INTERCOM_BASE_URL", "https://api.intercom.io");
        let version = source["intercom_version"].as_str().unwrap_or("2.11").to_string();
        found.push(Service {
            label: "intercom".into(),
            url: format!("{}/me", base.trim_end_matches('/')),
            key: Key::Env(source["token_env"].as_str().unwrap_or("INTERCOM_ACCESS_TOKEN").to_string()),
            headers: vec![("Intercom-Version", version)],
            kind: ServiceKind::Intercom,
        });
    }
    for (what, endpoint) in file.openai_endpoints() {
        let base = setting(endpoint.base_url.as_deref(), BASE_URL_ENV, DEFAULT_BASE_URL);
        let url = format!("{}/models", base.trim_end_matches('/'));
        let key = Key::of(what, endpoint);
        match found.iter_mut().find(|s| s.url == url && s.key == key) {
            Some(same) => {
                // "openai (classify)" -> "openai (classify, embed)".
                same.label.pop();
                same.label.push_str(&format!(", {what})"));
            }
            None => found.push(Service {
                label: format!("openai ({what})"),
                url,
                key,
                headers: Vec::new(),
                kind: ServiceKind::OpenAi,
            }),
        }
    }
    found
}

/// A URL setting: the table's key, else the environment variable, else the default.
fn setting(value: Option<&str>, env: &str, default: &str) -> String {
    value
        .filter(|v| !v.trim().is_empty())
        .map(str::to_string)
        .or_else(|| env_var(env).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_string())
}

impl Service {
    async fn probe(&self) -> Outcome {
        let secret = match self.key.value() {
            Ok(secret) => secret,
            Err(missing) => return Outcome::Bad(missing),
        };
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(client) => client,
            Err(e) => return Outcome::Failed(format!("no HTTP client: {e}")),
        };
        let mut request = client.get(&self.url).bearer_auth(secret.trim()).header("Accept", "application/json");
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::Failed(format!("GET {}: {}", self.url, transport_error(&e))),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Outcome::Ok(format!("GET {} {}: {}", self.url, status.as_u16(), self.identity(&body)));
        }
        let detail = error_message(&body);
        let hint = match status.as_u16() {
            401 | 403 => format!(" ({} is refused)", self.key.origin()),
            404 => " (is the base URL right?)".to_string(),
            429 => " (rate limited: try again later)".to_string(),
            _ => String::new(),
        };
        Outcome::Failed(format!("GET {} {}: {detail}{hint}", self.url, status))
    }

    /// What a successful answer says about the account.
    fn identity(&self, body: &Value) -> String {
        match self.kind {
            ServiceKind::Intercom => {
                let who = body["email"].as_str().or(body["name"].as_str()).unwrap_or("an admin");
                match body["app"]["name"].as_str() {
                    Some(app) => format!("authenticated as {who} of workspace {app:?}"),
                    None => format!("authenticated as {who}"),
                }
            }
            ServiceKind::OpenAi => {
                let models = body["data"].as_array().map_or(0, Vec::len);
                format!("authenticated; {models} models listed")
            }
        }
    }
}

/// The message of an Intercom (`errors[0].message`) or OpenAI (`error.message`) error body.
fn error_message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .or(body["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| "no error message in the answer".into())
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer in {} s", REQUEST_TIMEOUT.as_secs());
    }
    // The innermost cause says what happened ("Connection refused (os error 111)").
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_connect() { format!("cannot connect: {cause}") } else { format!("{e}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_hidden() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn services_are_found_once_per_endpoint_and_key() {
        let file: PipelineFile = serde_json::from_value(serde_json::json!({
            "source": {"kind": "intercom", "base_url": "http://i", "token_env": "T", "intercom_version": "2.11"},
            "stages": [
                {"kind": "classify", "provider": "llm", "categories": ["a", "b"], "base_url": "http://o/v1", "api_key_env": "K"},
                {"kind": "embed", "provider": "openai", "base_url": "http://o/v1/", "api_key_env": "K"},
                {"kind": "embed", "provider": "hashing"},
                {"kind": "embed", "provider": "openai", "base_url": "http://o/v1", "api_key": "sk-inline"},
            ],
            "phases": {"embedding_generation": {"provider": "openai", "base_url": "http://p/v1", "api_key_env": "K"}},
        }))
        .unwrap();
        let found = services(&file);
        let summary: Vec<(&str, &str, &str)> =
            found.iter().map(|s| (s.label.as_str(), s.url.as_str(), s.key.origin())).collect();
        assert_eq!(
            summary,
            [
                ("intercom", "http://i/me", "T"),
                ("openai (classify, embed)", "http://o/v1/models", "K"),
                // The inline key is the one the stage sends: a request of its own.
                ("openai (embed)", "http://o/v1/models", "embed.api_key"),
                ("openai (embedding_generation)", "http://p/v1/models", "K"),
            ]
        );
        assert_eq!(found[2].key.value().as_deref(), Ok("sk-inline"));
    }
}
