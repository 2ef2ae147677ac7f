//! Organisations, plans and virtual keys: the domain rules around the store, and the in-memory key cache
//! that keeps the database off the request path.
//!
//! The cache maps a key's SHA-256 to its record. It is loaded at start and reloaded after every admin
//! change, so a revocation takes effect at once on this replica. (Several replicas: invalidate over Redis
//! pub/sub, with the tenancy work's Redis counters.)

pub use crate::clock::now_ms;
use crate::keys;
use crate::store::{KeyRow, OrganizationRow, PlanRow, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An organisation's allowed regions when it names none: global only.
pub const DEFAULT_REGIONS: &str = r#"["global"]"#;

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The plans of the product page (shared/seeds/001), seeded once as editable examples. `None` is unlimited.
pub fn default_plans() -> Vec<PlanRow> {
    let now = now_ms();
    let plan = |name: &str, alias: &str, daily: Option<i64>, monthly: Option<i64>| PlanRow {
        name: name.to_owned(),
        public_alias: Some(alias.to_owned()),
        daily_prompt_quota: daily,
        monthly_prompt_quota: monthly,
        monthly_token_allowance: None,
        rpm_limit: None,
        tpm_limit: None,
        max_parallel: None,
        budget_micros: None,
        budget_period: None,
        created_at: now,
        updated_at: now,
    };
    vec![
        plan("free", "smart-route-mini", Some(200), Some(1000)),
        plan("plus", "smart-route", Some(500), Some(5000)),
        plan("pro", "smart-route-deep", Some(3000), Some(30000)),
        plan("ultimate", "smart-route-ultra", Some(5000), Some(70000)),
        plan("max", "smart-route-turbo", Some(10000), Some(100000)),
        plan("unlimited", "smart-route-infinite", None, None),
    ]
}

/// A key as the request path sees it.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub id: String,
    /// What routing must respect for this key (its allowlist, its organisation's blocked providers).
    pub caller: crate::routing::Caller,
    pub organization_id: String,
    pub plan: String,
    pub limits: crate::limits::Limits,
    pub expires_at: Option<i64>,
    pub models: Option<Vec<String>>,
    /// The organisation opted in to the response cache: how long an answer is kept, in seconds.
    pub cache_ttl_seconds: Option<i64>,
}

#[derive(Debug, Default)]
pub struct KeyCache {
    /// The keys, and the ticket of the reload that wrote them.
    by_hash: RwLock<(u64, HashMap<String, Arc<ActiveKey>>)>,
    /// Tickets in the order reloads start: a reload that began earlier (so read older rows) never
    /// overwrites one that began later, however the two interleave.
    next_ticket: std::sync::atomic::AtomicU64,
}

impl KeyCache {
    /// Replaces the cache's contents with the store's active keys.
    pub async fn reload(&self, store: &Store) -> Result<usize, StoreError> {
        let ticket = self.next_ticket.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let rows = store.active_keys().await?;
        let plans: HashMap<String, PlanRow> = store.plans().await?.into_iter().map(|p| (p.name.clone(), p)).collect();
        // Each organisation's routing settings, read once for all its keys.
        let orgs: HashMap<String, OrgRouting> =
            store.all_organizations().await?.into_iter().map(|o| (o.id.clone(), OrgRouting::of(&o))).collect();
        let mut map: HashMap<String, Arc<ActiveKey>> = HashMap::new();
        for r in rows {
            let previous = r.previous_hash.clone().zip(r.previous_expires_at);
            let mut key = active(r.clone(), &plans);
            if let Some(org) = orgs.get(&key.organization_id) {
                org.apply(&mut key.caller);
                // The key's own setting wins over its organisation's.
                key.cache_ttl_seconds = key.cache_ttl_seconds.or(org.cache_ttl_seconds);
            }
            let key = Arc::new(key);
            map.insert(r.key_hash.clone(), key.clone());
            // During a rotation's grace period the old secret still works, until its own deadline.
            if let Some((hash, until)) = previous {
                let old =
                    ActiveKey { expires_at: Some(key.expires_at.map_or(until, |e| e.min(until))), ..(*key).clone() };
                map.insert(hash, Arc::new(old));
            }
        }
        let n = map.len();
        let mut cache = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        if ticket > cache.0 {
            *cache = (ticket, map);
        }
        Ok(n)
    }

    /// The key for a presented secret, if it is well formed, known, active and unexpired. No I/O.
    pub fn authenticate(&self, presented: &str, now_ms: i64) -> Option<Arc<ActiveKey>> {
        if !keys::is_well_formed(presented) {
            return None;
        }
        let found = self.by_hash.read().unwrap_or_else(|p| p.into_inner()).1.get(&keys::hash(presented)).cloned()?;
        found.expires_at.is_none_or(|at| at > now_ms).then_some(found)
    }
}

