//! A fallback chain of every type for every catalog model, derived once when the catalog is built.
//!
//! - `general` (429, 5xx, timeouts, connection errors): models of other labs that keep every capability
//!   the model declares (tools, vision, JSON schema) and stay in its price band, the same tier first and
//!   the nearest price first; each lab once before any lab twice, no provider on more than half of the
//!   hops, and an aggregator (OpenRouter) only as the last, emergency hop.
//! - `context_window`: models with a larger window than the model's, the smallest larger window first.
//! - `content_policy`: models of other labs only (another lab's policy is what can help).
//!
//! Every hop is served from the model's own region: a fallback does not move a request's data to
//! another region (an organisation's allowed regions bound the plan too, per request).
//!
//! The same model served by another provider (`kimi-k2-thinking` and `kimi-k2-thinking-direct`) is the
//! first hop of both. A model's `fallbacks` in the catalog replace the derived chain of a type with a
//! curated one. Chains are derived only between models that name their lab (the catalog's do; an
//! operator's own models without one get only the chains they are given), and never for embedding,
//! moderation or rerank models: another model's vectors (or scores) are not interchangeable.
//! Whether a hop can serve a given request (its window, the request's needs, the caller's allowlist,
//! blocked or unconfigured providers) is decided per request by the plan, not here.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::ModelEntry;
use crate::config::{Capability, FallbackOverrides, ModelStatus, ModelTier};

/// Hops in a derived `general` chain (the aggregator's emergency hop comes on top).
const HOPS: usize = 4;
/// Hops in a derived `context_window` or `content_policy` chain.
const SHORT_HOPS: usize = 3;
/// A hop's blended price stays within this factor of the model's (down, up).
const PRICE_BAND: (f64, f64) = (0.2, 2.5);
/// A larger window may cost a little more.
const WINDOW_PRICE_BAND: (f64, f64) = (0.2, 4.0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    General,
    ContextWindow,
    ContentPolicy,
}

impl ChainType {
    pub fn parse(s: &str) -> Option<ChainType> {
        match s {
            "general" => Some(ChainType::General),
            "context_window" => Some(ChainType::ContextWindow),
            "content_policy" => Some(ChainType::ContentPolicy),
            _ => None,
        }
    }
}

/// One model's fallback chains (the model itself is not in them).
#[derive(Debug, Default)]
pub struct Chains {
    pub general: Vec<Arc<ModelEntry>>,
    pub context_window: Vec<Arc<ModelEntry>>,
    pub content_policy: Vec<Arc<ModelEntry>>,
}

impl Chains {
    pub fn of(&self, kind: ChainType) -> &[Arc<ModelEntry>] {
        match kind {
            ChainType::General => &self.general,
            ChainType::ContextWindow => &self.context_window,
            ChainType::ContentPolicy => &self.content_policy,
        }
    }
}

/// The lab behind a model (its provider's name when the catalog does not say).
pub fn lab(m: &ModelEntry) -> &str {
    m.lab.as_deref().unwrap_or(&m.provider.name)
}

/// A model that answers conversations (not an embedding or moderation model).
fn conversational(m: &ModelEntry) -> bool {
    m.tier != ModelTier::Embedding
        && m.dedicated_work().is_none()
        && !m.capabilities.as_ref().is_some_and(|c| {
            (c.contains(&Capability::Embeddings) || c.contains(&Capability::Moderation))
                && !c.contains(&Capability::Tools)
        })
}

/// `hop` can do everything `model` says it can.
fn keeps_capabilities(model: &ModelEntry, hop: &ModelEntry) -> bool {
    [Capability::Tools, Capability::Vision, Capability::JsonSchema]
        .into_iter()
        .all(|cap| !model.capabilities.as_ref().is_some_and(|c| c.contains(&cap)) || hop.has(cap))
}

fn in_band(model: &ModelEntry, hop: &ModelEntry, (low, high): (f64, f64)) -> bool {
    let (m, h) = (model.blended_price(), hop.blended_price());
    match (m.is_finite(), h.is_finite()) {
        (true, true) => h >= m * low && h <= m * high,
        // A priced model is not backed by one whose cost is unknown.
        (true, false) => false,
        (false, _) => true,
    }
}

