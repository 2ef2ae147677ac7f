//! The admin API under `/admin/v1`: organisations, plans and virtual keys, for the caller's
//! [`Principal`] (its role decides the routes, its organisation the rows it sees; see `auth`).
//! Bodies reject unknown fields; lists are paginated; every change reloads the key cache.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::body::Query;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::keys;
use crate::store::{KeyRow, StoreError};
use crate::tenancy::{KeySpec, KeySpecError, create_key as create_key_in, now_ms};
use axum::extract::Extension;

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        if e.is_unavailable() { GatewayError::database_unavailable() } else { GatewayError::internal() }
    }
}

/// The admin API's guard: while the ledger writer sees the database down, admin calls answer 503 at
/// once instead of each waiting out the pool's timeout.
pub async fn database_up(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !state.ledger.database_ok() {
        return GatewayError::database_unavailable().into_response();
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    search: Option<String>,
    organization_id: Option<String>,
    /// `name`, `created_at` (the default) or `updated_at`; a leading `-` sorts descending.
    sort: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Page {
    fn bounds(&self) -> (i64, i64) {
        (self.limit.unwrap_or(50).clamp(1, 500), self.offset.unwrap_or(0).max(0))
    }

    fn sort(&self) -> Result<crate::store::Sort, GatewayError> {
        match self.sort.as_deref() {
            None => Ok(crate::store::Sort::default()),
            Some(s) => crate::store::Sort::parse(s).ok_or_else(|| {
                GatewayError::invalid_value(
                    "'sort' must be name, created_at or updated_at, with a leading '-' for descending.",
                    "sort",
                )
            }),
        }
    }
}

pub(crate) fn check_name(name: &str, param: &str) -> Result<(), GatewayError> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(GatewayError::invalid_value(format!("'{param}' must be 1-200 printable characters."), param));
    }
    Ok(())
}

/// Records an admin action by `actor` (a principal's actor, or `key:<id>` for a key on itself). The JSON
/// given is the public view of the object, which never holds a secret.
pub(crate) async fn audit_as(
    state: &AppState,
    actor: &str,
    action: &str,
    target_type: &str,
    target_id: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    crate::tenancy::audit(&state.store, actor, action, (target_type, target_id), before, after).await;
}

pub async fn list_audit(
    State(state): State<Arc<AppState>>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, GatewayError> {
    let (limit, offset) = page.bounds();
    let rows = state.store.audit(limit, offset).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
            json!({"id": r.id, "at": ts(r.at), "actor": r.actor, "action": r.action, "target_type": r.target_type,
                   "target_id": r.target_id, "before": parse(r.before_state), "after": parse(r.after_state)})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "limit": limit, "offset": offset})))
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    name: String,
    #[serde(default)]
    blocked_providers: Vec<String>,
    #[serde(default)]
    allow_cheaper_swaps: bool,
    #[serde(default = "yes")]
    model_fallbacks: bool,
    #[serde(default = "yes")]
    stream_continuation: bool,
    allowed_regions: Option<Vec<String>>,
    response_cache_ttl_seconds: Option<i64>,
}

fn yes() -> bool {
    true
}

pub async fn create_organization(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: NewOrganization = body::read_json(&headers, body, state.live().body_limits).await?;
    check_name(&req.name, "name")?;
    let default = [crate::config::GLOBAL_REGION.to_owned()];
    let allowed_regions = regions_json(&state, req.allowed_regions.as_deref().unwrap_or(&default))?;
    let spec = crate::tenancy::OrgSpec {
        name: req.name,
        blocked_providers: req.blocked_providers,
        allow_cheaper_swaps: req.allow_cheaper_swaps,
        model_fallbacks: req.model_fallbacks,
        stream_continuation: req.stream_continuation,
        allowed_regions_json: allowed_regions,
        response_cache_ttl_seconds: cache_ttl(req.response_cache_ttl_seconds)?,
    };
    let org = crate::tenancy::create_organization(&state.store, spec, &who.actor).await?;
    let view = crate::tenancy::organization_view(&org);
    Ok(created(view))
}

/// A key's response cache TTL as given: `null` for its organisation's, 0 for off, else as
/// [`cache_ttl`].
fn key_cache_ttl(ttl: Option<i64>) -> Result<Option<i64>, GatewayError> {
    match ttl {
        Some(0) => Ok(Some(0)),
        other => cache_ttl(other),
    }
}

/// A response cache TTL as given: 1 second to 30 days, `null` (or 0) for off.
fn cache_ttl(ttl: Option<i64>) -> Result<Option<i64>, GatewayError> {
    match ttl {
        None | Some(0) => Ok(None),
        Some(s) if (1..=crate::http::cache::MAX_TTL_SECONDS).contains(&s) => Ok(Some(s)),
        Some(_) => Err(GatewayError::invalid_value(
            format!(
                "'response_cache_ttl_seconds' must be 1 to {} seconds, or null to turn the cache off.",
                crate::http::cache::MAX_TTL_SECONDS
            ),
            "response_cache_ttl_seconds",
        )),
    }
}

