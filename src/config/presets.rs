//! Presets for OpenAI-compatible labs: each one's documented API root and the quirks the OpenAI adapter
//! must respect for it. `preset = "groq"` in a provider's configuration picks one; `base_url` and
//! `quirks` in the configuration still override it.

use serde::Deserialize;

/// Deviations from OpenAI's own behaviour that the OpenAI adapter compensates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// Reasoning models (o-series, GPT-5) take `max_completion_tokens` and reject `max_tokens`.
    pub max_completion_tokens: bool,
    /// The API accepts `stream_options` (and so can report a stream's usage).
    pub stream_options: bool,
    /// The API rejects fields it does not know, so only documented OpenAI fields are sent.
    pub strict_fields: bool,
    /// The API serves `POST /responses` itself, so Responses requests pass through natively.
    pub responses: bool,
    /// The API serves the legacy `POST /completions`, so completions pass through natively.
    pub completions: bool,
    /// How the API takes a partial answer to continue (a stream continued after its provider failed).
    pub prefill: Prefill,
    /// Where and how the API reranks documents, if it does.
    pub rerank: Rerank,
}

/// A provider's rerank API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rerank {
    /// None is served.
    None,
    /// `POST {base_url}/rerank` taking and answering Cohere's shape (Jina, vLLM, Infinity).
    Compatible,
    /// Cohere's own `POST /v2/rerank`, beside its OpenAI-compatible API (`…/compatibility/v1`).
    CohereV2,
}

/// How a provider is asked to continue a partial answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefill {
    /// No prefill: the partial answer as an assistant turn, then a user turn asking to continue it exactly.
    Instruction,
    /// A final assistant turn is continued as it stands (Anthropic's Messages API).
    AssistantTurn,
    /// A final assistant message with `prefix: true` is continued (Mistral; DeepSeek's beta endpoint).
    PrefixFlag,
    /// `continue_final_message: true` with `add_generation_prompt: false` (vLLM's chat template).
    ContinueFinalMessage,
}

impl Quirks {
    pub const OPENAI: Quirks = Quirks {
        max_completion_tokens: true,
        stream_options: true,
        strict_fields: false,
        responses: true,
        completions: true,
        prefill: Prefill::Instruction,
        rerank: Rerank::None,
    };
    pub const COMPATIBLE: Quirks = Quirks {
        max_completion_tokens: false,
        stream_options: true,
        strict_fields: false,
        responses: false,
        completions: false,
        prefill: Prefill::Instruction,
        rerank: Rerank::None,
    };
    /// A self-hosted server (vLLM, Ollama) or an aggregator that serves both older and newer routes.
    const SERVES_ALL: Quirks = Quirks { responses: true, completions: true, ..Quirks::COMPATIBLE };
    /// The built-in fake speaks everything it is asked in OpenAI's wire format, reranks included.
    pub const FAKE: Quirks = Quirks { rerank: Rerank::Compatible, ..Quirks::SERVES_ALL };
}

/// Operator overrides of a preset's quirks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuirksConfig {
    pub max_completion_tokens: Option<bool>,
    pub stream_options: Option<bool>,
    pub strict_fields: Option<bool>,
    pub responses: Option<bool>,
    pub completions: Option<bool>,
    pub prefill: Option<Prefill>,
    pub rerank: Option<Rerank>,
}

impl QuirksConfig {
    pub fn apply(&self, base: Quirks) -> Quirks {
        Quirks {
            max_completion_tokens: self.max_completion_tokens.unwrap_or(base.max_completion_tokens),
            stream_options: self.stream_options.unwrap_or(base.stream_options),
            strict_fields: self.strict_fields.unwrap_or(base.strict_fields),
            responses: self.responses.unwrap_or(base.responses),
            completions: self.completions.unwrap_or(base.completions),
            prefill: self.prefill.unwrap_or(base.prefill),
            rerank: self.rerank.unwrap_or(base.rerank),
        }
    }
}

pub struct Preset {
    pub name: &'static str,
    pub base_url: &'static str,
    pub quirks: Quirks,
}

const STRICT: Quirks = Quirks { strict_fields: true, ..Quirks::COMPATIBLE };
/// Serves `/responses` (Groq's and xAI's OpenAI-compatible APIs document it).
const WITH_RESPONSES: Quirks = Quirks { responses: true, ..Quirks::COMPATIBLE };
/// Serves the legacy `/completions` (Together's and Fireworks' APIs document it).
const WITH_COMPLETIONS: Quirks = Quirks { completions: true, ..Quirks::COMPATIBLE };

