//! Multipart uploads through the router (`audio/transcriptions`, `audio/translations`, `images/edits`):
//! the file spooled and sent on intact with the target's upstream id as `model` (whichever comes first
//! in the caller's form), sent again whole to the next target when one fails, JSON answers read for their
//! token usage, other formats relayed as they are, refusals named by field, the upload limit, one ledger
//! row each. Bodies are written by hand so the order of the parts is what is tested.

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header};

const MODELS: &str = r#"
[[models]]
name = "transcriber"
provider = "upstream"
upstream = "gpt-4o-transcribe"
input_per_mtok = 6.0
output_per_mtok = 10.0
capabilities = ["transcription"]

[[models]]
name = "whisper"
provider = "upstream"
upstream = "whisper-1"
capabilities = ["transcription"]

[[models]]
name = "editor"
provider = "upstream"
upstream = "gpt-image-1"
input_per_mtok = 5.0
output_per_mtok = 40.0
capabilities = ["image_generation"]

[[aliases]]
name = "any-transcriber"
targets = ["transcriber", "whisper"]
"#;

async fn harness() -> Harness {
    Harness::with(Setup {
        extra: MODELS.to_owned(),
        server_extra: "upload_limit_bytes = 2000000".to_owned(),
        ..Setup::default()
    })
    .await
}

/// A part: its name, its file name and type when it is a file, its bytes.
type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

