"""The official Anthropic Python SDK against Switchyard's /v1/messages front door (run by openai_sdk_check.py,
which starts the gateway): plain, streamed, tools with a tool-result round trip, token counting, errors."""

import anthropic

MESSAGES = [{"role": "user", "content": "Say hello to the Anthropic SDK"}]
TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def run_checks(base, key, check, model="fake-chat", label="anthropic", passed_through=False):
    """The checks for `model`; `passed_through` when its provider speaks Messages itself (so a block a
    translation refuses reaches it instead)."""
    MODEL = model
    client = anthropic.Anthropic(api_key=key, base_url=base, max_retries=0)
    plain = {}

    def plain_message():
        r = client.messages.create(model=MODEL, max_tokens=200, system="Be brief.", messages=MESSAGES)
        assert r.type == "message" and r.role == "assistant" and r.model == MODEL, r
        assert r.content[0].type == "text" and r.content[0].text, r
        assert r.stop_reason in ("end_turn", "max_tokens"), r.stop_reason
        assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
        plain["text"] = r.content[0].text

    def streamed_message():
        with client.messages.stream(model=MODEL, max_tokens=200, system="Be brief.", messages=MESSAGES) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == plain["text"], (text, plain["text"])
        assert final.content[0].text == text
        assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")

    def tools_and_tool_results():
        r = client.messages.create(model=MODEL, max_tokens=200, messages=MESSAGES, tools=TOOLS)
        use = next(b for b in r.content if b.type == "tool_use")
        assert r.stop_reason == "tool_use" and use.name == "get_weather" and "city" in use.input, r
        with client.messages.stream(model=MODEL, max_tokens=200, messages=MESSAGES, tools=TOOLS) as s:
            final = s.get_final_message()
        streamed = next(b for b in final.content if b.type == "tool_use")
        assert streamed.input == use.input, (streamed.input, use.input)
        answer = client.messages.create(model=MODEL, max_tokens=200, messages=[
            *MESSAGES,
            {"role": "assistant", "content": [b.model_dump() for b in r.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]},
        ])
        assert answer.content[0].type == "text" and answer.content[0].text

    def count_tokens():
        n = client.messages.count_tokens(model=MODEL, messages=MESSAGES)
        assert n.input_tokens > 0, n

    def models_list():
        ids = [m.id for m in client.models.list()]
        assert MODEL in ids, ids
        assert client.models.retrieve(MODEL).id == MODEL

    def unknown_model_is_not_found():
        try:
            client.messages.create(model="no-such-model", max_tokens=10, messages=MESSAGES)
        except anthropic.NotFoundError as e:
            assert e.body["error"]["type"] == "not_found_error", e.body
        else:
            raise AssertionError("expected NotFoundError")

    def wrong_key_is_authentication_error():
        bad = anthropic.Anthropic(api_key="sk-wrong", base_url=base, max_retries=0)
        try:
            bad.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        except anthropic.AuthenticationError:
            pass
        else:
            raise AssertionError("expected AuthenticationError")

    def unsupported_block_is_bad_request():
        try:
            client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
        except anthropic.BadRequestError as e:
            assert e.body["error"]["type"] == "invalid_request_error", e.body
        else:
            raise AssertionError("expected BadRequestError")

    checks = [
        ("plain message", plain_message),
        ("streamed message", streamed_message),
        ("tools, streamed tools, tool result", tools_and_tool_results),
        ("count tokens", count_tokens),
        ("models list and retrieve", models_list),
        ("unknown model -> NotFoundError", unknown_model_is_not_found),
        ("wrong key -> AuthenticationError", wrong_key_is_authentication_error),
    ]
    if not passed_through:
        checks.append(("unsupported block -> BadRequestError", unsupported_block_is_bad_request))
    for name, fn in checks:
        check(f"{label}: {name}", fn)
    return anthropic.__version__
