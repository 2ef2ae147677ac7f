//! The catalog at run time: every servable model bound to its provider, aliases expanded to their
//! ordered targets, and routing tiers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Capability, Config, ModelStatus, ModelTier, Speed, Timeouts};
use crate::providers::Provider;

use super::breaker::Breaker;
use super::latency::Ttft;

/// One servable model: a public name bound to a provider's model id, with what we know about it.
#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub lab: Option<String>,
    pub provider: Arc<Provider>,
    pub upstream: String,
    pub tier: ModelTier,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    /// `None`: not declared, so assumed capable of anything.
    pub capabilities: Option<Vec<Capability>>,
    pub strengths: Vec<String>,
    /// 0–100, declared or the tier's default (`prefer: quality`).
    pub quality: u8,
    pub speed: Speed,
    /// Where it is served (`global`, `in`, `cn`, …): its provider's region when configured, else the
    /// catalog's word, else global.
    pub region: String,
    /// This replica's measured time to first token (`prefer: fast`).
    pub ttft: Ttft,
    pub status: ModelStatus,
    pub note: Option<String>,
    pub timeouts: Timeouts,
    pub breaker: Breaker,
    /// Made for a `provider/model` string outside the catalog: nothing is declared of it.
    pub ad_hoc: bool,
}

impl ModelEntry {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.as_ref().is_none_or(|c| c.contains(&capability))
    }

    /// The dedicated work (a rerank, images, speech) this model does and nothing else, if any.
    pub fn dedicated_work(&self) -> Option<Capability> {
        self.capabilities.as_deref().and_then(Capability::dedicated_in)
    }

    /// Input plus output price, for ordering by cost; unpriced models sort last.
    pub fn blended_price(&self) -> f64 {
        match (self.input_per_mtok, self.output_per_mtok) {
            (Some(i), Some(o)) => i + o,
            (Some(i), None) => i,
            _ => f64::INFINITY,
        }
    }

    /// Whether a key with a USD budget may use this model: its spending can be counted (it has a price,
    /// its own or its provider's default), or the operator lets it be free to budgets.
    pub fn budgetable(&self) -> bool {
        self.input_per_mtok.is_some() || self.provider.unpriced_free
    }

    pub fn prices(&self) -> crate::usage::Prices {
        crate::usage::Prices::from_per_mtok(self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)
    }

    pub fn is_strong_at(&self, strength: &str) -> bool {
        self.strengths.iter().any(|s| s == strength)
    }

    /// An entry for a `provider/model` string naming a model the catalog does not list.
    pub fn ad_hoc(provider: Arc<Provider>, upstream: &str) -> ModelEntry {
        let defaults = provider.default_prices;
        let region = provider.region.clone().unwrap_or_else(|| crate::config::GLOBAL_REGION.to_owned());
        ModelEntry {
            name: format!("{}/{upstream}", provider.name),
            lab: None,
            timeouts: provider.timeouts,
            provider,
            upstream: upstream.to_owned(),
            tier: ModelTier::Smart,
            context_window: None,
            max_output: None,
            input_per_mtok: defaults.map(|d| d.input_per_mtok),
            output_per_mtok: defaults.map(|d| d.output_per_mtok),
            cached_input_per_mtok: defaults.and_then(|d| d.cached_input_per_mtok),
            capabilities: None,
            strengths: Vec::new(),
            quality: ModelTier::Smart.default_quality(),
            speed: Speed::Standard,
            region,
            ttft: Ttft::assuming(Speed::Standard.assumed_ttft_ms()),
            status: ModelStatus::Ga,
            note: None,
            ad_hoc: true,
            breaker: Breaker::default(),
        }
    }
}

#[derive(Debug)]
pub struct AliasEntry {
    pub name: String,
    /// As written: models or other aliases.
    pub targets: Vec<String>,
    /// Flattened to models, in order, each once.
    pub chain: Vec<Arc<ModelEntry>>,
    pub content_policy_chain: Vec<Arc<ModelEntry>>,
    pub deprecated: Option<String>,
    pub note: Option<String>,
    /// A stream served through the alias may continue on its next target if a provider fails mid-way.
    pub continue_streams: bool,
}

