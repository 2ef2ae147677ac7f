//! Upstream providers at run time: each configured provider (its adapter, keys in rotation, transport),
//! the upstream HTTP client and the executor.
//!
//! Translation is the protocols' ([`crate::protocols`]): an adapter is pure, so it can be tested from
//! fixture files alone. [`exec`] is the only code that does upstream I/O. This module never imports
//! `http` (ours) or `store`.

pub mod client;
pub mod exec;
pub mod google;
pub mod propagation;
pub mod signing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ProviderConfig, ProviderKind, Timeouts};
pub use crate::protocols::{
    Adapter, Endpoint, ErrorKind, ProviderError, StreamMapper, StreamStep, TimeoutPhase, UpstreamRequest,
};
use crate::protocols::{anthropic, azure, bedrock, cohere, gemini, openai, vertex};
use crate::secret::Secret;

/// How long a key the provider refused is left out of rotation.
const KEY_SET_ASIDE: Duration = Duration::from_secs(300);

enum Transport {
    Http(Box<HttpClients>),
    /// The built-in fake provider, answered by its router without a socket.
    InProcess(axum::Router),
}

/// A provider's HTTP clients, one per thread that uses it. A pooled connection is driven by a task on
/// the runtime that opened it; with one runtime per thread (`server.workers`), a client shared between
/// threads would hand every request over to another thread and back. Per thread, a request and its
/// upstream connection stay together.
struct HttpClients {
    settings: client::ClientSettings,
    per_thread: thread_local::ThreadLocal<client::UpstreamClient>,
}

impl HttpClients {
    fn new(settings: client::ClientSettings) -> Self {
        Self { settings, per_thread: thread_local::ThreadLocal::new() }
    }

    fn get(&self) -> &client::UpstreamClient {
        self.per_thread.get_or(|| self.settings.client())
    }
}

/// Credentials that are more than a key the adapter puts in a header.
enum Credentials {
    /// The adapter's own: a key in a header, or none.
    Keys,
    /// Each request signed with AWS SigV4 (Bedrock).
    Aws(signing::AwsSigner),
    /// A service account's OAuth access token as a bearer token (Vertex AI).
    Google(Arc<google::GoogleTokens>),
}

