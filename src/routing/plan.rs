//! Turning a model string into a [`RoutePlan`]: which targets, in which order, and which were left out
//! and why. A pure function of the catalog, the caller, the request's features and target health.
//!
//! Model strings, in the order they are tried: a request-level `models` list (each entry any of the
//! following), an exact catalog name, an alias (or per-lab variant), a tier name (`economy`, `standard`,
//! `premium`) with `prefer`, then `provider/model`. Names match exactly: no case folding, no trimming.
//! A catalog name is followed by its fallback chain (`routing::chains`) unless the caller asked for
//! exactly that model; an unknown entry of a `models` list is skipped.
//!
//! What the caller may use bounds every target alike (`Caller::excludes`, `Caller::may_use`): the key's
//! allowlist, its organisation's blocked providers and allowed regions apply to candidates, chain hops,
//! swap targets and content-policy targets. A model the caller may not use is named in the plan only
//! when the caller named it itself.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::catalog::{Catalog, ModelEntry};
use crate::config::Capability;
use crate::schema::{ChatRequest, Content};

/// Who is asking, as far as routing cares. The master key is the default: everything allowed.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The key's model allowlist: a target is allowed when the list names it or the string the caller
    /// sent (so allowing an alias allows its chain).
    pub allowed_models: Option<Vec<String>>,
    /// Providers the caller's organisation will not send traffic to.
    pub blocked_providers: Vec<String>,
    /// The regions the caller's organisation lets its traffic go to (`None`: any, the master key's).
    pub allowed_regions: Option<Vec<String>>,
    /// The public alias of the caller's plan: any `smart-route*` name resolves to it.
    pub plan_alias: Option<String>,
    /// The organisation opted in to cheaper same-tier swaps (and this request did not opt out).
    pub cheaper_swaps: bool,
    /// The key has a USD budget: only targets whose spending can be counted may serve it
    /// (`ModelEntry::budgetable`).
    pub priced_only: bool,
    /// A plain model name is served by that model only, not by its fallback chain (the request said
    /// `x-gateway-routing: explicit`, or the organisation turned model fallbacks off).
    pub exact_model: bool,
    /// A stream whose provider fails mid-way ends with an error event rather than continuing on the
    /// next target (the organisation turned continuation off, or the request did).
    pub no_stream_continuation: bool,
}

impl Caller {
    /// Why the caller's organisation keeps its traffic away from `m`, if it does: its provider is
    /// blocked, or it is served from a region the organisation does not allow.
    pub fn excludes(&self, m: &ModelEntry) -> Option<String> {
        self.excludes_provider(&m.provider.name, &m.region)
    }

    /// Why the caller's organisation keeps its traffic away from `provider`, serving from `region`.
    pub fn excludes_provider(&self, provider: &str, region: &str) -> Option<String> {
        if self.blocked_providers.iter().any(|p| p == provider) {
            return Some(format!("provider {provider} is blocked for this organization"));
        }
        match &self.allowed_regions {
            Some(regions) if !regions.iter().any(|r| r == region) => Some(format!(
                "served from region {region}, which this organization does not allow (allowed: {})",
                regions.join(", ")
            )),
            _ => None,
        }
    }

    /// The key's allowlist names `name` itself (no allowlist names everything).
    pub fn lists(&self, name: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|list| list.iter().any(|a| a == name))
    }

    /// A model the caller could name itself: its allowlist names it, its organisation does not exclude it.
    pub fn may_use(&self, m: &ModelEntry) -> bool {
        self.lists(&m.name) && self.excludes(m).is_none()
    }
}

/// A request opts out of cheaper swaps with `x-gateway-routing: explicit` (or `x-switchyard-routing`).
pub fn wants_explicit_routing(headers: &http::HeaderMap) -> bool {
    ["x-gateway-routing", "x-switchyard-routing"]
        .iter()
        .filter_map(|h| headers.get(*h))
        .any(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("explicit")))
}

