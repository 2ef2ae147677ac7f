//! Organisations, plans and virtual keys: the domain rules around the store, and the in-memory key cache
//! that keeps the database off the request path.
//!
//! The cache maps a key's SHA-256 to its record. It is loaded at start and reloaded after every admin
//! change, so a revocation takes effect at once on this replica. (Several replicas: invalidate over Redis
//! pub/sub, with the tenancy work's Redis counters.)

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::keys;
use crate::store::{KeyRow, PlanRow, Store, StoreError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

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
    pub organization_id: String,
    pub plan: String,
    pub limits: crate::limits::PromptLimits,
    pub expires_at: Option<i64>,
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<ActiveKey>>>,
}

impl KeyCache {
    /// Replaces the cache's contents with the store's active keys.
    pub async fn reload(&self, store: &Store) -> Result<usize, StoreError> {
        let rows = store.active_keys().await?;
        let plans: HashMap<String, PlanRow> = store.plans().await?.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut map: HashMap<String, Arc<ActiveKey>> = HashMap::new();
        for r in rows {
            let previous = r.previous_hash.clone().zip(r.previous_expires_at);
            let key = Arc::new(active(r.clone(), &plans));
            map.insert(r.key_hash.clone(), key.clone());
            // During a rotation's grace period the old secret still works, until its own deadline.
            if let Some((hash, until)) = previous {
                let old =
                    ActiveKey { expires_at: Some(key.expires_at.map_or(until, |e| e.min(until))), ..(*key).clone() };
                map.insert(hash, Arc::new(old));
            }
        }
        let n = map.len();
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(n)
    }

    /// The key for a presented secret, if it is well formed, known, active and unexpired. No I/O.
    pub fn authenticate(&self, presented: &str, now_ms: i64) -> Option<Arc<ActiveKey>> {
        if !keys::is_well_formed(presented) {
            return None;
        }
        let found = self.by_hash.read().unwrap_or_else(|p| p.into_inner()).get(&keys::hash(presented)).cloned()?;
        found.expires_at.is_none_or(|at| at > now_ms).then_some(found)
    }
}

fn active(r: KeyRow, plans: &HashMap<String, PlanRow>) -> ActiveKey {
    let plan = plans.get(&r.plan);
    ActiveKey {
        id: r.id,
        organization_id: r.organization_id,
        limits: crate::limits::PromptLimits {
            daily: plan.and_then(|p| p.daily_prompt_quota),
            monthly: plan.and_then(|p| p.monthly_prompt_quota),
        },
        plan: r.plan,
        expires_at: r.expires_at,
        models: r.models.and_then(|m| serde_json::from_str(&m).ok()),
    }
}