/// One configured provider at run time.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// The preset it was configured from (`preset = "vllm"`), for LiteLLM-style model prefixes.
    pub preset: Option<String>,
    pub timeouts: Timeouts,
    adapter: Box<dyn Adapter>,
    base_url: String,
    keys: Vec<Secret>,
    next_key: AtomicUsize,
    /// Per key: until when (ms since `epoch`) it is set aside after the provider refused it.
    set_aside_until: Vec<AtomicU64>,
    epoch: std::time::Instant,
    /// Why the provider cannot be used, when it cannot (its key variable is unset).
    unavailable: Option<String>,
    /// What each request carries besides what the adapter put in it.
    credentials: Credentials,
    headers: HeaderMap,
    transport: Transport,
    /// What the catalog's unpriced models of this provider cost (`default_prices`).
    pub default_prices: Option<crate::config::DefaultPrices>,
    /// Keys with a USD budget may use its unpriced models at no charge (`budget_unpriced = "free"`).
    pub unpriced_free: bool,
    /// Resells other labs' models (OpenRouter): fallback chains use it last, as an emergency route.
    pub aggregator: bool,
    /// Where it serves its models, when its configuration says: then every model of it is served there,
    /// whatever the catalog says (the endpoint decides where data goes).
    pub region: Option<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.name).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds a provider from validated configuration. `env` looks up environment variables.
    pub fn from_config(cfg: &ProviderConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Provider, String> {
        Self::from_config_at(cfg, env, crate::clock::system())
    }

    /// As [`from_config`](Provider::from_config), with the clock its credentials' expiry is read by.
    pub fn from_config_at(
        cfg: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
        clock: crate::clock::Clock,
    ) -> Result<Provider, String> {
        let timeouts = cfg.timeouts.resolve();
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            headers.insert(name, HeaderValue::from_str(value).map_err(|e| e.to_string())?);
        }
        let keys: Vec<Secret> = cfg
            .api_key_env
            .as_deref()
            .and_then(env)
            .map(|v| v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect())
            .unwrap_or_default();
        let mut unavailable = match (&cfg.api_key_env, keys.is_empty()) {
            (Some(var), true) => Some(format!("provider \"{}\" is not configured: set {var}", cfg.name)),
            _ => None,
        };
        // Bedrock without an API key signs each request with the AWS credentials of the environment.
        let mut signer = None;
        let mut google_account = None;
        if let (ProviderKind::Vertex, Some(vertex)) = (cfg.kind, &cfg.vertex) {
            let var = vertex.credentials_env();
            let loaded = match env(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
                None => Err(format!("set {var} to the service account's JSON key file")),
                Some(json) if json.starts_with('{') => google::ServiceAccount::from_json(&json),
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("the file {var} names cannot be read ({e})"))
                    .and_then(|json| google::ServiceAccount::from_json(&json)),
            };
            match loaded {
                Ok(account) => google_account = Some(account),
                Err(why) => {
                    unavailable = Some(format!("provider \"{}\" is not configured: {why}", cfg.name));
                }
            }
        }
        let mut aws_region = cfg.aws.as_ref().and_then(|a| a.region.clone());
        if cfg.kind == ProviderKind::Bedrock {
            let aws = cfg.aws.clone().unwrap_or_default();
            aws_region = aws_region.or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION"));
            if cfg.api_key_env.is_none() {
                let read = |var: &str| env(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
                let (id, secret) = (read(aws.access_key_id_env()), read(aws.secret_access_key_env()));
                match (&aws_region, id, secret) {
                    (Some(region), Some(id), Some(secret)) => {
                        signer = Some(signing::AwsSigner {
                            access_key_id: Secret::new(id),
                            secret_access_key: Secret::new(secret),
                            // The ambient session token belongs to the ambient keys: with keys from
                            // variables of its own, a provider has a token only from one it names.
                            session_token: (aws.session_token_env.is_some()
                                || (aws.access_key_id_env.is_none() && aws.secret_access_key_env.is_none()))
                            .then(|| read(aws.session_token_env()))
                            .flatten()
                            .map(Secret::new),
                            region: region.clone(),
                            service: "bedrock",
                        });
                    }
                    (region, id, _) => {
                        let missing = if region.is_none() {
                            "aws.region (or AWS_REGION)".to_owned()
                        } else if id.is_none() {
                            aws.access_key_id_env().to_owned()
                        } else {
                            aws.secret_access_key_env().to_owned()
                        };
                        unavailable = Some(format!("provider \"{}\" is not configured: set {missing}", cfg.name));
                    }
                }
            } else if aws_region.is_none() && cfg.base_url.is_none() {
                unavailable =
                    Some(format!("provider \"{}\" is not configured: set aws.region (or AWS_REGION)", cfg.name));
            }
        }
        let (transport, base_url) = match cfg.kind {
            ProviderKind::Fake => {
                let settings = cfg.fake.clone().unwrap_or_default();
                let router = crate::fake::router(std::sync::Arc::new(crate::fake::FakeState::new(settings)));
                (Transport::InProcess(router), "http://fake.invalid/v1".to_owned())
            }
            _ => {
                let base_url = cfg
                    .effective_base_url()
                    .or_else(|| aws_region.as_deref().map(crate::config::bedrock_base_url))
                    // A Bedrock provider with no region is unavailable; its client still needs an address.
                    .unwrap_or_else(|| crate::config::bedrock_base_url("us-east-1"));
                let settings = client::ClientSettings::new(
                    &base_url,
                    timeouts.connect,
                    cfg.proxy.as_deref(),
                    cfg.tls_ca_file.as_deref(),
                )
                .map_err(|e| format!("provider \"{}\": {e}", cfg.name))?;
                (Transport::Http(Box::new(HttpClients::new(settings))), base_url)
            }
        };
        let credentials = match (signer, google_account) {
            (Some(signer), _) => Credentials::Aws(signer),
            (None, Some(account)) => {
                let token_uri = cfg
                    .vertex
                    .as_ref()
                    .and_then(|v| v.token_uri.clone())
                    .or_else(|| account.token_uri.clone())
                    .unwrap_or_else(|| google::DEFAULT_TOKEN_URI.to_owned());
                let settings = client::ClientSettings::new(
                    &token_uri,
                    timeouts.connect,
                    cfg.proxy.as_deref(),
                    cfg.tls_ca_file.as_deref(),
                )
                .map_err(|e| format!("provider \"{}\": the token URI: {e}", cfg.name))?;
                Credentials::Google(Arc::new(google::GoogleTokens::new(account, token_uri, settings, clock)))
            }
            (None, None) => Credentials::Keys,
        };
        let quirks = {
            use crate::config::presets::{Quirks, find};
            let preset = cfg.preset.as_deref().and_then(find).map(|p| p.quirks);
            let base = match (preset, cfg.kind) {
                (Some(preset), _) => preset,
                (None, ProviderKind::Fake) => Quirks::FAKE,
                (None, _) if base_url.starts_with("https://api.openai.com") => Quirks::OPENAI,
                (None, _) => Quirks::COMPATIBLE,
            };
            cfg.quirks.map_or(base, |q| q.apply(base))
        };
        let adapter: Box<dyn Adapter> = match cfg.kind {
            ProviderKind::Openai | ProviderKind::Fake => Box::new(openai::OpenAiAdapter { quirks }),
            ProviderKind::Anthropic => Box::new(anthropic::AnthropicAdapter {
                version: cfg.api_version.clone().unwrap_or_else(|| anthropic::DEFAULT_VERSION.to_owned()),
            }),
            ProviderKind::Gemini => Box::new(gemini::GeminiAdapter),
            ProviderKind::Azure => Box::new(azure::AzureAdapter {
                api_version: cfg.api_version.clone().unwrap_or_else(|| azure::DEFAULT_API_VERSION.to_owned()),
                inner: openai::OpenAiAdapter { quirks },
            }),
            ProviderKind::Bedrock => Box::new(bedrock::BedrockAdapter),
            ProviderKind::Cohere => Box::new(cohere::CohereAdapter::default()),
            ProviderKind::Vertex => {
                let v = cfg.vertex.clone().unwrap_or_default();
                Box::new(vertex::VertexAdapter::new(&v.project, &v.location))
            }
        };
        let key_count = keys.len();
        Ok(Provider {
            preset: cfg.preset.clone(),
            name: cfg.name.clone(),
            kind: cfg.kind,
            timeouts,
            adapter,
            base_url,
            keys,
            next_key: AtomicUsize::new(0),
            set_aside_until: (0..key_count).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
            unavailable,
            credentials,
            headers,
            transport,
            default_prices: cfg.default_prices,
            unpriced_free: cfg.budget_unpriced == crate::config::UnpricedPolicy::Free,
            aggregator: cfg.preset.as_deref() == Some("openrouter"),
            region: cfg.region.clone(),
        })
    }

    /// `None` when requests can be sent; otherwise a message for the caller saying what is missing.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }

    /// The endpoint for the next attempt; keys are used in turn, skipping any set aside.
    pub fn endpoint(&self) -> Result<Endpoint<'_>, ProviderError> {
        if let Some(why) = &self.unavailable {
            return Err(ProviderError::new(ErrorKind::Unavailable, why.clone()));
        }
        let n = self.keys.len();
        let endpoint = |key_index: Option<usize>| Endpoint {
            base_url: &self.base_url,
            api_key: key_index.map(|i| &self.keys[i]),
            key_index,
            headers: &self.headers,
        };
        if n == 0 {
            return Ok(endpoint(None));
        }
        let now = self.clock_ms();
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.set_aside_until[i].load(Ordering::Relaxed) <= now)
            .map(|i| endpoint(Some(i)))
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::Unavailable,
                    format!("every key of provider \"{}\" was rejected recently; check its credentials", self.name),
                )
            })
    }

    /// Called after a failed attempt: a key the provider refused (credentials, exhausted quota) is not
    /// used again for a while. The log names the provider and the key's position, never the key.
    pub fn note_failure(&self, key_index: Option<usize>, e: &ProviderError) {
        // A 401 refuses the token itself; a 403 refuses this caller one model or action (not enabled,
        // not allowed) and the token stays good for the rest.
        if let (Credentials::Google(tokens), Some(401)) = (&self.credentials, e.status) {
            tokens.forget();
        }
        let Some(i) = key_index else { return };
        if !matches!(e.kind, ErrorKind::Authentication | ErrorKind::QuotaExhausted) {
            return;
        }
        self.set_aside_until[i].store(self.clock_ms() + KEY_SET_ASIDE.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(
            provider = %self.name,
            key_position = i + 1,
            keys = self.keys.len(),
            reason = e.label(),
            set_aside_s = KEY_SET_ASIDE.as_secs(),
            "a provider key was refused and is set aside"
        );
    }

    fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Adds what the provider's credentials require to a built request: a SigV4 signature, or a
    /// service account's access token (fetched when the one in hand is about to expire); nothing for a
    /// provider whose key the adapter already put in a header.
    /// Whether requests need [`authorize`](Provider::authorize) (anything but a key in a header).
    pub fn signs(&self) -> bool {
        !matches!(self.credentials, Credentials::Keys)
    }

    pub async fn authorize(&self, req: &mut UpstreamRequest) -> Result<(), ProviderError> {
        match &self.credentials {
            Credentials::Keys => Ok(()),
            Credentials::Aws(signer) => signer.sign(req, std::time::SystemTime::now()),
            Credentials::Google(tokens) => {
                let token = tokens.token().await.inspect_err(|e| {
                    tracing::warn!(provider = %self.name, error = %e.message, "no access token for the provider");
                })?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    ProviderError::new(ErrorKind::Authentication, "the access token is not a valid header value")
                })?;
                value.set_sensitive(true);
                req.headers.insert(http::header::AUTHORIZATION, value);
                Ok(())
            }
        }
    }

    /// Removes any of this provider's credentials from text that may reach a client or a log.
    pub fn redact(&self, text: String) -> String {
        let mut secrets: Vec<Secret> = self.keys.clone();
        match &self.credentials {
            Credentials::Aws(signer) => secrets.extend(signer.secrets().cloned()),
            Credentials::Google(tokens) => secrets.extend(tokens.secrets()),
            Credentials::Keys => {}
        }
        secrets.iter().fold(text, |t, k| if t.contains(k.expose()) { t.replace(k.expose(), "*****") } else { t })
    }
}