/// A `multipart/form-data` body of `parts`, in order: its content type and bytes.
fn form(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "----test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some((filename, content_type)) = file {
            body.extend_from_slice(format!("; filename=\"{filename}\"\r\nContent-Type: {content_type}").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Bytes that are not all alike, so a truncated or reordered file shows in its sum.
fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn sum(data: &[u8]) -> u64 {
    data.iter().map(|b| u64::from(*b)).sum()
}

async fn send(h: &Harness, path: &str, parts: &[Part<'_>]) -> reqwest::Response {
    let (content_type, body) = form(parts);
    h.client
        .post(h.url(path))
        .bearer_auth(MASTER_KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_transcription_is_sent_on_intact_with_the_upstream_model_even_after_the_file() {
    let h = harness().await;
    let file = audio(300_000);
    // The file first, as the Node SDK sends it: the gateway must read past it to find the model.
    let resp = send(
        &h,
        "/v1/audio/transcriptions",
        &[
            ("file", Some(("speech.wav", "audio/wav")), &file),
            ("model", None, b"transcriber"),
            ("language", None, b"en"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "transcriber");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let request_id = header(&resp, "x-request-id");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["text"], "Heard 300000 bytes of speech.wav.", "{answer}");

    let sent = h.upstream.last_request().body;
    assert_eq!(sent["model"], "gpt-4o-transcribe", "the upstream id in place of the caller's: {sent}");
    assert_eq!(sent["language"], "en");
    assert_eq!(
        sent["file"],
        json!({"filename": "speech.wav", "content_type": "audio/wav", "bytes": 300_000, "sum": sum(&file)})
    );

    // Billed on the provider's token count at the model's prices: 300 audio tokens in, 5 words out.
    let records = h.usage.wait_for(1).await;
    let row = records.iter().find(|r| r.request_id == request_id).expect("a ledger row");
    assert_eq!((row.prompt_tokens, row.completion_tokens), (300, 5));
    assert_eq!(row.cost_micros, Some(300 * 6 + 5 * 10));
    assert_eq!(row.usage_source, switchyard::usage::UsageSource::Provider);
}

#[tokio::test]
async fn other_formats_are_relayed_as_they_are_and_translations_work_the_same_way() {
    let h = harness().await;
    let file = audio(32_000);
    let resp = send(
        &h,
        "/v1/audio/transcriptions",
        &[
            ("model", None, b"whisper"),
            ("file", Some(("a.mp3", "audio/mpeg")), &file),
            ("response_format", None, b"srt"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "1\n00:00:00,000 --> 00:00:01,000\nHeard 32000 bytes of a.mp3.\n\n");

    // A token-priced model's answer in a format without its count is not billed by a guess.
    let resp = send(
        &h,
        "/v1/audio/transcriptions",
        &[
            ("model", None, b"transcriber"),
            ("file", Some(("a.mp3", "audio/mpeg")), &file),
            ("response_format", None, b"text"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    assert_eq!(resp.text().await.unwrap(), "Heard 32000 bytes of a.mp3.\n");
    let records = h.usage.wait_for(2).await;
    let row = records.iter().find(|r| r.request_id == request_id).unwrap();
    assert_eq!(row.cost_micros, None, "unknown, not estimated: {row:?}");

    let resp = send(
        &h,
        "/v1/audio/translations",
        &[("model", None, b"whisper"), ("file", Some(("b.mp3", "audio/mpeg")), &file)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["text"], "Translated 32000 bytes of b.mp3.");
    assert_eq!(h.upstream.last_request().body["model"], "whisper-1");
}

#[tokio::test]
async fn a_failed_target_is_followed_by_the_next_with_the_whole_upload_again() {
    let h = harness().await;
    let file = audio(250_000);
    h.upstream.state.push_fault(Some("gpt-4o-transcribe"), Fault::status(503));
    let resp = send(
        &h,
        "/v1/audio/transcriptions",
        &[("model", None, b"any-transcriber"), ("file", Some(("c.wav", "audio/wav")), &file)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "whisper");
    assert!(header(&resp, "x-switchyard-attempts").starts_with("2;"), "{}", header(&resp, "x-switchyard-attempts"));
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["text"], "Heard 250000 bytes of c.wav.");
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["model"], "whisper-1");
    assert_eq!((sent["file"]["bytes"].as_u64(), sent["file"]["sum"].as_u64()), (Some(250_000), Some(sum(&file))));
}

#[tokio::test]
async fn an_image_is_edited_and_its_tokens_are_billed() {
    let h = harness().await;
    let png = switchyard::fake::media::PNG;
    let resp = send(
        &h,
        "/v1/images/edits",
        &[
            ("image", Some(("in.png", "image/png")), png),
            ("prompt", None, b"add a hat"),
            ("model", None, b"editor"),
            ("n", None, b"2"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 2, "{answer}");
    let sent = h.upstream.last_request().body;
    assert_eq!((sent["model"].as_str(), sent["n"].as_str()), (Some("gpt-image-1"), Some("2")));
    assert_eq!(sent["image"]["bytes"], png.len());
    let records = h.usage.wait_for(1).await;
    let row = &records[0];
    // The fake counts the prompt (3 tokens) and the image in (194), and 272 tokens an image out.
    assert_eq!((row.prompt_tokens, row.completion_tokens), (197, 544));
}

#[tokio::test]
async fn bad_uploads_are_refused_by_field_before_any_provider_is_asked() {
    let h = harness().await;
    let before = h.upstream.state.requests().len();
    let file = audio(1000);
    // Not multipart at all.
    let (status, err) = error_of(
        h.post("/v1/audio/transcriptions").json(&json!({"model": "whisper", "file": "x"})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("multipart/form-data"), "{err}");
    for (parts, param) in [
        (vec![("model", None, &b"whisper"[..])], "file"),
        (vec![("file", Some(("a.wav", "audio/wav")), &file[..])], "model"),
        (vec![("model", None, &b" "[..]), ("file", Some(("a.wav", "audio/wav")), &file[..])], "model"),
        // A field read one way here and perhaps another upstream, and a model sent as a file.
        (
            vec![
                ("model", None, &b"whisper"[..]),
                ("model", None, &b"transcriber"[..]),
                ("file", Some(("a.wav", "audio/wav")), &file[..]),
            ],
            "model",
        ),
        (
            vec![
                ("model", Some(("m.txt", "text/plain")), &b"whisper"[..]),
                ("file", Some(("a.wav", "audio/wav")), &file[..]),
            ],
            "model",
        ),
    ] {
        let (status, err) = error_of(send(&h, "/v1/audio/transcriptions", &parts).await).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
    }
    // An edit needs a prompt; a chat model transcribes nothing.
    let (status, err) = error_of(
        send(&h, "/v1/images/edits", &[("image", Some(("in.png", "image/png")), &file), ("model", None, b"editor")])
            .await,
    )
    .await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("prompt")), "{err}");
    let (status, err) = error_of(
        send(
            &h,
            "/v1/audio/transcriptions",
            &[("model", None, b"test-model"), ("file", Some(("a.wav", "audio/wav")), &file)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("is not a transcription model"), "{err}");
    // Over the upload limit (2 MB here): 413, declared or not.
    let big = audio(2_100_000);
    let (status, err) = error_of(
        send(
            &h,
            "/v1/audio/transcriptions",
            &[("model", None, b"whisper"), ("file", Some(("big.wav", "audio/wav")), &big)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 413, "{err}");
    let (content_type, body) = form(&[("model", None, b"whisper"), ("file", Some(("big.wav", "audio/wav")), &big)]);
    let chunks = body.chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>();
    let resp = h
        .client
        .post(h.url("/v1/audio/transcriptions"))
        .bearer_auth(MASTER_KEY)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "a chunked upload is cut at the limit too");
    // A form cut off before its end.
    let (content_type, body) = form(&[("model", None, b"whisper"), ("file", Some(("a.wav", "audio/wav")), &file)]);
    let resp = h
        .client
        .post(h.url("/v1/audio/transcriptions"))
        .bearer_auth(MASTER_KEY)
        .header("content-type", content_type)
        .body(body[..body.len() - 30].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(h.upstream.state.requests().len(), before, "nothing refused reached the provider");
}

#[tokio::test]
async fn an_upload_with_an_idempotency_key_runs_each_time_and_is_not_kept() {
    // Keeping it would mean reading the upload whole into memory to fingerprint it: it goes through the
    // spool each time instead.
    let h = harness().await;
    let file = audio(1_500_000);
    let (content_type, body) = form(&[("model", None, b"whisper"), ("file", Some(("a.wav", "audio/wav")), &file)]);
    for _ in 0..2 {
        let resp = h
            .client
            .post(h.url("/v1/audio/transcriptions"))
            .bearer_auth(MASTER_KEY)
            .header("content-type", &content_type)
            .header("idempotency-key", "upload-1")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("idempotent-replayed").is_none(), "an upload is not replayed");
    }
    let heard = h.upstream.state.requests().iter().filter(|r| r.body["file"]["bytes"] == 1_500_000).count();
    assert_eq!(heard, 2, "each upload reached the provider");
}

#[tokio::test]
async fn an_upload_that_trickles_in_is_cut_at_its_deadline() {
    let h = Harness::with(Setup {
        extra: MODELS.to_owned(),
        server_extra: "upload_timeout_ms = 600".to_owned(),
        ..Setup::default()
    })
    .await;
    let before = h.upstream.state.requests().len();
    let (content_type, body) =
        form(&[("model", None, b"whisper"), ("file", Some(("a.wav", "audio/wav")), &audio(40_000))]);
    // A piece every 100 ms: never idle for long, but the whole takes 4 s.
    let pieces: Vec<Vec<u8>> = body.chunks(1000).map(<[u8]>::to_vec).collect();
    let slow = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(piece)
    });
    let started = std::time::Instant::now();
    let resp = h
        .client
        .post(h.url("/v1/audio/transcriptions"))
        .bearer_auth(MASTER_KEY)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await;
    // The gateway answers 408 (or closes the connection) well before the body could have ended.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 408);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(h.upstream.state.requests().len(), before);
}