/// How far `hop`'s price is from `model`'s (0: the same; unknown prices sort after known ones).
fn price_distance(model: &ModelEntry, hop: &ModelEntry) -> f64 {
    let (m, h) = (model.blended_price(), hop.blended_price());
    if m.is_finite() && h.is_finite() && m > 0.0 && h > 0.0 { (h / m).ln().abs() } else { 100.0 }
}

/// The name without a provider's marking (`-direct`), so one model served by two providers matches.
fn base_name(m: &ModelEntry) -> &str {
    m.name.strip_suffix("-direct").unwrap_or(&m.name)
}

/// Takes hops from `candidates` (in preference order): the same model elsewhere, then a lab not yet in
/// the chain, then the others,
/// never a provider on more than half of the hops, an aggregator only as one last hop.
fn pick(
    model: &ModelEntry,
    candidates: &[Arc<ModelEntry>],
    hops: usize,
    other_labs_only: bool,
) -> Vec<Arc<ModelEntry>> {
    let cap = hops.div_ceil(2);
    let mut out: Vec<Arc<ModelEntry>> = Vec::new();
    let mut labs: Vec<&str> = vec![lab(model)];
    let on = |out: &[Arc<ModelEntry>], p: &str| {
        out.iter().filter(|m| m.provider.name == p && !m.provider.aggregator).count()
    };
    let direct: Vec<&Arc<ModelEntry>> = candidates.iter().filter(|c| !c.provider.aggregator).collect();
    if !other_labs_only
        && let Some(twin) = candidates
            .iter()
            .find(|c| !c.provider.aggregator && base_name(c) == base_name(model) && lab(c) == lab(model))
    {
        out.push(twin.clone());
    }
    for c in &direct {
        if out.len() < hops && !labs.contains(&lab(c)) && on(&out, &c.provider.name) < cap {
            labs.push(lab(c));
            out.push((*c).clone());
        }
    }
    for c in &direct {
        let new = !out.iter().any(|x| Arc::ptr_eq(x, c));
        let other_lab = lab(c) != lab(model);
        if out.len() < hops && new && (other_lab || !other_labs_only) && on(&out, &c.provider.name) < cap {
            out.push((*c).clone());
        }
    }
    if let Some(emergency) = candidates
        .iter()
        .filter(|c| c.provider.aggregator && (!other_labs_only || lab(c) != lab(model)))
        .min_by_key(|c| labs.contains(&lab(c)))
    {
        out.push(emergency.clone());
    }
    out
}

