"""Smart routing through the official OpenAI Python SDK, against a real Switchyard binary with the built-in
catalog, its OpenAI, Anthropic and Gemini providers pointed at `switchyard fake-upstream --control` (which
speaks all three wire formats and takes scripted faults over HTTP):

- `gemini-2.5-flash` whose provider answers 429 is answered by another lab, and the headers say so;
- `auto` answers with its tier and score headers (and seed 004's names of them);
- a stream whose provider cuts the connection after a few chunks reads as one stream: consecutive words of
  the fake's prose, none repeated or missing, one role, one finish, one usage that notes the continuation;
- the model list of the shipped configuration holds seeds 003's and 004's models that have a provider.

Called by openai_sdk_check.py: run(binary, check, free_port, wait_ready), and seed_models_listed(client)
against the gateway it runs with the shipped configuration.
"""

import json
import urllib.request

from openai import OpenAI

import responses_sdk_check

KEY = "sk-sy-master-sdk-routing-0123456789abcde"

CONFIG = """
[router]
seed_headers = true

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:{fake}/v1"
api_key_env = "SDK_UPSTREAM_KEY"

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
"""

# The fake's answer, which it cycles through word by word (src/fake.rs, PROSE).
PROSE = (
    "Switchyard is answering from its built-in fake model. Every request is routed to the right model, "
    "streamed back token by token as it arrives, and counted once. Point any OpenAI client at the gateway, "
    "set a provider key, and the same call reaches a real model instead. Until then this text keeps the rails warm."
).split(" ")

# Seed 003's bands and seed 004's tiers (the models with a provider; Bedrock's come with a Bedrock provider).
SEED_MODELS = [
    "deepseek-v4-flash", "deepseek-chat", "sarvam-30b", "sarvam-105b", "krutrim-llama-4-scout", "mistral-saba-24b",
    "krutrim-spectre-v2", "doubao-vision-pro-32k", "moonshot-v1-8k-vision-preview", "glm-4-plus", "glm-4v-plus",
    "doubao-seed-2.1-turbo", "doubao-seed-2.0-pro", "qwen2.5-vl-72b-instruct", "qwen-vl-max", "moonshot-v1-32k",
    "doubao-seed-2.1-pro", "grok-4-3", "qwen-max", "moonshot-v1-128k", "gemini-2.5-pro", "claude-sonnet-5", "gpt-4o",
    "grok-4", "claude-sonnet-4-6", "gpt-5-nano", "glm-4-flash", "doubao-seed-2.0-mini", "doubao-seed-2.0-lite",
    "krutrim-llama-3-8b", "qwen-plus", "gpt-4o-mini", "grok-code-fast-1", "moonshot-v1-8k", "gemini-2.5-flash",
    "krutrim-llama-3-70b", "claude-haiku-4-5",
    "gpt-4.1-mini", "o4-mini", "grok-3-mini-beta", "llama-3.3-70b-versatile",
    "meta-llama/llama-4-scout-17b-16e-instruct", "llama3.1-8b", "qwen-3-235b-a22b-instruct-2507", "gpt-4.1",
    "gpt-5.3-chat-latest", "gpt-5.3-codex", "gpt-5.1-codex-mini", "o3", "grok-3-beta", "gemini-3.1-pro-preview",
    "claude-opus-4-7", "claude-opus-4-6", "gpt-5.4",
]


def reads_on(words):
    """Whether `words` are consecutive words of the fake's prose, each once."""
    same = lambda a, b: a.lower() == b.lower()  # noqa: E731
    n = len(PROSE)
    return any(
        all(same(PROSE[(j + i) % n], w) for i, w in enumerate(words))
        for j in range(n)
        if words and same(PROSE[j], words[0])
    )


def fault(fake, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{fake}/fake/faults", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204, r.status


def run(binary, check, free_port, wait_ready):
    base, procs, fake = responses_sdk_check.start(binary, free_port, wait_ready, CONFIG, KEY, control=True)
    try:
        checks(OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0), fake, check)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def checks(client, fake, check):
    def fallback_to_another_lab():
        fault(fake, {"model": "gemini-2.5-flash", "status": 429})
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "Say hello"}]
        )
        served, attempts = raw.headers["x-switchyard-model"], raw.headers["x-switchyard-attempts"]
        assert raw.http_response.status_code == 200
        assert served != "gemini-2.5-flash" and raw.headers["x-switchyard-provider"] != "gemini", served
        assert raw.headers["x-switchyard-routed-from"] == "gemini-2.5-flash"
        assert raw.headers["x-gateway-routed-from"] == "gemini-2.5-flash"
        assert "429" in attempts, attempts
        assert raw.parse().choices[0].message.content

    def auto_says_its_tier():
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
        tier, score = raw.headers["x-switchyard-auto-tier"], float(raw.headers["x-switchyard-auto-score"])
        assert tier in ("economy", "standard", "premium"), tier
        assert 0.0 <= score <= 1.0, score
        assert raw.headers["x-model-router-auto-tier"] == tier
        assert raw.parse().choices[0].message.content

    def cut_stream_reads_as_one():
        fault(fake, {"model": "gpt-4o", "cut_after_chunks": 4})
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Tell me about the gateway"}],
            stream=True, stream_options={"include_usage": True},
        )
        text, roles, finishes, usages, ids = "", 0, 0, [], set()
        for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage is not None:
                usages.append(chunk.usage)
            for choice in chunk.choices:
                roles += choice.delta.role is not None
                finishes += choice.finish_reason is not None
                text += choice.delta.content or ""
        words = text.split()
        assert reads_on(words), text
        # More than one attempt's worth (the fake answers 24 words): continued, not restarted.
        assert len(words) > 24, text
        assert (roles, finishes, len(usages), len(ids)) == (1, 1, 1, 1), (roles, finishes, len(usages), ids)
        continuation = (usages[0].model_extra or {}).get("continuation")
        assert continuation and continuation["count"] == 1, usages[0]

    check("routing: gemini-2.5-flash answering 429 is served by another lab", fallback_to_another_lab)
    check("routing: auto's tier and score headers", auto_says_its_tier)
    check("routing: a stream cut mid-way reads as one stream", cut_stream_reads_as_one)


def seed_models_listed(client):
    """Run against the shipped configuration, whose catalog keeps every provider's models."""
    ids = {m.id for m in client.models.list()}
    missing = [m for m in SEED_MODELS if m not in ids]
    assert not missing, missing