const UNPRICED: &str = "has no price, and this key has a USD budget";
/// Why an entry of a `models` list was skipped because it names nothing.
pub const UNKNOWN: &str = "unknown model";
/// Why a target was skipped because the key's allowlist does not name it.
pub const NOT_ALLOWED: &str = "not allowed for this key";

/// The prefix of plan routing profiles (`smart-route`, `smart-route-mini`, …).
pub const PLAN_ALIAS_PREFIX: &str = "smart-route";

/// How to order a tier's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    Cheap,
    Fast,
    Balanced,
    Quality,
    Coding,
}

/// What the request needs from a model.
pub struct RequestFeatures<'a> {
    pub tools: bool,
    pub images: bool,
    pub json_schema: bool,
    pub embeddings: bool,
    pub moderation: bool,
    /// Work only a model that declares it does (a rerank, an image, speech).
    pub dedicated: Option<Capability>,
    /// The caller's cap on generated tokens.
    pub max_output: Option<u64>,
    pub prefer: Option<Prefer>,
    /// A request-level list of models to try in order (OpenRouter's `models`).
    pub models: Vec<String>,
    /// The conversation, for `auto` to classify.
    chat: Option<&'a ChatRequest>,
    texts: Vec<&'a str>,
    prompt_bytes: usize,
    image_parts: usize,
    tokens: OnceLock<u64>,
    /// A window decision needed the count of a prompt too large to tokenize on the event loop.
    deferred: AtomicBool,
}

/// Prompts larger than this are tokenized on the blocking pool, not on the thread serving requests
/// (tokenizing takes about half a second a megabyte).
const INLINE_COUNT_BYTES: usize = 64 * 1024;

