#!/usr/bin/env python3
"""The official `openai` package through the router to gRPC engine workers.

A small BPE tokenizer is trained here with the Hugging Face `tokenizers`
library (no network) and given a ChatML template; the built router loads it
(`--tokenizer MODEL=DIR`) and so do the mock SGLang and vLLM workers
(`mock-worker --engine ... --tokenizer DIR`), which then generate the
tokens of a known reply text. Checked: content, streamed deltas that join to
the whole, stop strings, usage counts, and a disconnect that aborts the
engine request.

Run with: python3 tests/python/test_openai_engines.py   (after cargo build --bins)
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import http.client  # noqa: E402
from openai import BadRequestError, OpenAI  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from procs import MOCK_WORKER, SWITCHYARD, read_after, spawn, stop_all  # noqa: E402

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SENTENCES = [
    "Hello from the engine! Café, 日本語, 🚂.",
    "The router tokenizes prompts and detokenizes replies.",
    "Switchyard sends chat requests to SGLang and vLLM workers.",
]


def reply(name):
    # As src/mock/mod.rs reply_text.
    return f"Hello from {name}! Café, 日本語, 🚂. "


def make_tokenizer(directory):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "chat_template": CHATML}, f)
    return tok


def main():
    directory = tempfile.mkdtemp()
    tok = make_tokenizer(directory)
    engines = {}
    for name, engine, delay in (("sg", "sglang", "0"), ("vl", "vllm", "0"), ("slow", "sglang", "300")):
        count = len(tok.encode(reply(name)).ids)
        proc = subprocess.Popen(
            [MOCK_WORKER, "--engine", engine, "--name", name, "--model", name, "--tokenizer", directory,
             "--tokens", str(count), "--token-delay-ms", delay],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RUST_LOG": "switchyard::mock=info"},
        )
        engines[name] = (proc, read_after(proc, f"mock-worker {name} listening on"), count)
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--health-interval-ms", "100", "--health-timeout-ms", "80",
                    "--tokenizer", f"sg={directory}", "--tokenizer", f"vl={directory}",
                    "--tokenizer", f"slow={directory}",
                    *[a for (_, url, _) in engines.values() for a in ("--worker", url)]])
    read_after(router, "switchyard listening on")
    base = f"http://{read_after(router, 'switchyard http listening on')}"
    client = OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)
    try:
        models = sorted(m.id for m in client.models.list().data)
        assert models == ["sg", "slow", "vl"], models
        print("ok: /v1/models lists the engine workers' models (identified at startup)")

        for model in ("sg", "vl"):
            out = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello"}])
            assert out.choices[0].message.content == reply(model), out
            assert out.choices[0].finish_reason == "length"
            expected_prompt = len(tok.encode("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n").ids)
            assert out.usage.prompt_tokens == expected_prompt, (out.usage, expected_prompt)
            assert out.usage.completion_tokens == engines[model][2], out.usage

            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello"}], stream=True,
                stream_options={"include_usage": True})
            deltas, usage, finish = [], None, None
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        deltas.append(choice.delta.content)
                    finish = choice.finish_reason or finish
            assert len(deltas) > 1 and "".join(deltas) == reply(model), deltas
            assert finish == "length" and usage.completion_tokens == engines[model][2], (finish, usage)
        print("ok: openai chat completions to SGLang and vLLM gRPC workers, plain and streaming (deltas join to the whole, usage)")

        out = client.chat.completions.create(
            model="sg", messages=[{"role": "user", "content": "Hello"}], stop=["日本"])
        assert out.choices[0].message.content == "Hello from sg! Café, " and out.choices[0].finish_reason == "stop", out
        out = client.completions.create(model="vl", prompt="Hello", max_tokens=3)
        assert reply("vl").startswith(out.choices[0].text) and out.usage.completion_tokens == 3, out
        print("ok: stop strings; /v1/completions")

        # Log probabilities from the engine's own fields (the mock reports
        # -(i mod 4 + 1)/8 for its token i, alternatives one lower each).
        own = [-((i % 4) + 1) / 8 for i in range(engines["sg"][2])]
        out = client.chat.completions.create(model="sg", messages=[{"role": "user", "content": "x"}],
                                             logprobs=True, top_logprobs=2)
        content = out.choices[0].logprobs.content
        assert [c.logprob for c in content] == own, content
        assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].token == c.token
                   and c.top_logprobs[1].logprob == c.logprob - 1 and c.bytes == list(c.token.encode())
                   for c in content), content
        streamed = []
        for chunk in client.chat.completions.create(model="sg", messages=[{"role": "user", "content": "x"}],
                                                    logprobs=True, top_logprobs=2, stream=True):
            for choice in chunk.choices:
                if choice.logprobs and choice.logprobs.content:
                    streamed.extend((c.token, c.logprob) for c in choice.logprobs.content)
        assert streamed == [(c.token, c.logprob) for c in content], streamed
        out = client.completions.create(model="vl", prompt="Hello", max_tokens=4, logprobs=1)
        lp = out.choices[0].logprobs
        assert lp.token_logprobs == own[:4] and len(lp.tokens) == 4, lp
        assert [len(t) for t in lp.top_logprobs] == [1, 1, 1, 1] and lp.text_offset[0] == 0, lp
        plain = client.chat.completions.create(model="sg", messages=[{"role": "user", "content": "x"}])
        assert plain.choices[0].logprobs is None
        print("ok: logprobs and top_logprobs (chat, whole and streamed) and completions' logprobs, from the engines")

        out = client.chat.completions.create(model="sg", messages=[{"role": "user", "content": "Hello"}], n=3)
        assert [c.index for c in out.choices] == [0, 1, 2], out.choices
        assert all(c.message.content == reply("sg") for c in out.choices), out.choices
        assert out.usage.completion_tokens == 3 * engines["sg"][2], out.usage
        assert out.usage.prompt_tokens == expected_prompt, out.usage
        texts, usage = {}, None
        for chunk in client.chat.completions.create(model="vl", messages=[{"role": "user", "content": "Hello"}],
                                                    n=2, stream=True, stream_options={"include_usage": True}):
            if chunk.usage:
                assert usage is None, "one usage event"
                usage = chunk.usage
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        assert texts == {0: reply("vl"), 1: reply("vl")} and usage.completion_tokens == 2 * engines["vl"][2], (
            texts, usage)
        out = client.completions.create(model="vl", prompt="Hello", max_tokens=3, n=2)
        assert [c.index for c in out.choices] == [0, 1] and out.usage.completion_tokens == 6, out
        print("ok: n > 1 (chat and completions, whole and streamed): each choice a call of its own, usage summed")

        for bad, needle in (({"best_of": 2}, "best_of"), ({"n": 17}, "n must be from 1 to 16"), ({"top_logprobs": 3}, "needs logprobs"),
                            ({"logprobs": True, "top_logprobs": 21}, "at most 20")):
            try:
                client.chat.completions.create(model="sg", messages=[{"role": "user", "content": "x"}],
                                               extra_body=bad)
                raise AssertionError(f"accepted {bad}")
            except BadRequestError as e:
                assert needle in str(e), e
        print("ok: an unsupported parameter or a bad value is a 400 naming it")

        # A client that goes away: the engine is sent Abort.
        host, port = base[len("http://"):].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1/chat/completions", headers={"content-type": "application/json"},
                     body=json.dumps({"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True}))
        response = conn.getresponse()
        assert response.status == 200
        assert response.read1(64)  # the first event has arrived
        conn.close()
        # The mock logs each Abort it receives (stderr, info level).
        proc = engines["slow"][0]
        seen = []

        def watch():
            for line in proc.stderr:
                seen.append(line)
                if "Abort received" in line:
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        watcher.join(timeout=10)
        assert any("Abort received" in line for line in seen), seen
        print("ok: a disconnect aborts the engine request")
    finally:
        for proc, _, _ in engines.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=5)
        stop_all()


if __name__ == "__main__":
    main()