/// Every model, alias and tier a caller can ask for, in configuration order.
#[derive(Debug, Default)]
pub struct Catalog {
    models: Vec<Arc<ModelEntry>>,
    by_name: HashMap<String, Arc<ModelEntry>>,
    aliases: Vec<Arc<AliasEntry>>,
    alias_by_name: HashMap<String, Arc<AliasEntry>>,
    tiers: HashMap<String, Vec<Arc<ModelEntry>>>,
    /// For each model in a swap band: the band's name.
    swap_band: HashMap<String, String>,
    providers: HashMap<String, Arc<Provider>>,
    /// Each conversational model's fallback chains (`routing::chains`).
    chains: HashMap<String, Arc<super::chains::Chains>>,
    /// `provider/model` targets the catalog does not list, by provider and upstream id, so each keeps
    /// its circuit breaker across requests; at most [`AD_HOC_CAP`] (callers choose the names).
    ad_hoc: std::sync::Mutex<HashMap<(String, String), Arc<ModelEntry>>>,
    /// Where `auto` draws the line between tiers.
    pub auto: super::auto::Thresholds,
}

/// How many pass-through targets keep a breaker; past it, one whose breaker is closed makes room.
pub const AD_HOC_CAP: usize = 1024;

impl Catalog {
    /// Binds the validated configuration to its providers.
    pub fn new(config: &Config, providers: &[Arc<Provider>]) -> Catalog {
        let mut c = Catalog {
            providers: providers.iter().map(|p| (p.name.clone(), p.clone())).collect(),
            ..Catalog::default()
        };
        for m in &config.models {
            let Some(provider) = c.providers.get(&m.provider).cloned() else { continue };
            let timeouts = m.timeouts.map_or(provider.timeouts, |t| t.resolve_over(provider.timeouts));
            // A model the catalog does not price takes its provider's default prices, if any, whole; a
            // model of dedicated work does not (reranks are billed by search, images by the picture, speech
            // by the character: not guessed).
            let dedicated = m.capabilities.as_deref().and_then(Capability::dedicated_in).is_some();
            let (input_per_mtok, output_per_mtok, cached_input_per_mtok) =
                match (m.input_per_mtok, provider.default_prices) {
                    (None, Some(d)) if !dedicated => {
                        (Some(d.input_per_mtok), Some(d.output_per_mtok), d.cached_input_per_mtok)
                    }
                    _ => (m.input_per_mtok, m.output_per_mtok, m.cached_input_per_mtok),
                };
            let speed = m.speed.unwrap_or(Speed::of_tier(m.tier));
            let region = provider
                .region
                .clone()
                .or_else(|| m.region.clone())
                .unwrap_or_else(|| crate::config::GLOBAL_REGION.to_owned());
            let entry = Arc::new(ModelEntry {
                name: m.name.clone(),
                lab: m.lab.clone(),
                provider,
                upstream: m.upstream_id().to_owned(),
                tier: m.tier,
                context_window: m.context_window,
                max_output: m.max_output,
                input_per_mtok,
                output_per_mtok,
                cached_input_per_mtok,
                capabilities: m.capabilities.clone(),
                strengths: m.strengths.clone(),
                quality: m.quality.unwrap_or(m.tier.default_quality()),
                speed,
                region,
                ttft: Ttft::assuming(speed.assumed_ttft_ms()),
                status: m.status,
                note: m.note.clone(),
                timeouts,
                ad_hoc: false,
                breaker: Breaker::default(),
            });
            c.by_name.insert(entry.name.clone(), entry.clone());
            c.models.push(entry);
        }
        let raw: HashMap<&str, &crate::config::AliasConfig> =
            config.aliases.iter().map(|a| (a.name.as_str(), a)).collect();
        for a in &config.aliases {
            let expand = |targets: &[String]| {
                let mut chain: Vec<Arc<ModelEntry>> = Vec::new();
                c.flatten(targets, &raw, &mut chain, 0);
                chain
            };
            let entry = Arc::new(AliasEntry {
                name: a.name.clone(),
                targets: a.targets.clone(),
                chain: expand(&a.targets),
                content_policy_chain: expand(&a.content_policy_targets),
                deprecated: a.deprecated.clone(),
                note: a.note.clone(),
                continue_streams: a.continue_streams,
            });
            c.alias_by_name.insert(entry.name.clone(), entry.clone());
            c.aliases.push(entry);
        }
        let overrides: HashMap<String, crate::config::FallbackOverrides> =
            config.models.iter().map(|m| (m.name.clone(), m.fallbacks.clone())).collect();
        c.chains = super::chains::derive(&c.models, &overrides);
        c.auto = super::auto::Thresholds {
            economy_below: config.router.auto_economy_below,
            premium_from: config.router.auto_premium_from,
        };
        for t in &config.tiers {
            let models: Vec<Arc<ModelEntry>> = t.models.iter().filter_map(|m| c.by_name.get(m).cloned()).collect();
            if t.swap_band {
                for m in &models {
                    c.swap_band.entry(m.name.clone()).or_insert_with(|| t.name.clone());
                }
            }
            c.tiers.insert(t.name.clone(), models);
        }
        c
    }

