//! `GET /v1/models`, `GET /v1/models/{id}` (OpenAI's shape; `?include_metadata=true` adds the catalog's
//! facts and each alias's fallback chain) and `POST /v1/route/explain`, each as the calling key sees
//! the catalog: nothing it could not use is listed or explained.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::Query;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::config::ModelTier;
use crate::routing::{AliasEntry, ChainType, ModelEntry, RequestFeatures, RouteError};
use crate::schema::ChatRequest;
use crate::tenancy::ActiveKey;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_metadata: Option<String>,
    /// With metadata: only this type of chain (`general`, `context_window`, `content_policy`).
    #[serde(default)]
    fallback_type: Option<String>,
}

impl ListQuery {
    fn metadata(&self) -> bool {
        matches!(self.include_metadata.as_deref(), Some("true" | "1" | "yes"))
    }

    fn fallback_type(&self) -> Result<Option<ChainType>, GatewayError> {
        match self.fallback_type.as_deref() {
            None => Ok(None),
            Some(t) => ChainType::parse(t).map(Some).ok_or_else(|| {
                GatewayError::invalid_value(
                    format!("Unknown fallback_type '{t}': use general, context_window or content_policy."),
                    "fallback_type",
                )
            }),
        }
    }
}

/// A model's fallback chains as the calling key may see them (hops it could not use left out): every
/// type under `fallbacks`, and the one of `only` (default `general`) as `fallback_chain`.
fn fallbacks_json(
    live: &crate::app::Live,
    key: Option<&ActiveKey>,
    m: &ModelEntry,
    only: Option<ChainType>,
) -> Option<Value> {
    let chains = live.catalog.chains(&m.name)?;
    let names = |kind: ChainType| -> Vec<&str> {
        chains.of(kind).iter().filter(|h| usable(key, h)).map(|h| h.name.as_str()).collect()
    };
    let kind = only.unwrap_or(ChainType::General);
    Some(json!({
        "fallback_type": kind,
        "fallback_chain": names(kind),
        "fallbacks": {
            "general": names(ChainType::General),
            "context_window": names(ChainType::ContextWindow),
            "content_policy": names(ChainType::ContentPolicy),
        },
    }))
}

fn add_fallbacks(o: &mut Value, chains: Value) {
    if let (Some(meta), Value::Object(chains)) = (o["metadata"].as_object_mut(), chains) {
        meta.extend(chains);
    }
}

/// What a model is for, in LiteLLM's words.
fn mode(m: &ModelEntry) -> &'static str {
    use crate::config::Capability;
    let caps = m.capabilities.as_deref().unwrap_or_default();
    let only = |c: Capability| caps.contains(&c) && !caps.contains(&Capability::Tools);
    if m.tier == ModelTier::Embedding || only(Capability::Embeddings) {
        "embedding"
    } else if only(Capability::Moderation) {
        "moderation"
    } else {
        match m.dedicated_work() {
            Some(Capability::Rerank) => "rerank",
            Some(Capability::ImageGeneration) => "image_generation",
            Some(Capability::Speech) => "audio_speech",
            Some(Capability::Transcription) => "audio_transcription",
            _ => "chat",
        }
    }
}

