//! `POST /v1/images/generations` and `POST /v1/audio/speech` through the router: the caller's JSON passed
//! on with the upstream model id, images relayed (token usage priced where the provider reports it),
//! audio streamed back as it arrives, refusals named by field, fallbacks between models that declare the
//! work, and one ledger row each.

use base64::Engine;
use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, Setup, error_of, header, hello, ledger_row};

const MODELS: &str = r#"
[[models]]
name = "image-model"
provider = "upstream"
upstream = "gpt-image-1"
input_per_mtok = 5.0
output_per_mtok = 40.0
capabilities = ["image_generation"]

[[models]]
name = "dalle"
provider = "upstream"
upstream = "dall-e-3"
capabilities = ["image_generation"]

[[models]]
name = "dead-image"
provider = "nowhere"
capabilities = ["image_generation"]

[[models]]
name = "voice-model"
provider = "upstream"
upstream = "tts-1"
capabilities = ["speech"]

[[models]]
name = "voice-model-hd"
provider = "upstream"
upstream = "tts-1-hd"
capabilities = ["speech"]

[[aliases]]
name = "any-image"
targets = ["dead-image", "image-model"]

[[aliases]]
name = "any-voice"
targets = ["voice-model", "voice-model-hd"]
"#;

async fn harness() -> Harness {
    Harness::with(Setup { extra: MODELS.to_owned(), ..Setup::default() }).await
}