/// An organisation's allowed regions as stored, once each names a region some configured model is served
/// from (a misspelt region would quietly keep every model out).
fn regions_json(state: &AppState, regions: &[String]) -> Result<String, GatewayError> {
    let live = state.live();
    let known: std::collections::BTreeSet<&str> = live
        .catalog
        .models()
        .iter()
        .map(|m| m.region.as_str())
        .chain(live.providers.iter().filter_map(|p| p.region.as_deref()))
        .collect();
    if regions.is_empty() {
        return Err(GatewayError::invalid_value(
            format!(
                "allowed_regions must name at least one region (known: {}).",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "allowed_regions",
        ));
    }
    // With no models configured there is nothing to check against: any well-formed name.
    if let Some(bad) =
        regions.iter().find(|r| !crate::config::valid_region(r) || (!known.is_empty() && !known.contains(r.as_str())))
    {
        return Err(GatewayError::invalid_value(
            format!(
                "No configured model is served from region '{bad}' (known: {}).",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "allowed_regions",
        ));
    }
    let mut unique: Vec<&str> = regions.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    Ok(serde_json::to_string(&unique).unwrap_or_else(|_| crate::tenancy::DEFAULT_REGIONS.into()))
}

fn not_found(what: &str, id: &str) -> GatewayError {
    GatewayError::not_found(format!("No {what} with id '{id}'."))
}

/// What an organisation's own principals (its admins, its management keys) may give a key: a plan its
/// keys already have (or the default), and limits no looser than that plan's. Plans and their limits are
/// the gateway admin's to hand out.
async fn within_reach(
    state: &AppState,
    who: &Principal,
    organization_id: &str,
    plan: &str,
    limits: &crate::store::KeyLimits,
) -> Result<(), GatewayError> {
    if who.role == super::auth::Role::Admin {
        return Ok(());
    }
    if plan != "free" && !state.store.organization_has_plan(organization_id, plan).await? {
        return Err(GatewayError::forbidden(format!(
            "Plan '{plan}' is not one this organization's keys have; a gateway admin assigns new plans."
        )));
    }
    let Some(p) = state.store.plan(plan).await? else { return Ok(()) };
    // Budgets compare over a month: $10 a day is not within $10 a month.
    let per_month = |micros: Option<i64>, period: Option<&str>| {
        micros.map(|m| {
            m.saturating_mul(match period {
                Some("day") => 31,
                Some("week") => 5,
                _ => 1,
            })
        })
    };
    let own_budget = per_month(limits.budget_micros, limits.budget_period.as_deref());
    let plan_budget = per_month(p.budget_micros, p.budget_period.as_deref());
    for (field, own, cap) in [
        ("daily_prompt_quota", limits.daily_prompt_quota, p.daily_prompt_quota),
        ("monthly_prompt_quota", limits.monthly_prompt_quota, p.monthly_prompt_quota),
        ("rpm_limit", limits.rpm_limit, p.rpm_limit),
        ("tpm_limit", limits.tpm_limit, p.tpm_limit),
        ("max_parallel", limits.max_parallel, p.max_parallel),
        ("budget_usd", own_budget, plan_budget),
    ] {
        if let (Some(own), Some(cap)) = (own, cap)
            && own > cap
        {
            return Err(GatewayError::forbidden(format!(
                "'{field}' may not be looser than plan '{plan}' allows; a gateway admin can raise it."
            )));
        }
    }
    Ok(())
}

/// A key's model allowlist as given, once every entry names something a request could ask for (a
/// misspelt entry would quietly allow nothing); the refusal says what the entry may have meant.
fn check_models(state: &AppState, models: &[String]) -> Result<(), GatewayError> {
    let catalog = &state.live().catalog;
    if let Some(bad) = models.iter().find(|m| !catalog.names(m)) {
        let close = catalog.close_to(bad);
        let hint = if close.is_empty() {
            "; GET /v1/models lists what there is".to_owned()
        } else {
            format!("; did you mean {}?", close.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", "))
        };
        return Err(GatewayError::invalid_value(
            format!("'models' entry '{bad}' names no model, alias or tier{hint}"),
            "models",
        ));
    }
    Ok(())
}

/// A key the caller may see (its organisation's, or any for the whole gateway's), else "not found".
async fn visible_key(state: &AppState, who: &Principal, id: &str) -> Result<KeyRow, GatewayError> {
    state.store.key(id).await?.filter(|k| who.sees(&k.organization_id)).ok_or_else(|| not_found("key", id))
}

pub async fn list_organizations(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, GatewayError> {
    let (limit, offset) = page.bounds();
    let orgs = match &who.organization_id {
        // One organisation's people see that organisation only.
        Some(own) => state.store.organization(own).await?.into_iter().collect(),
        None => state.store.organizations(page.search.as_deref(), page.sort()?, limit, offset).await?,
    };
    Ok(Json(
        json!({"object": "list", "data": orgs.iter().map(crate::tenancy::organization_view).collect::<Vec<_>>(), "limit": limit, "offset": offset}),
    ))
}

pub async fn get_organization(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let org = state
        .store
        .organization(&id)
        .await?
        .filter(|o| who.sees(&o.id))
        .ok_or_else(|| not_found("organization", &id))?;
    Ok(Json(crate::tenancy::organization_view(&org)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPatch {
    name: Option<String>,
    blocked_providers: Option<Vec<String>>,
    allow_cheaper_swaps: Option<bool>,
    model_fallbacks: Option<bool>,
    stream_continuation: Option<bool>,
    allowed_regions: Option<Vec<String>>,
    /// Absent: unchanged; `null` or 0: off.
    #[serde(default, deserialize_with = "nullable")]
    response_cache_ttl_seconds: Option<Option<i64>>,
}

pub async fn update_organization(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let patch: OrganizationPatch = body::read_json(&headers, body, state.live().body_limits).await?;
    let mut org = state.store.organization(&id).await?.ok_or_else(|| not_found("organization", &id))?;
    let before = crate::tenancy::organization_view(&org);
    if let Some(name) = patch.name {
        check_name(&name, "name")?;
        org.name = name;
    }
    if let Some(blocked) = patch.blocked_providers {
        org.blocked_providers = serde_json::to_string(&blocked).unwrap_or_else(|_| "[]".into());
    }
    if let Some(allow) = patch.allow_cheaper_swaps {
        org.allow_cheaper_swaps = allow;
    }
    if let Some(on) = patch.model_fallbacks {
        org.model_fallbacks = on;
    }
    if let Some(on) = patch.stream_continuation {
        org.stream_continuation = on;
    }
    if let Some(regions) = &patch.allowed_regions {
        org.allowed_regions = regions_json(&state, regions)?;
    }
    if let Some(ttl) = patch.response_cache_ttl_seconds {
        org.response_cache_ttl_seconds = cache_ttl(ttl)?;
    }
    org.updated_at = now_ms();
    state.store.update_organization(&org).await?;
    // Blocked providers and allowed regions travel with the cached keys.
    state.keys_changed().await?;
    let after = crate::tenancy::organization_view(&org);
    audit_as(&state, &who.actor, "organization.update", "organization", &id, Some(&before), Some(&after)).await;
    Ok(Json(after))
}

pub async fn delete_organization(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let before = state.store.organization(&id).await?.ok_or_else(|| not_found("organization", &id))?;
    if !state.store.delete_organization(&id).await? {
        return Err(not_found("organization", &id));
    }
    audit_as(
        &state,
        &who.actor,
        "organization.delete",
        "organization",
        &id,
        Some(&crate::tenancy::organization_view(&before)),
        None,
    )
    .await;
    state.keys_changed().await?;
    Ok(Json(json!({"id": id, "object": "organization", "deleted": true})))
}

pub async fn list_plans(State(state): State<Arc<AppState>>) -> Result<Json<Value>, GatewayError> {
    Ok(Json(json!({"object": "list", "data": state.store.plans().await?})))
}

pub async fn get_plan(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let plan =
        state.store.plan(&name).await?.ok_or_else(|| GatewayError::not_found(format!("No plan named '{name}'.")))?;
    Ok(Json(serde_json::to_value(plan).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    organization_id: String,
    name: Option<String>,
    plan: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "timestamp")]
    expires_at: Option<i64>,
    metadata: Option<serde_json::Map<String, Value>>,
    // The limit fields are listed here, not flattened: serde cannot reject unknown fields across a flatten.
    daily_prompt_quota: Option<i64>,
    monthly_prompt_quota: Option<i64>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel: Option<i64>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
    response_cache_ttl_seconds: Option<i64>,
}

/// A key's own limits as the admin API writes them; left out means "the plan's".
#[derive(Debug, Default)]
pub struct LimitFields {
    daily_prompt_quota: Option<i64>,
    monthly_prompt_quota: Option<i64>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel: Option<i64>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
}

impl LimitFields {
    /// Checks every value (no negative, NaN or absurd numbers) and turns the budget into micro-USD.
    fn validate(self) -> Result<crate::store::KeyLimits, GatewayError> {
        for (field, v) in [
            ("daily_prompt_quota", self.daily_prompt_quota),
            ("monthly_prompt_quota", self.monthly_prompt_quota),
            ("rpm_limit", self.rpm_limit),
            ("tpm_limit", self.tpm_limit),
            ("max_parallel", self.max_parallel),
        ] {
            if v.is_some_and(|v| !(0..=1_000_000_000_000).contains(&v)) {
                return Err(GatewayError::invalid_value(
                    format!("'{field}' must be between 0 and 10^12, or null."),
                    field,
                ));
            }
        }
        let budget_micros = match self.budget_usd {
            None => None,
            Some(usd) if usd.is_finite() && (0.0..=1e9).contains(&usd) => Some((usd * 1e6).round() as i64),
            Some(_) => {
                return Err(GatewayError::invalid_value("'budget_usd' must be between 0 and 10^9 USD.", "budget_usd"));
            }
        };
        if let Some(p) = &self.budget_period
            && !matches!(p.as_str(), "day" | "week" | "month")
        {
            return Err(GatewayError::invalid_value("'budget_period' must be day, week or month.", "budget_period"));
        }
        Ok(crate::store::KeyLimits {
            daily_prompt_quota: self.daily_prompt_quota,
            monthly_prompt_quota: self.monthly_prompt_quota,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel: self.max_parallel,
            budget_micros,
            budget_period: self.budget_period,
        })
    }
}

fn key_json(k: &KeyRow) -> Value {
    json!({
        "id": k.id, "object": "api_key", "organization_id": k.organization_id, "name": k.name,
        "display_prefix": k.display_prefix, "plan": k.plan, "status": k.status, "expires_at": ts_opt(k.expires_at),
        "models": k.models.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "metadata": serde_json::from_str::<Value>(&k.metadata).unwrap_or(json!({})),
        "daily_prompt_quota": k.limits.daily_prompt_quota, "monthly_prompt_quota": k.limits.monthly_prompt_quota,
        "rpm_limit": k.limits.rpm_limit, "tpm_limit": k.limits.tpm_limit, "max_parallel": k.limits.max_parallel,
        "budget_usd": k.limits.budget_micros.map(|m| m as f64 / 1e6), "budget_period": k.limits.budget_period,
        "response_cache_ttl_seconds": k.response_cache_ttl_seconds,
        "created_at": ts(k.created_at), "updated_at": ts(k.updated_at), "revoked_at": ts_opt(k.revoked_at),
        // During a rotation's grace period: until when the old secret works.
        "previous_expires_at": ts_opt(k.previous_expires_at.filter(|_| k.previous_hash.is_some())),
    })
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: NewKey = body::read_json(&headers, body, state.live().body_limits).await?;
    if let Some(name) = &req.name {
        check_name(name, "name")?;
    }
    if let Some(models) = &req.models {
        check_models(&state, models)?;
    }
    // Another organisation's id is "not found" to an organisation's own principals.
    let organization_id = who.scope(Some(req.organization_id))?.unwrap_or_default();
    let spec = KeySpec {
        organization_id,
        name: req.name,
        plan: req.plan,
        models: req.models,
        expires_at: req.expires_at,
        metadata: req.metadata.unwrap_or_default(),
        limits: LimitFields {
            daily_prompt_quota: req.daily_prompt_quota,
            monthly_prompt_quota: req.monthly_prompt_quota,
            rpm_limit: req.rpm_limit,
            tpm_limit: req.tpm_limit,
            max_parallel: req.max_parallel,
            budget_usd: req.budget_usd,
            budget_period: req.budget_period,
        }
        .validate()?,
        response_cache_ttl_seconds: key_cache_ttl(req.response_cache_ttl_seconds)?,
    };
    within_reach(&state, &who, &spec.organization_id, spec.plan.as_deref().unwrap_or("free"), &spec.limits).await?;
    let (row, secret) = match create_key_in(&state.store, spec).await {
        Ok(made) => made,
        Err(KeySpecError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(GatewayError::invalid_value(e.to_string(), e.param())),
    };
    state.keys_changed().await?;
    let view = key_json(&row);
    audit_as(&state, &who.actor, "key.create", "api_key", &row.id, None, Some(&view)).await;
    let mut out = view;
    // The only time the secret is shown.
    out["key"] = Value::String(secret.expose().to_owned());
    Ok(created(out))
}

pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, GatewayError> {
    let (limit, offset) = page.bounds();
    let org = who.scope(page.organization_id.clone())?;
    let keys = state.store.keys(org.as_deref(), page.search.as_deref(), page.sort()?, limit, offset).await?;
    Ok(Json(
        json!({"object": "list", "data": keys.iter().map(key_json).collect::<Vec<_>>(), "limit": limit, "offset": offset}),
    ))
}

pub async fn get_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let key = visible_key(&state, &who, &id).await?;
    Ok(Json(key_json(&key)))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let before = visible_key(&state, &who, &id).await?;
    state.store.revoke_key(&id, now_ms()).await?;
    state.keys_changed().await?;
    let key = state.store.key(&id).await?.ok_or_else(|| not_found("key", &id))?;
    audit_as(&state, &who.actor, "key.revoke", "api_key", &id, Some(&key_json(&before)), Some(&key_json(&key))).await;
    Ok(Json(key_json(&key)))
}

/// `DELETE /admin/v1/keys/{id}`: the key is gone at once (every replica within the cache's reload); its
/// usage rows and audit trail stay.
pub async fn delete_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let before = visible_key(&state, &who, &id).await?;
    if !state.store.delete_key(&id).await? {
        return Err(not_found("key", &id));
    }
    state.keys_changed().await?;
    audit_as(&state, &who.actor, "key.delete", "api_key", &id, Some(&key_json(&before)), None).await;
    Ok(Json(json!({"id": id, "object": "key", "deleted": true})))
}

/// `GET /v1/key`: what a virtual key may do and how much of it is left.
pub async fn own_key(
    State(state): State<Arc<AppState>>,
    key: Option<axum::Extension<Arc<crate::tenancy::ActiveKey>>>,
) -> Result<Json<Value>, GatewayError> {
    let Some(axum::Extension(key)) = key else {
        return Ok(Json(json!({"object": "key", "master": true, "limits": null})));
    };
    let used = state.limiter.snapshot(&key.id).await.map_err(|e| {
        tracing::error!(error = %e, "limits store unavailable");
        GatewayError::limits_unavailable()
    })?;
    let l = &key.limits;
    let left = |limit: Option<i64>, used: i64| limit.map(|l| (l - used).max(0));
    let spent = match l.budget_period {
        crate::limits::Period::Day => used.spend_day_micros,
        crate::limits::Period::Week => used.spend_week_micros,
        crate::limits::Period::Month => used.spend_month_micros,
    };
    let usd = |m: i64| m as f64 / 1e6;
    Ok(Json(json!({
        "object": "key", "id": key.id, "organization_id": key.organization_id, "plan": key.plan,
        "expires_at": ts_opt(key.expires_at), "models": key.models,
        "limits": {
            "daily_prompt_quota": l.daily, "monthly_prompt_quota": l.monthly, "rpm_limit": l.rpm,
            "tpm_limit": l.tpm, "max_parallel": l.max_parallel, "budget_usd": l.budget_micros.map(usd),
            "budget_period": l.budget_micros.map(|_| l.budget_period.as_str()),
            "monthly_token_allowance": l.monthly_token_allowance,
        },
        "used": {
            "prompts_today": used.prompts_day, "prompts_this_month": used.prompts_month,
            "in_flight": used.in_flight, "tokens_this_month": used.tokens_month,
            "spend_today_usd": usd(used.spend_day_micros), "spend_this_week_usd": usd(used.spend_week_micros),
            "spend_this_month_usd": usd(used.spend_month_micros),
        },
        "remaining": {
            "prompts_today": left(l.daily, used.prompts_day),
            "prompts_this_month": left(l.monthly, used.prompts_month),
            "budget_usd": l.budget_micros.map(|b| usd((b - spent).max(0))),
            "included_tokens_this_month": left(l.monthly_token_allowance, used.tokens_month),
        },
        "overage_tokens_this_month": l.monthly_token_allowance.map(|a| (used.tokens_month - a).max(0)),
    })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    /// How long the old secret keeps working; 0 ends it at once.
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// `POST /admin/v1/keys/{id}/regenerate`: a new secret, shown once; the old one works for the grace period.
pub async fn regenerate_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    visible_key(&state, &who, &id).await?;
    regenerate(&state, &id, &headers, body, &who.actor).await
}

/// `POST /v1/key/regenerate`: a key regenerates itself (`{"grace_seconds"}` keeps the old secret working
/// that long); the new secret is shown once.
pub async fn regenerate_own_key(
    State(state): State<Arc<AppState>>,
    key: Option<axum::Extension<Arc<crate::tenancy::ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let id = own_id(key)?;
    regenerate(&state, &id, &headers, body, &format!("key:{id}")).await
}

/// `POST /v1/key/revoke`: a key revokes itself, at once.
pub async fn revoke_own_key(
    State(state): State<Arc<AppState>>,
    key: Option<axum::Extension<Arc<crate::tenancy::ActiveKey>>>,
) -> Result<Json<Value>, GatewayError> {
    let id = own_id(key)?;
    let before = state.store.key(&id).await?.ok_or_else(|| not_found("key", &id))?;
    state.store.revoke_key(&id, now_ms()).await?;
    state.keys_changed().await?;
    let key = state.store.key(&id).await?.ok_or_else(|| not_found("key", &id))?;
    let actor = format!("key:{id}");
    audit_as(&state, &actor, "key.revoke", "api_key", &id, Some(&key_json(&before)), Some(&key_json(&key))).await;
    Ok(Json(key_json(&key)))
}

/// The calling virtual key's id; the master key has no key of its own to change here.
fn own_id(key: Option<axum::Extension<Arc<crate::tenancy::ActiveKey>>>) -> Result<String, GatewayError> {
    match key {
        Some(axum::Extension(k)) => Ok(k.id.clone()),
        None => Err(GatewayError::invalid_value(
            "The master key is not a virtual key: regenerate or revoke a virtual key with its own credentials, \
             or through /admin/v1/keys/{id}.",
            "authorization",
        )),
    }
}

async fn regenerate(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    actor: &str,
) -> Result<Json<Value>, GatewayError> {
    let id = id.to_owned();
    let bytes = body::read(headers, body, state.live().body_limits).await?;
    let req: Regenerate =
        if bytes.iter().all(u8::is_ascii_whitespace) { Regenerate::default() } else { body::decode(&bytes)? };
    let grace = req.grace_seconds.unwrap_or(0);
    if !(0..=30 * 86_400).contains(&grace) {
        return Err(GatewayError::invalid_value("'grace_seconds' must be between 0 and 2592000.", "grace_seconds"));
    }
    let now = now_ms();
    let new = keys::generate();
    if !state.store.rotate_key(&id, &new.hash, &new.display_prefix, now + grace * 1000, now).await? {
        return Err(not_found("active key", &id));
    }
    state.keys_changed().await?;
    let row = state.store.key(&id).await?.ok_or_else(|| not_found("key", &id))?;
    let mut out = key_json(&row);
    audit_as(
        state,
        actor,
        "key.regenerate",
        "api_key",
        &id,
        None,
        Some(&json!({"display_prefix": row.display_prefix, "grace_seconds": grace})),
    )
    .await;
    out["key"] = Value::String(new.secret.expose().to_owned());
    Ok(Json(out))
}

/// A moment as the admin API writes it: RFC 3339 in UTC.
pub(crate) fn ts(ms: i64) -> Value {
    Value::String(crate::limits::rfc3339(ms))
}

pub(crate) fn ts_opt(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, ts)
}

/// A moment as the admin API reads it: RFC 3339 (`"2027-01-01T00:00:00Z"`, or a bare date) or Unix
/// milliseconds, in a body or a query string.
pub(crate) fn timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    /// Milliseconds from 1973 (smaller is Unix seconds sent by mistake) to the end of year 9999.
    fn within(ms: i64) -> Option<i64> {
        (100_000_000_000..=253_402_300_799_999).contains(&ms).then_some(ms)
    }
    struct Moment;
    impl<'v> serde::de::Visitor<'v> for Moment {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 date-time such as \"2027-01-01T00:00:00Z\", or Unix milliseconds")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<i64>, E> {
            within(v).map(Some).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<i64>, E> {
            i64::try_from(v)
                .ok()
                .and_then(within)
                .map(Some)
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<i64>, E> {
            v.parse::<i64>()
                .ok()
                .and_then(within)
                .or_else(|| crate::limits::parse_rfc3339(v))
                .map(Some)
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_some<S: serde::Deserializer<'v>>(self, d: S) -> Result<Option<i64>, S::Error> {
            d.deserialize_any(Moment)
        }
    }
    d.deserialize_option(Moment)
}

/// [`timestamp`] for PATCH bodies: left out is `None`, `null` is `Some(None)`.
fn nullable_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    timestamp(d).map(Some)
}

/// For PATCH bodies: a field left out is `None` (unchanged), `null` is `Some(None)` (cleared).
fn nullable<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A PATCH body: its own fields, then the limits keys and plans share, each `null`able (left out: kept).
macro_rules! patch_with_limits {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* $field: $ty,)*
            #[serde(default, deserialize_with = "nullable")]
            daily_prompt_quota: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            monthly_prompt_quota: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            rpm_limit: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            tpm_limit: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            max_parallel: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            budget_usd: Option<Option<f64>>,
            #[serde(default, deserialize_with = "nullable")]
            budget_period: Option<Option<String>>,
        }
    };
}

patch_with_limits! {
    /// A key's fields to change; its own limits' `null` goes back to the plan's.
    KeyPatch {
        name: Option<String>,
        plan: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        models: Option<Option<Vec<String>>>,
        #[serde(default, deserialize_with = "nullable_timestamp")]
        expires_at: Option<Option<i64>>,
        metadata: Option<serde_json::Map<String, Value>>,
        #[serde(default, deserialize_with = "nullable")]
        response_cache_ttl_seconds: Option<Option<i64>>,
    }
}

/// `PATCH /admin/v1/keys/{id}`: name, plan, models (null: any), expiry (null: never), metadata, and the
/// key's own limits (null: the plan's).
pub async fn update_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let patch: KeyPatch = body::read_json(&headers, body, state.live().body_limits).await?;
    let mut key = visible_key(&state, &who, &id).await?;
    let before = key_json(&key);
    if let Some(name) = patch.name {
        check_name(&name, "name")?;
        key.name = name;
    }
    if let Some(plan) = patch.plan {
        if state.store.plan(&plan).await?.is_none() {
            return Err(GatewayError::invalid_value(format!("No plan named '{plan}'."), "plan"));
        }
        key.plan = plan;
    }
    if let Some(models) = patch.models {
        if let Some(list) = &models {
            check_models(&state, list)?;
        }
        key.models = models.map(|m| serde_json::to_string(&m).unwrap_or_default());
    }
    let now = now_ms();
    if let Some(expires_at) = patch.expires_at {
        if expires_at.is_some_and(|at| at <= now) {
            return Err(GatewayError::invalid_value("'expires_at' must be in the future.", "expires_at"));
        }
        key.expires_at = expires_at;
    }
    if let Some(metadata) = patch.metadata {
        key.metadata = Value::Object(metadata).to_string();
    }
    if let Some(ttl) = patch.response_cache_ttl_seconds {
        key.response_cache_ttl_seconds = key_cache_ttl(ttl)?;
    }
    // The new values are checked as a whole, then each one given replaces the key's own.
    let given = LimitFields {
        daily_prompt_quota: patch.daily_prompt_quota.flatten(),
        monthly_prompt_quota: patch.monthly_prompt_quota.flatten(),
        rpm_limit: patch.rpm_limit.flatten(),
        tpm_limit: patch.tpm_limit.flatten(),
        max_parallel: patch.max_parallel.flatten(),
        budget_usd: patch.budget_usd.flatten(),
        budget_period: patch.budget_period.clone().flatten(),
    }
    .validate()?;
    let l = &mut key.limits;
    if patch.daily_prompt_quota.is_some() {
        l.daily_prompt_quota = given.daily_prompt_quota;
    }
    if patch.monthly_prompt_quota.is_some() {
        l.monthly_prompt_quota = given.monthly_prompt_quota;
    }
    if patch.rpm_limit.is_some() {
        l.rpm_limit = given.rpm_limit;
    }
    if patch.tpm_limit.is_some() {
        l.tpm_limit = given.tpm_limit;
    }
    if patch.max_parallel.is_some() {
        l.max_parallel = given.max_parallel;
    }
    if patch.budget_usd.is_some() {
        l.budget_micros = given.budget_micros;
    }
    if patch.budget_period.is_some() {
        l.budget_period = given.budget_period;
    }
    within_reach(&state, &who, &key.organization_id.clone(), &key.plan.clone(), &key.limits).await?;
    key.updated_at = now;
    state.store.update_key(&key).await?;
    state.keys_changed().await?;
    let after = key_json(&key);
    audit_as(&state, &who.actor, "key.update", "api_key", &id, Some(&before), Some(&after)).await;
    Ok(Json(after))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    name: Option<String>,
    public_alias: Option<String>,
    daily_prompt_quota: Option<i64>,
    monthly_prompt_quota: Option<i64>,
    monthly_token_allowance: Option<i64>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel: Option<i64>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
}

