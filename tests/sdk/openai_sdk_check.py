"""Drives a real Switchyard binary with the official OpenAI Python SDK (and, through anthropic_sdk_check,
the official Anthropic Python SDK).

Usage: python openai_sdk_check.py PATH_TO_SWITCHYARD_BINARY

Starts the gateway on a free port with the shipped default configuration (the built-in fake provider),
then makes the calls SDK users make: a plain chat, a streamed chat, a stream with usage, tool calls,
model listing, and the errors the SDK must map to its exception classes.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import openai
from openai import OpenAI

import anthropic_sdk_check
import providers_sdk_check
import responses_sdk_check
import routing_sdk_check

KEY = "sk-sy-master-sdk-check-0123456789abcdef"
MODEL = "fake-chat"
MESSAGES = [{"role": "user", "content": "Say hello to the SDK"}]
results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        results["failed"] += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        results["passed"] += 1
        print(f"ok   {name}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base, proc):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health/readiness", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the gateway did not become ready")


def main():
    binary = sys.argv[1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SWITCHYARD_MASTER_KEY=KEY, SWITCHYARD_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
    proc = subprocess.Popen([binary, "serve"], env=env)
    try:
        wait_ready(base, proc)
        run_checks(base)
        anthropic_version = anthropic_sdk_check.run_checks(base, KEY, check)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    responses_sdk_check.run(binary, check, free_port, wait_ready)
    routing_sdk_check.run(binary, check, free_port, wait_ready)
    providers_sdk_check.run(binary, check, free_port, wait_ready)
    print(f"openai sdk {openai.__version__}, anthropic sdk {anthropic_version}: "
          f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


def run_checks(base):
    client = OpenAI(api_key=KEY, base_url=f"{base}/v1", max_retries=0)
    plain = {}

    def plain_chat():
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert r.model == MODEL, r.model
        assert r.choices[0].message.content, r
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
        assert r._request_id, "x-request-id is exposed to the SDK"
        plain["text"] = r.choices[0].message.content

    def streamed_chat():
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain["text"], (text, plain["text"])
        assert all(c.usage is None for c in chunks), "no usage chunk unless asked"
        assert chunks[-1].choices[0].finish_reason == "stop"

    def streamed_with_usage():
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0

    def tool_calls():
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=tools)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and '"city"' in call.function.arguments
        with client.chat.completions.stream(model=MODEL, messages=MESSAGES, tools=tools) as s:
            final = s.get_final_completion()
        streamed_call = final.choices[0].message.tool_calls[0]
        assert streamed_call.function.arguments == call.function.arguments

    def models():
        ids = [m.id for m in client.models.list()]
        assert MODEL in ids, ids
        assert client.models.retrieve(MODEL).id == MODEL

    def unknown_model_is_not_found():
        try:
            client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        except openai.NotFoundError as e:
            assert e.code == "model_not_found", e.body
        else:
            raise AssertionError("expected NotFoundError")

    def wrong_key_is_authentication_error():
        bad = OpenAI(api_key="sk-wrong", base_url=f"{base}/v1", max_retries=0)
        try:
            bad.chat.completions.create(model=MODEL, messages=MESSAGES)
        except openai.AuthenticationError:
            pass
        else:
            raise AssertionError("expected AuthenticationError")

    def bad_request_names_the_param():
        try:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature="hot")
        except openai.BadRequestError as e:
            assert e.param == "temperature", e.body
        else:
            raise AssertionError("expected BadRequestError")

    def embeddings_default_base64():
        # The SDK asks for base64 unless told otherwise, and decodes it itself.
        r = client.embeddings.create(model="fake-embed", input=["hello", "world"])
        assert len(r.data) == 2 and len(r.data[0].embedding) == 8, r
        assert all(isinstance(x, float) for x in r.data[0].embedding)
        f = client.embeddings.create(model="fake-embed", input=["hello", "world"], encoding_format="float")
        assert all(abs(a - b) < 1e-6 for a, b in zip(r.data[0].embedding, f.data[0].embedding))
        assert r.usage.prompt_tokens > 0

    def json_schema_output():
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, response_format={
            "type": "json_schema", "json_schema": {"name": "greeting", "schema": {
                "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}})
        import json
        assert "text" in json.loads(r.choices[0].message.content)

    def image_input():
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
        assert r.choices[0].message.content

    def images_generate():
        import base64
        r = client.images.generate(model="fake-image", prompt="a red fox", n=2)
        assert len(r.data) == 2, r
        assert base64.b64decode(r.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
        assert r.usage is not None and r.usage.output_tokens > 0, r.usage

    def audio_speech():
        with client.audio.speech.with_streaming_response.create(
            model="fake-tts", voice="alloy", input="Hello from the SDK"
        ) as resp:
            assert resp.headers["content-type"] == "audio/mpeg", resp.headers
            audio = b"".join(resp.iter_bytes())
        assert audio.startswith(b"ID3") and len(audio) > 100, len(audio)
        whole = client.audio.speech.create(model="fake-tts", voice="alloy", input="Hello from the SDK")
        assert whole.content == audio

    def audio_transcriptions():
        audio = bytes(range(256)) * 200
        r = client.audio.transcriptions.create(model="fake-whisper", file=("hello.wav", audio, "audio/wav"))
        assert r.text == f"Heard {len(audio)} bytes of hello.wav.", r
        text = client.audio.transcriptions.create(
            model="fake-whisper", file=("hello.wav", audio, "audio/wav"), response_format="text"
        )
        assert text.strip() == r.text, text
        t = client.audio.translations.create(model="fake-whisper", file=("hallo.wav", audio, "audio/wav"))
        assert t.text == f"Translated {len(audio)} bytes of hallo.wav.", t

    def images_edit():
        png = b"\x89PNG\r\n\x1a\n" + bytes(64)
        r = client.images.edit(model="fake-image", image=("in.png", png, "image/png"), prompt="add a hat")
        assert len(r.data) == 1 and r.data[0].b64_json, r
        assert r.usage is not None and r.usage.output_tokens > 0, r.usage

    def files_and_batches():
        import json as _json
        lines = "".join(
            _json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
            for i in range(2)
        )
        f = client.files.create(file=("requests.jsonl", lines.encode(), "application/jsonl"), purpose="batch")
        assert f.id and f.bytes == len(lines.encode()), f
        assert client.files.content(f.id).content == lines.encode()
        assert f.id in [x.id for x in client.files.list()]
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = client.batches.retrieve(b.id)
        assert done.status == "completed" and done.output_file_id, done
        out = client.files.content(done.output_file_id).text.splitlines()
        assert len(out) == 2 and "Batch answer for r1" in out[1], out
        assert b.id in [x.id for x in client.batches.list()]
        assert client.files.delete(f.id).deleted

    for name, fn in [
        ("plain chat", plain_chat),
        ("files and batches round trip", files_and_batches),
        ("images.generate", images_generate),
        ("images.edit (multipart)", images_edit),
        ("audio.transcriptions and translations (multipart)", audio_transcriptions),
        ("audio.speech.create, streamed and whole", audio_speech),
        ("streamed chat", streamed_chat),
        ("streamed chat with usage", streamed_with_usage),
        ("tool calls, plain and streamed", tool_calls),
        ("models list and retrieve", models),
        ("embeddings, SDK default (base64) and float", embeddings_default_base64),
        ("JSON schema output", json_schema_output),
        ("image input", image_input),
        ("unknown model -> NotFoundError", unknown_model_is_not_found),
        ("wrong key -> AuthenticationError", wrong_key_is_authentication_error),
        ("bad field -> BadRequestError with param", bad_request_names_the_param),
        ("routing: the seeds' tier models are listed", lambda: routing_sdk_check.seed_models_listed(client)),
    ]:
        check(name, fn)


if __name__ == "__main__":
    main()
