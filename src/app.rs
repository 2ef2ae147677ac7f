//! The application's shared state, built once from a validated configuration. Tests build it the same
//! way `main` does, with their own environment lookup and usage sink.
//!
//! What a request reads of the configuration (providers, catalog, aliases, tiers, the router's
//! settings, body and input limits) is one [`Live`] snapshot, swapped whole by [`AppState::reload`]: a
//! request takes the snapshot once and finishes on it, so requests in flight are untouched by a reload.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use crate::config::{BodyLimits, Config, ConfigProblem, ConfigSource};
use crate::limits::Limiter;
use crate::providers::Provider;
use crate::routing::{Catalog, Router};
use crate::secret::Secret;
use crate::store::Store;
use crate::tenancy::KeyCache;
use crate::usage::ledger::{Ledger, Tee};
use crate::usage::{LogSink, UsageSink};

pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the application takes from its surroundings.
#[derive(Clone)]
pub struct AppOptions {
    /// Reads environment variables (provider keys, the master key).
    pub env: EnvLookup,
    pub usage_sink: Arc<dyn UsageSink>,
    /// `postgres://…`, `sqlite://…`, or `None` for the default SQLite file.
    pub database_url: Option<String>,
    /// `redis://…` to share counters (and key-cache invalidation) between replicas; `None` keeps them here.
    pub redis_url: Option<String>,
    /// Milliseconds since the epoch (tests move it across midnight).
    pub clock: crate::clock::Clock,
    /// Where a reload reads the configuration again; `None` when it was given in memory (tests), and
    /// a reload is then refused.
    pub config_source: Option<ConfigSource>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            env: Arc::new(|name| std::env::var(name).ok()),
            usage_sink: Arc::new(LogSink),
            database_url: std::env::var("DATABASE_URL").ok(),
            redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
            clock: crate::clock::system(),
            config_source: None,
        }
    }
}

/// Which configuration is in force: counted from 1 at start, with a digest of the configuration as
/// parsed (the catalog file included), so an edit that changes nothing keeps its digest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigVersion {
    pub version: u64,
    pub digest: String,
    /// Unix milliseconds.
    pub loaded_at: i64,
    pub source: String,
}

/// Everything a request reads of the configuration, swapped whole by a reload.
pub struct Live {
    pub catalog: Catalog,
    pub router: Router,
    pub providers: Vec<Arc<Provider>>,
    pub body_limits: BodyLimits,
    pub version: ConfigVersion,
    /// As loaded: the next reload compares itself with it, and a request reads its plain settings
    /// (`[input]`, `server.max_choices`, `traces.propagate`) here.
    pub config: Config,
}

impl Live {
    /// Builds the snapshot of `config`. With a `previous` one, each provider whose configuration is
    /// unchanged is kept as it is (its connections, its keys' rotation and set-asides), and each model
    /// still served the same way keeps its breaker and its measured latency.
    fn build(
        config: Config,
        env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
        clock: &crate::clock::Clock,
        previous: Option<&Live>,
        version: ConfigVersion,
    ) -> Result<Live, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut providers = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            let kept = previous.and_then(|old| {
                let same = old.config.providers.iter().any(|o| o == p);
                same.then(|| old.providers.iter().find(|o| o.name == p.name).cloned()).flatten()
            });
            match kept.map(Ok).unwrap_or_else(|| Provider::from_config_at(p, env, clock.clone()).map(Arc::new)) {
                Ok(provider) => providers.push(provider),
                Err(message) => problems.push(ConfigProblem { path: format!("providers[{i}]"), message }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let catalog = Catalog::new(&config, &providers);
        if let Some(old) = previous {
            catalog.take_over(&old.catalog);
        }
        let router = Router::new(&config.router);
        if let Some(old) = previous {
            router.take_over(&old.router);
        }
        Ok(Live { catalog, router, providers, body_limits: config.server.body_limits(), version, config })
    }
}

/// The digest a [`ConfigVersion`] carries: SHA-256 of the parsed configuration, first 16 hex digits.
fn digest_of(config: &Config) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{config:?}").as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A reload refused: the configuration in force stays.
#[derive(Debug)]
pub struct ReloadRefused {
    pub problems: Vec<ConfigProblem>,
    /// The version that stays in force.
    pub in_force: u64,
}

/// A reload that was taken: the version before it and the one now in force (the same when the file
/// read the same), both read under the reload lock, so two reloads at once cannot both claim a change.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub before: ConfigVersion,
    pub now: ConfigVersion,
}

