"""The official OpenAI Python SDK's Responses, Completions and AzureOpenAI calls against a real Switchyard
binary, in front of three upstreams of three protocols: OpenAI's (served by the fake with Responses and
Completions natively), Anthropic's and Gemini's (the same fake speaking their wire formats, so the
gateway translates).

Called by openai_sdk_check.py: run(binary, check) starts `switchyard fake-upstream` and a gateway whose
configuration names the three providers, then makes the calls SDK users make.
"""

import json
import os
import subprocess
import tempfile

import openai
from openai import AzureOpenAI, OpenAI

import anthropic_sdk_check

KEY = "sk-sy-master-sdk-responses-0123456789abcd"
MODELS = {"openai": "gpt-sdk", "anthropic": "claude-sdk", "gemini": "gemini-sdk"}

CONFIG = """
[catalog]
file = ""

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:{fake}/v1"
api_key_env = "SDK_UPSTREAM_KEY"
quirks = {{ responses = true, completions = true }}

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{fake}"
api_key_env = "SDK_UPSTREAM_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "http://127.0.0.1:{fake}"
api_key_env = "SDK_UPSTREAM_KEY"

[[models]]
name = "gpt-sdk"
provider = "openai"
upstream = "gpt-upstream"

[[models]]
name = "claude-sdk"
provider = "anthropic"
upstream = "claude-upstream"

[[models]]
name = "gemini-sdk"
provider = "gemini"
upstream = "gemini-upstream"
"""

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def start(binary, free_port, wait_ready, config=CONFIG, key=KEY, control=False):
    """Starts the fake upstream (taking scripted faults over HTTP with `control`) and a gateway whose
    configuration `config` names it as `{fake}`; returns (base URL, processes, the fake's port)."""
    fake, port = free_port(), free_port()
    env = dict(os.environ, RUST_LOG="warn", SWITCHYARD_MASTER_KEY=key, SDK_UPSTREAM_KEY="sk-upstream-sdk")
    flags = ["--control"] if control else []
    upstream = subprocess.Popen([binary, "fake-upstream", *flags, "--listen", f"127.0.0.1:{fake}"], env=env)
    file = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    file.write(config.format(fake=fake))
    file.close()
    gateway = subprocess.Popen(
        [binary, "serve", "--config", file.name, "--listen", f"127.0.0.1:{port}"],
        env=dict(env, DATABASE_URL=f"sqlite://{file.name}.db"),
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, gateway)
    return base, [gateway, upstream], fake