/// `GET /model/info` (and `/v1/model/info`): every model the key may use in LiteLLM's shape (mode,
/// per-token prices, limits, capabilities), with its fallback chains when `include_metadata=true`.
pub async fn model_info(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    use crate::config::Capability;
    let key = key.as_ref().map(|Extension(k)| k.as_ref());
    let only = q.fallback_type()?;
    let per_token = |p: Option<f64>| p.map(|p| p / 1e6);
    let live = state.live();
    let data: Vec<Value> = live
        .catalog
        .models()
        .iter()
        .filter(|m| usable(key, m))
        .map(|m| {
            let mut o = json!({
                "model_name": m.name,
                "litellm_params": {"model": format!("{}/{}", m.provider.name, m.upstream)},
                "model_info": {
                    "id": m.name,
                    "key": m.name,
                    "mode": mode(m),
                    "litellm_provider": m.provider.name,
                    "lab": m.lab,
                    "tier": tier_name(m.tier),
                    "input_cost_per_token": per_token(m.input_per_mtok),
                    "output_cost_per_token": per_token(m.output_per_mtok),
                    "cache_read_input_token_cost": per_token(m.cached_input_per_mtok),
                    "max_input_tokens": m.context_window,
                    "max_output_tokens": m.max_output,
                    "max_tokens": m.max_output,
                    "supports_function_calling": m.has(Capability::Tools),
                    "supports_vision": m.has(Capability::Vision),
                    "supports_response_schema": m.has(Capability::JsonSchema),
                    "supports_reasoning": m.capabilities.as_ref().is_some_and(|c| c.contains(&Capability::Reasoning)),
                },
            });
            if q.metadata()
                && let Some(chains) = fallbacks_json(&live, key, m, only)
            {
                o["metadata"] = chains;
            }
            o
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

fn tier_name(t: ModelTier) -> &'static str {
    match t {
        ModelTier::Frontier => "frontier",
        ModelTier::Smart => "smart",
        ModelTier::Fast => "fast",
        ModelTier::Specialty => "specialty",
        ModelTier::Embedding => "embedding",
    }
}

fn model_object(m: &ModelEntry, created: u64, metadata: bool) -> Value {
    let mut o = json!({"id": m.name, "object": "model", "created": created, "owned_by": m.provider.name});
    if metadata {
        let caps: Option<Vec<Value>> =
            m.capabilities.as_ref().map(|c| c.iter().map(|c| serde_json::to_value(c).unwrap_or(Value::Null)).collect());
        o["metadata"] = json!({
            "type": "model",
            "lab": m.lab,
            "provider": m.provider.name,
            "tier": tier_name(m.tier),
            "context_window": m.context_window,
            "max_output": m.max_output,
            "pricing": {
                "input_per_mtok": m.input_per_mtok,
                "output_per_mtok": m.output_per_mtok,
                "cached_input_per_mtok": m.cached_input_per_mtok,
                "priced": m.input_per_mtok.is_some(),
            },
            "capabilities": caps,
            "quality": m.quality,
            "speed": m.speed,
            "region": m.region,
            "ttft_ms": {"assumed": m.speed.assumed_ttft_ms(), "measured": m.ttft.measured_ms().map(f64::round)},
            "status": format!("{:?}", m.status).to_lowercase(),
            "available": m.provider.unavailable_reason().is_none(),
            "note": m.note,
        });
    }
    o
}

/// An alias as the calling key may see it: its chains without the models the key could not use.
fn alias_object(a: &AliasEntry, key: Option<&ActiveKey>, created: u64, metadata: bool) -> Value {
    let mut o = json!({"id": a.name, "object": "model", "created": created, "owned_by": "switchyard"});
    if metadata {
        let names = |chain: &[Arc<ModelEntry>]| -> Vec<String> {
            chain.iter().filter(|m| member_usable(key, &a.name, m)).map(|m| m.name.clone()).collect()
        };
        o["metadata"] = json!({
            "type": "alias",
            "targets": a
                .targets
                .iter()
                .filter(|t| !a.chain.iter().any(|m| &m.name == *t && !member_usable(key, &a.name, m)))
                .collect::<Vec<_>>(),
            "fallback_chain": names(&a.chain),
            "content_policy_chain": names(&a.content_policy_chain),
            "deprecated": a.deprecated,
            "note": a.note,
        });
    }
    o
}

/// Whether the calling key may name an alias or tier: everything for the master key; for a virtual key,
/// what its allowlist names.
fn visible(key: Option<&ActiveKey>, name: &str) -> bool {
    key.is_none_or(|k| k.caller.lists(name))
}

/// Whether the calling key may be served `m` as a member of the alias or tier `group`: an allowlist
/// naming the group allows its members, and the organisation's blocked providers and allowed regions
/// still apply.
fn member_usable(key: Option<&ActiveKey>, group: &str, m: &ModelEntry) -> bool {
    key.is_none_or(|k| (k.caller.lists(group) || k.caller.lists(&m.name)) && k.caller.excludes(m).is_none())
}

/// Whether the calling key may use a model: its allowlist names it, and its organisation neither blocks
/// the provider nor keeps traffic out of the model's region.
fn usable(key: Option<&ActiveKey>, m: &ModelEntry) -> bool {
    key.is_none_or(|k| k.caller.may_use(m))
}

/// The Anthropic SDKs list models with `anthropic-version` set, and read Anthropic's shape.
fn anthropic_shape(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn anthropic_model(id: &str, created: u64) -> Value {
    let day = (created / 86_400) as i64;
    json!({"type": "model", "id": id, "display_name": id,
           "created_at": format!("{}T00:00:00Z", crate::limits::date_string(day))})
}

pub async fn list_models(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let key = key.as_ref().map(|Extension(k)| k.as_ref());
    let meta = q.metadata();
    let only = q.fallback_type()?;
    let live = state.live();
    let mut data: Vec<Value> = live
        .catalog
        .models()
        .iter()
        .filter(|m| usable(key, m))
        .map(|m| {
            let mut o = model_object(m, state.created, meta);
            if meta && let Some(chains) = fallbacks_json(&live, key, m, only) {
                add_fallbacks(&mut o, chains);
            }
            o
        })
        .collect();
    data.extend(
        live.catalog
            .aliases()
            .iter()
            .filter(|a| visible(key, &a.name))
            .map(|a| alias_object(a, key, state.created, meta)),
    );
    let mut tiers: Vec<&str> = live.catalog.tier_names().filter(|t| visible(key, t)).collect();
    tiers.sort_unstable();
    for t in tiers {
        let mut o = json!({"id": t, "object": "model", "created": state.created, "owned_by": "switchyard"});
        if meta {
            let models: Vec<&str> = live
                .catalog
                .tier(t)
                .unwrap_or_default()
                .iter()
                .filter(|m| member_usable(key, t, m))
                .map(|m| m.name.as_str())
                .collect();
            o["metadata"] =
                json!({"type": "tier", "models": models, "prefer": ["cheap", "fast", "balanced", "quality", "coding"]});
        }
        data.push(o);
    }
    if anthropic_shape(&headers) {
        let ids: Vec<Value> =
            data.iter().filter_map(|m| m["id"].as_str()).map(|id| anthropic_model(id, state.created)).collect();
        let (first, last) = (ids.first().map(|m| m["id"].clone()), ids.last().map(|m| m["id"].clone()));
        return Ok(Json(json!({"data": ids, "has_more": false, "first_id": first, "last_id": last})));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn retrieve_model(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let key = key.as_ref().map(|Extension(k)| k.as_ref());
    let only = q.fallback_type()?;
    let live = state.live();
    let found = match (live.catalog.model(&id), live.catalog.alias(&id)) {
        (Some(m), _) if usable(key, m) => {
            let mut o = model_object(m, state.created, q.metadata());
            if q.metadata()
                && let Some(chains) = fallbacks_json(&live, key, m, only)
            {
                add_fallbacks(&mut o, chains);
            }
            Some(o)
        }
        (None, Some(a)) if visible(key, &a.name) => Some(alias_object(a, key, state.created, q.metadata())),
        _ => None,
    };
    match found {
        Some(_) if anthropic_shape(&headers) => Ok(Json(anthropic_model(&id, state.created))),
        Some(o) => Ok(Json(o)),
        None => Err(RouteError::UnknownModel(id).into()),
    }
}

/// The plan the calling key's chat request would get, and why, without calling any provider: planned
/// exactly as the request itself would be (its allowlist, its organisation's blocked providers, allowed
/// regions, swaps and fallback settings, its plan's alias, the request's routing headers), so it shows
/// nothing the key could not use.
pub async fn explain_route(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let req: ChatRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let features = RequestFeatures::for_chat(&req)
        .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
    let key = key.as_ref().map(|Extension(k)| k.as_ref());
    let caller = super::pipeline::caller_for(key, &headers);
    let plan = state.live().catalog.route(&req.model, &caller, &features).await?;
    let now = tokio::time::Instant::now();
    let targets: Vec<Value> = plan
        .targets
        .iter()
        .map(|m| {
            let breaker = match m.breaker.peek(now) {
                crate::routing::breaker::Gate::Closed => "closed",
                crate::routing::breaker::Gate::Probe => "half_open",
                crate::routing::breaker::Gate::Open { .. } => "open",
            };
            json!({
                "model": m.name, "provider": m.provider.name, "upstream": m.upstream, "tier": tier_name(m.tier),
                "region": m.region, "context_window": m.context_window, "breaker": breaker,
                "available": m.provider.unavailable_reason().is_none(),
                "input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok,
            })
        })
        .collect();
    Ok(Json(json!({
        "requested": plan.requested,
        "resolution": plan.resolution,
        "auto": plan.auto,
        "targets": targets,
        "skipped": plan.skipped,
        "content_policy_targets": plan.content_policy_targets.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        "deprecated": plan.deprecated,
        "swap": plan.swap,
        "fallback_type": plan.chain,
        "continue_streams": plan.continue_streams,
        "caller": {
            "key": key.map(|k| k.id.as_str()),
            "organization": key.map(|k| k.organization_id.as_str()),
            "plan": key.map(|k| k.plan.as_str()),
            "plan_alias": caller.plan_alias,
            "allowed_regions": caller.allowed_regions,
            "blocked_providers": caller.blocked_providers,
            "cheaper_swaps": caller.cheaper_swaps,
            "exact_model": caller.exact_model,
        },
        "features": {
            "tools": features.tools, "images": features.images, "json_schema": features.json_schema,
            "max_output": features.max_output, "prefer": features.prefer,
            "estimated_prompt_tokens": features.prompt_tokens().await,
        },
        "max_attempts": state.live().router.max_attempts,
    })))
}