impl PlanBody {
    /// Checks every limit (non-negative, not absurd) and turns the budget into micro-USD.
    fn into_row(self, name: String, created_at: i64) -> Result<crate::store::PlanRow, GatewayError> {
        if self.monthly_token_allowance.is_some_and(|v| !(0..=1_000_000_000_000).contains(&v)) {
            return Err(GatewayError::invalid_value(
                "'monthly_token_allowance' must be between 0 and 10^12, or null.",
                "monthly_token_allowance",
            ));
        }
        // Plans and keys share one set of limit checks.
        let limits = LimitFields {
            daily_prompt_quota: self.daily_prompt_quota,
            monthly_prompt_quota: self.monthly_prompt_quota,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel: self.max_parallel,
            budget_usd: self.budget_usd,
            budget_period: self.budget_period,
        }
        .validate()?;
        Ok(crate::store::PlanRow {
            name,
            public_alias: self.public_alias,
            daily_prompt_quota: limits.daily_prompt_quota,
            monthly_prompt_quota: limits.monthly_prompt_quota,
            monthly_token_allowance: self.monthly_token_allowance,
            rpm_limit: limits.rpm_limit,
            tpm_limit: limits.tpm_limit,
            max_parallel: limits.max_parallel,
            budget_micros: limits.budget_micros,
            budget_period: limits.budget_period,
            created_at,
            updated_at: now_ms(),
        })
    }
}

