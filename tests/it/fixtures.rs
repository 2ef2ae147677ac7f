//! Adapter tests from recorded-shape fixtures (`tests/fixtures/<provider>/`): bodies and SSE transcripts
//! shaped after each provider's documented examples, read by the adapters with no network.

use http::{HeaderMap, StatusCode};
use serde_json::json;
use switchyard::config::presets::Quirks;
use switchyard::protocols::anthropic::AnthropicAdapter;
use switchyard::protocols::gemini::GeminiAdapter;
use switchyard::protocols::openai::OpenAiAdapter;
use switchyard::providers::{Adapter, ErrorKind, ProviderError, StreamStep};
use switchyard::schema::{ChatChunk, ChatRequest};
use switchyard::sse::SseDecoder;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn request() -> ChatRequest {
    serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .unwrap()
}

fn anthropic() -> AnthropicAdapter {
    AnthropicAdapter { version: "2023-06-01".into() }
}

/// Runs a transcript through an adapter's stream mapper, as the executor does.
fn map_stream(adapter: &dyn Adapter, path: &str) -> Result<(Vec<ChatChunk>, bool), ProviderError> {
    let mut events = Vec::new();
    SseDecoder::default().push(&fixture(path), &mut events).unwrap();
    let mut mapper = adapter.stream_mapper(&request());
    let mut chunks = Vec::new();
    for e in &events {
        if mapper.map(e, &mut chunks)? == StreamStep::Done {
            return Ok((chunks, true));
        }
    }
    Ok((chunks, false))
}

fn text(chunks: &[ChatChunk]) -> String {
    chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect()
}

fn tool_args(chunks: &[ChatChunk], index: u32) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter(|t| t.index == index)
        .filter_map(|t| t.function.as_ref()?.arguments.clone())
        .collect()
}

#[test]
fn anthropic_message_maps_text_thinking_tool_use_and_cached_usage() {
    let resp = anthropic().parse_chat_response(&request(), &fixture("anthropic/message_tool_use.json")).unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.content.as_deref(), Some("I'll check the weather in San Francisco."));
    assert!(choice.message.reasoning_content.as_deref().unwrap().starts_with("The user wants"));
    let call = &choice.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!((call.id.as_str(), call.function.name.as_str()), ("toolu_01A09q90qw90lq917835lq9", "get_weather"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&call.function.arguments).unwrap()["unit"], "celsius");
    let usage = resp.usage.unwrap();
    // OpenAI counts cached prompt tokens inside prompt_tokens.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (472 + 100 + 2048, 89));
    assert_eq!((usage.cached_tokens(), usage.cache_write_tokens()), (2048, 100));
}

#[test]
fn anthropic_stream_maps_to_openai_chunks_with_tool_call_deltas_and_usage() {
    let (chunks, done) = map_stream(&anthropic(), "anthropic/stream_tool_use.sse").unwrap();
    assert!(done, "message_stop ends the stream");
    assert_eq!(chunks[0].choices[0].delta.role.as_deref(), Some("assistant"));
    assert_eq!(text(&chunks), "Okay, let me check the weather for San Francisco, CA:");
    let start =
        chunks.iter().flat_map(|c| &c.choices).flat_map(|c| c.delta.tool_calls.iter().flatten()).next().unwrap();
    assert_eq!((start.index, start.id.as_deref()), (0, Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")));
    assert_eq!(tool_args(&chunks, 0), r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#);
    let finish = chunks.iter().flat_map(|c| &c.choices).find_map(|c| c.finish_reason.clone());
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let usage = chunks.last().unwrap().usage.clone().expect("a final usage chunk");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (472, 89));
    assert!(chunks.last().unwrap().choices.is_empty());
}

#[test]
fn an_anthropic_error_event_inside_a_200_stream_is_an_overload() {
    let err = map_stream(&anthropic(), "anthropic/stream_error_overloaded.sse").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Overloaded);
    assert!(err.should_fallback());
}

#[test]
fn anthropic_errors_are_classified() {
    let e = anthropic().classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        &fixture("anthropic/error_rate_limit.json"),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    let e = anthropic().classify_error(StatusCode::from_u16(529).unwrap(), &HeaderMap::new(), b"{}");
    assert_eq!(e.kind, ErrorKind::Overloaded);
}

#[test]
fn gemini_response_maps_thoughts_function_calls_and_usage() {
    let resp = GeminiAdapter.parse_chat_response(&request(), &fixture("gemini/generate_function_call.json")).unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.reasoning_content.as_deref(), Some("Let me think about which tool to use."));
    let call = &choice.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, r#"{"location":"Boston, MA"}"#);
    let usage = resp.usage.unwrap();
    // Gemini counts thoughts apart; OpenAI's completion_tokens includes them.
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens(), usage.cached_tokens()),
        (73, 47, 30, 64)
    );
}