/// What an organisation's settings say about routing its keys' requests.
struct OrgRouting {
    blocked_providers: Vec<String>,
    allowed_regions: Vec<String>,
    cheaper_swaps: bool,
    model_fallbacks: bool,
    stream_continuation: bool,
    cache_ttl_seconds: Option<i64>,
}

impl OrgRouting {
    fn of(o: &OrganizationRow) -> OrgRouting {
        OrgRouting {
            blocked_providers: serde_json::from_str(&o.blocked_providers).unwrap_or_default(),
            // Unreadable (never written so): the default, global only.
            allowed_regions: serde_json::from_str(&o.allowed_regions)
                .unwrap_or_else(|_| vec![crate::config::GLOBAL_REGION.to_owned()]),
            cheaper_swaps: o.allow_cheaper_swaps,
            model_fallbacks: o.model_fallbacks,
            stream_continuation: o.stream_continuation,
            cache_ttl_seconds: o.response_cache_ttl_seconds,
        }
    }

    fn apply(&self, caller: &mut crate::routing::Caller) {
        caller.blocked_providers.clone_from(&self.blocked_providers);
        caller.allowed_regions = Some(self.allowed_regions.clone());
        caller.cheaper_swaps = self.cheaper_swaps;
        caller.exact_model = !self.model_fallbacks;
        caller.no_stream_continuation = !self.stream_continuation;
    }
}

fn active(r: KeyRow, plans: &HashMap<String, PlanRow>) -> ActiveKey {
    let plan = plans.get(&r.plan);
    let models: Option<Vec<String>> = r.models.and_then(|m| serde_json::from_str(&m).ok());
    let limits = limits(&r.limits, plan);
    ActiveKey {
        id: r.id,
        caller: crate::routing::Caller {
            allowed_models: models.clone(),
            blocked_providers: Vec::new(),
            allowed_regions: Some(vec![crate::config::GLOBAL_REGION.to_owned()]),
            plan_alias: plan.and_then(|p| p.public_alias.clone()),
            cheaper_swaps: false,
            exact_model: false,
            no_stream_continuation: false,
            priced_only: limits.budget_micros.is_some(),
        },
        organization_id: r.organization_id,
        limits,
        plan: r.plan,
        expires_at: r.expires_at,
        models,
        cache_ttl_seconds: r.response_cache_ttl_seconds,
    }
}

/// A key's limits: each of its own settings, or its plan's. The budget and its period go together.
fn limits(own: &crate::store::KeyLimits, plan: Option<&PlanRow>) -> crate::limits::Limits {
    let (budget_micros, period) = match own.budget_micros {
        Some(b) => (Some(b), own.budget_period.as_deref()),
        None => (plan.and_then(|p| p.budget_micros), plan.and_then(|p| p.budget_period.as_deref())),
    };
    crate::limits::Limits {
        daily: own.daily_prompt_quota.or(plan.and_then(|p| p.daily_prompt_quota)),
        monthly: own.monthly_prompt_quota.or(plan.and_then(|p| p.monthly_prompt_quota)),
        rpm: own.rpm_limit.or(plan.and_then(|p| p.rpm_limit)),
        tpm: own.tpm_limit.or(plan.and_then(|p| p.tpm_limit)),
        max_parallel: own.max_parallel.or(plan.and_then(|p| p.max_parallel)),
        budget_micros,
        budget_period: period.and_then(crate::limits::Period::parse).unwrap_or_default(),
        monthly_token_allowance: plan.and_then(|p| p.monthly_token_allowance),
    }
}

/// A new organisation's settings; `OrgSpec::named` gives the defaults (fallbacks and continuation on,
/// cheaper swaps off, global only, no cache).
#[derive(Debug)]
pub struct OrgSpec {
    pub name: String,
    pub blocked_providers: Vec<String>,
    pub allow_cheaper_swaps: bool,
    pub model_fallbacks: bool,
    pub stream_continuation: bool,
    /// Already checked and stored as JSON (see the admin API's region check).
    pub allowed_regions_json: String,
    pub response_cache_ttl_seconds: Option<i64>,
}

impl OrgSpec {
    pub fn named(name: String) -> OrgSpec {
        OrgSpec {
            name,
            blocked_providers: Vec::new(),
            allow_cheaper_swaps: false,
            model_fallbacks: true,
            stream_continuation: true,
            allowed_regions_json: DEFAULT_REGIONS.to_owned(),
            response_cache_ttl_seconds: None,
        }
    }
}

