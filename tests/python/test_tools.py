#!/usr/bin/env python3
"""Tool calls through the router with the official `openai` package.

A small BPE tokenizer is trained here (no network) with a chat template
that renders tools, assistant tool calls and tool results the way Qwen's and
Hermes' templates do (`<tool_call>` JSON `</tool_call>`); the router loads
it, detects the format from it, and mock SGLang and vLLM engines with the
same tokenizer generate a fixed reply (`mock-worker --reply`) token by
token. Checked: the calls parsed out of the text (names, arguments, the
content beside them, `finish_reason: tool_calls`), streamed as OpenAI's
incremental deltas that join to the same calls, a second turn carrying the
call and its result (an agent loop), a format given by `--tool-parser`
(Llama 3's JSON), a model whose format is unknown refused with 400 naming
the flag, text that looks like a call but is not one returned as content;
a reasoning model (a Qwen3-shaped template) whose thought comes back in
`reasoning_content` before its call, whole and streamed, with
`separate_reasoning` and `chat_template_kwargs` (`enable_thinking`); and
`tool_choice` `required` or a named function, whose constrained output
(written here by the mock as the engine would) is read as calls.

Run with: python3 tests/python/test_tools.py   (after cargo build --bins)
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from openai import BadRequestError, OpenAI  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from procs import MOCK_WORKER, SWITCHYARD, read_after, spawn, stop_all  # noqa: E402

# Written for this test in the shape of Hermes-style templates.
HERMES = (
    "{%- if tools %}<|im_start|>system\nYou may call these functions:\n"
    "{%- for tool in tools %}\n{{ tool.function | tojson }}{%- endfor %}\n"
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant"
    "{%- for c in m.tool_calls %}\n<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# No tool markers: the format must be configured.
PLAIN = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}
HERMES_REPLY = ("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                "{\"city\": \"Zürich\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n"
                "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
LLAMA_REPLY = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"
NOT_A_CALL = "<tool_call>\n{\"city\": \"Paris\"}\n</tool_call> is how I would call it."
# Written for this test in the shape of Qwen3's template: earlier thoughts
# stripped at `</think>`, and `enable_thinking: false` writes an empty one.
THINKER = HERMES.replace(
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>",
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content.split('</think>')[-1] }}<|im_end|>").replace(
    "<|im_start|>assistant\n{% endif %}",
    "<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}")
THOUGHT = "The user wants the weather.\nI should call get_weather."
THINKER_REPLY = ("<think>\n" + THOUGHT + "\n</think>\n\n<tool_call>\n"
                 "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}\n</tool_call>")
FORCED_ARGS = "{\"city\": \"Oslo\"}"
REQUIRED_REPLY = "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}]"
# Written for this test in the shape of gpt-oss's harmony template: messages
# between special tokens, the assistant's calls as commentary addressed to
# the function; the prompt ends with the assistant's turn opened.
HARMONY_SPECIALS = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|call|>", "<|return|>",
                    "<|constrain|>"]
GPT_OSS = (
    "{%- if tools %}<|start|>developer<|message|># Tools\n{{ tools | tojson }}<|end|>{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}{%- for c in m.tool_calls %}<|start|>assistant"
    "<|channel|>commentary to=functions.{{ c.function.name }} <|constrain|>json<|message|>"
    "{{ c.function.arguments | tojson }}<|call|>{%- endfor %}"
    "{%- elif m.role == 'tool' %}<|start|>functions.{{ m.name }} to=assistant<|channel|>commentary"
    "<|message|>{{ m.content }}<|end|>"
    "{%- else %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|start|>assistant{% endif %}"
)
# Llama 4's pythonic calls, and DeepSeek V3's between its special tokens
# (templates reduced to the markers they are detected by).
PYTHONIC = PLAIN + "{%- if tools %}{{ '<|python_start|>' if false }}{% endif %}"
PYTHONIC_REPLY = "[get_weather(city='Lima', days=2), get_weather(city=\"Quito\")]"
DEEPSEEK_SPECIALS = ["<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
                     "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"]
DEEPSEEK = PLAIN + "{%- if false %}<｜tool▁calls▁begin｜>{% endif %}"
DEEPSEEK_REPLY = ("Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
                  "```json\n{\"city\": \"Lima\", \"days\": 2}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function"
                  "<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Quito\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
# Mistral's calls after its special token.
MISTRAL = PLAIN + "{%- if false %}[TOOL_CALLS]{% endif %}"
MISTRAL_REPLY = "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\", \"days\": 2}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Quito\"}}]"
HARMONY_THOUGHT = "Need the weather in Rome."
HARMONY_REPLY = ("<|channel|>analysis<|message|>" + HARMONY_THOUGHT + "<|end|><|start|>assistant<|channel|>"
                 "commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Rome\"}<|call|>")


def make_tokenizer(directory, template, specials=()):
    os.makedirs(directory, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", *specials], show_progress=False)
    tok.train_from_iterator([HERMES_REPLY, LLAMA_REPLY, NOT_A_CALL, THINKER_REPLY, REQUIRED_REPLY,
                            HARMONY_REPLY, PYTHONIC_REPLY, DEEPSEEK_REPLY, MISTRAL_REPLY, json.dumps(WEATHER)],
                           trainer=trainer)
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "chat_template": template}, f)


def engine(name, kind, directory, reply):
    proc = spawn([MOCK_WORKER, "--engine", kind, "--name", name, "--model", name, "--tokenizer", directory,
                  "--reply", reply])
    return read_after(proc, f"mock-worker {name} listening on")


def streamed(stream, thought=None):
    """Content, calls by index (id, name, argument fragments) and the finish reason of a stream
    (and the reasoning deltas' text, appended to `thought` when given)."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            if thought is not None:
                thought.append((delta.model_extra or {}).get("reasoning_content") or "")
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "fragments": []})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["fragments"].append(call.function.arguments)
            finish = choice.finish_reason or finish
    return content, calls, finish


