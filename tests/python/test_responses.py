#!/usr/bin/env python3
"""OpenAI's Responses API through the router with the official `openai`
package, over mock SGLang and vLLM engines (the tokenizers, templates and
replies of test_tools.py).

Checked: an agent loop (function tools, the model's calls back as
`function_call` items beside its `message`, a second turn carrying the calls
and their `function_call_output` items), the same response streamed (the
SDK's accumulator checks every event's order and identity and gives the
final response), a reasoning model's thought as a `reasoning` item,
`text.format` and a named `tool_choice` sent on (constrained output read as
the text or as the call), a response cut at `max_output_tokens` marked
`incomplete`, and bad requests refused with 400 naming the problem.

Run with: python3 tests/python/test_responses.py   (after cargo build --bins)
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from openai import BadRequestError, OpenAI  # noqa: E402

from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402
from test_tools import (  # noqa: E402
    FORCED_ARGS, HERMES, HERMES_REPLY, PLAIN, THINKER, THINKER_REPLY, THOUGHT, engine, make_tokenizer)

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def items(response):
    """A response's output without the ids: (type, text / thought / (name, arguments))."""
    out = []
    for item in response.output:
        if item.type == "message":
            out.append(("message", "".join(c.text for c in item.content)))
        elif item.type == "reasoning":
            out.append(("reasoning", "".join(c.text for c in item.content or [])))
        elif item.type == "function_call":
            out.append(("function_call", (item.name, json.loads(item.arguments))))
    return out


def main():
    root = tempfile.mkdtemp()
    dirs = {name: os.path.join(root, name) for name in ("hermes", "plain", "thinker")}
    for name, template in (("hermes", HERMES), ("plain", PLAIN), ("thinker", THINKER)):
        make_tokenizer(dirs[name], template)
    workers = [
        ("qwen", "sglang", "hermes", HERMES_REPLY),
        ("thinker", "vllm", "thinker", THINKER_REPLY),
        ("named", "sglang", "plain", FORCED_ARGS),
    ]
    urls = [engine(name, kind, dirs[d], reply) for name, kind, d, reply in workers]
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    *[a for name, _, d, _ in workers for a in ("--tokenizer", f"{name}={dirs[d]}")],
                    *[a for url in urls for a in ("--worker", url)]])
    read_after(router, "switchyard listening on")
    base = f"http://{read_after(router, 'switchyard http listening on')}"
    client = OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)
    try:
        out = client.responses.create(model="qwen", input="Weather in Zürich and Paris?", tools=[WEATHER])
        assert out.object == "response" and out.status == "completed", out
        assert items(out) == [("message", "Let me check."),
                              ("function_call", ("get_weather", {"city": "Zürich", "unit": "celsius"})),
                              ("function_call", ("get_weather", {"city": "Paris"}))], out.output
        assert out.output_text == "Let me check."
        calls = [i for i in out.output if i.type == "function_call"]
        assert len({c.call_id for c in calls}) == 2 and all(c.status == "completed" for c in calls), calls
        assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0, out.usage
        assert out.tools[0].name == "get_weather", "the request's tools are echoed"
        print("ok: function tools; the calls back as function_call items beside the message")

        second = [{"role": "user", "content": "Weather in Zürich and Paris?"},
                  *[c.model_dump(exclude_none=True) for c in calls],
                  {"type": "function_call_output", "call_id": calls[0].call_id, "output": "3 degrees"},
                  {"type": "function_call_output", "call_id": calls[1].call_id, "output": "9 degrees"}]
        again = client.responses.create(model="qwen", input=second, tools=[WEATHER],
                                        instructions="You are terse.")
        assert again.usage.input_tokens > out.usage.input_tokens, "calls, outputs and instructions rendered"
        print("ok: a second turn with the function_call and function_call_output items")

        with client.responses.stream(model="qwen", input="Weather in Zürich and Paris?", tools=[WEATHER]) as s:
            kinds = [event.type for event in s]
            final = s.get_final_response()
        assert items(final) == items(out) and final.status == "completed", final
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed", kinds
        assert "response.output_text.delta" in kinds and kinds.count("response.function_call_arguments.delta") > 2
        assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 3, kinds
        print("ok: streamed as typed events; the SDK's accumulator gives the same response")

        out = client.responses.create(model="thinker", input="Weather?", tools=[WEATHER],
                                      reasoning={"effort": "low"})
        assert items(out) == [("reasoning", THOUGHT), ("function_call", ("get_weather", {"city": "Bern"}))], out.output
        with client.responses.stream(model="thinker", input="Weather?", tools=[WEATHER]) as s:
            kinds = [event.type for event in s]
            final = s.get_final_response()
        assert items(final) == items(out) and kinds.count("response.reasoning_text.delta") > 1, kinds
        print("ok: a reasoning model's thought as a reasoning item, whole and streamed")

        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        out = client.responses.create(model="named", input="Which city?",
                                      text={"format": {"type": "json_schema", "name": "city", "schema": schema}})
        assert json.loads(out.output_text) == {"city": "Oslo"}, out.output
        out = client.responses.create(model="named", input="Weather?", tools=[WEATHER],
                                      tool_choice={"type": "function", "name": "get_weather"})
        assert items(out) == [("function_call", ("get_weather", {"city": "Oslo"}))], out.output
        print("ok: text.format and a named tool_choice sent on; the constrained output read as text or call")

        out = client.responses.create(model="qwen", input="Weather?", max_output_tokens=3)
        assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens", out
        assert out.usage.output_tokens == 3, out.usage
        print("ok: a response cut at max_output_tokens is incomplete, saying why")

        for kwargs, needle in (
            ({"previous_response_id": "resp_1"}, "keeps no responses"),
            ({"tools": [{"type": "web_search"}]}, "hosted tools"),
            ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
             "input_image"),
            ({"input": [{"type": "file_search_call", "id": "x"}]}, "file_search_call"),
        ):
            args = {"model": "qwen", "input": "x", **kwargs}
            try:
                client.responses.create(**args)
                raise AssertionError(f"accepted {kwargs}")
            except BadRequestError as e:
                assert needle in str(e), e
        assert client.responses.create(model="qwen", input="x").status == "completed", "still serving"
        print("ok: bad requests are 400s naming the problem")
        print("python responses test passed")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