impl Reloaded {
    pub fn changed(&self) -> bool {
        self.now.version != self.before.version
    }
}

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, "{}", list.join("; "))
    }
}

pub struct AppState {
    pub store: Store,
    pub keys: KeyCache,
    pub limiter: Arc<Limiter>,
    /// Key-cache invalidation between replicas (with Redis).
    pub bus: Option<Arc<crate::bus::Bus>>,
    pub ledger: Arc<Ledger>,
    /// Stored responses of the Responses API.
    pub responses: Arc<crate::response_store::ResponseStore>,
    /// The response cache's entries (opt-in per organisation or request).
    pub cache: Arc<crate::response_cache::ResponseCache>,
    /// The configuration in force (see [`Live`]); read with [`AppState::live`].
    live: ArcSwap<Live>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    config_source: Option<ConfigSource>,
    env: EnvLookup,
    clock: crate::clock::Clock,
    pub master_key: Secret,
    pub usage: Arc<dyn UsageSink>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub header_limits: crate::http::framing::HeaderLimits,
    /// Set when shutdown begins: readiness turns 503.
    pub draining: AtomicBool,
    /// Fired at the drain deadline: streams still running end with an error event.
    pub hard_stop: CancellationToken,
    /// Reported as `created` for models.
    pub created: u64,
    /// Wrong passwords and admin credentials, per source and per account.
    pub throttle: crate::http::auth::Throttle,
    /// Request traces' export (`[traces]`), when configured.
    pub tracer: Option<Arc<crate::otlp::Tracer>>,
}

/// The master key in force, and whether it was generated for this run.
pub struct MasterKey {
    pub key: Secret,
    pub generated: bool,
}

impl AppState {
    pub async fn new(config: &Config, opts: &AppOptions) -> anyhow::Result<(Arc<AppState>, MasterKey)> {
        let store = Store::connect(opts.database_url.as_deref()).await?;
        for plan in crate::tenancy::default_plans() {
            store.seed_plan(&plan).await?;
        }
        let keys = KeyCache::default();
        keys.reload(&store).await?;
        let limiter = match &opts.redis_url {
            Some(url) => Limiter::redis(url, opts.clock.clone()).await.map_err(|e| anyhow::anyhow!(e))?,
            None => Limiter::in_memory(opts.clock.clone()),
        };
        // The spools of gateways that died are in the ledger before the counters are rebuilt from it.
        let ledger = Arc::new(Ledger::open(store.clone(), &config.ledger).await);
        limiter.load(&store).await.map_err(|e| anyhow::anyhow!(e))?;
        let limiter = Arc::new(limiter);
        let bus = match &opts.redis_url {
            Some(url) => Some(Arc::new(crate::bus::Bus::connect(url).await.map_err(|e| anyhow::anyhow!(e))?)),
            None => None,
        };
        let responses =
            Arc::new(crate::response_store::ResponseStore::start(store.clone(), opts.clock.clone(), &config.responses));
        let version = ConfigVersion {
            version: 1,
            digest: digest_of(config),
            loaded_at: (opts.clock)(),
            source: opts.config_source.as_ref().map_or_else(|| "given in memory".to_owned(), ToString::to_string),
        };
        let live = Live::build(config.clone(), opts.env.as_ref(), &opts.clock, None, version)
            .map_err(|problems| anyhow::anyhow!(ReloadRefused { problems, in_force: 0 }.to_string()))?;
        let master = match (opts.env)(&config.auth.master_key_env).filter(|k| !k.trim().is_empty()) {
            Some(key) => MasterKey { key: Secret::new(key.trim()), generated: false },
            None => MasterKey { key: generate_master_key(), generated: true },
        };
        let metrics = Arc::new(crate::metrics::Metrics::new(
            live.catalog.models().iter().map(|m| m.name.clone()),
            live.providers.iter().map(|p| p.name.clone()),
        ));
        let usage: Arc<dyn UsageSink> = Arc::new(crate::metrics::Metered {
            metrics: metrics.clone(),
            inner: Arc::new(Tee(ledger.clone(), opts.usage_sink.clone())),
        });
        // The response cache shares its entries through Redis when the replicas have one.
        let cache = Arc::new(crate::response_cache::ResponseCache::new(bus.as_ref().map(|b| b.connection())));
        let tracer = crate::otlp::Tracer::start(&config.traces, opts.env.as_ref())?;
        let state = AppState {
            store,
            keys,
            limiter,
            bus,
            ledger: ledger.clone(),
            responses,
            cache,
            live: ArcSwap::from_pointee(live),
            reloading: tokio::sync::Mutex::new(()),
            config_source: opts.config_source.clone(),
            env: opts.env.clone(),
            clock: opts.clock.clone(),
            master_key: master.key.clone(),
            usage,
            metrics,
            header_limits: crate::http::framing::HeaderLimits {
                max_header_bytes: config.server.max_header_bytes,
                max_block_bytes: config.server.max_header_block_bytes,
            },
            draining: AtomicBool::new(false),
            hard_stop: CancellationToken::new(),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
            throttle: crate::http::auth::Throttle::default(),
            tracer,
        };
        Ok((Arc::new(state), master))
    }
}