/// The chains of every model of `models`; `overrides` are the catalog's curated ones, by model name.
pub fn derive(
    models: &[Arc<ModelEntry>],
    overrides: &HashMap<String, FallbackOverrides>,
) -> HashMap<String, Arc<Chains>> {
    let by_name: HashMap<&str, &Arc<ModelEntry>> = models.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut out = HashMap::new();
    for model in models {
        if !conversational(model) {
            continue;
        }
        // A model of unknown lab has no candidates: only its curated chains.
        let usable: Vec<Arc<ModelEntry>> = models
            .iter()
            .filter(|_| model.lab.is_some())
            .filter(|c| !Arc::ptr_eq(c, model) && c.status != ModelStatus::Deprecated && conversational(c))
            .filter(|c| c.lab.is_some() && c.region == model.region)
            .filter(|c| keeps_capabilities(model, c))
            .cloned()
            .collect();
        let mut general: Vec<Arc<ModelEntry>> =
            usable.iter().filter(|c| in_band(model, c, PRICE_BAND)).cloned().collect();
        general.sort_by(|a, b| {
            (a.tier != model.tier)
                .cmp(&(b.tier != model.tier))
                .then((a.status == ModelStatus::Preview).cmp(&(b.status == ModelStatus::Preview)))
                .then(price_distance(model, a).total_cmp(&price_distance(model, b)))
        });
        let mut larger: Vec<Arc<ModelEntry>> = match model.context_window {
            Some(window) => usable
                .iter()
                .filter(|c| c.context_window.is_some_and(|w| w > window) && in_band(model, c, WINDOW_PRICE_BAND))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        larger.sort_by(|a, b| {
            a.context_window.cmp(&b.context_window).then(price_distance(model, a).total_cmp(&price_distance(model, b)))
        });
        let curated = |names: &Option<Vec<String>>| {
            names.as_ref().map(|names| {
                names.iter().filter_map(|n| by_name.get(n.as_str()).map(|m| (*m).clone())).collect::<Vec<_>>()
            })
        };
        let own = overrides.get(&model.name);
        let chains = Chains {
            general: own.and_then(|o| curated(&o.general)).unwrap_or_else(|| pick(model, &general, HOPS, false)),
            context_window: own
                .and_then(|o| curated(&o.context_window))
                .unwrap_or_else(|| pick(model, &larger, SHORT_HOPS, false)),
            content_policy: own
                .and_then(|o| curated(&o.content_policy))
                .unwrap_or_else(|| pick(model, &general, SHORT_HOPS, true)),
        };
        let empty = chains.general.is_empty() && chains.context_window.is_empty() && chains.content_policy.is_empty();
        if model.lab.is_some() || !empty {
            out.insert(model.name.clone(), Arc::new(chains));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Catalog;

    /// The shipped configuration's catalog, every provider's key set.
    fn catalog() -> Catalog {
        let config = crate::config::Config::parse(crate::config::EMBEDDED_DEFAULT).unwrap();
        let env = |_: &str| Some("sk-test".to_owned());
        let providers: Vec<Arc<crate::providers::Provider>> = config
            .providers
            .iter()
            .map(|p| Arc::new(crate::providers::Provider::from_config(p, &env).unwrap()))
            .collect();
        Catalog::new(&config, &providers)
    }

    #[test]
    fn every_chat_model_has_a_general_chain_across_three_labs_that_keeps_its_capabilities_and_price_band() {
        let c = catalog();
        let mut checked = 0;
        for m in c.models() {
            let Some(chains) = c.chains(&m.name) else { continue };
            if m.lab.is_none() {
                assert!(chains.general.is_empty(), "{}: a model of unknown lab gets only curated chains", m.name);
                continue;
            }
            for kind in [ChainType::General, ChainType::ContextWindow, ChainType::ContentPolicy] {
                let chain = chains.of(kind);
                for (i, hop) in chain.iter().enumerate() {
                    assert!(!Arc::ptr_eq(hop, m), "{} is not its own fallback", m.name);
                    assert!(keeps_capabilities(m, hop), "{} -> {} drops a capability", m.name, hop.name);
                    assert_eq!(hop.region, m.region, "{} -> {} leaves its region", m.name, hop.name);
                    assert!(!hop.provider.aggregator || i == chain.len() - 1, "{}: aggregator only last", m.name);
                    if kind == ChainType::ContentPolicy {
                        assert_ne!(lab(hop), lab(m), "{}: content policy goes to other labs", m.name);
                    }
                    if kind == ChainType::ContextWindow {
                        assert!(hop.context_window > m.context_window, "{} -> {}", m.name, hop.name);
                    }
                }
            }
            let direct: Vec<&Arc<ModelEntry>> = chains.general.iter().filter(|h| !h.provider.aggregator).collect();
            for p in direct.iter().map(|h| &h.provider.name) {
                let n = direct.iter().filter(|h| &h.provider.name == p).count();
                assert!(n <= HOPS.div_ceil(2), "{}: {p} carries {n} of {} hops", m.name, direct.len());
            }
            // Where the catalog has three labs that could back this model, the chain spans them.
            let could: std::collections::HashSet<&str> = c
                .models()
                .iter()
                .filter(|h| !Arc::ptr_eq(h, m) && conversational(h) && h.status != ModelStatus::Deprecated)
                .filter(|h| h.lab.is_some() && h.region == m.region)
                .filter(|h| keeps_capabilities(m, h) && in_band(m, h, PRICE_BAND) && !h.provider.aggregator)
                .map(|h| lab(h))
                .filter(|l| *l != lab(m))
                .collect();
            let spans: std::collections::HashSet<&str> =
                std::iter::once(lab(m)).chain(chains.general.iter().map(|h| lab(h))).collect();
            assert!(spans.len() >= 3.min(could.len() + 1), "{}: {spans:?} of {could:?}", m.name);
            checked += 1;
        }
        assert!(checked > 50, "{checked} models have chains");
        let flash = c.chains("gemini-2.5-flash").expect("the Smoo quickstart's model has chains");
        assert!(flash.general.iter().any(|h| lab(h) != "Google"), "{:?}", flash.general);
        assert!(c.chains("text-embedding-3-small").is_none_or(|ch| ch.general.is_empty()));
    }
}
