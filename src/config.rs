//! The operator's configuration file: its schema, loading, and validation.
//!
//! Validation runs in two stages: TOML decoding (unknown keys rejected, types checked), then cross-field
//! checks that report every problem at once, each with its path in the file (`providers[1].base_url: …`).
//! Secrets never live here: the file names the environment variable that holds each one.
//! Not here: anything that reads the environment for secrets or builds runtime objects (see `app`).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod catalog;
pub mod presets;

pub use catalog::{
    AliasConfig, Capability, CatalogFile, CatalogSettings, FallbackOverrides, GLOBAL_REGION, ModelConfig, ModelStatus,
    ModelTier, Speed, TierConfig, valid_region,
};

/// The shipped default configuration, used when no file is given and `config/switchyard.toml` is absent.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/switchyard.toml");
pub const DEFAULT_PATH: &str = "config/switchyard.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub catalog: CatalogSettings,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub aliases: Vec<AliasConfig>,
    #[serde(default)]
    pub tiers: Vec<TierConfig>,
    #[serde(default)]
    pub responses: ResponsesConfig,
    #[serde(default)]
    pub input: InputLimits,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub traces: TracesConfig,
    #[serde(default)]
    pub files: FilesConfig,
}

/// `/v1/files` and `/v1/batches`: passed to one OpenAI-compatible provider, each file and batch owned by
/// the organisation that made it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The provider that keeps files and runs batches.
    pub provider: String,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self { provider: "openai".to_owned() }
    }
}

/// OTLP export of request traces (HTTP/protobuf), off unless `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// `service.name` of the resource the spans belong to.
    pub service_name: String,
    /// The share of traces that start here which are exported (0.0 to 1.0); a caller's `traceparent`
    /// decides for the traces it continues.
    pub sample_ratio: f64,
    /// Spans waiting for export at most; beyond it new spans are dropped (and counted), never waited for.
    pub queue_spans: usize,
    /// Spans per export request at most.
    pub batch_spans: usize,
    /// A batch is sent at least this often while spans wait.
    pub flush_interval_ms: u64,
    /// One export request's deadline.
    pub export_timeout_ms: u64,
    /// Headers sent with each export (an API key, say): header name → the environment variable holding
    /// its value.
    pub headers: BTreeMap<String, String>,
    /// PEM certificates to trust for an `https` collector, besides the platform's.
    pub tls_ca_file: Option<String>,
    /// Send providers W3C trace context (`traceparent`, a caller's valid `tracestate`), whether or not
    /// spans are exported.
    pub propagate: bool,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "switchyard".to_owned(),
            sample_ratio: 1.0,
            queue_spans: 8192,
            batch_spans: 512,
            flush_interval_ms: 1000,
            export_timeout_ms: 10_000,
            headers: BTreeMap::new(),
            tls_ca_file: None,
            propagate: true,
        }
    }
}

/// The usage ledger's local spool: every record is appended here before the database takes it, so a
/// crash or a database outage loses none.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// A directory of this machine's disk; each running gateway keeps its own subdirectory in it, and
    /// replays the subdirectories of gateways that died.
    pub spool_dir: String,
    /// Above this many MiB waiting for the database, readiness fails (records are still kept).
    pub spool_max_mb: u64,
    /// The spool's segment size: a segment is removed once the database has all of it.
    pub spool_segment_kb: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { spool_dir: "data/spool".to_owned(), spool_max_mb: 1024, spool_segment_kb: 4096 }
    }
}

/// What one request may hold, beyond the body's size: each bound is named in the refusal's `param`, on
/// every door. A request near the whole-body limit could otherwise carry 10,000 tools or a 5 MB schema
/// that every upstream attempt would pay for.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputLimits {
    /// Messages (or input items, or contents) in one conversation.
    pub max_messages: usize,
    /// Tool definitions offered to the model.
    pub max_tools: usize,
    /// The JSON size of one tool's parameter schema, or of a structured-output schema.
    pub max_schema_bytes: usize,
    /// Stop sequences.
    pub max_stop_sequences: usize,
    /// `logit_bias` entries.
    pub max_logit_bias: usize,
    /// The JSON size of a request's `metadata`.
    pub max_metadata_bytes: usize,
    /// Inputs in one embeddings request.
    pub max_embedding_inputs: usize,
    /// Documents in one rerank request.
    pub max_rerank_documents: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_messages: 4096,
            max_tools: 128,
            max_schema_bytes: 64 * 1024,
            max_stop_sequences: 16,
            max_logit_bias: 300,
            max_metadata_bytes: 16 * 1024,
            max_embedding_inputs: 2048,
            max_rerank_documents: 1000,
        }
    }
}