impl AppState {
    /// The configuration in force, for a short read: no reference count is written (a shared
    /// counter every core would contend for), so a request's handful of reads cost next to nothing.
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// The configuration in force, kept: a request's pipeline holds it from admission to its attempts.
    pub fn live_arc(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Reads the configuration again from where it came from, validates it whole, and swaps it in;
    /// requests in flight finish on the one they started with. A configuration that does not load, or
    /// that changes what cannot change while running, is refused with every problem by its path, and
    /// the one in force stays. An unchanged configuration keeps its version.
    pub async fn reload(&self) -> Result<Reloaded, ReloadRefused> {
        let _one = self.reloading.lock().await;
        let current = self.live_arc();
        let before = current.version.clone();
        let in_force = before.version;
        let refused = |path: &str, message: String| ReloadRefused {
            problems: vec![ConfigProblem { path: path.to_owned(), message }],
            in_force,
        };
        let Some(source) = self.config_source.clone() else {
            return Err(refused(
                "",
                "this gateway was given its configuration in memory; there is no file to read again".to_owned(),
            ));
        };
        // Reading the files is blocking I/O.
        let loaded = tokio::task::spawn_blocking(move || source.load())
            .await
            .map_err(|e| refused("", format!("the reload failed: {e}")))?;
        let config = loaded.map_err(|e| match e {
            crate::config::ConfigError::Invalid { problems, .. } => ReloadRefused { problems, in_force },
            read => refused("", read.to_string()),
        })?;
        let fixed = current.config.fixed_changes(&config);
        if !fixed.is_empty() {
            return Err(ReloadRefused { problems: fixed, in_force });
        }
        let digest = digest_of(&config);
        if digest == current.version.digest {
            return Ok(Reloaded { now: before.clone(), before });
        }
        let version = ConfigVersion {
            version: current.version.version + 1,
            digest,
            loaded_at: (self.clock)(),
            source: current.version.source.clone(),
        };
        let live = Live::build(config, self.env.as_ref(), &self.clock, Some(&current), version)
            .map_err(|problems| ReloadRefused { problems, in_force })?;
        self.metrics
            .know(live.catalog.models().iter().map(|m| m.name.clone()), live.providers.iter().map(|p| p.name.clone()));
        let now = live.version.clone();
        self.live.store(Arc::new(live));
        Ok(Reloaded { before, now })
    }

    /// After an admin change to keys, plans or organisations: reload this replica's key cache now and
    /// tell the other replicas to do the same.
    pub async fn keys_changed(&self) -> Result<(), crate::store::StoreError> {
        self.keys.reload(&self.store).await?;
        if let Some(bus) = &self.bus {
            bus.keys_changed();
        }
        Ok(())
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn generate_master_key() -> Secret {
    let mut rng = rand::rng();
    let tail: String = (0..40).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])).collect();
    Secret::new(format!("sk-sy-master-{tail}"))
}
