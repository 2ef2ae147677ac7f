//! Anthropic's Messages API (`POST /v1/messages`, `x-api-key`, `anthropic-version`), both ways.
//!
//! **Outbound** (the adapter, canonical → Anthropic): system and developer messages → `system`;
//! user/assistant/tool turns → alternating messages with `text`, `image` (base64 from `data:` URLs, `url`
//! sources for https), `tool_use` and `tool_result` blocks (consecutive turns of one role merged);
//! `cache_control` on content parts is kept; `tools`, `tool_choice` (`required` → `any`),
//! `parallel_tool_calls: false` → `disable_parallel_tool_use`; `stop` → `stop_sequences`; `temperature`,
//! `top_p`, `top_k`; `max_completion_tokens`/`max_tokens` (required by Anthropic: 4096 when absent);
//! `reasoning_effort` → a `thinking` budget; `user` → `metadata.user_id`; `response_format` `json_schema`
//! (its schema) or `json_object` (any object) → a forced tool whose input, always valid JSON, becomes the
//! message text. Thinking comes back as `reasoning_content`; with a forced tool (JSON mode, `required` or a
//! named tool choice) thinking is left off, as Anthropic refuses the two together. `n` > 1 is `n` calls (the pipeline's).
//! Dropped (no Anthropic equivalent): `logit_bias`, `logprobs`, `top_logprobs`, penalties, `seed`,
//! `store`, `service_tier`, `metadata`, `prediction`, `modalities`, other unknown fields. Refused with
//! 400: audio and file content parts.
//!
//! **Inbound** (the Messages door, Anthropic → canonical → any provider): `system` (string or text
//! blocks) → a system message; `text`, `image` (base64 or URL), `tool_use` and `tool_result` blocks →
//! OpenAI parts, tool calls and tool messages; `tools` → functions; `tool_choice` (`any` → `required`,
//! `tool` → a named function, `disable_parallel_tool_use` → `parallel_tool_calls: false`);
//! `stop_sequences` → `stop`; `metadata.user_id` → `user`; `thinking` → `reasoning_effort` (by budget).
//! Thinking comes back as `thinking` blocks (unsigned). Not carried to a provider of another protocol:
//! `top_k`, `cache_control`, `service_tier`, earlier `thinking` blocks. Refused (400): `document` and
//! other block types, server tools.
//!
//! `wire` holds the types all three users share (door, adapter, fake); `errors` the status table and
//! both directions of error translation.
//! Reference: Anthropic API docs, "Messages", "Streaming Messages", "Errors".

pub mod errors;
pub mod inbound;
pub mod native;
pub mod outbound;
pub mod wire;

pub use outbound::{AnthropicAdapter, DEFAULT_VERSION};
