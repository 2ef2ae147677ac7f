"""AWS Bedrock, Google Vertex AI and Cohere through the official OpenAI Python SDK, against a real Switchyard binary
with the built-in catalog and `switchyard fake-upstream` playing both clouds: Bedrock's Converse (SigV4
checked against the fake's test identity, ConverseStream in AWS event-stream frames) and Vertex (a service
account's JWT exchanged for a token at the fake's token endpoint, Gemini and Claude publishers).

- chat, plain, streamed and with tools, on `bedrock/…`, `vertex_ai/gemini-…`, `vertex_ai/claude-…` and
  `cohere/…` (Cohere's own v2 API);
- `embed-titan` (Titan on Bedrock), a rerank on Cohere's v2 (`client.post`, the SDK has no rerank
  method), a transcription (multipart), and a files + batches round trip;
- each call leaves its ledger row, read back through the admin API.

Called by openai_sdk_check.py: run(binary, check, free_port, wait_ready).
"""

import json
import os
import pathlib
import urllib.request

from openai import OpenAI

import responses_sdk_check

KEY = "sk-sy-master-sdk-providers-0123456789abc"
FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "vertex"

CONFIG = """
[[providers]]
name = "bedrock"
kind = "bedrock"
base_url = "http://127.0.0.1:{fake}"
aws = {{ region = "us-east-1" }}

[[providers]]
name = "vertex"
kind = "vertex"
base_url = "http://127.0.0.1:{fake}"
vertex = {{ project = "switchyard-test", location = "us-east5", credentials_env = "SDK_GOOGLE_CREDENTIALS", token_uri = "http://127.0.0.1:{fake}/token" }}

[[providers]]
name = "cohere"
kind = "cohere"
base_url = "http://127.0.0.1:{fake}"
api_key_env = "SDK_UPSTREAM_KEY"

[[providers]]
name = "openai-like"
kind = "openai"
base_url = "http://127.0.0.1:{fake}/v1"
api_key_env = "SDK_UPSTREAM_KEY"

[[models]]
name = "sdk-whisper"
provider = "openai-like"
upstream = "whisper-1"
capabilities = ["transcription"]

[files]
provider = "openai-like"
"""

MODELS = [
    "bedrock/us.anthropic.claude-sonnet-4-6-v1:0",
    "vertex_ai/gemini-2.5-flash",
    "vertex_ai/claude-sonnet-4-5@20250929",
    "cohere/command-a-03-2025",
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
MESSAGES = [{"role": "user", "content": "Say hello to the SDK"}]


def run(binary, check, free_port, wait_ready):
    # The fake Bedrock's test identity (src/fake/bedrock.rs), as the standard AWS variables.
    os.environ.update(
        AWS_ACCESS_KEY_ID="AKIDFAKEBEDROCK",
        AWS_SECRET_ACCESS_KEY="fake/bedrock+secret/access/key",
        SDK_GOOGLE_CREDENTIALS=str(FIXTURES / "service-account.json"),
    )
    base, procs, _ = responses_sdk_check.start(binary, free_port, wait_ready, CONFIG, KEY)
    try:
        checks(base, check)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def ledger_row(base, request_id):
    import time

    for _ in range(100):
        req = urllib.request.Request(
            f"{base}/admin/v1/usage/requests?request_id={request_id}", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            rows = json.load(r)["data"]
        if rows:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"no ledger row for {request_id}")


def checks(base, check):
    client = OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)

    for model in MODELS:

        def chat(model=model):
            raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
            r = raw.parse()
            assert r.choices[0].message.content and r.choices[0].finish_reason == "stop", r
            assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
            row = ledger_row(base, raw.headers["x-request-id"])
            assert row["outcome"] == "completed" and row["completion_tokens"] == r.usage.completion_tokens, row
            stream = client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        def tools(model=model):
            r = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, tool_choice="required")
            call = r.choices[0].message.tool_calls[0]
            assert call.function.name == "get_weather" and '"city"' in call.function.arguments, call
            with client.chat.completions.stream(
                model=model, messages=MESSAGES, tools=TOOLS, tool_choice="required"
            ) as s:
                final = s.get_final_completion()
            assert final.choices[0].message.tool_calls[0].function.arguments == call.function.arguments
            follow_up = MESSAGES + [
                {"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
            ]
            after = client.chat.completions.create(model=model, messages=follow_up, tools=TOOLS)
            assert after.choices[0].message.content, after

        check(f"providers: chat plain and streamed on {model}", chat)
        check(f"providers: tools on {model}", tools)

    def embed_titan():
        raw = client.embeddings.with_raw_response.create(model="embed-titan", input=["hello", "world wide"])
        e = raw.parse()
        assert len(e.data) == 2 and len(e.data[0].embedding) > 0, e
        assert e.usage.prompt_tokens > 0, e.usage
        assert raw.headers["x-switchyard-provider"] == "bedrock", raw.headers
        row = ledger_row(base, raw.headers["x-request-id"])
        assert row["prompt_tokens"] == e.usage.prompt_tokens and row["outcome"] == "completed", row

    check("providers: embed-titan on Bedrock", embed_titan)

    def rerank():
        try:  # the SDK's HTTP client: httpx2 in newer releases, httpx before
            import httpx2 as httpx
        except ImportError:
            import httpx

        resp = client.post(
            "/rerank",
            cast_to=httpx.Response,
            body={"model": "rerank-v3.5", "query": "capital of France",
                  "documents": ["Berlin is in Germany", "Paris is the capital of France"], "top_n": 1},
        )
        answer = resp.json()
        assert [r["index"] for r in answer["results"]] == [1], answer
        assert resp.headers["x-switchyard-provider"] == "cohere", resp.headers
        row = ledger_row(base, resp.headers["x-request-id"])
        assert row["outcome"] == "completed" and row["served_model"] == "rerank-v3.5", row

    check("providers: rerank on Cohere's v2", rerank)

    def transcription():
        audio = bytes(range(256)) * 100
        raw = client.audio.transcriptions.with_raw_response.create(
            model="sdk-whisper", file=("hello.wav", audio, "audio/wav")
        )
        assert raw.parse().text == f"Heard {len(audio)} bytes of hello.wav.", raw.parse()
        row = ledger_row(base, raw.headers["x-request-id"])
        assert row["outcome"] == "completed" and row["served_model"] == "sdk-whisper", row

    check("providers: audio.transcriptions (multipart)", transcription)

    def files_and_batches():
        lines = "".join(
            json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "gpt-4o-mini", "messages": MESSAGES}}) + "\n"
            for i in range(3)
        ).encode()
        raw = client.files.with_raw_response.create(file=("batch.jsonl", lines, "application/jsonl"), purpose="batch")
        f = raw.parse()
        assert ledger_row(base, raw.headers["x-request-id"])["outcome"] == "completed"
        assert client.files.retrieve(f.id).bytes == len(lines)
        raw = client.batches.with_raw_response.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        b = raw.parse()
        assert ledger_row(base, raw.headers["x-request-id"])["outcome"] == "completed"
        done = client.batches.retrieve(b.id)
        assert done.status == "completed" and done.request_counts.completed == 3, done
        out = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
        assert [o["custom_id"] for o in out] == ["q0", "q1", "q2"], out
        assert {x.id for x in client.files.list()} == {f.id, done.output_file_id}
        assert [x.id for x in client.batches.list()] == [b.id]

    check("providers: files + batches round trip", files_and_batches)