/// Stored responses (`POST /v1/responses` with `store`, `previous_response_id`, `item_reference`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// How long a stored response is kept (OpenAI's default is 30 days); expired ones are removed in the
    /// background and are never served.
    pub retention_days: u32,
    /// Recent responses kept in memory per replica, so a response is found by the very next request
    /// before its database write lands: at most this many…
    pub memory_entries: usize,
    /// …and at most this many MiB of them.
    pub memory_mb: usize,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self { retention_days: 30, memory_entries: 4096, memory_mb: 64 }
    }
}

/// How the router tries targets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Upstream attempts at most per client request, fallbacks included.
    pub max_attempts: u32,
    /// The whole request's deadline, across attempts.
    pub request_timeout_ms: u64,
    /// Consecutive failures that open a target's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a target out before one probe is let through.
    pub breaker_cooldown_ms: u64,
    /// Retries (attempts after the first) may add at most this fraction of the request rate…
    pub retry_budget_ratio: f64,
    /// …plus this many per second, so an outage does not multiply traffic.
    pub retry_budget_per_second: u32,
    /// The longest `retry-after` waited out when no other target is left.
    pub max_retry_after_wait_ms: u64,
    /// `model: "auto"`: a conversation scoring below this is `economy`…
    pub auto_economy_below: f64,
    /// …from this, `premium`; in between, `standard` (scores are in [0, 1]).
    pub auto_premium_from: f64,
    /// Also send the routing headers under the names the product pages use (`x-gateway-routed-from`,
    /// `X-Model-Router-Model`, `-Provider`, `-Auto-Tier`, `-Auto-Score`).
    pub seed_headers: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            request_timeout_ms: 600_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            retry_budget_ratio: 0.2,
            retry_budget_per_second: 10,
            max_retry_after_wait_ms: 5_000,
            auto_economy_below: 0.2,
            auto_premium_from: 0.5,
            seed_headers: true,
        }
    }
}

/// How much of a request body is read, and how long its sender may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