#[test]
fn a_gemini_safety_stop_is_content_filter() {
    let resp = GeminiAdapter.parse_chat_response(&request(), &fixture("gemini/generate_safety.json")).unwrap();
    assert_eq!(resp.choices[0].finish_reason.as_deref(), Some("content_filter"));
}

#[test]
fn gemini_stream_maps_text_finish_and_final_usage() {
    let (chunks, done) = map_stream(&GeminiAdapter, "gemini/stream_text.sse").unwrap();
    assert!(!done, "Gemini has no end event; the body's end finishes the stream");
    assert_eq!(text(&chunks), "The quick brown fox jumps over the lazy dog.");
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 36));
    let e = GeminiAdapter.classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        &fixture("gemini/error_resource_exhausted.json"),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
}

#[test]
fn openai_stream_keeps_unknown_fields_and_reassembles_arguments() {
    let adapter = OpenAiAdapter { quirks: Quirks::OPENAI };
    let (chunks, done) = map_stream(&adapter, "openai/stream_tool_calls.sse").unwrap();
    assert!(done);
    assert_eq!(tool_args(&chunks, 0), r#"{"location": "Paris"}"#);
    assert_eq!(chunks[0].extra["system_fingerprint"], "fp_e2bde53e6e");
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!(usage.completion_tokens_details.unwrap().extra["accepted_prediction_tokens"], 0);
    let e = adapter.classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        &fixture("openai/error_insufficient_quota.json"),
    );
    assert_eq!(e.kind, ErrorKind::QuotaExhausted);
}

#[test]
fn anthropic_request_translation_matches_the_messages_api() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"q\":1}"}}, {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{\"q\":2}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rainy"}
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "tool_choice": "required", "parallel_tool_calls": false, "stop": "END", "temperature": 0.3, "max_tokens": 100,
        "logit_bias": {"1": 2}
    }))
    .unwrap();
    let endpoint = switchyard::providers::Endpoint {
        base_url: "https://api.anthropic.com",
        api_key: None,
        key_index: None,
        headers: &HeaderMap::new(),
    };
    let call = anthropic().chat_request(&req, &endpoint).unwrap();
    assert_eq!(call.url, "https://api.anthropic.com/v1/messages");
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "Be terse."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "c1", "name": "w", "input": {"q": 1}},
                    {"type": "tool_use", "id": "c2", "name": "w", "input": {"q": 2}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "rainy"}
                ]}
            ],
            "max_tokens": 100,
            "temperature": 0.3,
            "stop_sequences": ["END"],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        })
    );
    let n2: ChatRequest =
        serde_json::from_value(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})).unwrap();
    let err = anthropic().chat_request(&n2, &endpoint).unwrap_err();
    assert_eq!(
        (err.kind, err.param.as_deref()),
        (ErrorKind::Untranslatable, Some("n")),
        "the pipeline makes n calls instead"
    );
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use switchyard::providers::Adapter;
    use switchyard::sse::{SseDecoder, named_frame};

    use super::{anthropic, request, tool_args};

    fn arb_args() -> impl Strategy<Value = Value> {
        proptest::collection::btree_map(
            "[a-z_]{1,8}",
            prop_oneof![any::<i32>().prop_map(|n| json!(n)), "\\PC{0,12}".prop_map(|s| json!(s))],
            0..5,
        )
        .prop_map(|m| json!(m))
    }

    proptest! {
        /// However a provider splits a tool call's arguments across stream events (even inside a multi-byte
        /// character's escape), the client reassembles exactly the arguments of the unstreamed answer.
        #[test]
        fn streamed_tool_arguments_reassemble_to_the_unstreamed_ones(
            args in arb_args(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let compact = args.to_string();
            let chars: Vec<char> = compact.chars().collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(chars.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([chars.len()]) {
                pieces.push(chars[last..p].iter().collect::<String>());
                last = p;
            }

            let ev = |name: &str, data: Value| named_frame(name, data.to_string().as_bytes());
            let mut transcript = vec![
                ev("message_start", json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1, "output_tokens": 1}}})),
                ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}})),
            ];
            for piece in &pieces {
                transcript.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
            transcript.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}})));
            transcript.push(ev("message_stop", json!({"type": "message_stop"})));
            let bytes: Vec<u8> = transcript.concat();

            let mut events = Vec::new();
            SseDecoder::default().push(&bytes, &mut events).unwrap();
            let adapter = anthropic();
            let mut mapper = adapter.stream_mapper(&request());
            let mut chunks = Vec::new();
            for e in &events {
                mapper.map(e, &mut chunks).unwrap();
            }
            let whole = json!({"id": "m", "model": "c", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": args}], "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 5}});
            let resp = adapter.parse_chat_response(&request(), whole.to_string().as_bytes()).unwrap();
            let unstreamed = resp.choices[0].message.tool_calls.as_ref().unwrap()[0].function.arguments.clone();
            prop_assert_eq!(&unstreamed, &compact);
            prop_assert_eq!(tool_args(&chunks, 0), unstreamed);
        }
    }
}