impl<'a> RequestFeatures<'a> {
    pub fn for_chat(req: &'a ChatRequest) -> Result<Self, String> {
        let mut texts = Vec::with_capacity(req.messages.len());
        let mut image_parts = 0;
        for m in &req.messages {
            match &m.content {
                Some(Content::Text(t)) => texts.push(t.as_str()),
                Some(Content::Parts(parts)) => {
                    image_parts += parts.iter().filter(|p| p.image_url.is_some()).count();
                    texts.extend(parts.iter().filter_map(|p| p.text.as_deref()));
                }
                None => {}
            }
            texts.extend(m.tool_calls.iter().flatten().map(|c| c.function.arguments.as_str()));
        }
        let prefer = match req.extra.get("prefer") {
            None => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| "prefer".to_owned())?),
        };
        let models = match req.extra.get("models") {
            None => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| "models".to_owned())?,
        };
        Ok(RequestFeatures {
            tools: req.tools.as_ref().is_some_and(|t| !t.is_empty())
                && !req.tool_choice.as_ref().is_some_and(|c| c.is_none()),
            images: image_parts > 0,
            json_schema: req.response_format.as_ref().is_some_and(|f| f.kind == "json_schema"),
            embeddings: false,
            moderation: false,
            dedicated: None,
            max_output: req.max_output_tokens().map(u64::from),
            prefer,
            models,
            chat: Some(req),
            prompt_bytes: texts.iter().map(|t| t.len()).sum(),
            texts,
            image_parts,
            tokens: OnceLock::new(),
            deferred: AtomicBool::new(false),
        })
    }

    pub fn for_embeddings(texts: Vec<&'a str>) -> Self {
        RequestFeatures {
            tools: false,
            images: false,
            json_schema: false,
            embeddings: true,
            moderation: false,
            dedicated: None,
            max_output: None,
            prefer: None,
            models: Vec::new(),
            chat: None,
            prompt_bytes: texts.iter().map(|t| t.len()).sum(),
            texts,
            image_parts: 0,
            tokens: OnceLock::new(),
            deferred: AtomicBool::new(false),
        }
    }

    /// For work only a model that declares it does (`work` is one of [`Capability::DEDICATED`]): `texts`
    /// are the prompt.
    pub fn for_work(texts: Vec<&'a str>, work: Capability) -> Self {
        let mut features = Self::for_embeddings(texts);
        features.embeddings = false;
        features.dedicated = Some(work);
        features
    }

    /// For moderations: no capability is required of the model.
    pub fn moderation(mut self) -> Self {
        self.embeddings = false;
        self.moderation = true;
        self
    }

    /// The prompt's tokens, counted with the tokenizer the first time they matter. A large prompt is
    /// counted on the blocking pool, so a megabyte of text does not stall the other requests of this
    /// thread.
    pub async fn prompt_tokens(&self) -> u64 {
        if let Some(n) = self.tokens_now() {
            return n;
        }
        let texts: Vec<String> = self.texts.iter().map(|t| (*t).to_owned()).collect();
        let counted = tokio::task::spawn_blocking(move || {
            super::tokens::count(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await;
        // Should the count fail, bytes are a safe upper bound.
        let n = counted.unwrap_or_else(|_| self.prompt_token_bound());
        *self.tokens.get_or_init(|| n)
    }

    /// The count when it is known or cheap to make here; `None` for a large prompt not counted yet.
    fn tokens_now(&self) -> Option<u64> {
        if let Some(n) = self.tokens.get() {
            return Some(*n);
        }
        (self.prompt_bytes <= INLINE_COUNT_BYTES)
            .then(|| *self.tokens.get_or_init(|| super::tokens::count(&self.texts)))
    }

    /// An upper bound of the prompt's tokens without running the tokenizer: a token is at least one byte,
    /// plus message framing, plus the most a provider charges for one image (a high-detail tile grid).
    pub fn prompt_token_bound(&self) -> u64 {
        self.prompt_bytes as u64 + 3 + 4 * self.texts.len() as u64 + 2_000 * self.image_parts as u64
    }

    /// A rough count of the prompt's tokens (about four bytes a token), for holds that settle to the actual.
    pub fn prompt_token_estimate(&self) -> u64 {
        (self.prompt_bytes as u64).div_ceil(4) + 3 + 4 * self.texts.len() as u64 + 1_000 * self.image_parts as u64
    }

    /// Whether the prompt plus the requested output fits `window`. Bytes bound tokens from above, so
    /// the tokenizer runs only when the cheap bound cannot decide.
    fn fits(&self, window: u64) -> bool {
        let output = self.max_output.unwrap_or(0);
        let framing = 3 + 4 * self.texts.len() as u64;
        if self.prompt_bytes as u64 + framing + output <= window {
            return true;
        }
        match self.tokens_now() {
            Some(n) => n + output <= window,
            None => {
                // Undecided until counted: `Catalog::route` counts and plans again.
                self.deferred.store(true, Ordering::Relaxed);
                true
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Model,
    Alias,
    Tier,
    ProviderModel,
    ModelList,
}

/// A target left out of the plan, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub model: String,
    pub reason: String,
    #[serde(skip)]
    pub kind: SkipKind,
}

/// Why a target was left out, for the attempts header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// A `models` entry that names nothing.
    Unknown,
    /// The key's allowlist, or its organisation's blocked providers or allowed regions.
    NotAllowed,
    /// It cannot serve this request (window, capabilities).
    Unsuitable,
    /// No price, and the key has a budget.
    Unpriced,
}

/// The targets to try for one request, in order. Built once, then logged, shown and recorded.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The model string exactly as the caller sent it.
    pub requested: String,
    pub resolution: Resolution,
    pub targets: Vec<Arc<ModelEntry>>,
    /// Tried instead of the remaining targets after a content-policy refusal.
    pub content_policy_targets: Vec<Arc<ModelEntry>>,
    pub skipped: Vec<Skipped>,
    /// Set when the caller used a deprecated name: what to use instead.
    pub deprecated: Option<String>,
    /// Set when a cheaper model of the same swap band was put first: the band's name.
    pub swap: Option<String>,
    /// What `auto` decided, when the caller asked for it.
    pub auto: Option<super::auto::AutoDecision>,
    /// The fallback chain a plain model name was followed by: `general` (then the larger windows), or
    /// `context_window` when the model itself cannot hold the prompt; none for aliases, tiers, lists and
    /// exact requests.
    pub chain: Option<super::chains::ChainType>,
    /// A stream may continue on the next target if its provider fails mid-way: not when the caller,
    /// its organisation or the alias asked for said no.
    pub continue_streams: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    #[error("{0}")]
    ContextTooLong(String),
    #[error("{0}")]
    NoCapableModel(String),
    #[error("'{0}' has an invalid value.")]
    InvalidField(String),
    #[error("{0}")]
    NotAllowed(String),
    /// Every target lacks a price and the key has a budget.
    #[error("{0}")]
    Unpriced(String),
}

impl Catalog {
    /// `plan`, with a large prompt's tokens counted off the event loop when a context-window decision
    /// needs them (then planned again with the count).
    pub async fn route(
        &self,
        requested: &str,
        caller: &Caller,
        features: &RequestFeatures<'_>,
    ) -> Result<RoutePlan, RouteError> {
        let plan = self.plan(requested, caller, features);
        if !features.deferred.load(Ordering::Relaxed) {
            return plan;
        }
        features.prompt_tokens().await;
        self.plan(requested, caller, features)
    }

    /// Resolves `requested` for `caller` into the targets to try, guards applied. A prompt too large to
    /// count here is taken to fit (see `route`).
    pub fn plan(
        &self,
        requested: &str,
        caller: &Caller,
        features: &RequestFeatures<'_>,
    ) -> Result<RoutePlan, RouteError> {
        // A key's plan decides what a plan alias means for it.
        let effective = match &caller.plan_alias {
            Some(own) if requested.starts_with(PLAN_ALIAS_PREFIX) && self.alias(own).is_some() => own.as_str(),
            _ => requested,
        };
        let mut skipped = Vec::new();
        let mut auto = None;
        // The models the caller named itself (by name or `provider/model`), not through an alias or tier.
        let mut direct: Vec<Arc<ModelEntry>> = Vec::new();
        // A `models` list's targets reached through an entry the key's allowlist names.
        let mut via_allowed: Vec<Arc<ModelEntry>> = Vec::new();
        let is_direct = |r: Resolution| matches!(r, Resolution::Model | Resolution::ProviderModel);
        let (resolution, mut candidates, mut content_policy, deprecated) = if let Some(prefer) =
            super::auto::requested(effective)
            && features.models.is_empty()
            && self.model(effective).is_none()
        {
            let prefer = match prefer {
                None => features.prefer.unwrap_or(Prefer::Balanced),
                Some(p) => serde_json::from_value(serde_json::Value::String(p.to_owned()))
                    .map_err(|_| RouteError::UnknownModel(requested.to_owned()))?,
            };
            let chat = features.chat.ok_or_else(|| RouteError::UnknownModel(requested.to_owned()))?;
            let decision = super::auto::classify(chat, self.auto);
            let tier = self.tier(decision.tier).ok_or_else(|| {
                RouteError::NoCapableModel(format!(
                    "`auto` chose the `{}` tier, which this gateway does not define.",
                    decision.tier
                ))
            })?;
            let ordered = order_tier(tier, prefer);
            auto = Some(decision);
            (Resolution::Tier, ordered, Vec::new(), None)
        } else if features.models.is_empty() {
            let found = self.candidates(effective, features)?;
            if is_direct(found.0) {
                direct.extend(found.1.iter().cloned());
            }
            found
        } else {
            // The primary (when named) first, then the list, each entry resolved the same way; an entry
            // that names nothing is skipped, and only a list where nothing resolves fails.
            let mut all: Vec<Arc<ModelEntry>> = Vec::new();
            let primary = (!requested.is_empty()).then_some(requested);
            for name in primary.into_iter().chain(features.models.iter().map(String::as_str)) {
                let found = match self.candidates(name, features) {
                    Ok(found) => {
                        if is_direct(found.0) {
                            direct.extend(found.1.iter().cloned());
                        }
                        if caller.lists(name) {
                            via_allowed.extend(found.1.iter().cloned());
                        }
                        found.1
                    }
                    Err(RouteError::UnknownModel(_)) => {
                        skipped.push(Skipped {
                            model: name.to_owned(),
                            reason: UNKNOWN.to_owned(),
                            kind: SkipKind::Unknown,
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for m in found {
                    if !all.iter().any(|x| Arc::ptr_eq(x, &m)) {
                        all.push(m);
                    }
                }
            }
            if all.is_empty() {
                let names: Vec<&str> = skipped.iter().map(|s| s.model.as_str()).collect();
                return Err(RouteError::UnknownModel(names.join("`, `")));
            }
            (Resolution::ModelList, all, Vec::new(), None)
        };
        // The allowlist allows a model it names, and the models of an alias or tier it names: the string
        // requested, or for a `models` list the entry the model came from (allowing the primary does not
        // allow the rest of the list).
        let allowed = |m: &Arc<ModelEntry>| {
            caller.lists(&m.name)
                || (features.models.is_empty() && caller.lists(requested))
                || via_allowed.iter().any(|v| Arc::ptr_eq(v, m))
        };
        // A model the caller may not use is named in the plan (and so in headers and explanations) only
        // when the caller named it itself: an alias's or tier's other members stay unseen.
        let named = |m: &Arc<ModelEntry>| direct.iter().any(|d| Arc::ptr_eq(d, m));
        let mut refused: Vec<String> = Vec::new();
        candidates.retain(|m| {
            let Some(reason) = (if !allowed(m) { Some(NOT_ALLOWED.to_owned()) } else { caller.excludes(m) }) else {
                return true;
            };
            if named(m) {
                skipped.push(Skipped { model: m.name.clone(), reason: reason.clone(), kind: SkipKind::NotAllowed });
            }
            if !refused.contains(&reason) {
                refused.push(reason);
            }
            false
        });
        if candidates.is_empty() && !refused.is_empty() {
            return Err(RouteError::NotAllowed(format!(
                "This key may not use `{requested}` ({}).",
                refused.join("; ")
            )));
        }
        if caller.priced_only {
            let before = skipped.len();
            candidates.retain(|m| {
                let counted = m.budgetable();
                if !counted {
                    skipped.push(Skipped {
                        model: m.name.clone(),
                        reason: UNPRICED.to_owned(),
                        kind: SkipKind::Unpriced,
                    });
                }
                counted
            });
            if candidates.is_empty() {
                let models: Vec<&str> = skipped[before..].iter().map(|s| s.model.as_str()).collect();
                return Err(RouteError::Unpriced(format!(
                    "`{}` has no price, and this key has a USD budget, so what it spends could not be counted. \
                     The operator can price it (the model's prices, or its provider's `default_prices`) or let \
                     budgeted keys use it free (`budget_unpriced = \"free\"`).",
                    models.join("`, `")
                )));
            }
        }
        // A plain model name: the model, then its chain (`routing::chains`) for when it fails, unless the
        // caller asked for exactly this model. Hops the caller could not name themselves (allowlist,
        // blocked or unconfigured provider, no price for a budget) are left out; a model that cannot
        // serve the request for want of a capability is not replaced by one that can.
        let mut chain = None;
        if resolution == Resolution::Model
            && !caller.exact_model
            && let Some(primary) = candidates.first().cloned()
            && let Some(chains) = self.chains(&primary.name)
        {
            let hops: Vec<&Arc<ModelEntry>> = match self.unsuitable(&primary, features) {
                None => {
                    chain = Some(super::chains::ChainType::General);
                    chains.general.iter().chain(&chains.context_window).collect()
                }
                Some(why) if why.starts_with("context window") => {
                    chain = Some(super::chains::ChainType::ContextWindow);
                    chains.context_window.iter().collect()
                }
                Some(_) => Vec::new(),
            };
            let usable = |hop: &ModelEntry| {
                caller.may_use(hop)
                    && hop.provider.unavailable_reason().is_none()
                    && (!caller.priced_only || hop.budgetable())
            };
            for hop in hops {
                if usable(hop) && !candidates.iter().any(|c| Arc::ptr_eq(c, hop)) {
                    candidates.push(hop.clone());
                }
            }
            content_policy = chains.content_policy.iter().filter(|m| usable(m)).cloned().collect();
        }
        candidates.retain(|m| match self.unsuitable(m, features) {
            None => true,
            Some(reason) => {
                skipped.push(Skipped { model: m.name.clone(), reason, kind: SkipKind::Unsuitable });
                false
            }
        });
        if candidates.is_empty() {
            let reasons: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.model, s.reason)).collect();
            let message = format!("No model for `{requested}` can serve this request ({}).", reasons.join("; "));
            return Err(if skipped.iter().all(|s| s.reason.starts_with("context window")) {
                RouteError::ContextTooLong(message)
            } else {
                RouteError::NoCapableModel(message)
            });
        }
        let swap = if resolution == Resolution::Model && caller.cheaper_swaps {
            self.cheaper_swap(&candidates[0], caller, features).map(|(band, m)| {
                candidates.insert(0, m);
                band.to_owned()
            })
        } else {
            None
        };
        Ok(RoutePlan {
            requested: requested.to_owned(),
            resolution,
            targets: candidates,
            // An alias's content-policy chain, like every target, only within what the caller may use.
            content_policy_targets: content_policy
                .into_iter()
                .filter(|m| allowed(m) && caller.excludes(m).is_none())
                .filter(|m| m.provider.unavailable_reason().is_none() && (!caller.priced_only || m.budgetable()))
                .collect(),
            skipped,
            deprecated,
            swap,
            auto,
            chain,
            continue_streams: !caller.no_stream_continuation
                && self.alias(effective).is_none_or(|a| a.continue_streams),
        })
    }

    /// The cheapest model of `asked`'s swap band that can serve this request, when it is cheaper than
    /// `asked`. Never with tools (tool-call behaviour differs between models), never to a model without
    /// a capability the request needs (images, JSON schema), never to one the key's allowlist does not
    /// name itself, one whose provider is blocked or not configured, or one served from a region the
    /// organisation does not allow. The model asked for stays next in
    /// line as the fallback.
    fn cheaper_swap(
        &self,
        asked: &Arc<ModelEntry>,
        caller: &Caller,
        features: &RequestFeatures<'_>,
    ) -> Option<(&str, Arc<ModelEntry>)> {
        if features.tools || features.embeddings || features.moderation || features.dedicated.is_some() {
            return None;
        }
        let (band, members) = self.swap_band_of(&asked.name)?;
        let price = asked.blended_price();
        members
            .iter()
            .filter(|m| !Arc::ptr_eq(m, asked) && m.blended_price().is_finite() && m.blended_price() < price)
            .filter(|m| m.status != crate::config::ModelStatus::Deprecated)
            .filter(|m| m.provider.unavailable_reason().is_none())
            .filter(|m| caller.may_use(m))
            .filter(|m| self.unsuitable(m, features).is_none())
            .min_by(|a, b| a.blended_price().total_cmp(&b.blended_price()))
            .map(|m| (band, m.clone()))
    }

    #[expect(clippy::type_complexity, reason = "a private tuple consumed right away by `plan`")]
    fn candidates(
        &self,
        requested: &str,
        features: &RequestFeatures<'_>,
    ) -> Result<(Resolution, Vec<Arc<ModelEntry>>, Vec<Arc<ModelEntry>>, Option<String>), RouteError> {
        if let Some(m) = self.model(requested) {
            return Ok((Resolution::Model, vec![m.clone()], Vec::new(), None));
        }
        if let Some(a) = self.alias(requested) {
            return Ok((Resolution::Alias, a.chain.clone(), a.content_policy_chain.clone(), a.deprecated.clone()));
        }
        if let Some(tier) = self.tier(requested) {
            return Ok((
                Resolution::Tier,
                order_tier(tier, features.prefer.unwrap_or(Prefer::Balanced)),
                Vec::new(),
                None,
            ));
        }
        if let Some((prefix, model)) = requested.split_once('/')
            && let Some(p) = self.provider_for_prefix(prefix)
            && !model.is_empty()
        {
            let provider = p.name.as_str();
            let known =
                self.models().iter().find(|m| m.provider.name == provider && (m.upstream == model || m.name == model));
            let entry = known.cloned().unwrap_or_else(|| self.ad_hoc(p, model));
            return Ok((Resolution::ProviderModel, vec![entry], Vec::new(), None));
        }
        Err(RouteError::UnknownModel(requested.to_owned()))
    }

    /// Why `m` cannot serve this request, if it cannot.
    fn unsuitable(&self, m: &ModelEntry, f: &RequestFeatures<'_>) -> Option<String> {
        let needs = [
            (f.tools, Capability::Tools, "does not support tools"),
            (f.images, Capability::Vision, "does not accept images"),
            (f.json_schema, Capability::JsonSchema, "does not support JSON schema output"),
            (f.embeddings, Capability::Embeddings, "is not an embedding model"),
        ];
        if let Some((_, _, why)) = needs.iter().find(|(needed, cap, _)| *needed && !m.has(*cap)) {
            return Some((*why).to_owned());
        }
        // Dedicated work (a rerank, an image, speech) needs a model that says it does it, or (a
        // `provider/model` string, of which nothing is declared) a provider with that API; "capable of
        // anything" does not stretch to a catalog model that never said so.
        let declares = |cap: Capability| m.capabilities.as_ref().is_some_and(|c| c.contains(&cap));
        if let Some(work) = f.dedicated
            && !declares(work)
            && !(m.ad_hoc && m.provider.adapter().offers(work))
        {
            return Some(format!("is not {} model", work.a_noun()));
        }
        // A model that only does dedicated work serves nothing else (an embedding model that also
        // reranks still embeds).
        if let Some(its) = m.dedicated_work()
            && f.dedicated.is_none_or(|w| !declares(w))
            && !(f.embeddings && declares(Capability::Embeddings))
        {
            return Some(format!("is {} model", its.a_noun()));
        }
        if f.moderation {
            return None;
        }
        if !f.embeddings
            && m.capabilities
                .as_ref()
                .is_some_and(|c| c.contains(&Capability::Embeddings) && !c.contains(&Capability::Tools))
        {
            return Some("is an embedding model".to_owned());
        }
        if let Some(window) = m.context_window
            && !f.fits(window)
        {
            return Some(format!(
                "context window of {window} tokens cannot hold the prompt (~{} tokens) plus {} output tokens",
                f.tokens_now().unwrap_or(f.prompt_token_bound()),
                f.max_output.unwrap_or(0)
            ));
        }
        None
    }
}

/// A tier's models in the order `prefer` asks for. The listed order is "balanced" and breaks ties.
fn order_tier(models: &[Arc<ModelEntry>], prefer: Prefer) -> Vec<Arc<ModelEntry>> {
    let mut out = models.to_vec();
    let by_price = |a: &Arc<ModelEntry>, b: &Arc<ModelEntry>| a.blended_price().total_cmp(&b.blended_price());
    match prefer {
        Prefer::Balanced => {}
        Prefer::Cheap => out.sort_by(by_price),
        // The catalog's quality score; the listed order breaks ties (the sort is stable), not price.
        Prefer::Quality => out.sort_by_key(|m| std::cmp::Reverse(m.quality)),
        // This replica's measured time to first token, the speed class's until measured; then price.
        Prefer::Fast => {
            out.sort_by(|a, b| a.ttft.estimate_ms().total_cmp(&b.ttft.estimate_ms()).then_with(|| by_price(a, b)))
        }
        Prefer::Coding => out.sort_by_key(|m| !m.is_strong_at("coding")),
    }
    out
}
