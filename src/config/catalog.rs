//! The model catalog's configuration: models with their metadata, aliases with their fallback chains, and
//! routing tiers. The default catalog (`config/catalog.toml`, built from the product pages) is merged with
//! the operator's own `[[models]]`, `[[aliases]]` and `[[tiers]]`: an operator entry replaces the catalog
//! entry of the same name. Catalog entries whose provider is not configured are left out quietly (an
//! operator who configures only OpenAI gets the OpenAI part of the catalog); the operator's own entries are
//! checked strictly.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::{Config, ConfigProblem};

pub const EMBEDDED_CATALOG: &str = include_str!("../../config/catalog.toml");

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub aliases: Vec<AliasConfig>,
    #[serde(default)]
    pub tiers: Vec<TierConfig>,
}

/// Where the catalog comes from: the built-in one by default, a file, or none (`file = ""`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    pub file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Tools,
    Vision,
    JsonSchema,
    Reasoning,
    Embeddings,
    Moderation,
    /// Scores documents against a query (`POST /v1/rerank`).
    Rerank,
    /// Makes images from a prompt (`POST /v1/images/generations`).
    ImageGeneration,
    /// Speaks text (`POST /v1/audio/speech`).
    Speech,
    /// Writes down speech (`POST /v1/audio/transcriptions` and `/v1/audio/translations`).
    Transcription,
}

impl Capability {
    /// Work that is not a conversation, done only by a model that declares it (and such a model does
    /// nothing else unless it also declares tools).
    pub const DEDICATED: [Capability; 4] =
        [Capability::Rerank, Capability::ImageGeneration, Capability::Speech, Capability::Transcription];

    /// The dedicated work a model with these capabilities does and nothing else (it declares one of
    /// [`Capability::DEDICATED`] and not tools), if any.
    pub fn dedicated_in(caps: &[Capability]) -> Option<Capability> {
        if caps.contains(&Capability::Tools) {
            return None;
        }
        Self::DEDICATED.into_iter().find(|c| caps.contains(c))
    }

    /// [`Capability::noun`] with its article: "a rerank", "an image generation".
    pub fn a_noun(self) -> String {
        let noun = self.noun();
        let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        format!("{article} {noun}")
    }

    /// What a model doing this work is called, for refusals ("is not a speech model").
    pub fn noun(self) -> &'static str {
        match self {
            Capability::Tools => "tool",
            Capability::Vision => "vision",
            Capability::JsonSchema => "JSON schema",
            Capability::Reasoning => "reasoning",
            Capability::Embeddings => "embedding",
            Capability::Moderation => "moderation",
            Capability::Rerank => "rerank",
            Capability::ImageGeneration => "image generation",
            Capability::Speech => "speech",
            Capability::Transcription => "transcription",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelTier {
    Frontier,
    #[default]
    Smart,
    Fast,
    Specialty,
    Embedding,
}

/// A model's speed class: the time to first token `prefer: fast` assumes before it has measured any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Speed {
    Fast,
    Standard,
    Slow,
}

impl Speed {
    /// The class of a model that does not declare one.
    pub fn of_tier(tier: ModelTier) -> Speed {
        match tier {
            ModelTier::Fast => Speed::Fast,
            ModelTier::Frontier => Speed::Slow,
            _ => Speed::Standard,
        }
    }