    fn flatten(
        &self,
        targets: &[String],
        raw: &HashMap<&str, &crate::config::AliasConfig>,
        out: &mut Vec<Arc<ModelEntry>>,
        depth: usize,
    ) {
        for t in targets {
            if let Some(m) = self.by_name.get(t) {
                if !out.iter().any(|x| Arc::ptr_eq(x, m)) {
                    out.push(m.clone());
                }
            } else if let Some(a) = raw.get(t.as_str())
                && depth < 8
            {
                self.flatten(&a.targets, raw, out, depth + 1);
            }
        }
    }

    pub fn models(&self) -> &[Arc<ModelEntry>] {
        &self.models
    }

    pub fn aliases(&self) -> &[Arc<AliasEntry>] {
        &self.aliases
    }

    /// Whether a model string names something a request could ask for: a model, an alias, a tier, a
    /// configured provider's `provider/model`, `auto` or `smart/<prefer>`, or a plan's `smart-route*`.
    pub fn names(&self, name: &str) -> bool {
        self.model(name).is_some()
            || self.alias(name).is_some()
            || self.tier(name).is_some()
            || crate::routing::auto::requested(name).is_some()
            || name.starts_with("smart-route")
            || name.split_once('/').is_some_and(|(p, m)| !m.is_empty() && self.provider_for_prefix(p).is_some())
    }

    /// Up to five names of the catalog close to `name` (one contains the other, ignoring case, or a
    /// few letters apart), for "did you mean".
    pub fn close_to(&self, name: &str) -> Vec<String> {
        let wanted = name.to_lowercase();
        let all = self
            .models
            .iter()
            .map(|m| m.name.as_str())
            .chain(self.aliases.iter().map(|a| a.name.as_str()))
            .chain(self.tier_names());
        let mut close: Vec<(usize, &str)> = all
            .filter_map(|n| {
                let lower = n.to_lowercase();
                let d = edit_distance(&lower, &wanted);
                let related = d <= 2 || (wanted.len() >= 3 && (lower.contains(&wanted) || wanted.contains(&lower)));
                related.then_some((d, n))
            })
            .collect();
        close.sort_unstable();
        close.dedup_by(|a, b| a.1 == b.1);
        close.into_iter().take(5).map(|(_, n)| n.to_owned()).collect()
    }

    pub fn model(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.by_name.get(name)
    }

    pub fn alias(&self, name: &str) -> Option<&Arc<AliasEntry>> {
        self.alias_by_name.get(name)
    }

    pub fn tier(&self, name: &str) -> Option<&[Arc<ModelEntry>]> {
        self.tiers.get(name).map(Vec::as_slice)
    }

    /// The swap band `model` belongs to, and the band's models.
    pub fn swap_band_of(&self, model: &str) -> Option<(&str, &[Arc<ModelEntry>])> {
        let band = self.swap_band.get(model)?;
        Some((band.as_str(), self.tier(band)?))
    }

    pub fn tier_names(&self) -> impl Iterator<Item = &str> {
        self.tiers.keys().map(String::as_str)
    }

