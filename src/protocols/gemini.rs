//! Google AI Studio's Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents`), both ways. Credentials travel in `x-goog-api-key`, never in a `?key=` query, so
//! no upstream URL carries one.
//!
//! **Outbound** (the adapter, canonical → Gemini): system and developer messages → `systemInstruction`;
//! user/assistant/tool turns → `contents` with roles `user`/`model` and `text`, `inlineData` (base64
//! `data:` URLs), `fileData` (https URLs, MIME type from the extension), `functionCall` and
//! `functionResponse` parts; `tools` → `functionDeclarations` with `parametersJsonSchema`; `tool_choice` →
//! `functionCallingConfig` (`required` → `ANY`, a named tool → `ANY` + `allowedFunctionNames`);
//! `temperature`, `top_p`, `top_k`, `n` → `candidateCount`, `stop`, `max_completion_tokens`/`max_tokens`
//! → `maxOutputTokens`, `seed`, penalties; `response_format` → `responseMimeType` (+
//! `responseJsonSchema`); `reasoning_effort` → `thinkingConfig` with thoughts returned as
//! `reasoning_content`. Dropped: `logit_bias`, `logprobs`, `user`, `store`, `metadata`, other unknown
//! fields. Refused with 400: audio and file content parts, images that are neither.
//!
//! **Inbound** (the Gemini door, Gemini → canonical → any provider): `systemInstruction` → a system
//! message; `contents` (`user`/`model`) with `text`, `inlineData`, `fileData` (image URLs),
//! `functionCall` and `functionResponse` parts → messages, tool calls and tool messages;
//! `generationConfig` (`temperature`, `topP`, `maxOutputTokens`, `stopSequences`, `responseMimeType` +
//! `responseJsonSchema`/`responseSchema` → `response_format`); `tools` (`functionDeclarations`) and
//! `toolConfig` (`AUTO`/`ANY`/`NONE`, one allowed function → a named choice). Thinking comes back as
//! parts with `thought: true`. Not carried: `safetySettings`, `topK`, `cachedContent`, thought
//! signatures. Refused: `candidateCount` > 1. Streamed function calls are sent whole, once their
//! arguments are complete.
//!
//! Vertex AI differs only in URL and auth; it would be a second endpoint style of this adapter.
//! Reference: Gemini API docs, "Generating content", "Function calling", "Thinking", "Embeddings".

pub mod errors;
pub mod inbound;
pub mod native;
pub mod outbound;
pub mod wire;

pub use outbound::GeminiAdapter;