/// `POST /admin/v1/plans`: a new plan (its name must be new).
pub async fn create_plan(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: PlanBody = body::read_json(&headers, body, state.live().body_limits).await?;
    let name = req.name.clone().ok_or_else(|| GatewayError::invalid_value("'name' is required.", "name"))?;
    check_name(&name, "name")?;
    if state.store.plan(&name).await?.is_some() {
        return Err(GatewayError::invalid_value(format!("A plan named '{name}' exists; PATCH it instead."), "name"));
    }
    let row = req.into_row(name, now_ms())?;
    state.store.upsert_plan(&row).await?;
    let view = serde_json::to_value(&row).unwrap_or_default();
    audit_as(&state, &who.actor, "plan.create", "plan", &row.name, None, Some(&view)).await;
    Ok(created(view))
}

patch_with_limits! {
    /// A plan's fields to change: one left out keeps its value, `null` makes a limit unlimited.
    PlanPatch {
        name: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        public_alias: Option<Option<String>>,
        #[serde(default, deserialize_with = "nullable")]
        monthly_token_allowance: Option<Option<i64>>,
    }
}

/// `PATCH /admin/v1/plans/{name}`: changes the fields given (`null`: unlimited) and keeps the rest; the
/// plan as a whole is checked again.
pub async fn update_plan(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let patch: PlanPatch = body::read_json(&headers, body, state.live().body_limits).await?;
    let existing =
        state.store.plan(&name).await?.ok_or_else(|| GatewayError::not_found(format!("No plan named '{name}'.")))?;
    if patch.name.as_ref().is_some_and(|n| *n != name) {
        return Err(GatewayError::invalid_value("A plan cannot be renamed.", "name"));
    }
    let e = existing.clone();
    let merged = PlanBody {
        name: None,
        public_alias: patch.public_alias.unwrap_or(e.public_alias),
        daily_prompt_quota: patch.daily_prompt_quota.unwrap_or(e.daily_prompt_quota),
        monthly_prompt_quota: patch.monthly_prompt_quota.unwrap_or(e.monthly_prompt_quota),
        monthly_token_allowance: patch.monthly_token_allowance.unwrap_or(e.monthly_token_allowance),
        rpm_limit: patch.rpm_limit.unwrap_or(e.rpm_limit),
        tpm_limit: patch.tpm_limit.unwrap_or(e.tpm_limit),
        max_parallel: patch.max_parallel.unwrap_or(e.max_parallel),
        // Micro-USD back to USD: exact for every amount the API accepts (six decimals).
        budget_usd: patch.budget_usd.unwrap_or(e.budget_micros.map(|m| m as f64 / 1e6)),
        budget_period: patch.budget_period.unwrap_or(e.budget_period),
    };
    let row = merged.into_row(name, existing.created_at)?;
    state.store.upsert_plan(&row).await?;
    state.keys_changed().await?;
    let (before, after) =
        (serde_json::to_value(&existing).unwrap_or_default(), serde_json::to_value(&row).unwrap_or_default());
    audit_as(&state, &who.actor, "plan.update", "plan", &row.name, Some(&before), Some(&after)).await;
    Ok(Json(after))
}