def main():
    root = tempfile.mkdtemp()
    hermes_dir, plain_dir = os.path.join(root, "hermes"), os.path.join(root, "plain")
    thinker_dir, oss_dir = os.path.join(root, "thinker"), os.path.join(root, "oss")
    make_tokenizer(oss_dir, GPT_OSS, HARMONY_SPECIALS)
    pythonic_dir, deepseek_dir = os.path.join(root, "pythonic"), os.path.join(root, "deepseek")
    make_tokenizer(pythonic_dir, PYTHONIC)
    make_tokenizer(deepseek_dir, DEEPSEEK, DEEPSEEK_SPECIALS)
    mistral_dir = os.path.join(root, "mistral")
    make_tokenizer(mistral_dir, MISTRAL, ["[TOOL_CALLS]"])
    make_tokenizer(hermes_dir, HERMES)
    make_tokenizer(plain_dir, PLAIN)
    make_tokenizer(thinker_dir, THINKER)
    urls = [
        engine("qwen", "sglang", hermes_dir, HERMES_REPLY),
        engine("llama", "vllm", plain_dir, LLAMA_REPLY),
        engine("plain", "sglang", plain_dir, "no tools here"),
        engine("liar", "sglang", hermes_dir, NOT_A_CALL),
        engine("thinker", "vllm", thinker_dir, THINKER_REPLY),
        engine("named", "sglang", plain_dir, FORCED_ARGS),
        engine("required", "vllm", plain_dir, REQUIRED_REPLY),
        engine("oss", "vllm", oss_dir, HARMONY_REPLY),
        engine("llama4", "sglang", pythonic_dir, PYTHONIC_REPLY),
        engine("deepseek", "vllm", deepseek_dir, DEEPSEEK_REPLY),
        engine("mistral", "sglang", mistral_dir, MISTRAL_REPLY),
    ]
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--tokenizer", f"qwen={hermes_dir}", "--tokenizer", f"llama={plain_dir}",
                    "--tokenizer", f"plain={plain_dir}", "--tokenizer", f"liar={hermes_dir}",
                    "--tokenizer", f"thinker={thinker_dir}", "--tokenizer", f"named={plain_dir}",
                    "--tokenizer", f"required={plain_dir}", "--tokenizer", f"oss={oss_dir}",
                    "--tokenizer", f"llama4={pythonic_dir}", "--tokenizer", f"deepseek={deepseek_dir}",
                    "--tokenizer", f"mistral={mistral_dir}",
                    "--tool-parser", "llama=llama3_json",
                    *[a for url in urls for a in ("--worker", url)]])
    read_after(router, "switchyard listening on")
    base = f"http://{read_after(router, 'switchyard http listening on')}"
    client = OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)
    ask = [{"role": "user", "content": "Weather in Zürich and Paris?"}]
    try:
        out = client.chat.completions.create(model="qwen", messages=ask, tools=[WEATHER])
        choice = out.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content == "Let me check.", choice.message
        calls = choice.message.tool_calls
        assert [c.function.name for c in calls] == ["get_weather", "get_weather"], calls
        assert [json.loads(c.function.arguments) for c in calls] == [
            {"city": "Zürich", "unit": "celsius"}, {"city": "Paris"}], calls
        assert len({c.id for c in calls}) == 2 and all(c.type == "function" for c in calls), calls
        without = client.chat.completions.create(model="qwen", messages=ask)
        assert out.usage.prompt_tokens > without.usage.prompt_tokens, "the tools are rendered into the prompt"
        assert without.choices[0].message.tool_calls is None and without.choices[0].finish_reason == "stop"
        assert without.choices[0].message.content == HERMES_REPLY, "no tools offered: no parsing"
        print("ok: Hermes-format calls parsed (format detected from the template), content beside them")

        content, streamed_calls, finish = streamed(client.chat.completions.create(
            model="qwen", messages=ask, tools=[WEATHER], stream=True))
        assert finish == "tool_calls" and content == "Let me check.", (finish, content)
        assert [(c["name"], json.loads("".join(c["fragments"]))) for _, c in sorted(streamed_calls.items())] == [
            (c.function.name, json.loads(c.function.arguments)) for c in calls], streamed_calls
        assert all(c["id"] for c in streamed_calls.values())
        assert max(len(c["fragments"]) for c in streamed_calls.values()) > 1, "arguments stream in fragments"
        print("ok: streamed as incremental tool_calls deltas that join to the same calls")

        # The agent loop's second turn: the call and its result go back.
        second = ask + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                              "arguments": c.function.arguments}}
                for c in calls]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "{\"temp\": 3}"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "{\"temp\": 9}"},
        ]
        again = client.chat.completions.create(model="qwen", messages=second, tools=[WEATHER])
        assert again.usage.prompt_tokens > out.usage.prompt_tokens, "calls and results rendered"
        assert again.choices[0].finish_reason == "tool_calls"
        print("ok: a second turn with the assistant's calls and the tool results")

        out = client.chat.completions.create(model="llama", messages=ask, tools=[WEATHER])
        choice = out.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content, choice
        assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
            ("get_weather", {"city": "Oslo"})], choice.message.tool_calls
        print("ok: Llama 3 JSON calls from a vLLM engine, format given by --tool-parser")

        try:
            client.chat.completions.create(model="plain", messages=ask, tools=[WEATHER])
            raise AssertionError("a model with no known format accepted tools")
        except BadRequestError as e:
            assert "--tool-parser plain=" in str(e), e
        for bad, needle in (([{"type": "function"}], "tools[0]"), ("x", "tools must be a list")):
            try:
                client.chat.completions.create(model="qwen", messages=ask, tools=bad)
                raise AssertionError(f"accepted tools={bad!r}")
            except BadRequestError as e:
                assert needle in str(e), e
        out = client.chat.completions.create(model="plain", messages=ask, tools=[WEATHER], tool_choice="none")
        assert out.choices[0].message.content == "no tools here"
        print("ok: an unknown format, malformed tools: 400 saying what to do; tool_choice none: no parsing")

        for stream in (False, True):
            out = client.chat.completions.create(model="liar", messages=ask, tools=[WEATHER], stream=stream)
            if stream:
                content, got, finish = streamed(out)
            else:
                content, got, finish = (out.choices[0].message.content, out.choices[0].message.tool_calls,
                                        out.choices[0].finish_reason)
            assert content == NOT_A_CALL and not got and finish == "stop", (content, got, finish)
        print("ok: text that looks like a call but names no function is content, whole")

        out = client.chat.completions.create(model="thinker", messages=ask, tools=[WEATHER])
        message = out.choices[0].message
        assert message.model_extra.get("reasoning_content") == THOUGHT, message
        assert not message.content and out.choices[0].finish_reason == "tool_calls", message
        assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
            ("get_weather", {"city": "Bern"})], message.tool_calls
        thought = []
        content, got, finish = streamed(client.chat.completions.create(
            model="thinker", messages=ask, tools=[WEATHER], stream=True), thought)
        assert "".join(thought) == THOUGHT and len([t for t in thought if t]) > 1, thought
        assert not content and finish == "tool_calls", (content, finish)
        assert [(c["name"], json.loads("".join(c["fragments"]))) for c in got.values()] == [
            ("get_weather", {"city": "Bern"})], got
        print("ok: a reasoning model's thought in reasoning_content (detected from the template), whole and "
              "streamed, its tool call after it parsed")

        whole = client.chat.completions.create(model="thinker", messages=ask, extra_body={"separate_reasoning": False})
        assert whole.choices[0].message.content == THINKER_REPLY, whole.choices[0].message
        off = client.chat.completions.create(model="thinker", messages=ask,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert off.usage.prompt_tokens > whole.usage.prompt_tokens, "enable_thinking reached the template"
        print("ok: separate_reasoning false keeps the thought in the content; chat_template_kwargs reach the template")

        named = {"type": "function", "function": {"name": "get_weather"}}
        for stream in (False, True):
            for model, choice, expected in (("named", named, [("get_weather", {"city": "Oslo"})]),
                                            ("required", "required", [("get_weather", {"city": "Oslo"})])):
                out = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER],
                                                     tool_choice=choice, stream=stream)
                if stream:
                    content, got, finish = streamed(out)
                    calls = [(c["name"], json.loads("".join(c["fragments"]))) for _, c in sorted(got.items())]
                else:
                    content, finish = out.choices[0].message.content, out.choices[0].finish_reason
                    calls = [(c.function.name, json.loads(c.function.arguments))
                             for c in out.choices[0].message.tool_calls]
                assert calls == expected and not content, (model, stream, calls, content)
        print("ok: tool_choice required and a named function (the engine constrained): the output read as calls, "
              "on a model with no tool-call format of its own")

        out = client.chat.completions.create(model="oss", messages=ask, tools=[WEATHER])
        message = out.choices[0].message
        assert message.model_extra.get("reasoning_content") == HARMONY_THOUGHT and not message.content, message
        assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
            ("get_weather", {"city": "Rome"})] and out.choices[0].finish_reason == "tool_calls", message
        thought = []
        content, got, finish = streamed(client.chat.completions.create(
            model="oss", messages=ask, tools=[WEATHER], stream=True), thought)
        assert "".join(thought) == HARMONY_THOUGHT and not content and finish == "tool_calls", (thought, content)
        assert [(c["name"], json.loads("".join(c["fragments"]))) for c in got.values()] == [
            ("get_weather", {"city": "Rome"})], got
        second = ask + [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "{\"temp\": 21}"}]
        again = client.chat.completions.create(model="oss", messages=second, tools=[WEATHER])
        assert again.usage.prompt_tokens > out.usage.prompt_tokens, "the call and its result rendered"
        plain = client.chat.completions.create(model="oss", messages=ask)
        assert plain.choices[0].message.content == "{\"city\": \"Rome\"}", plain.choices[0].message
        assert plain.choices[0].message.tool_calls is None, "no tools offered: a call's body is content"
        print("ok: gpt-oss harmony (detected from the template): the analysis channel as reasoning_content, "
              "a call addressed to a function as tool_calls, whole and streamed, and a second turn")

        for model, content in (("llama4", ""), ("deepseek", "Checking."), ("mistral", "")):
            expected = [("get_weather", {"city": "Lima", "days": 2}), ("get_weather", {"city": "Quito"})]
            out = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER])
            message = out.choices[0].message
            assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == expected, (
                model, message)
            assert (message.content or "") == content and out.choices[0].finish_reason == "tool_calls", message
            got_content, got, finish = streamed(client.chat.completions.create(
                model=model, messages=ask, tools=[WEATHER], stream=True))
            assert [(c["name"], json.loads("".join(c["fragments"]))) for _, c in sorted(got.items())] == expected, got
            assert got_content == content and finish == "tool_calls", (got_content, finish)
        print("ok: Llama 4 pythonic calls (literals turned into JSON), DeepSeek V3's and Mistral's (after their "
              "special tokens, kept in the text), formats detected from the templates, whole and streamed")
        print("python tools test passed")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