impl ServerConfig {
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits { max_bytes: self.body_limit_bytes, read_timeout: Duration::from_millis(self.body_read_timeout_ms) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Overridden by `--listen` / `SWITCHYARD_LISTEN`.
    pub listen: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Largest multipart upload accepted (audio to transcribe, images to edit, files); larger ones get
    /// 413. Uploads are spooled to temporary files (in `TMPDIR`), not held in memory.
    pub upload_limit_bytes: u64,
    /// How long a client may take to send a whole upload (each piece must also come within
    /// `body_read_timeout_ms` of the last).
    pub upload_timeout_ms: u64,
    /// The most choices (`n`) one request may ask for; each may cost a whole answer.
    pub max_choices: u32,
    /// How long a client may take to send the request line and headers.
    pub header_read_timeout_ms: u64,
    /// The largest single header (name and value) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// The largest header block (all headers) accepted; larger gets 431.
    pub max_header_block_bytes: usize,
    /// How long a client may take to send the whole request body.
    pub body_read_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests and streams may run before they are cut.
    pub drain_timeout_ms: u64,
    /// Threads serving requests, each with its own event loop and listening socket (the kernel spreads
    /// connections across them). Default: one per CPU core. Overridden by `--workers` /
    /// `SWITCHYARD_WORKERS`.
    pub workers: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            body_limit_bytes: 32 * 1024 * 1024,
            upload_limit_bytes: 512 * 1024 * 1024,
            upload_timeout_ms: 600_000,
            max_choices: 16,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_header_block_bytes: 64 * 1024,
            body_read_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The environment variable holding the master key. With none set, a key is generated at start.
    pub master_key_env: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { master_key_env: "SWITCHYARD_MASTER_KEY".to_owned() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `switchyard=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".to_owned() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google AI Studio's Gemini API.
    Gemini,
    /// Azure OpenAI deployments.
    Azure,
    /// AWS Bedrock's Converse API, signed with SigV4 (or a Bedrock API key).
    Bedrock,
    /// Google Vertex AI: Gemini and Anthropic models, with a service account's OAuth tokens.
    Vertex,
    /// Cohere's own v2 API (chat, embed, rerank).
    Cohere,
    /// The built-in fake model server, answered in process.
    Fake,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Fake => "fake",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// For kind "openai": a known lab whose base URL and quirks to use (`groq`, `deepseek`, …).
    pub preset: Option<String>,
    /// The API root as the provider documents it, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// Azure's `api-version` query parameter, or Anthropic's `anthropic-version` header.
    pub api_version: Option<String>,
    /// For kind "openai": overrides of the preset's quirks.
    pub quirks: Option<presets::QuirksConfig>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Extra headers sent on every upstream request (not for credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Behaviour of a `kind = "fake"` provider.
    pub fake: Option<FakeSettings>,
    /// An egress proxy for this provider (`http://[user:pass@]host:port`); without it, the
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables apply.
    pub proxy: Option<String>,
    /// A PEM file of CA certificates to trust for this provider, besides the system's (a self-hosted
    /// model server behind an internal CA).
    pub tls_ca_file: Option<String>,
    /// The price of this provider's models the catalog does not price (pass-through `provider/model`
    /// ids, previews): charged, and held against USD budgets, as if the catalog said so.
    pub default_prices: Option<DefaultPrices>,
    /// Without `default_prices`, a key with a USD budget may not use this provider's unpriced models
    /// (their spending could not be counted); `"free"` lets it, at no charge to the budget.
    #[serde(default)]
    pub budget_unpriced: UnpricedPolicy,
    /// Where the provider serves its models (`in`, `cn`, `global`, …): when set, the region of all its
    /// models, whatever the catalog says (an operator pointing a provider at another endpoint says so
    /// here); left out, each model's catalog region, else global.
    pub region: Option<String>,
    /// For kind "bedrock": the AWS region and where its credentials are read from.
    pub aws: Option<AwsConfig>,
    /// For kind "vertex": the Google Cloud project, location and service account.
    pub vertex: Option<VertexConfig>,
}

/// Vertex AI settings. The service account's JSON key is read from the file the environment variable
/// names (or the variable holds the JSON itself), never from this file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VertexConfig {
    pub project: String,
    /// `us-central1`, `europe-west4`, … or `global`.
    pub location: String,
    /// Default `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials_env: Option<String>,
    /// Where tokens are minted; default the key file's `token_uri`, else Google's.
    pub token_uri: Option<String>,
}

impl VertexConfig {
    pub fn credentials_env(&self) -> &str {
        self.credentials_env.as_deref().unwrap_or("GOOGLE_APPLICATION_CREDENTIALS")
    }

    /// Vertex's endpoint for the location.
    pub fn base_url(&self) -> String {
        match self.location.as_str() {
            "global" => "https://aiplatform.googleapis.com".to_owned(),
            location => format!("https://{location}-aiplatform.googleapis.com"),
        }
    }
}

/// AWS settings of a Bedrock provider. The credentials are read from environment variables (the
/// standard AWS ones unless named here), never from this file. With the provider's `api_key_env` set,
/// its Bedrock API key is sent as a bearer token instead of signing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// `us-east-1`, …; left out, `AWS_REGION` or `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub session_token_env: Option<String>,
}

impl AwsConfig {
    pub fn access_key_id_env(&self) -> &str {
        self.access_key_id_env.as_deref().unwrap_or("AWS_ACCESS_KEY_ID")
    }
    pub fn secret_access_key_env(&self) -> &str {
        self.secret_access_key_env.as_deref().unwrap_or("AWS_SECRET_ACCESS_KEY")
    }
    pub fn session_token_env(&self) -> &str {
        self.session_token_env.as_deref().unwrap_or("AWS_SESSION_TOKEN")
    }
}

/// Bedrock's runtime endpoint in an AWS region.
pub fn bedrock_base_url(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultPrices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnpricedPolicy {
    #[default]
    Refuse,
    Free,
}

impl ProviderConfig {
    /// The API root: the configured one, else the preset's, else the kind's documented default.
    pub fn effective_base_url(&self) -> Option<String> {
        if let Some(url) = &self.base_url {
            return Some(url.clone());
        }
        if let Some(preset) = self.preset.as_deref().and_then(presets::find) {
            return Some(preset.base_url.to_owned());
        }
        match self.kind {
            ProviderKind::Anthropic => Some("https://api.anthropic.com".to_owned()),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com".to_owned()),
            // Without a configured region, the region comes from the environment when the provider is built.
            ProviderKind::Bedrock => self.aws.as_ref().and_then(|a| a.region.as_deref()).map(bedrock_base_url),
            ProviderKind::Vertex => self.vertex.as_ref().map(VertexConfig::base_url),
            ProviderKind::Cohere => Some("https://api.cohere.com".to_owned()),
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Fake => None,
        }
    }
}

/// Upstream deadlines in milliseconds; anything left out takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

/// Resolved upstream deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connection set-up.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// Longest silence between two pieces of a streamed body.
    pub idle: Duration,
    /// The whole upstream exchange.
    pub total: Duration,
}