#[tokio::test]
async fn an_image_is_generated_and_its_tokens_are_billed() {
    let h = harness().await;
    let resp = h
        .post("/v1/images/generations")
        .json(&json!({"model": "image-model", "prompt": "a red fox", "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "image-model");
    let request_id = header(&resp, "x-request-id");
    let body: Value = resp.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let png = base64::engine::general_purpose::STANDARD.decode(data[0]["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let sent = h.upstream.last_request().body;
    assert_eq!(
        (sent["model"].as_str(), sent["prompt"].as_str(), sent["n"].as_u64()),
        (Some("gpt-image-1"), Some("a red fox"), Some(2))
    );
    let row = ledger_row(&h, &request_id).await;
    assert_eq!(row["prompt_tokens"], body["usage"]["input_tokens"]);
    assert_eq!(row["completion_tokens"], body["usage"]["output_tokens"]);
    // 3 tokens at $5 and 544 at $40 per million.
    assert_eq!(row["cost_micros"], 3 * 5 + 544 * 40, "{row}");

    // dall-e answers a URL and reports no tokens: the row says the cost is unknown, not zero.
    let resp =
        h.post("/v1/images/generations").json(&json!({"model": "dalle", "prompt": "a red fox"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let body: Value = resp.json().await.unwrap();
    assert!(body["data"][0]["url"].as_str().unwrap().starts_with("https://"), "{body}");
    assert!(body["data"][0]["revised_prompt"].is_string());
    let row = ledger_row(&h, &request_id).await;
    assert!(row["cost_micros"].is_null(), "{row}");
}

#[tokio::test]
async fn images_fall_back_between_image_models_and_refuse_what_cannot_make_them() {
    let h = harness().await;
    let resp =
        h.post("/v1/images/generations").json(&json!({"model": "any-image", "prompt": "a fox"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "image-model");
    assert!(header(&resp, "x-switchyard-attempts").starts_with("2; dead-image="));

    let before = h.upstream.state.requests().len();
    for (body, param) in [
        (json!({"model": "image-model"}), "prompt"),
        (json!({"model": "image-model", "prompt": "  "}), "prompt"),
        (json!({"model": "image-model", "prompt": "a fox", "n": 11}), "n"),
        (json!({"model": "image-model", "prompt": "a fox", "n": "two"}), "n"),
        (json!({"model": 7, "prompt": "a fox"}), "model"),
    ] {
        let (status, err) = error_of(h.post("/v1/images/generations").json(&body).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body}: {err}");
    }
    // A chat model makes no images, and an image model holds no conversation.
    let (status, err) = error_of(
        h.post("/v1/images/generations").json(&json!({"model": "test-model", "prompt": "a fox"})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("image generation"), "{err}");
    let (status, err) = error_of(h.chat(hello("image-model")).await).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("is an image generation model"), "{err}");
    assert_eq!(h.upstream.state.requests().len(), before, "nothing refused reached the provider");
}

#[tokio::test]
async fn speech_is_streamed_back_as_the_provider_sends_it() {
    let h = harness().await;
    let input = "The gateway speaks. ".repeat(20);
    let mut resp = h
        .post("/v1/audio/speech")
        .json(&json!({"model": "voice-model", "input": input, "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "audio/mpeg");
    assert_eq!(header(&resp, "x-switchyard-model"), "voice-model");
    let request_id = header(&resp, "x-request-id");
    let mut audio = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = resp.chunk().await.unwrap() {
        pieces += 1;
        audio.extend_from_slice(&piece);
    }
    assert_eq!(audio, switchyard::fake::media::audio_for(&input), "the provider's bytes, whole and in order");
    assert!(pieces > 1, "the audio came in pieces, not as one buffered body");
    let sent = h.upstream.last_request().body;
    assert_eq!((sent["model"].as_str(), sent["voice"].as_str()), (Some("tts-1"), Some("alloy")));
    let row = ledger_row(&h, &request_id).await;
    assert_eq!(row["outcome"], "completed");

    let resp = h
        .post("/v1/audio/speech")
        .json(&json!({"model": "voice-model", "input": "hi", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "audio/wav");
    assert_eq!(resp.bytes().await.unwrap(), switchyard::fake::media::audio_for("hi"));
}

#[tokio::test]
async fn bad_speech_requests_are_refused_by_field_and_a_cut_is_recorded() {
    let h = harness().await;
    for (body, param) in [
        (json!({"input": "hi", "voice": "alloy"}), "model"),
        (json!({"model": "voice-model", "voice": "alloy"}), "input"),
        (json!({"model": "voice-model", "input": "hi"}), "voice"),
        (json!({"model": "voice-model", "input": "x".repeat(4097), "voice": "alloy"}), "input"),
        (json!({"model": "voice-model", "input": "hi", "voice": "alloy", "speed": 9}), "speed"),
    ] {
        let (status, err) = error_of(h.post("/v1/audio/speech").json(&body).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
    }
    h.upstream.state.push_fault(Some("tts-1"), Fault::CutMidStream { after_chunks: 2 });
    let mut resp = h
        .post("/v1/audio/speech")
        .json(&json!({"model": "voice-model", "input": "a text long enough for several pieces ".repeat(10), "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let mut broke = false;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "a cut upstream cuts the caller's body instead of ending it as if whole");
    let row = ledger_row(&h, &request_id).await;
    assert_eq!(row["outcome"], "interrupted", "{row}");
}

#[tokio::test]
async fn speech_that_breaks_before_its_first_byte_falls_back_and_a_chat_model_speaks_none() {
    let h = harness().await;
    // The provider answers 200, then cuts the body before any audio: nothing was committed, so the next
    // speech model answers.
    h.upstream.state.push_fault(Some("tts-1"), Fault::CutMidStream { after_chunks: 0 });
    let resp = h
        .post("/v1/audio/speech")
        .json(&json!({"model": "any-voice", "input": "hello there", "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "voice-model-hd");
    let audio = resp.bytes().await.unwrap();
    assert_eq!(audio.as_ref(), switchyard::fake::media::audio_for("hello there").as_slice());
    let (status, err) = error_of(
        h.post("/v1/audio/speech")
            .json(&json!({"model": "test-model", "input": "hi", "voice": "alloy"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("speech"), "{err}");
}

#[tokio::test]
async fn gemini_s_model_list_offers_no_generation_method_for_image_or_speech_models() {
    let h = harness().await;
    let list = h.get_json("/v1beta/models").await;
    let find = |name: &str| {
        list["models"].as_array().unwrap().iter().find(|m| m["name"] == format!("models/{name}")).cloned().unwrap()
    };
    assert_eq!(find("image-model")["supportedGenerationMethods"], json!([]));
    assert_eq!(find("voice-model")["supportedGenerationMethods"], json!([]));
    assert!(find("test-model")["supportedGenerationMethods"].as_array().unwrap().contains(&json!("generateContent")));
}
