#!/usr/bin/env python3
"""Anthropic's Messages API through the router with the official `anthropic`
package, over mock SGLang and vLLM engines (the tokenizers, templates and
replies of test_tools.py).

Checked: an agent loop (tools offered as Anthropic tools, the model's calls
back as `tool_use` blocks beside its text with `stop_reason: tool_use`, a
second turn carrying the `tool_use` and `tool_result` blocks), the same
message streamed (the SDK's own accumulator builds it from the events), a
reasoning model's thought as a `thinking` block, `tool_choice` `tool` and
`any` (constrained output read as calls), `count_tokens` agreeing with the
message's usage, a stop sequence named as the one that ended the text
(whole and streamed), the key sent as `x-api-key` (a wrong one refused with
401), and bad requests refused with 400 in Anthropic's error shape.

Run with: python3 tests/python/test_anthropic.py   (after cargo build --bins)
"""

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import anthropic  # noqa: E402

from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402
from test_tools import (  # noqa: E402
    DEEPSEEK, DEEPSEEK_REPLY, DEEPSEEK_SPECIALS, FORCED_ARGS, GPT_OSS, HARMONY_REPLY, HARMONY_SPECIALS,
    HARMONY_THOUGHT, HERMES, HERMES_REPLY, LLAMA_REPLY, MISTRAL, MISTRAL_REPLY, PLAIN, PYTHONIC, PYTHONIC_REPLY,
    REQUIRED_REPLY, THINKER, THINKER_REPLY, THOUGHT, engine, make_tokenizer)

KEY = "client-key-for-anthropic-test"
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def blocks(message):
    """A message's content without the ids: (type, text / thinking / (name, input))."""
    out = []
    for b in message.content:
        if b.type == "text":
            out.append(("text", b.text))
        elif b.type == "thinking":
            out.append(("thinking", b.thinking))
        elif b.type == "tool_use":
            out.append(("tool_use", (b.name, b.input)))
    return out