pub async fn delete_plan(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    if !state.store.delete_plan(&name).await? {
        return Err(GatewayError::invalid_value(format!("Plan '{name}' does not exist or keys still use it."), "name"));
    }
    audit_as(&state, &who.actor, "plan.delete", "plan", &name, None, None).await;
    Ok(Json(json!({"name": name, "object": "plan", "deleted": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    organization_id: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
    /// RFC 3339 or Unix milliseconds, inclusive; default 30 days ago.
    #[serde(default, deserialize_with = "timestamp")]
    from: Option<i64>,
    /// RFC 3339 or Unix milliseconds, exclusive; default now.
    #[serde(default, deserialize_with = "timestamp")]
    to: Option<i64>,
    group_by: Option<crate::store::UsageGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEventsQuery {
    /// Ours or the caller's `x-request-id`.
    request_id: Option<String>,
    organization_id: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "timestamp")]
    from: Option<i64>,
    #[serde(default, deserialize_with = "timestamp")]
    to: Option<i64>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingQuery {
    organization_id: Option<String>,
    /// `YYYY-MM`; default the current UTC month.
    month: Option<String>,
}

/// `GET /admin/v1/billing`: each key's metered month (tokens and cost, its plan's included tokens, and the
/// overage beyond them at passthrough cost), with totals per organisation.
pub async fn billing(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(q): Query<BillingQuery>,
) -> Result<Json<Value>, GatewayError> {
    let month = q.month.unwrap_or_else(|| crate::limits::month_string(state.limiter.now_ms()));
    let bad = || GatewayError::invalid_value("'month' must be YYYY-MM.", "month");
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (from, to) =
        crate::limits::month_bounds(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    let org = who.scope(q.organization_id)?;
    let rows = state.store.billing(from, to, org.as_deref()).await?;
    let usd = |m: i64| m as f64 / 1e6;
    let mut orgs: std::collections::BTreeMap<String, (i64, i64, i64, i64)> = std::collections::BTreeMap::new();
    for r in &rows {
        let o = orgs.entry(r.organization_id.clone().unwrap_or_default()).or_default();
        *o = (o.0 + r.tokens, o.1 + r.cost_micros, o.2 + r.overage_tokens, o.3 + r.overage_micros);
    }
    let keys: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"key_id": r.key_id, "organization_id": r.organization_id, "requests": r.requests,
                   "tokens": r.tokens, "included_tokens": r.included_tokens, "overage_tokens": r.overage_tokens,
                   "cost_micros": r.cost_micros, "cost_usd": usd(r.cost_micros),
                   "overage_micros": r.overage_micros, "overage_usd": usd(r.overage_micros)})
        })
        .collect();
    let organizations: Vec<Value> = orgs
        .into_iter()
        .map(|(id, (tokens, cost, over_t, over_c))| {
            json!({"organization_id": id, "tokens": tokens, "cost_micros": cost, "cost_usd": usd(cost),
                   "overage_tokens": over_t, "overage_micros": over_c, "overage_usd": usd(over_c)})
        })
        .collect();
    Ok(Json(
        json!({"object": "billing", "month": month, "from": ts(from), "to": ts(to), "keys": keys, "organizations": organizations}),
    ))
}

/// `GET /admin/v1/usage/requests`: the ledger's rows, one per request, newest first.
pub async fn usage_events(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(q): Query<UsageEventsQuery>,
) -> Result<Json<Value>, GatewayError> {
    let now = now_ms();
    let filter = crate::store::UsageFilter {
        organization_id: who.scope(q.organization_id)?,
        key_id: q.key_id,
        model: q.model,
        from: q.from.unwrap_or(now - 30 * 86_400_000),
        to: q.to.unwrap_or(now + 1),
    };
    let (limit, offset) = (q.limit.unwrap_or(50).clamp(1, 500), q.offset.unwrap_or(0).max(0));
    let rows = state.store.usage_events(&filter, q.request_id.as_deref(), limit, offset).await?;
    Ok(Json(json!({"object": "list", "data": rows, "limit": limit, "offset": offset})))
}

/// `GET /admin/v1/usage`: requests, tokens and spend by day, model or key.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Value>, GatewayError> {
    let now = now_ms();
    let filter = crate::store::UsageFilter {
        organization_id: who.scope(q.organization_id)?,
        key_id: q.key_id,
        model: q.model,
        from: q.from.unwrap_or(now - 30 * 86_400_000),
        to: q.to.unwrap_or(now + 1),
    };
    let group = q.group_by.unwrap_or(crate::store::UsageGroup::Day);
    let rows = state.store.usage_summary(&filter, group).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let key = match (group, r.group_key.as_deref().and_then(|k| k.parse::<i64>().ok())) {
                (crate::store::UsageGroup::Day, Some(day)) => Value::String(crate::limits::date_string(day)),
                _ => json!(r.group_key),
            };
            json!({"group": key, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
                   "completion_tokens": r.completion_tokens, "cost_micros": r.cost_micros,
                   "cost_usd": r.cost_micros as f64 / 1e6})
        })
        .collect();
    Ok(Json(json!({"object": "list", "group_by": group, "from": ts(filter.from), "to": ts(filter.to), "data": data})))
}