def run_checks(base, check):
    client = OpenAI(api_key=KEY, base_url=f"{base}/v1", max_retries=0)

    for protocol, model in MODELS.items():

        def plain(model=model):
            r = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
            assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed", r
            assert r.model == model, r.model
            assert r.output_text, r
            assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
            assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
            got = client.responses.retrieve(r.id)
            assert got.output_text == r.output_text
            items = client.responses.input_items.list(r.id)
            assert [i.content[0].text for i in items.data] == ["Say hello"], items

        def streamed(model=model):
            events = list(client.responses.create(model=model, input="Say hello", stream=True))
            kinds = [e.type for e in events]
            assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
            numbers = [e.sequence_number for e in events]
            assert numbers == sorted(set(numbers)), numbers
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            assert text and events[-1].response.output_text == text

        def stream_helper(model=model):
            with client.responses.stream(model=model, input="Say hello") as stream:
                deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
                final = stream.get_final_response()
            assert "".join(deltas) == final.output_text and final.status == "completed"

        def tools(model=model):
            r = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
            call = next(i for i in r.output if i.type == "function_call")
            assert call.name == "get_weather" and json.loads(call.arguments)["city"], call
            follow = client.responses.create(
                model=model,
                previous_response_id=r.id,
                tools=[WEATHER],
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}],
            )
            assert follow.output_text and follow.previous_response_id == r.id
            with client.responses.stream(model=model, input="Weather in Rome?", tools=[WEATHER]) as stream:
                final = stream.get_final_response()
            streamed_call = next(i for i in final.output if i.type == "function_call")
            assert json.loads(streamed_call.arguments)["city"], streamed_call

        def json_schema(model=model):
            r = client.responses.create(
                model=model,
                input="A person",
                text={"format": {"type": "json_schema", "name": "person", "strict": True, "schema": {
                    "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                    "additionalProperties": False}}},
            )
            assert isinstance(json.loads(r.output_text)["name"], str), r.output_text

        def multi_turn(model=model):
            first = client.responses.create(model=model, input="My name is Ada.")
            second = client.responses.create(model=model, input="And my name?", previous_response_id=first.id)
            assert second.previous_response_id == first.id and second.output_text
            assert second.usage.input_tokens > first.usage.input_tokens, "the earlier turn was sent again"
            deleted = client.responses.delete(first.id)
            assert deleted is None or getattr(deleted, "deleted", True)
            try:
                client.responses.retrieve(first.id)
            except openai.NotFoundError:
                pass
            else:
                raise AssertionError("a deleted response is gone")
            try:
                client.responses.create(model=model, input="x", previous_response_id="resp_nowhere")
            except openai.BadRequestError as e:
                assert e.code == "previous_response_not_found", e.body
            else:
                raise AssertionError("an unknown previous_response_id is refused")

        def completions(model=model):
            c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
            assert c.object == "text_completion" and c.choices[0].text, c
            assert c.usage.completion_tokens > 0
            chunks = list(client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, stream=True))
            assert "".join(ch.choices[0].text for ch in chunks if ch.choices)

        for name, fn in [
            ("responses.create", plain),
            ("responses.create streamed, event by event", streamed),
            ("responses.stream helper", stream_helper),
            ("responses with tools and a tool result", tools),
            ("responses with a json_schema format", json_schema),
            ("responses multi-turn, retrieve, delete", multi_turn),
            ("completions.create plain and streamed", completions),
        ]:
            check(f"{name} ({protocol} upstream)", fn)

    def azure():
        az = AzureOpenAI(api_key=KEY, azure_endpoint=base, api_version="2024-10-21", max_retries=0)
        r = az.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": "Hi"}])
        assert r.choices[0].message.content
        chunks = list(az.chat.completions.create(model=MODELS["gemini"], messages=[{"role": "user", "content": "Hi"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        e = az.embeddings.create(model=MODELS["openai"], input="hello")
        assert e.data[0].embedding
        resp = az.responses.create(model=MODELS["gemini"], input="Hi")
        assert resp.output_text

    check("AzureOpenAI client: chat, stream, embeddings, responses", azure)
    anthropic_sdk_check.run_checks(
        base, KEY, check, model=MODELS["anthropic"], label="anthropic SDK to an Anthropic upstream", passed_through=True
    )
    anthropic_sdk_check.run_checks(base, KEY, check, model=MODELS["gemini"], label="anthropic SDK to a Gemini upstream")


NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def run_node_checks(base, check):
    """The OpenAI Node SDK, the Vercel AI SDK and Codex CLI (tests/sdk/node, installed by run.sh)."""
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        if os.environ.get("SDK_REQUIRE_NODE"):
            check("node checks installed", lambda: (_ for _ in ()).throw(AssertionError("tests/sdk/node is not installed")))
        else:
            print("skip node checks: tests/sdk/node is not installed (run tests/sdk/run.sh with npm available)")
        return
    run = subprocess.run(
        ["node", "check.mjs", base, KEY, *MODELS.values()], cwd=NODE_DIR, capture_output=True, text=True, timeout=1800
    )
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if not results:
        check("node checks ran", lambda: (_ for _ in ()).throw(AssertionError(run.stderr[-2000:])))
    for r in results:
        def outcome(r=r):
            if not r["ok"]:
                raise AssertionError(r.get("error"))
        check(r["name"], outcome)


def run(binary, check, free_port, wait_ready):
    base, procs, _ = start(binary, free_port, wait_ready)
    try:
        run_checks(base, check)
        run_node_checks(base, check)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