impl TimeoutsConfig {
    /// These deadlines where set, `base` elsewhere (a model's over its provider's).
    pub fn resolve_over(&self, base: Timeouts) -> Timeouts {
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        Timeouts {
            connect: ms(self.connect_ms, base.connect),
            first_byte: ms(self.first_byte_ms, base.first_byte),
            idle: ms(self.idle_ms, base.idle),
            total: ms(self.total_ms, base.total),
        }
    }

    pub fn resolve(&self) -> Timeouts {
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        Timeouts {
            connect: ms(self.connect_ms, 10_000),
            first_byte: ms(self.first_byte_ms, 120_000),
            idle: ms(self.idle_ms, 60_000),
            total: ms(self.total_ms, 600_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeSettings {
    /// Delay before the response (or the first streamed token).
    pub latency_ms: u64,
    /// Streaming pace; 0 sends every token at once.
    pub tokens_per_second: f64,
    /// Length of a reply when the request sets no `max_tokens`.
    pub completion_tokens: u32,
}

impl Default for FakeSettings {
    fn default() -> Self {
        Self { latency_ms: 0, tokens_per_second: 0.0, completion_tokens: 24 }
    }
}

/// One thing wrong with a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Where the configuration is read from: what `serve` started with is what a reload reads again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    /// `path`, else the default file when it exists, else the embedded default.
    pub fn resolve(path: Option<&Path>) -> ConfigSource {
        match path {
            Some(p) => ConfigSource::File(p.to_owned()),
            None if Path::new(DEFAULT_PATH).exists() => ConfigSource::File(PathBuf::from(DEFAULT_PATH)),
            None => ConfigSource::Embedded,
        }
    }

    /// Reads and validates the configuration (and the catalog file it names).
    pub fn load(&self) -> Result<Config, ConfigError> {
        let text = match self {
            ConfigSource::File(p) => read(p)?,
            ConfigSource::Embedded => EMBEDDED_DEFAULT.to_owned(),
        };
        Config::parse(&text).map_err(|problems| ConfigError::Invalid { source_name: self.to_string(), problems })
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("embedded default configuration"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{source_name} is not a valid configuration:\n{}", list(.problems))]
    Invalid { source_name: String, problems: Vec<ConfigProblem> },
}

fn list(problems: &[ConfigProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl Config {
    /// Loads `path`, or the default file, or the embedded default when neither exists.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        ConfigSource::resolve(path).load()
    }

    /// Decodes and validates a TOML document, returning every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| vec![ConfigProblem { path: String::new(), message: e.to_string().trim_end().to_owned() }])?;
        let catalog_text = match config.catalog.file.as_deref() {
            None => Some(catalog::EMBEDDED_CATALOG.to_owned()),
            Some("") => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigProblem { path: "catalog.file".into(), message: format!("cannot read {path}: {e}") }]
            })?),
        };
        if let Some(text) = catalog_text {
            let file: CatalogFile = toml::from_str(&text).map_err(|e| {
                vec![ConfigProblem { path: "catalog".into(), message: e.to_string().trim_end().to_owned() }]
            })?;
            catalog::merge(&mut config, file);
        } else {
            catalog::merge(&mut config, CatalogFile::default());
        }
        let problems = config.problems();
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }

    /// What a running gateway cannot take from a reload (the sockets, the connection limits at the
    /// edge, the drain, the master key's variable, logging, the response store's and the ledger's
    /// settings), each that differs between `self` and `next`, by its path. The database and Redis
    /// come from the environment and cannot change at all.
    pub fn fixed_changes(&self, next: &Config) -> Vec<ConfigProblem> {
        let (a, b) = (&self.server, &next.server);
        let fixed = [
            ("server.listen", a.listen != b.listen),
            ("server.workers", a.workers != b.workers),
            ("server.header_read_timeout_ms", a.header_read_timeout_ms != b.header_read_timeout_ms),
            ("server.max_header_bytes", a.max_header_bytes != b.max_header_bytes),
            ("server.max_header_block_bytes", a.max_header_block_bytes != b.max_header_block_bytes),
            ("server.drain_timeout_ms", a.drain_timeout_ms != b.drain_timeout_ms),
            ("auth.master_key_env", self.auth != next.auth),
            ("log", self.log != next.log),
            ("responses", self.responses != next.responses),
            ("ledger", self.ledger != next.ledger),
            ("traces", self.traces != next.traces),
        ];
        fixed
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(path, _)| ConfigProblem {
                path: path.to_owned(),
                message: "cannot change while the gateway runs; restart it to apply this".to_owned(),
            })
            .collect()
    }