/// The configuration in force, as the admin API shows it (never the configuration itself: a
/// provider's `headers` may hold credentials).
fn config_json(v: &crate::app::ConfigVersion) -> Value {
    json!({"object": "config", "version": v.version, "digest": v.digest, "loaded_at": ts(v.loaded_at), "source": v.source})
}

/// `GET /admin/v1/config`: which configuration is in force, and since when.
pub async fn config_version(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(config_json(&state.live().version))
}

/// `POST /admin/v1/reload` (and `SIGHUP`): read the configuration again and swap it in, or refuse it
/// whole with every problem by its path (422) and keep the one in force.
pub async fn reload(State(state): State<Arc<AppState>>, Extension(who): Extension<Principal>) -> Response {
    match reload_config(&state, &who.actor).await {
        Ok(done) => {
            let mut body = config_json(&done.now);
            body["changed"] = json!(done.changed());
            Json(body).into_response()
        }
        Err(refused) => {
            let problems: Vec<Value> =
                refused.problems.iter().map(|p| json!({"path": p.path, "message": p.message})).collect();
            let message =
                format!("The configuration was not reloaded; version {} stays in force. {refused}", refused.in_force);
            let param = refused.problems.first().map(|p| p.path.clone()).filter(|p| !p.is_empty());
            let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                        "code": "config_invalid", "problems": problems}});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