/// Creates an organisation and writes its audit row (the admin API and the CLI both come here).
pub async fn create_organization(store: &Store, spec: OrgSpec, actor: &str) -> Result<OrganizationRow, StoreError> {
    let now = now_ms();
    let org = OrganizationRow {
        id: new_id(),
        name: spec.name,
        blocked_providers: serde_json::to_string(&spec.blocked_providers).unwrap_or_else(|_| "[]".into()),
        allow_cheaper_swaps: spec.allow_cheaper_swaps,
        model_fallbacks: spec.model_fallbacks,
        stream_continuation: spec.stream_continuation,
        allowed_regions: spec.allowed_regions_json,
        response_cache_ttl_seconds: spec.response_cache_ttl_seconds,
        created_at: now,
        updated_at: now,
    };
    store.insert_organization(&org).await?;
    let view = organization_view(&org);
    audit(store, actor, "organization.create", ("organization", &org.id), None, Some(&view)).await;
    Ok(org)
}

/// An organisation as the admin API and the audit log show it.
pub fn organization_view(org: &OrganizationRow) -> serde_json::Value {
    serde_json::json!({
        "id": org.id, "object": "organization", "name": org.name,
        "blocked_providers": serde_json::from_str::<serde_json::Value>(&org.blocked_providers).unwrap_or(serde_json::json!([])),
        "allow_cheaper_swaps": org.allow_cheaper_swaps, "model_fallbacks": org.model_fallbacks,
        "stream_continuation": org.stream_continuation,
        "allowed_regions": serde_json::from_str::<serde_json::Value>(&org.allowed_regions).unwrap_or(serde_json::json!(["global"])),
        "response_cache_ttl_seconds": org.response_cache_ttl_seconds,
        "created_at": crate::limits::rfc3339(org.created_at), "updated_at": crate::limits::rfc3339(org.updated_at),
    })
}

/// What a new key needs; everything but the organisation has a default.
#[derive(Debug, Default)]
pub struct KeySpec {
    pub organization_id: String,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Overrides of the plan's limits.
    pub limits: crate::store::KeyLimits,
    /// The key's own response cache opt-in, in seconds.
    pub response_cache_ttl_seconds: Option<i64>,
}

/// Why a key could not be made: a field the caller must fix.
#[derive(Debug, thiserror::Error)]
pub enum KeySpecError {
    #[error("No organization with id '{0}'.")]
    UnknownOrganization(String),
    #[error("No plan named '{0}'.")]
    UnknownPlan(String),
    #[error("'expires_at' must be in the future (Unix milliseconds).")]
    ExpiryInThePast,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeySpecError {
    pub fn param(&self) -> &'static str {
        match self {
            KeySpecError::UnknownOrganization(_) => "organization_id",
            KeySpecError::UnknownPlan(_) => "plan",
            KeySpecError::ExpiryInThePast => "expires_at",
            KeySpecError::Store(_) => "",
        }
    }
}

/// Creates a key (the admin API and the CLI both come here) and returns its row and its secret, which is
/// never stored and never shown again.
pub async fn create_key(store: &Store, spec: KeySpec) -> Result<(KeyRow, crate::secret::Secret), KeySpecError> {
    if store.organization(&spec.organization_id).await?.is_none() {
        return Err(KeySpecError::UnknownOrganization(spec.organization_id));
    }
    let plan = spec.plan.unwrap_or_else(|| "free".to_owned());
    if store.plan(&plan).await?.is_none() {
        return Err(KeySpecError::UnknownPlan(plan));
    }
    let now = now_ms();
    if spec.expires_at.is_some_and(|at| at <= now) {
        return Err(KeySpecError::ExpiryInThePast);
    }
    let new = keys::generate();
    let row = KeyRow {
        id: new_id(),
        organization_id: spec.organization_id,
        name: spec.name.unwrap_or_else(|| "default".to_owned()),
        key_hash: new.hash,
        display_prefix: new.display_prefix,
        plan,
        status: "active".to_owned(),
        expires_at: spec.expires_at,
        models: spec.models.map(|m| serde_json::to_string(&m).unwrap_or_default()),
        metadata: serde_json::Value::Object(spec.metadata).to_string(),
        created_at: now,
        updated_at: now,
        revoked_at: None,
        previous_hash: None,
        previous_expires_at: None,
        response_cache_ttl_seconds: spec.response_cache_ttl_seconds,
        limits: spec.limits,
    };
    store.insert_key(&row).await?;
    Ok((row, new.secret))
}

/// Records an admin action in the audit log, whoever took it: `actor` is a principal's (`master_key`,
/// `account:<id>`, `management_key:<id>`), `key:<id>` for a key acting on itself, or `cli`. The JSON
/// given is the object's public view, which never holds a secret. A failed write is logged, not fatal.
pub async fn audit(
    store: &Store,
    actor: &str,
    action: &str,
    target: (&str, &str),
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) {
    let row = crate::store::AuditRow {
        id: new_id(),
        at: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target_type: target.0.to_owned(),
        target_id: target.1.to_owned(),
        before_state: before.map(serde_json::Value::to_string),
        after_state: after.map(serde_json::Value::to_string),
    };
    if let Err(e) = store.insert_audit(&row).await {
        tracing::error!(error = %e, action, target_id = target.1, "audit log write failed");
    }
}