    pub fn listen_addr(&self) -> Option<&str> {
        self.server.listen.as_deref()
    }

    /// Every cross-field problem, each with its path.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |path: String, message: String| out.push(ConfigProblem { path, message });

        let s = &self.server;
        if let Some(listen) = &s.listen
            && listen.parse::<SocketAddr>().is_err()
        {
            bad("server.listen".into(), format!("\"{listen}\" is not an address like 127.0.0.1:8080"));
        }
        if !(1024..=1 << 30).contains(&s.body_limit_bytes) {
            bad("server.body_limit_bytes".into(), "must be between 1024 and 1073741824".into());
        }
        if !(1024..=1 << 34).contains(&s.upload_limit_bytes) {
            bad("server.upload_limit_bytes".into(), "must be between 1024 and 17179869184".into());
        }
        if s.upload_timeout_ms == 0 {
            bad("server.upload_timeout_ms".into(), "must be at least 1".into());
        }
        for (name, v) in
            [("header_read_timeout_ms", s.header_read_timeout_ms), ("body_read_timeout_ms", s.body_read_timeout_ms)]
        {
            if v == 0 {
                bad(format!("server.{name}"), "must be greater than 0".into());
            }
        }
        if !(1..=128).contains(&s.max_choices) {
            bad("server.max_choices".into(), "must be between 1 and 128".into());
        }
        if !(1024..=1 << 20).contains(&s.max_header_bytes) {
            bad("server.max_header_bytes".into(), "must be between 1024 and 1048576".into());
        }
        if !(s.max_header_bytes.max(4096)..=1 << 24).contains(&s.max_header_block_bytes) {
            bad(
                "server.max_header_block_bytes".into(),
                "must be at least max_header_bytes (and 4096), and at most 16777216".into(),
            );
        }
        if self.ledger.spool_dir.trim().is_empty() {
            bad("ledger.spool_dir".into(), "must name a directory".into());
        }
        if self.ledger.spool_max_mb == 0 {
            bad("ledger.spool_max_mb".into(), "must be greater than 0".into());
        }
        if !(4..=1 << 20).contains(&self.ledger.spool_segment_kb) {
            bad("ledger.spool_segment_kb".into(), "must be between 4 and 1048576".into());
        }
        let i = &self.input;
        for (name, v) in [
            ("max_messages", i.max_messages),
            ("max_tools", i.max_tools),
            ("max_schema_bytes", i.max_schema_bytes),
            ("max_stop_sequences", i.max_stop_sequences),
            ("max_logit_bias", i.max_logit_bias),
            ("max_metadata_bytes", i.max_metadata_bytes),
            ("max_embedding_inputs", i.max_embedding_inputs),
            ("max_rerank_documents", i.max_rerank_documents),
        ] {
            if v == 0 {
                bad(format!("input.{name}"), "must be greater than 0".into());
            }
        }
        if s.workers.is_some_and(|w| !(1..=1024).contains(&w)) {
            bad("server.workers".into(), "must be between 1 and 1024".into());
        }
        if !(1..=3650).contains(&self.responses.retention_days) {
            bad("responses.retention_days".into(), "must be between 1 and 3650".into());
        }
        if !is_env_name(&self.auth.master_key_env) {
            bad("auth.master_key_env".into(), "must be an environment variable name".into());
        }
        let t = &self.traces;
        if let Some(endpoint) = &t.endpoint
            && let Err(e) = check_base_url(endpoint)
        {
            bad("traces.endpoint".into(), e);
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            bad("traces.sample_ratio".into(), "must be between 0.0 and 1.0".into());
        }
        if t.service_name.trim().is_empty() {
            bad("traces.service_name".into(), "must not be empty".into());
        }
        for (name, v, max) in [
            ("queue_spans", t.queue_spans as u64, 1 << 20),
            ("batch_spans", t.batch_spans as u64, 1 << 16),
            ("flush_interval_ms", t.flush_interval_ms, 3_600_000),
            ("export_timeout_ms", t.export_timeout_ms, 600_000),
        ] {
            if !(1..=max).contains(&v) {
                bad(format!("traces.{name}"), format!("must be between 1 and {max}"));
            }
        }
        for (header, env) in &t.headers {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                bad(format!("traces.headers.{header}"), "is not a header name".into());
            }
            if !is_env_name(env) {
                bad(
                    format!("traces.headers.{header}"),
                    "must name the environment variable that holds its value".into(),
                );
            }
        }
        if let Some(path) = &t.tls_ca_file
            && let Err(e) = load_certificates(path)
        {
            bad("traces.tls_ca_file".into(), e);
        }

        let mut provider_names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = |field: &str| format!("providers[{i}].{field}");
            if !is_identifier(&p.name) {
                bad(at("name"), format!("\"{}\" must be 1-64 characters of a-z, 0-9, - and _", p.name));
            } else if !provider_names.insert(p.name.as_str()) {
                bad(at("name"), format!("provider \"{}\" is defined twice", p.name));
            }
            if let Some(url) = &p.base_url
                && let Err(why) = check_base_url(url)
            {
                bad(at("base_url"), why);
            }
            match (&p.preset, p.kind) {
                (Some(name), ProviderKind::Openai) if presets::find(name).is_none() => {
                    let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
                    bad(at("preset"), format!("unknown preset \"{name}\"; known: {}", known.join(", ")));
                }
                (Some(_), ProviderKind::Openai) | (None, _) => {}
                (Some(_), _) => bad(at("preset"), "only applies to kind \"openai\"".into()),
            }
            if p.quirks.is_some() && p.kind != ProviderKind::Openai {
                bad(at("quirks"), "only applies to kind \"openai\"".into());
            }
            if p.aws.is_some() && p.kind != ProviderKind::Bedrock {
                bad(at("aws"), "only applies to kind \"bedrock\"".into());
            }
            if let Some(aws) = &p.aws {
                if let Some(region) = &aws.region
                    && !catalog::valid_region(region)
                {
                    bad(at("aws.region"), format!("\"{region}\" is not an AWS region name (us-east-1, …)"));
                }
                for (field, env) in [
                    ("access_key_id_env", &aws.access_key_id_env),
                    ("secret_access_key_env", &aws.secret_access_key_env),
                    ("session_token_env", &aws.session_token_env),
                ] {
                    if let Some(env) = env
                        && !is_env_name(env)
                    {
                        bad(at(&format!("aws.{field}")), format!("\"{env}\" is not an environment variable name"));
                    }
                }
            }
            match (&p.vertex, p.kind) {
                (None, ProviderKind::Vertex) => {
                    bad(at("vertex"), "is required for kind \"vertex\" (project, location)".into())
                }
                (Some(_), kind) if kind != ProviderKind::Vertex => {
                    bad(at("vertex"), "only applies to kind \"vertex\"".into())
                }
                (Some(v), _) => {
                    // Project ids are lower-case letters, digits and hyphens (a domain-scoped one adds `.` and `:`).
                    let project_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c);
                    if v.project.is_empty() || v.project.len() > 100 || !v.project.chars().all(project_char) {
                        bad(at("vertex.project"), format!("\"{}\" is not a Google Cloud project id", v.project));
                    }
                    if !catalog::valid_region(&v.location) {
                        bad(
                            at("vertex.location"),
                            format!("\"{}\" is not a Vertex location (us-central1, global, …)", v.location),
                        );
                    }
                    if let Some(env) = &v.credentials_env
                        && !is_env_name(env)
                    {
                        bad(at("vertex.credentials_env"), format!("\"{env}\" is not an environment variable name"));
                    }
                    if let Some(url) = &v.token_uri
                        && let Err(why) = check_base_url(url)
                    {
                        bad(at("vertex.token_uri"), why);
                    }
                }
                (None, _) => {}
            }
            if p.effective_base_url().is_none() && !matches!(p.kind, ProviderKind::Fake | ProviderKind::Bedrock) {
                let why = match p.kind {
                    ProviderKind::Azure => "is required for kind \"azure\" (https://RESOURCE.openai.azure.com)",
                    _ => "is required for kind \"openai\" unless a preset is given",
                };
                bad(at("base_url"), why.into());
            }
            if let Some(url) = &p.proxy
                && let Err(why) = http_url(url)
            {
                bad(at("proxy"), why);
            }
            if let Some(region) = &p.region
                && !catalog::valid_region(region)
            {
                bad(at("region"), format!("\"{region}\" is not a region name (lowercase letters, digits and '-')"));
            }
            if let Some(path) = &p.tls_ca_file
                && let Err(why) = load_certificates(path)
            {
                bad(at("tls_ca_file"), why);
            }
            if (p.proxy.is_some() || p.tls_ca_file.is_some()) && p.kind == ProviderKind::Fake {
                bad(
                    at(if p.proxy.is_some() { "proxy" } else { "tls_ca_file" }),
                    "does not apply to kind \"fake\"".into(),
                );
            }
            if let Some(d) = &p.default_prices {
                for (field, price) in [
                    ("input_per_mtok", Some(d.input_per_mtok)),
                    ("output_per_mtok", Some(d.output_per_mtok)),
                    ("cached_input_per_mtok", d.cached_input_per_mtok),
                ] {
                    if let Some(v) = price
                        && !(v.is_finite() && (0.0..=10_000.0).contains(&v))
                    {
                        bad(
                            at(&format!("default_prices.{field}")),
                            format!("{v} is not a price between 0 and 10000 USD per million tokens"),
                        );
                    }
                }
            }
            if p.api_version.is_some() && !matches!(p.kind, ProviderKind::Azure | ProviderKind::Anthropic) {
                bad(at("api_version"), "only applies to kinds \"azure\" and \"anthropic\"".into());
            }
            if p.fake.is_some() && p.kind != ProviderKind::Fake {
                bad(at("fake"), "only applies to kind \"fake\"".into());
            }
            if let Some(f) = &p.fake {
                if !(f.tokens_per_second.is_finite() && f.tokens_per_second >= 0.0) {
                    bad(at("fake.tokens_per_second"), "must be a number of at least 0".into());
                }
                if f.completion_tokens == 0 || f.completion_tokens > 100_000 {
                    bad(at("fake.completion_tokens"), "must be between 1 and 100000".into());
                }
            }
            if let Some(env) = &p.api_key_env
                && !is_env_name(env)
            {
                bad(at("api_key_env"), format!("\"{env}\" is not an environment variable name"));
            }
            let t = &p.timeouts;
            for (name, v) in [
                ("connect_ms", t.connect_ms),
                ("first_byte_ms", t.first_byte_ms),
                ("idle_ms", t.idle_ms),
                ("total_ms", t.total_ms),
            ] {
                if v == Some(0) {
                    bad(at(&format!("timeouts.{name}")), "must be greater than 0".into());
                }
            }
            for (name, value) in &p.headers {
                let path = at(&format!("headers.{name}"));
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    bad(path, "is not a valid header name".into());
                } else if is_credential_header(name) {
                    bad(path, "credentials come from api_key_env, not from headers".into());
                } else if http::HeaderValue::from_str(value).is_err() {
                    bad(path, "is not a valid header value".into());
                }
            }
        }

        let r = &self.router;
        if r.max_attempts == 0 || r.max_attempts > 20 {
            bad("router.max_attempts".into(), "must be between 1 and 20".into());
        }
        if !(r.retry_budget_ratio.is_finite() && (0.0..=1.0).contains(&r.retry_budget_ratio)) {
            bad("router.retry_budget_ratio".into(), "must be between 0 and 1".into());
        }
        if r.request_timeout_ms == 0 || r.breaker_failures == 0 {
            bad("router".into(), "request_timeout_ms and breaker_failures must be greater than 0".into());
        }
        catalog::problems(self, &mut out);
        out
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && !s.as_bytes()[0].is_ascii_digit() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_credential_header(name: &str) -> bool {
    ["authorization", "x-api-key", "api-key", "x-goog-api-key", "host", "content-length"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// An absolute `http(s)://` URL naming a host.
fn http_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if parsed.host().is_none() {
        return Err("must name a host".into());
    }
    Ok(parsed)
}

fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = http_url(url)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials; use api_key_env".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(format!("\"{url}\" is not a URL an HTTP request can be sent to"));
    }
    Ok(())
}