/// A reload by `actor` (an admin, or `signal` for `SIGHUP`): swapped in and audited, or refused and
/// logged with its problems.
pub async fn reload_config(state: &AppState, actor: &str) -> Result<crate::app::Reloaded, crate::app::ReloadRefused> {
    match state.reload().await {
        Ok(done) => {
            let now = &done.now;
            if done.changed() {
                tracing::info!(actor, version = now.version, digest = %now.digest, "configuration reloaded");
                let (was, is) = (config_json(&done.before), config_json(now));
                audit_as(state, actor, "config.reload", "config", &now.version.to_string(), Some(&was), Some(&is))
                    .await;
            } else {
                tracing::info!(actor, version = now.version, "configuration reloaded: nothing changed");
            }
            Ok(done)
        }
        Err(refused) => {
            tracing::warn!(actor, version = refused.in_force, problems = %refused, "configuration reload refused");
            Err(refused)
        }
    }
}

/// `GET /admin/v1/providers`: each configured provider (whether its key is set) and each model's circuit
/// breaker, read from memory.
pub async fn providers(State(state): State<Arc<AppState>>) -> Json<Value> {
    let now = tokio::time::Instant::now();
    let live = state.live();
    let providers: Vec<Value> = live
        .providers
        .iter()
        .map(|p| {
            json!({"name": p.name, "kind": p.kind.as_str(), "region": p.region, "aggregator": p.aggregator,
                   "available": p.unavailable_reason().is_none(), "unavailable_reason": p.unavailable_reason()})
        })
        .collect();
    let models: Vec<Value> = live
        .catalog
        .models()
        .iter()
        .map(|m| {
            let breaker = match m.breaker.peek(now) {
                crate::routing::breaker::Gate::Closed => "closed",
                crate::routing::breaker::Gate::Open { .. } => "open",
                crate::routing::breaker::Gate::Probe => "half_open",
            };
            json!({"name": m.name, "provider": m.provider.name, "region": m.region, "breaker": breaker})
        })
        .collect();
    Json(json!({"object": "providers", "providers": providers, "models": models}))
}