    /// The time to first token assumed for the class, in milliseconds.
    pub fn assumed_ttft_ms(self) -> u32 {
        match self {
            Speed::Fast => 300,
            Speed::Standard => 800,
            Speed::Slow => 2000,
        }
    }
}

impl ModelTier {
    /// The quality score of a model of this tier that does not declare one.
    pub fn default_quality(self) -> u8 {
        match self {
            ModelTier::Frontier => 85,
            ModelTier::Smart => 70,
            ModelTier::Specialty => 65,
            ModelTier::Fast => 50,
            ModelTier::Embedding => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    #[default]
    Ga,
    Preview,
    Deprecated,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The public name clients send.
    pub name: String,
    pub provider: String,
    /// The provider's model id; defaults to `name`.
    pub upstream: Option<String>,
    pub lab: Option<String>,
    #[serde(default)]
    pub tier: ModelTier,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    /// USD per million tokens; absent means not yet priced.
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    /// What the model can do. Left out: assumed capable of everything (the operator knows their model).
    pub capabilities: Option<Vec<Capability>>,
    /// What `prefer: coding` looks for: `coding`.
    #[serde(default)]
    pub strengths: Vec<String>,
    /// How quickly the model starts answering, until this replica has measured it (`prefer: fast`).
    /// Left out: `fast` for the fast tier, `slow` for the frontier tier, else `standard`.
    pub speed: Option<Speed>,
    /// 0–100, a rounded reading of public benchmark composites (`prefer: quality`). Left out: by tier.
    pub quality: Option<u8>,
    /// Where the model is served, in the seeds' terms (`global`, `in`, `cn`, …), unless its provider's
    /// configuration names a region; left out, global. An organisation's traffic goes only to the
    /// regions it allows.
    pub region: Option<String>,
    #[serde(default)]
    pub status: ModelStatus,
    pub note: Option<String>,
    /// Per-model upstream deadlines, overriding the provider's.
    pub timeouts: Option<super::TimeoutsConfig>,
    /// Curated fallback chains, each replacing the derived chain of its type.
    #[serde(default)]
    pub fallbacks: FallbackOverrides,
    /// Where the entry was written, for messages (`models[3]`, `catalog models[12]`).
    #[serde(skip)]
    pub origin: String,
}

/// A model's curated fallback chains (model names, in order); a type left out keeps its derived chain.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackOverrides {
    pub general: Option<Vec<String>>,
    pub context_window: Option<Vec<String>>,
    pub content_policy: Option<Vec<String>>,
}

impl ModelConfig {
    pub fn upstream_id(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    pub name: String,
    /// Models or other aliases, tried in this order.
    pub targets: Vec<String>,
    /// Tried instead of the rest of the chain when a target refuses on content policy.
    #[serde(default)]
    pub content_policy_targets: Vec<String>,
    /// Set for names kept for old callers: the message says what to use instead.
    pub deprecated: Option<String>,
    pub note: Option<String>,
    /// A stream whose provider fails mid-way continues on the next target (on by default).
    #[serde(default = "yes")]
    pub continue_streams: bool,
    #[serde(skip)]
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The model string that selects this tier (`economy`, `standard`, `premium`).
    pub name: String,
    /// The tier's models in their "balanced" order.
    pub models: Vec<String>,
    /// The tier's models are interchangeable in quality (a published-benchmark band): an organisation
    /// that opts in to cheaper swaps gets the cheapest of them when it asks for one by name.
    #[serde(default)]
    pub swap_band: bool,
    #[serde(skip)]
    pub origin: String,
}

/// Merges the catalog into the configuration (operator entries win) and drops catalog entries whose
/// provider is not configured.
pub fn merge(config: &mut Config, catalog: CatalogFile) {
    let providers: HashSet<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    for (i, m) in config.models.iter_mut().enumerate() {
        m.origin = format!("models[{i}]");
    }
    for (i, a) in config.aliases.iter_mut().enumerate() {
        a.origin = format!("aliases[{i}]");
    }
    for (i, t) in config.tiers.iter_mut().enumerate() {
        t.origin = format!("tiers[{i}]");
    }
    let own_models: HashSet<String> = config.models.iter().map(|m| m.name.clone()).collect();
    let own_aliases: HashSet<String> = config.aliases.iter().map(|a| a.name.clone()).collect();
    let own_tiers: HashSet<String> = config.tiers.iter().map(|t| t.name.clone()).collect();

    let mut models: Vec<ModelConfig> = catalog
        .models
        .into_iter()
        .enumerate()
        .filter(|(_, m)| providers.contains(m.provider.as_str()) && !own_models.contains(&m.name))
        .map(|(i, mut m)| {
            m.origin = format!("catalog models[{i}]");
            m
        })
        .collect();
    models.append(&mut config.models);
    let known: HashSet<String> = models
        .iter()
        .map(|m| m.name.clone())
        .chain(catalog.aliases.iter().map(|a| a.name.clone()))
        .chain(own_aliases.iter().cloned())
        .collect();
    let mut aliases: Vec<AliasConfig> = catalog
        .aliases
        .into_iter()
        .enumerate()
        .filter(|(_, a)| !own_aliases.contains(&a.name))
        .map(|(i, mut a)| {
            a.origin = format!("catalog aliases[{i}]");
            a.targets.retain(|t| known.contains(t));
            a.content_policy_targets.retain(|t| known.contains(t));
            a
        })
        .collect();
    // Pruning can empty an alias, which can empty an alias that pointed at it: repeat until stable.
    loop {
        let before = aliases.len();
        let alive: HashSet<String> = models
            .iter()
            .map(|m| m.name.clone())
            .chain(aliases.iter().map(|a| a.name.clone()))
            .chain(own_aliases.iter().cloned())
            .collect();
        for a in aliases.iter_mut().filter(|a| a.origin.starts_with("catalog")) {
            a.targets.retain(|t| alive.contains(t));
        }
        aliases.retain(|a| !a.origin.starts_with("catalog") || !a.targets.is_empty());
        if aliases.len() == before {
            break;
        }
    }
    aliases.append(&mut config.aliases);
    let model_names: HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let mut tiers: Vec<TierConfig> = catalog
        .tiers
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !own_tiers.contains(&t.name))
        .map(|(i, mut t)| {
            t.origin = format!("catalog tiers[{i}]");
            t.models.retain(|m| model_names.contains(m.as_str()));
            t
        })
        .filter(|t| !t.models.is_empty())
        .collect();
    tiers.append(&mut config.tiers);
    config.models = models;
    config.aliases = aliases;
    config.tiers = tiers;
}

/// Checks the merged catalog: names unique, references resolvable, chains non-empty, duplicate- and
/// cycle-free, prices and windows sane.
pub fn problems(config: &Config, out: &mut Vec<ConfigProblem>) {
    let mut bad = |path: String, message: String| out.push(ConfigProblem { path, message });
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &config.models {
        let at = |f: &str| format!("{}.{f}", m.origin);
        if m.name.is_empty() || m.name.len() > 256 || m.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bad(at("name"), "must be 1-256 characters without spaces".into());
        } else if let Some(first) = names.insert(&m.name, &m.origin) {
            bad(at("name"), format!("\"{}\" is already defined at {first}", m.name));
        }
        if !config.providers.iter().any(|p| p.name == m.provider) {
            bad(at("provider"), format!("provider \"{}\" is not defined", m.provider));
        }
        if m.upstream.as_deref() == Some("") {
            bad(at("upstream"), "must not be empty".into());
        }
        for (field, price) in [
            ("input_per_mtok", m.input_per_mtok),
            ("output_per_mtok", m.output_per_mtok),
            ("cached_input_per_mtok", m.cached_input_per_mtok),
        ] {
            if let Some(p) = price
                && !(p.is_finite() && (0.0..=10_000.0).contains(&p))
            {
                bad(at(field), format!("{p} is not a price between 0 and 10000 USD per million tokens"));
            }
        }
        if let (Some(cached), Some(input)) = (m.cached_input_per_mtok, m.input_per_mtok)
            && cached > input
        {
            bad(at("cached_input_per_mtok"), "is higher than input_per_mtok".into());
        }
        if m.quality.is_some_and(|q| q > 100) {
            bad(at("quality"), "must be between 0 and 100".into());
        }
        if let Some(region) = &m.region
            && !valid_region(region)
        {
            bad(at("region"), format!("\"{region}\" is not a region name (lowercase letters, digits and '-')"));
        }
        if m.context_window == Some(0) {
            bad(at("context_window"), "must be greater than 0".into());
        }
        if let (Some(out_max), Some(window)) = (m.max_output, m.context_window)
            && out_max > window
        {
            bad(at("max_output"), "is larger than the context window".into());
        }
    }
    let alias_by_name: HashMap<&str, &AliasConfig> = config.aliases.iter().map(|a| (a.name.as_str(), a)).collect();
    for a in &config.aliases {
        let at = |f: &str| format!("{}.{f}", a.origin);
        if let Some(first) = names.insert(&a.name, &a.origin) {
            bad(at("name"), format!("\"{}\" is already defined at {first}", a.name));
        }
        if a.targets.is_empty() {
            bad(at("targets"), "must list at least one model or alias".into());
        }
        for (field, list) in [("targets", &a.targets), ("content_policy_targets", &a.content_policy_targets)] {
            let mut seen = HashSet::new();
            for (j, t) in list.iter().enumerate() {
                if !seen.insert(t) {
                    bad(format!("{}.{field}[{j}]", a.origin), format!("\"{t}\" is listed twice"));
                }
                if !alias_by_name.contains_key(t.as_str()) && !config.models.iter().any(|m| &m.name == t) {
                    bad(format!("{}.{field}[{j}]", a.origin), format!("\"{t}\" is not a model or alias"));
                }
            }
        }
        if let Some(cycle) = cycle_through(&a.name, &alias_by_name) {
            bad(at("targets"), format!("aliases form a cycle: {}", cycle.join(" -> ")));
        }
    }
    let mut banded: HashMap<&str, &str> = HashMap::new();
    for t in &config.tiers {
        if t.swap_band {
            for (j, m) in t.models.iter().enumerate() {
                if let Some(other) = banded.insert(m, &t.name)
                    && other != t.name
                {
                    bad(format!("{}.models[{j}]", t.origin), format!("\"{m}\" is already in swap band \"{other}\""));
                }
            }
        }
        if let Some(first) = names.insert(&t.name, &t.origin) {
            bad(format!("{}.name", t.origin), format!("\"{}\" is already defined at {first}", t.name));
        }
        if t.models.is_empty() {
            bad(format!("{}.models", t.origin), "must list at least one model".into());
        }
        for (j, m) in t.models.iter().enumerate() {
            if !config.models.iter().any(|x| &x.name == m) {
                bad(format!("{}.models[{j}]", t.origin), format!("\"{m}\" is not a model"));
            }
        }
    }
}

/// A chain of aliases that leads from `root` back to itself, if there is one.
fn cycle_through(root: &str, aliases: &HashMap<&str, &AliasConfig>) -> Option<Vec<String>> {
    fn walk(node: &str, root: &str, aliases: &HashMap<&str, &AliasConfig>, path: &mut Vec<String>) -> bool {
        let Some(alias) = aliases.get(node) else { return false };
        for t in &alias.targets {
            if t == root {
                path.push(t.clone());
                return true;
            }
            if path.contains(t) {
                continue; // a cycle that does not pass through `root` is reported from its own aliases
            }
            path.push(t.clone());
            if walk(t, root, aliases, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![root.to_owned()];
    walk(root, root, aliases, &mut path).then_some(path)
}

fn yes() -> bool {
    true
}

/// The region of a model or provider that names none, and the one organisations allow by default.
pub const GLOBAL_REGION: &str = "global";

/// A region name: `global`, `in`, `cn`, `eu-west`: lowercase ASCII letters, digits and `-`.
pub fn valid_region(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
