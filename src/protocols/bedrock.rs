//! AWS Bedrock's Converse API: one request shape for every Bedrock-hosted model (Anthropic, Amazon Nova,
//! Meta, Mistral, Cohere, …), `POST /model/{modelId}/converse` and `/converse-stream`, signed with SigV4
//! (`providers::signing`) or sent with a Bedrock API key as a bearer token; embeddings through
//! `InvokeModel` (`/model/{modelId}/invoke`) in the model's own body (Titan, Cohere).
//!
//! Canonical chat → Converse:
//! - `system`/`developer` messages → `system: [{text}]`; user text and `data:` images (png, jpeg, gif,
//!   webp) → `text` and `image` blocks; an image by URL is refused (Bedrock takes bytes only, and the
//!   gateway never fetches a caller's URL), so another target may take it.
//! - Assistant tool calls → `toolUse` blocks; `tool` messages → `toolResult` blocks in a user turn
//!   (a JSON object result as `json`, anything else as `text`). Consecutive turns of one role merge, as
//!   Converse requires alternating roles.
//! - `max_tokens`/`max_completion_tokens`, `temperature`, `top_p`, `stop` → `inferenceConfig`.
//! - `tools` → `toolConfig.tools[].toolSpec`; `tool_choice` `auto`/`required`/a function → `auto`/`any`/
//!   `tool`. Converse has no `none`: without tool turns in the conversation the tools are left out; with
//!   them (Bedrock then requires the tools) the request is refused by name.
//! - `response_format` `json_schema`/`json_object` → a forced tool whose input schema is the schema; its
//!   input comes back as the message's text (whole and streamed), finish reason `stop`.
//! - `n` > 1 is made as `n` calls by the gateway. Dropped: `seed`, penalties, `logprobs`, `user`,
//!   `reasoning_effort` (model-specific on Bedrock).
//!
//! Converse → canonical: `text` blocks joined; `toolUse` → tool calls (arguments as JSON text);
//! `reasoningContent` → `reasoning_content`; `stopReason` `end_turn`/`stop_sequence` → `stop`,
//! `max_tokens` → `length`, `tool_use` → `tool_calls`, `guardrail_intervened`/`content_filtered` →
//! `content_filter`. Usage: `inputTokens` counts only uncached input, so the prompt is it plus
//! `cacheReadInputTokens` and `cacheWriteInputTokens` (the read ones as cached).
//!
//! The stream is AWS event-stream framing ([`crate::protocols::Framing::EventStream`]): `messageStart`,
//! `contentBlockStart` (a tool's id and name), `contentBlockDelta` (text, a tool's input JSON piece,
//! reasoning), `contentBlockStop`, `messageStop` (the stop reason), `metadata` (usage, last); an
//! exception message (`throttlingException`, `modelStreamErrorException`, …) fails the attempt.
//!
//! Errors ([`errors`]): by `x-amzn-ErrorType` (else the body's `__type`, else the status):
//! `ThrottlingException`/`ServiceQuotaExceededException` → rate limited; `ModelNotReadyException`,
//! `ServiceUnavailableException` → overloaded; `InternalServerException`, `ModelErrorException`, 5xx →
//! server error (all fall back); `ModelTimeoutException` → timeout; `ValidationException` → 400 with
//! Bedrock's words (a context overflow when they say the input is too long); `AccessDeniedException`,
//! `UnrecognizedClientException`, signature and token errors → provider authentication;
//! `ResourceNotFoundException` → not found.

pub mod errors;
pub mod outbound;
pub mod wire;

pub use outbound::BedrockAdapter;