def post(base, path, body, key=KEY):
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", "x-api-key": key})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def main():
    root = tempfile.mkdtemp()
    templates = {"hermes": (HERMES, ()), "plain": (PLAIN, ()), "thinker": (THINKER, ()),
                 "pythonic": (PYTHONIC, ()), "deepseek": (DEEPSEEK, DEEPSEEK_SPECIALS),
                 "mistral": (MISTRAL, ["[TOOL_CALLS]"]), "oss": (GPT_OSS, HARMONY_SPECIALS)}
    dirs = {name: os.path.join(root, name) for name in templates}
    for name, (template, specials) in templates.items():
        make_tokenizer(dirs[name], template, specials)
    workers = [
        ("qwen", "sglang", "hermes", HERMES_REPLY),
        ("thinker", "vllm", "thinker", THINKER_REPLY),
        ("named", "sglang", "plain", FORCED_ARGS),
        ("required", "vllm", "plain", REQUIRED_REPLY),
        ("llama", "vllm", "plain", LLAMA_REPLY),
        ("llama4", "sglang", "pythonic", PYTHONIC_REPLY),
        ("deepseek", "vllm", "deepseek", DEEPSEEK_REPLY),
        ("mistral", "sglang", "mistral", MISTRAL_REPLY),
        ("oss", "vllm", "oss", HARMONY_REPLY),
    ]
    urls = [engine(name, kind, dirs[d], reply) for name, kind, d, reply in workers]
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    *[a for name, _, d, _ in workers for a in ("--tokenizer", f"{name}={dirs[d]}")],
                    "--tool-parser", "llama=llama3_json",
                    *[a for url in urls for a in ("--worker", url)]],
                   env={"SWITCHYARD_CLIENT_KEYS": KEY})
    read_after(router, "switchyard listening on")
    base = f"http://{read_after(router, 'switchyard http listening on')}"
    client = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)
    ask = [{"role": "user", "content": "Weather in Zürich and Paris?"}]
    try:
        out = client.messages.create(model="qwen", max_tokens=256, messages=ask, tools=[WEATHER])
        assert out.type == "message" and out.role == "assistant" and out.stop_reason == "tool_use", out
        assert blocks(out) == [("text", "Let me check."),
                               ("tool_use", ("get_weather", {"city": "Zürich", "unit": "celsius"})),
                               ("tool_use", ("get_weather", {"city": "Paris"}))], out.content
        calls = [b for b in out.content if b.type == "tool_use"]
        assert len({c.id for c in calls}) == 2 and all(c.id.startswith("toolu_") for c in calls), calls
        assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0, out.usage
        print("ok: tools as Anthropic tools, the calls back as tool_use blocks beside the text")

        second = ask + [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in out.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": calls[0].id, "content": "3 degrees"},
                {"type": "tool_result", "tool_use_id": calls[1].id,
                 "content": [{"type": "text", "text": "no data"}], "is_error": True},
                {"type": "text", "text": "Thanks."}]},
        ]
        again = client.messages.create(model="qwen", max_tokens=256, messages=second, tools=[WEATHER],
                                       system="You are terse.")
        assert again.usage.input_tokens > out.usage.input_tokens, "calls, results and system rendered"
        print("ok: a second turn with tool_use and tool_result blocks (an error result among them)")

        with client.messages.stream(model="qwen", max_tokens=256, messages=ask, tools=[WEATHER]) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
        assert blocks(final) == blocks(out) and final.stop_reason == "tool_use", final
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
        assert kinds.count("content_block_start") == 3 and kinds.count("content_block_stop") == 3, kinds
        assert "input_json" in kinds, "arguments streamed as input_json_delta"
        print("ok: streamed as Anthropic's events; the SDK's accumulator builds the same message")

        out = client.messages.create(model="thinker", max_tokens=256, messages=ask, tools=[WEATHER],
                                     thinking={"type": "enabled", "budget_tokens": 1024})
        assert blocks(out) == [("thinking", THOUGHT), ("tool_use", ("get_weather", {"city": "Bern"}))], out.content
        with client.messages.stream(model="thinker", max_tokens=256, messages=ask, tools=[WEATHER]) as stream:
            thinking = [e.thinking for e in stream if e.type == "thinking"]
            final = stream.get_final_message()
        assert "".join(thinking) == THOUGHT and len(thinking) > 1, thinking
        assert blocks(final) == blocks(out), final.content
        print("ok: a reasoning model's thought as a thinking block, whole and streamed")

        for model, choice in (("named", {"type": "tool", "name": "get_weather"}), ("required", {"type": "any"})):
            out = client.messages.create(model=model, max_tokens=64, messages=ask, tools=[WEATHER],
                                         tool_choice=choice)
            assert blocks(out) == [("tool_use", ("get_weather", {"city": "Oslo"}))], (model, out.content)
            assert out.stop_reason == "tool_use", out
        print("ok: tool_choice tool and any: the constrained output as a tool_use block")

        two = [("tool_use", ("get_weather", {"city": "Lima", "days": 2})),
               ("tool_use", ("get_weather", {"city": "Quito"}))]
        for model, expected in (
            ("llama", [("tool_use", ("get_weather", {"city": "Oslo"}))]),
            ("llama4", two), ("deepseek", [("text", "Checking."), *two]), ("mistral", two),
            ("oss", [("thinking", HARMONY_THOUGHT), ("tool_use", ("get_weather", {"city": "Rome"}))]),
        ):
            out = client.messages.create(model=model, max_tokens=256, messages=ask, tools=[WEATHER])
            assert blocks(out) == expected and out.stop_reason == "tool_use", (model, out.content)
            with client.messages.stream(model=model, max_tokens=256, messages=ask, tools=[WEATHER]) as stream:
                final = stream.get_final_message()
            assert blocks(final) == expected, (model, final.content)
            use = next(b for b in out.content if b.type == "tool_use")
            second = ask + [
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in out.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "ok"}]}]
            again = client.messages.create(model=model, max_tokens=256, messages=second, tools=[WEATHER])
            assert again.usage.input_tokens > out.usage.input_tokens, (model, again.usage)
        print("ok: every tool-call format (Llama 3 JSON, pythonic, DeepSeek V3, Mistral, harmony) through the "
              "Messages API, whole and streamed, with a second turn")

        counted = client.messages.count_tokens(model="qwen", messages=ask, tools=[WEATHER])
        out = client.messages.create(model="qwen", max_tokens=256, messages=ask, tools=[WEATHER])
        assert counted.input_tokens == out.usage.input_tokens + (out.usage.cache_read_input_tokens or 0), (
            counted, out.usage)
        print("ok: count_tokens agrees with the message's usage")

        stops = ["Paris", "check."]
        out = client.messages.create(model="qwen", max_tokens=256, messages=ask, stop_sequences=stops)
        assert blocks(out) == [("text", "Let me ")], out.content
        assert out.stop_reason == "stop_sequence" and out.stop_sequence == "check.", out
        with client.messages.stream(model="qwen", max_tokens=256, messages=ask, stop_sequences=stops) as stream:
            final = stream.get_final_message()
        assert blocks(final) == blocks(out), final.content
        assert final.stop_reason == "stop_sequence" and final.stop_sequence == "check.", final
        out = client.messages.create(model="qwen", max_tokens=256, messages=ask, stop_sequences=["Lisbon"])
        assert out.stop_reason == "end_turn" and out.stop_sequence is None, out
        print("ok: the stop sequence that ended the text is named (stop_reason stop_sequence), whole and streamed")

        try:
            anthropic.Anthropic(base_url=base, api_key="wrong-key-0123456789", max_retries=0).messages.create(
                model="qwen", max_tokens=8, messages=ask)
            raise AssertionError("a wrong x-api-key accepted")
        except anthropic.AuthenticationError as e:
            assert e.status_code == 401, e
        for body, needle in (
            ({"model": "qwen", "messages": ask}, "max_tokens is required"),
            ({"model": "qwen", "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]},
             "\"image\" blocks are not supported"),
            ({"model": "qwen", "max_tokens": 8, "messages": ask, "tools": [{"type": "web_search_20250305",
                                                                           "name": "web_search"}]},
             "server tools"),
            ({"model": "qwen", "max_tokens": 8, "messages": ask, "service_tier": "auto"}, "service_tier"),
            ({"model": "qwen", "max_tokens": 8, "messages": ask, "tool_choice": {"type": "sometimes"}},
             "tool_choice must be"),
        ):
            status, error = post(base, "/v1/messages", body)
            assert status == 400 and error["type"] == "error", (status, error)
            assert error["error"]["type"] == "invalid_request_error" and needle in error["error"]["message"], error
        status, _ = post(base, "/v1/messages", {"model": "qwen", "max_tokens": 8, "messages": ask})
        assert status == 200, "the router kept serving"
        print("ok: a wrong key is a 401; bad requests are 400s in Anthropic's error shape naming the problem")
        print("python anthropic test passed")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
