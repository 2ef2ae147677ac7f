//! OpenAI's Responses API (`POST /v1/responses`), for every model behind the gateway.
//!
//! **Native** (`native`): to a provider that speaks Responses (a provider capability: OpenAI, Azure
//! OpenAI, presets that do, the fake), the request goes as the caller wrote it, with the conversation
//! expanded, `store: false` and encrypted reasoning included, and the answer comes back as the provider
//! wrote it with the gateway's id and the public model name; reasoning items, hosted tools and fields the
//! gateway does not model survive.
//!
//! **Translated** (`inbound`), to any other provider, through the canonical chat request:
//! `instructions` → a system message; message items (roles user, assistant, system, developer; parts
//! `input_text`, `input_image` by URL or data URL, `input_file` → a chat file part, `output_text` and
//! `refusal` for assistant turns) → messages; `function_call` / `function_call_output` → tool calls and
//! tool messages; function tools (flat) → chat functions; custom (free-form) tools → functions taking one
//! `input` string, their calls returned as `custom_tool_call` items; a `namespace`'s functions → functions
//! of their own names; `tool_choice` (modes, a named function or custom tool, `allowed_tools` → the
//! allowed subset); `text.format` → `response_format`; `reasoning.effort` → `reasoning_effort`;
//! `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`; `safety_identifier`/`user` →
//! `user`; `prompt_cache_key`, `service_tier` kept. Answers come back as `reasoning` (summary text),
//! `message` and `function_call` items with the whole event sequence when streamed.
//! Dropped (harmless): earlier `reasoning` items (each provider signs its own) and hosted tools' call
//! items (`web_search_call`, `file_search_call`, …: their results are in the messages after them), hosted tools offered
//! (`web_search`, `file_search`, `code_interpreter`, `image_generation`, `computer_use_preview`, `mcp`,
//! `local_shell`, `tool_search`: the model is simply not given them), `metadata` (kept in the gateway's
//! stored response), `include`, `text.verbosity`, `truncation`, `top_logprobs`, `client_metadata`.
//! Refused with 400 naming the field: a `tool_choice` forcing a hosted tool, `background`,
//! `conversation`, `prompt` templates, images given only as a `file_id`, item types other than the above.
//!
//! Stored responses, `previous_response_id` and `item_reference` are the door's (the gateway's store);
//! both paths receive the conversation already resolved.
//! Reference: OpenAI API reference, "Responses", "Streaming events", "Conversation state".

pub mod inbound;
pub mod native;
pub mod wire;