/// The certificates of a PEM file named by `tls_ca_file`: read when the configuration is checked and
/// again when the provider's TLS settings are built, so a bad file is reported with its config path.
pub fn load_certificates(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from \"{path}\": {e}"))?;
    if certs.is_empty() {
        return Err(format!("\"{path}\" holds no PEM certificate"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::parse(EMBEDDED_DEFAULT).unwrap();
        assert!(cfg.providers.iter().any(|p| p.kind == ProviderKind::Fake));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [server]
            listen = "nowhere"
            [[providers]]
            name = "a"
            kind = "openai"
            [[providers]]
            name = "a"
            kind = "openai"
            base_url = "ftp://x"
            headers = { Authorization = "Bearer x" }
            [[models]]
            name = "m"
            provider = "missing"
            [[models]]
            name = "m"
            provider = "a"
        "#;
        let problems: Vec<String> = Config::parse(text).unwrap_err().iter().map(|p| p.to_string()).collect();
        let expected = [
            "server.listen: \"nowhere\" is not an address like 127.0.0.1:8080",
            "providers[0].base_url: is required for kind \"openai\" unless a preset is given",
            "providers[1].name: provider \"a\" is defined twice",
            "providers[1].base_url: must start with http:// or https://",
            "providers[1].headers.Authorization: credentials come from api_key_env, not from headers",
            "models[0].provider: provider \"missing\" is not defined",
            "models[1].name: \"m\" is already defined at models[0]",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn egress_settings_are_checked() {
        let text = r#"
            [[providers]]
            name = "a"
            kind = "openai"
            base_url = "https://llm.internal/v1"
            proxy = "socks5://proxy:1080"
            tls_ca_file = "/nonexistent/ca.pem"
            [[providers]]
            name = "b"
            kind = "openai"
            base_url = "https://llm.internal/v1"
            proxy = "http://user:pass@proxy.internal:3128"
            tls_ca_file = "tests/fixtures/tls/ca.pem"
        "#;
        let problems: Vec<String> = Config::parse(text).unwrap_err().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], "providers[0].proxy: must start with http:// or https://");
        assert!(problems[1].starts_with("providers[0].tls_ca_file: cannot read certificates from"), "{problems:?}");
    }

    #[test]
    fn catalog_chains_are_checked_for_missing_targets_duplicates_cycles_and_prices() {
        let text = r#"
            [catalog]
            file = ""
            [[providers]]
            name = "p"
            kind = "fake"
            [[models]]
            name = "m1"
            provider = "p"
            input_per_mtok = -1.0
            [[models]]
            name = "m2"
            provider = "p"
            [[aliases]]
            name = "a"
            targets = ["m1", "m1", "ghost", "b"]
            [[aliases]]
            name = "b"
            targets = ["a"]
            [[aliases]]
            name = "empty"
            targets = []
            [[tiers]]
            name = "economy"
            models = ["m2", "nope"]
        "#;
        let problems: Vec<String> = Config::parse(text).unwrap_err().iter().map(|p| p.to_string()).collect();
        let expected = [
            "models[0].input_per_mtok: -1 is not a price between 0 and 10000 USD per million tokens",
            "aliases[0].targets[1]: \"m1\" is listed twice",
            "aliases[0].targets[2]: \"ghost\" is not a model or alias",
            "aliases[0].targets: aliases form a cycle: a -> b -> a",
            "aliases[1].targets: aliases form a cycle: b -> a -> b",
            "aliases[2].targets: must list at least one model or alias",
            "tiers[0].models[1]: \"nope\" is not a model",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn the_default_catalog_keeps_only_configured_providers_and_operators_override_it() {
        let text = r#"
            [[providers]]
            name = "openai"
            kind = "openai"
            preset = "openai"
            [[models]]
            name = "gpt-4o"
            provider = "openai"
            input_per_mtok = 1.0
        "#;
        let cfg = Config::parse(text).unwrap();
        assert!(cfg.models.iter().all(|m| m.provider == "openai"));
        assert!(cfg.models.iter().any(|m| m.name == "gpt-5-mini"));
        let gpt4o: Vec<_> = cfg.models.iter().filter(|m| m.name == "gpt-4o").collect();
        assert_eq!(
            (gpt4o.len(), gpt4o[0].input_per_mtok),
            (1, Some(1.0)),
            "the operator's entry replaces the catalog's"
        );
        // Aliases whose chains lose every model are dropped; others keep their OpenAI members.
        let judge = cfg.aliases.iter().find(|a| a.name == "smooth-judge").unwrap();
        assert_eq!(judge.targets, ["gpt-5-mini"]);
        assert!(!cfg.aliases.iter().any(|a| a.name == "smooth-coding-qwen"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err[0].message.contains("bogus"), "{}", err[0].message);
        assert!(err[0].message.contains("line 3"), "{}", err[0].message);
    }
}
