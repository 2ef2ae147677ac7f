//! The application's shared state, built once from a validated configuration. Tests build it the same
//! way `main` does, with their own environment lookup and usage sink.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;
use tokio_util::sync::CancellationToken;

use crate::config::BodyLimits;
use crate::config::Config;
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
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            env: Arc::new(|name| std::env::var(name).ok()),
            usage_sink: Arc::new(LogSink),
            database_url: std::env::var("DATABASE_URL").ok(),
            redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
            clock: crate::clock::system(),
        }
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
    pub catalog: Catalog,
    pub router: Router,
    pub providers: Vec<Arc<Provider>>,
    pub master_key: Secret,
    pub usage: Arc<dyn UsageSink>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub body_limits: BodyLimits,
    /// The most choices (`n`) one request may ask for.
    pub max_choices: u32,
    pub header_limits: crate::http::framing::HeaderLimits,
    /// What one request may hold (`[input]`).
    pub input: crate::config::InputLimits,
    /// Set when shutdown begins: readiness turns 503.
    pub draining: AtomicBool,
    /// Fired at the drain deadline: streams still running end with an error event.
    pub hard_stop: CancellationToken,
    /// Reported as `created` for models.
    pub created: u64,
    /// Wrong passwords and admin credentials, per source and per account.
    pub throttle: crate::http::auth::Throttle,
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
        let providers = config
            .providers
            .iter()
            .map(|p| Provider::from_config(p, opts.env.as_ref()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e))?;
        let catalog = Catalog::new(config, &providers);
        let master = match (opts.env)(&config.auth.master_key_env).filter(|k| !k.trim().is_empty()) {
            Some(key) => MasterKey { key: Secret::new(key.trim()), generated: false },
            None => MasterKey { key: generate_master_key(), generated: true },
        };
        let metrics = Arc::new(crate::metrics::Metrics::new(
            catalog.models().iter().map(|m| m.name.clone()),
            providers.iter().map(|p| p.name.clone()),
        ));
        let usage: Arc<dyn UsageSink> = Arc::new(crate::metrics::Metered {
            metrics: metrics.clone(),
            inner: Arc::new(Tee(ledger.clone(), opts.usage_sink.clone())),
        });
        // The response cache shares its entries through Redis when the replicas have one.
        let cache = Arc::new(crate::response_cache::ResponseCache::new(bus.as_ref().map(|b| b.connection())));
        let state = AppState {
            store,
            keys,
            limiter,
            bus,
            ledger: ledger.clone(),
            responses,
            cache,
            catalog,
            router: Router::new(&config.router),
            providers,
            master_key: master.key.clone(),
            usage,
            metrics,
            body_limits: config.server.body_limits(),
            max_choices: config.server.max_choices,
            input: config.input,
            header_limits: crate::http::framing::HeaderLimits {
                max_header_bytes: config.server.max_header_bytes,
                max_block_bytes: config.server.max_header_block_bytes,
            },
            draining: AtomicBool::new(false),
            hard_stop: CancellationToken::new(),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
            throttle: crate::http::auth::Throttle::default(),
        };
        Ok((Arc::new(state), master))
    }
}

impl AppState {
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