/// Base URLs from each provider's API documentation.
pub const PRESETS: &[Preset] = &[
    Preset { name: "openai", base_url: "https://api.openai.com/v1", quirks: Quirks::OPENAI },
    Preset { name: "groq", base_url: "https://api.groq.com/openai/v1", quirks: WITH_RESPONSES },
    Preset { name: "deepseek", base_url: "https://api.deepseek.com/v1", quirks: Quirks::COMPATIBLE },
    Preset { name: "xai", base_url: "https://api.x.ai/v1", quirks: WITH_RESPONSES },
    Preset { name: "together", base_url: "https://api.together.xyz/v1", quirks: WITH_COMPLETIONS },
    Preset { name: "fireworks", base_url: "https://api.fireworks.ai/inference/v1", quirks: WITH_COMPLETIONS },
    Preset { name: "moonshot", base_url: "https://api.moonshot.ai/v1", quirks: Quirks::COMPATIBLE },
    Preset {
        name: "dashscope",
        base_url: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        quirks: Quirks::COMPATIBLE,
    },
    Preset { name: "zai", base_url: "https://api.z.ai/api/paas/v4", quirks: Quirks::COMPATIBLE },
    // The China-region platforms of Zhipu, Moonshot and Alibaba, and ByteDance's Volcengine Ark.
    Preset { name: "zhipu-cn", base_url: "https://open.bigmodel.cn/api/paas/v4", quirks: Quirks::COMPATIBLE },
    Preset { name: "moonshot-cn", base_url: "https://api.moonshot.cn/v1", quirks: Quirks::COMPATIBLE },
    Preset {
        name: "dashscope-cn",
        base_url: "https://dashscope.aliyuncs.com/compatible-mode/v1",
        quirks: Quirks::COMPATIBLE,
    },
    Preset { name: "volcengine-ark", base_url: "https://ark.cn-beijing.volces.com/api/v3", quirks: Quirks::COMPATIBLE },
    // India: Sarvam (its chat endpoint takes the key as a bearer token) and Ola Krutrim.
    Preset { name: "sarvam", base_url: "https://api.sarvam.ai/v1", quirks: Quirks::COMPATIBLE },
    Preset { name: "krutrim", base_url: "https://cloud.olakrutrim.com/v1", quirks: Quirks::COMPATIBLE },
    Preset { name: "cerebras", base_url: "https://api.cerebras.ai/v1", quirks: Quirks::COMPATIBLE },
    // MiniMax and Mistral answer 4xx to fields outside their documented set.
    Preset { name: "minimax", base_url: "https://api.minimax.io/v1", quirks: STRICT },
    Preset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        quirks: Quirks { prefill: Prefill::PrefixFlag, ..STRICT },
    },
    Preset { name: "openrouter", base_url: "https://openrouter.ai/api/v1", quirks: WITH_COMPLETIONS },
    // Cohere's OpenAI-compatible API (chat, streams, tools, embeddings) beside its own v2 rerank;
    // Jina's API (embeddings, rerank).
    Preset {
        name: "cohere",
        base_url: "https://api.cohere.ai/compatibility/v1",
        quirks: Quirks { stream_options: false, rerank: Rerank::CohereV2, ..STRICT },
    },
    Preset {
        name: "jina",
        base_url: "https://api.jina.ai/v1",
        quirks: Quirks { rerank: Rerank::Compatible, ..Quirks::COMPATIBLE },
    },
    Preset {
        name: "vllm",
        base_url: "http://127.0.0.1:8000/v1",
        quirks: Quirks { prefill: Prefill::ContinueFinalMessage, rerank: Rerank::Compatible, ..Quirks::SERVES_ALL },
    },
    Preset { name: "ollama", base_url: "http://127.0.0.1:11434/v1", quirks: Quirks::SERVES_ALL },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// OpenAI chat fields a strict provider is sent (besides the ones the canonical request types).
pub const STRICT_EXTRA_FIELDS: &[&str] = &[
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "reasoning_effort",
];

/// Whether an OpenAI model id names a reasoning model (`o1`, `o3-mini`, `gpt-5.4`, …).
pub fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    m.starts_with("gpt-5") || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_are_recognised() {
        for m in ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5.4-nano", "openai/o3"] {
            assert!(is_reasoning_model(m), "{m}");
        }
        for m in ["gpt-4o", "gpt-4.1-mini", "omni-moderation-latest", "llama-3.1-8b"] {
            assert!(!is_reasoning_model(m), "{m}");
        }
    }
}