    /// The entry of a `provider/model` target the catalog does not list: the same one for the same
    /// provider and id while there is room (so its breaker remembers), else a fresh one.
    pub fn ad_hoc(&self, provider: &Arc<Provider>, upstream: &str) -> Arc<ModelEntry> {
        let mut cache = self.ad_hoc.lock().unwrap_or_else(|p| p.into_inner());
        let key = (provider.name.clone(), upstream.to_owned());
        if let Some(entry) = cache.get(&key) {
            return entry.clone();
        }
        let entry = Arc::new(ModelEntry::ad_hoc(provider.clone(), upstream));
        if cache.len() >= AD_HOC_CAP {
            let now = tokio::time::Instant::now();
            let idle =
                cache.iter().find(|(_, e)| e.breaker.peek(now) == super::breaker::Gate::Closed).map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    cache.remove(&k);
                }
                None => return entry,
            }
        }
        cache.insert(key, entry.clone());
        entry
    }

    /// A model's fallback chains (`None` for embedding and moderation models).
    pub fn chains(&self, model: &str) -> Option<&super::chains::Chains> {
        self.chains.get(model).map(|c| &**c)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// The provider a model string's prefix names: a provider by its own name, else the providers made
    /// from the preset the prefix names (a preset's own name, or one of LiteLLM's prefixes:
    /// `hosted_vllm/…`, `ollama_chat/…`, `together_ai/…`), one that can serve first, then by name.
    pub fn provider_for_prefix(&self, prefix: &str) -> Option<&Arc<Provider>> {
        if let Some(p) = self.providers.get(prefix) {
            return Some(p);
        }
        let preset = LITELLM_PREFIXES
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, preset)| *preset)
            .or_else(|| crate::config::presets::find(prefix).map(|p| p.name));
        let kind = KIND_PREFIXES.iter().find(|(p, _)| *p == prefix).map(|(_, kind)| *kind);
        if preset.is_none() && kind.is_none() {
            return None;
        }
        let named = |p: &&Arc<Provider>| {
            preset.is_some_and(|preset| p.preset.as_deref() == Some(preset)) || kind.is_some_and(|k| p.kind == k)
        };
        self.providers.values().filter(named).min_by(|a, b| {
            (a.unavailable_reason().is_some(), &a.name).cmp(&(b.unavailable_reason().is_some(), &b.name))
        })
    }

    /// After a configuration reload: each model that is still served the same way (same name, same
    /// provider instance, same upstream id) keeps its breaker's state and its measured latency, and
    /// each pass-through target its entry, so a reload forgets no outage.
    pub fn take_over(&self, previous: &Catalog) {
        for m in &self.models {
            if let Some(old) = previous.by_name.get(&m.name)
                && Arc::ptr_eq(&old.provider, &m.provider)
                && old.upstream == m.upstream
            {
                m.breaker.take_over(&old.breaker);
                m.ttft.take_over(&old.ttft);
            }
        }
        let old = previous.ad_hoc.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = self.ad_hoc.lock().unwrap_or_else(|p| p.into_inner());
        for (key, entry) in old.iter() {
            if self.providers.get(&key.0).is_some_and(|p| Arc::ptr_eq(p, &entry.provider)) {
                new.insert(key.clone(), entry.clone());
            }
        }
    }
}

/// Model-string prefixes that name a kind of provider rather than a preset (LiteLLM's `bedrock/…`).
const KIND_PREFIXES: &[(&str, crate::config::ProviderKind)] =
    &[("bedrock", crate::config::ProviderKind::Bedrock), ("vertex_ai", crate::config::ProviderKind::Vertex)];

/// LiteLLM's provider prefixes that differ from our preset names, and the preset each stands for.
const LITELLM_PREFIXES: &[(&str, &str)] = &[
    ("hosted_vllm", "vllm"),
    ("ollama_chat", "ollama"),
    ("together_ai", "together"),
    ("fireworks_ai", "fireworks"),
    ("cohere_chat", "cohere"),
    ("jina_ai", "jina"),
];

/// Levenshtein distance over chars (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}
