//! OpenAI-compatible and SGLang HTTP in front of gRPC engine workers: the
//! router renders the chat template, tokenizes, calls the engine over gRPC
//! and detokenizes its token ids into the response. A real tokenizer
//! (trained in the test) on both sides: the mock engines generate the
//! tokens of a reply text and record what they were sent.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use switchyard::mock::MockEngine;
use switchyard::mock::{reply_text, MockConfig, MockRole, MockWorker};
use switchyard::pb;
use switchyard::tokenizer::{sample, ModelTokenizer};

struct Setup {
    router: Router,
    tokenizer: ModelTokenizer,
    _dir: tempfile::TempDir,
}

async fn setup(models: &[&str]) -> Setup {
    setup_with(models, test_config()).await
}

async fn setup_with(models: &[&str], config: switchyard::Config) -> Setup {
    setup_templated(models, config, None).await
}

/// `setup_with`, the sample tokenizer's chat template replaced by `template`.
async fn setup_templated(
    models: &[&str],
    mut config: switchyard::Config,
    template: Option<&str>,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    sample::write_sample(dir.path()).unwrap();
    if let Some(template) = template {
        let path = dir.path().join("tokenizer_config.json");
        let mut tc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        tc["chat_template"] = json!(template);
        std::fs::write(&path, tc.to_string()).unwrap();
    }
    for m in models {
        config
            .tokenizers
            .insert(m.to_string(), dir.path().to_path_buf());
    }
    let router = start_router_with(config).await;
    let tokenizer = ModelTokenizer::load(dir.path()).unwrap();
    Setup {
        router,
        tokenizer,
        _dir: dir,
    }
}

async fn engine(
    s: &Setup,
    name: &str,
    engine: MockEngine,
    model: &str,
    role: MockRole,
    delay_ms: u64,
) -> MockWorker {
    let ids = s.tokenizer.encode(&reply_text(name), false).unwrap();
    let w = mock_with(MockConfig {
        name: name.into(),
        engine,
        model: model.into(),
        role,
        tokens: ids.len() as u32,
        token_delay: Duration::from_millis(delay_ms),
        reply_ids: Some(Arc::new(ids)),
        ..MockConfig::default()
    })
    .await;
    let (role, bootstrap_port) = match role {
        MockRole::Prefill { .. } => (pb::WorkerRole::Prefill, w.bootstrap_port().map(u32::from)),
        MockRole::Decode => (pb::WorkerRole::Decode, None),
        MockRole::Regular => (pb::WorkerRole::Regular, None),
    };
    s.router
        .try_add_spec(pb::WorkerSpec {
            url: w.url(),
            role: role as i32,
            bootstrap_port,
            ..Default::default()
        })
        .await
        .unwrap();
    w
}

async fn post(router: &Router, path: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(router.http_url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_completions_render_the_template_and_detokenize_the_reply() {
    let s = setup(&["sg", "vl"]).await;
    let sg = engine(&s, "sg-1", MockEngine::Sglang, "sg", MockRole::Regular, 0).await;
    let _vl = engine(&s, "vl-1", MockEngine::Vllm, "vl", MockRole::Regular, 0).await;

    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "sg", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], reply_text("sg-1"));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let seen = &sg.stats().seen()[0];
    assert_eq!(
        s.tokenizer.decode(&seen.token_ids, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        "the engine gets the chat template's tokens"
    );
    assert_eq!(v["usage"]["prompt_tokens"], seen.token_ids.len());
    assert_eq!(
        v["usage"]["completion_tokens"],
        s.tokenizer
            .encode(&reply_text("sg-1"), false)
            .unwrap()
            .len()
    );

    // Streaming, to vLLM: the deltas join to the whole, usage at the end.
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "vl", "messages": [{"role": "user", "content": "Hi"}], "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    let evs = events(&body);
    let joined: String = evs
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, reply_text("vl-1"));
    assert!(evs
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "length"));
    assert!(
        evs.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn stops_completions_generate_and_bad_parameters() {
    let s = setup(&["sg"]).await;
    let _sg = engine(&s, "sg-1", MockEngine::Sglang, "sg", MockRole::Regular, 1).await;

    let (status, body) = post(
        &s.router,
        "/v1/completions",
        json!({"model": "sg", "prompt": "Hello", "stop": ["日本"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], "Hello from sg-1! Café, ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let (status, body) = post(
        &s.router,
        "/generate",
        json!({"model": "sg", "text": "Hello", "sampling_params": {"max_new_tokens": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["meta_info"]["completion_tokens"], 3);
    assert!(reply_text("sg-1").starts_with(v["text"].as_str().unwrap()));

    for (body, needle) in [
        (
            json!({"model": "sg", "messages": [{"role": "user", "content": "x"}], "best_of": 2}),
            "best_of",
        ),
        (
            json!({"model": "sg", "messages": [{"role": "user", "content": "x"}], "n": 17}),
            "n must be from 1 to 16",
        ),
        (
            // The sample tokenizer's template shows no tool-call format.
            json!({"model": "sg", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "--tool-parser sg=",
        ),
        (
            json!({"model": "sg", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function"}]}),
            "tools[0]",
        ),
    ] {
        let (status, text) = post(&s.router, "/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_aborts_the_engine_request_and_pd_works_too() {
    let s = setup(&["slow", "pd"]).await;
    let slow = engine(
        &s,
        "slow",
        MockEngine::Sglang,
        "slow",
        MockRole::Regular,
        200,
    )
    .await;
    let response = reqwest::Client::new()
        .post(s.router.http_url("/v1/chat/completions"))
        .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": true}))
        .send()
        .await
        .unwrap();
    let mut response = response;
    let first = response.chunk().await.unwrap();
    assert!(first.is_some());
    drop(response);
    eventually(
        Duration::from_secs(5),
        "the engine is sent Abort",
        || async { slow.stats().aborts() == 1 },
    )
    .await;

    let _p = engine(
        &s,
        "p",
        MockEngine::Sglang,
        "pd",
        MockRole::Prefill { bootstrap_port: 0 },
        0,
    )
    .await;
    let d = engine(&s, "d", MockEngine::Sglang, "pd", MockRole::Decode, 0).await;
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "pd", "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], reply_text("d"));
    assert_eq!(d.stats().paired(), 1);
}

#[tokio::test]
async fn without_a_configured_tokenizer_the_workers_is_fetched_and_used() {
    let dir = tempfile::tempdir().unwrap();
    sample::write_sample(dir.path()).unwrap();
    let tokenizer = ModelTokenizer::load(dir.path()).unwrap();
    let router = start_router().await; // no --tokenizer at all
    let ids = tokenizer.encode(&reply_text("w"), false).unwrap();
    let w = mock_with(MockConfig {
        name: "w".into(),
        engine: MockEngine::Vllm,
        model: "fetched".into(),
        tokens: ids.len() as u32,
        reply_ids: Some(Arc::new(ids)),
        // The engine's model directory, which GetTokenizer zips.
        model_path: Some(dir.path().display().to_string()),
        ..MockConfig::default()
    })
    .await;
    router.add_found(&w.url()).await;
    let chat = json!({"model": "fetched", "messages": [{"role": "user", "content": "Hello"}]});
    eventually(
        Duration::from_secs(10),
        "the tokenizer is fetched",
        || async { post(&router, "/v1/chat/completions", chat.clone()).await.0 == 200 },
    )
    .await;
    let (_, body) = post(&router, "/v1/chat/completions", chat).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], reply_text("w"));

    // A worker with no tokenizer to give: text is refused with the reason.
    let bare = mock_with(MockConfig {
        name: "bare".into(),
        engine: MockEngine::Sglang,
        model: "bare".into(),
        ..MockConfig::default()
    })
    .await;
    router.add_found(&bare.url()).await;
    let chat = json!({"model": "bare", "messages": [{"role": "user", "content": "Hello"}]});
    eventually(
        Duration::from_secs(10),
        "the fetch fails with a reason",
        || async {
            let (status, body) = post(&router, "/v1/chat/completions", chat.clone()).await;
            status == 400 && body.contains("GetTokenizer") && body.contains("no tokenizer")
        },
    )
    .await;
}

/// The engine's own `SamplingParams` the mock received last.
fn last_sampling<M: prost::Message + Default>(w: &MockWorker) -> M {
    let seen = w.stats().seen();
    let bytes = seen.last().unwrap().sampling.clone().unwrap();
    M::decode(bytes).unwrap()
}

#[tokio::test]
async fn sampling_fields_and_constraints_reach_the_engine_as_its_own_fields() {
    use switchyard::pb::{sglang_scheduler as sgl, vllm_engine as vllm};
    let s = setup(&["sg", "vl"]).await;
    let sg = engine(&s, "sg-1", MockEngine::Sglang, "sg", MockRole::Regular, 0).await;
    let vl = engine(&s, "vl-1", MockEngine::Vllm, "vl", MockRole::Regular, 0).await;
    let ask = json!([{"role": "user", "content": "Hi"}]);
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});

    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "sg", "messages": ask, "top_k": 5, "min_p": 0.125,
               "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.5,
               "logit_bias": {"7": 5, "9": -100}, "stop_token_ids": [3], "ignore_eos": true,
               "min_tokens": 2,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: sgl::SamplingParams = last_sampling(&sg);
    assert_eq!((p.top_k, p.min_p), (5, 0.125));
    assert_eq!(
        (
            p.presence_penalty,
            p.frequency_penalty,
            p.repetition_penalty
        ),
        (0.5, -0.25, 1.5)
    );
    assert_eq!(p.logit_bias.get("7"), Some(&5.0));
    assert_eq!(p.logit_bias.get("9"), Some(&-100.0));
    assert_eq!(
        (p.stop_token_ids.as_slice(), p.ignore_eos, p.min_new_tokens),
        (&[3][..], true, 2)
    );
    let Some(sgl::sampling_params::Constraint::JsonSchema(sent)) = p.constraint else {
        panic!("no schema sent: {:?}", p.constraint)
    };
    assert_eq!(serde_json::from_str::<Value>(&sent).unwrap(), schema);

    // Unset fields keep the engine's neutral values.
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "sg", "messages": ask}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: sgl::SamplingParams = last_sampling(&sg);
    assert_eq!(
        (p.top_k, p.min_p, p.repetition_penalty, p.presence_penalty),
        (-1, 0.0, 1.0, 0.0)
    );
    assert!(p.constraint.is_none() && p.logit_bias.is_empty());

    // n > 1: a call per choice, each its own request id and seed.
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "vl", "messages": ask, "n": 2, "seed": 40}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = vl.stats().seen();
    let last: Vec<_> = seen[seen.len() - 2..].iter().collect();
    let seeds: Vec<Option<i32>> = last
        .iter()
        .map(|r| {
            <vllm::SamplingParams as prost::Message>::decode(r.sampling.clone().unwrap())
                .unwrap()
                .seed
        })
        .collect();
    let mut seeds = seeds;
    seeds.sort();
    assert_eq!(seeds, [Some(40), Some(41)]);
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["id"].as_str().unwrap().trim_start_matches("chatcmpl-");
    let mut ids: Vec<&str> = last.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, [format!("{id}-0"), format!("{id}-1")]);

    // vLLM: its own JSON mode; SGLang's regex through /generate.
    let (status, body) = post(
        &s.router,
        "/v1/completions",
        json!({"model": "vl", "prompt": "Hi", "seed": 7, "response_format": {"type": "json_object"},
               "logit_bias": {"11": 1.5}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: vllm::SamplingParams = last_sampling(&vl);
    assert_eq!(p.seed, Some(7));
    assert_eq!(p.logit_bias.get(&11), Some(&1.5));
    assert_eq!(
        p.constraint,
        Some(vllm::sampling_params::Constraint::JsonObject(true))
    );
    let (status, body) = post(
        &s.router,
        "/generate",
        json!({"model": "sg", "text": "Hi", "sampling_params": {"regex": "[0-9]+", "min_new_tokens": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: sgl::SamplingParams = last_sampling(&sg);
    assert_eq!(
        p.constraint,
        Some(sgl::sampling_params::Constraint::Regex("[0-9]+".into()))
    );

    // A named tool_choice: the function's parameters constrain the output,
    // and what the engine writes is that call's arguments.
    let weather =
        json!({"type": "function", "function": {"name": "get_weather", "parameters": schema}});
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "vl", "messages": ask, "tools": [weather],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: vllm::SamplingParams = last_sampling(&vl);
    let Some(vllm::sampling_params::Constraint::JsonSchema(sent)) = p.constraint else {
        panic!("no schema sent: {:?}", p.constraint)
    };
    assert_eq!(serde_json::from_str::<Value>(&sent).unwrap(), schema);
    let v: Value = serde_json::from_str(&body).unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], reply_text("vl-1"));
    // The mock stops at its token count: the engine's `length` stands (the
    // call may be cut short), only a `stop` becomes `tool_calls`.
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // `required`, one call at most: an array of calls of the offered tools.
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "sg", "messages": ask, "tools": [weather], "tool_choice": "required",
               "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: sgl::SamplingParams = last_sampling(&sg);
    let Some(sgl::sampling_params::Constraint::JsonSchema(sent)) = p.constraint else {
        panic!("no schema sent: {:?}", p.constraint)
    };
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(
        (
            sent["type"].as_str(),
            sent["minItems"].as_u64(),
            sent["maxItems"].as_u64()
        ),
        (Some("array"), Some(1), Some(1))
    );
    assert_eq!(
        sent["items"]["anyOf"][0]["properties"]["name"]["enum"],
        json!(["get_weather"])
    );
    assert_eq!(
        sent["items"]["anyOf"][0]["properties"]["parameters"],
        schema
    );

    let calls_before = sg.stats().calls();
    for (body, needle) in [
        (json!({"logit_bias": {"x": 1}}), "is not a token id"),
        (json!({"logit_bias": {"1": 200}}), "from -100 to 100"),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format must be",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "regex": "a"}),
            "at most one of",
        ),
        (json!({"tool_choice": "required"}), "needs tools"),
        (
            json!({"tools": [weather], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "which is not among the tools",
        ),
        (
            json!({"tools": [weather], "tool_choice": "required", "response_format": {"type": "json_object"}}),
            "leave out response_format",
        ),
        (
            json!({"reasoning_effort": "extreme"}),
            "reasoning_effort must be",
        ),
        (json!({"seed": 1}), "seed"),
    ] {
        let mut body = body;
        body["model"] = json!("sg");
        body["messages"] = ask.clone();
        let (status, text) = post(&s.router, "/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(
        sg.stats().calls(),
        calls_before,
        "nothing refused reached the engine"
    );
}

#[tokio::test]
async fn strict_tools_under_auto_are_held_to_the_call_format_by_the_engine() {
    use switchyard::pb::{sglang_scheduler as sgl, vllm_engine as vllm};
    let mut config = test_config();
    for (model, format) in [("sg", "hermes"), ("vl", "llama3_json"), ("py", "pythonic")] {
        config.tool_parsers.insert(model.into(), format.into());
    }
    let s = setup_with(&["sg", "vl", "py"], config).await;
    let sg = engine(&s, "sg-1", MockEngine::Sglang, "sg", MockRole::Regular, 0).await;
    let vl = engine(&s, "vl-1", MockEngine::Vllm, "vl", MockRole::Regular, 0).await;
    let py = engine(&s, "py-1", MockEngine::Sglang, "py", MockRole::Regular, 0).await;
    let ask = json!([{"role": "user", "content": "Hi"}]);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    let strict = json!({"type": "function",
                        "function": {"name": "get_weather", "parameters": schema, "strict": true}});
    let loose = json!({"type": "function", "function": {"name": "note", "parameters": {}}});
    let tag = |sent: &str| serde_json::from_str::<Value>(sent).unwrap();

    // Hermes on SGLang: free text until `<tool_call>`, then only a call of
    // the strict function with arguments of its schema.
    let (status, body) = post(
        &s.router,
        "/v1/chat/completions",
        json!({"model": "sg", "messages": ask, "tools": [loose, strict]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: sgl::SamplingParams = last_sampling(&sg);
    let Some(sgl::sampling_params::Constraint::StructuralTag(sent)) = p.constraint else {
        panic!("no structural tag sent: {:?}", p.constraint)
    };
    assert_eq!(
        tag(&sent),
        json!({"type": "structural_tag", "triggers": ["<tool_call>"], "structures": [{
            "begin": "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ",
            "schema": schema, "end": "}\n</tool_call>"}]})
    );

    // Llama 3 JSON on vLLM, through the Responses API (flat tools).
    let (status, body) = post(
        &s.router,
        "/v1/responses",
        json!({"model": "vl", "input": "Hi", "tools": [{"type": "function", "name": "get_weather",
               "parameters": schema, "strict": true}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: vllm::SamplingParams = last_sampling(&vl);
    let Some(vllm::sampling_params::Constraint::StructuralTag(sent)) = p.constraint else {
        panic!("no structural tag sent: {:?}", p.constraint)
    };
    let sent = tag(&sent);
    assert_eq!(sent["triggers"], json!(["{\"name\": "]));
    assert_eq!(
        sent["structures"][0]["begin"],
        "{\"name\": \"get_weather\", \"parameters\": "
    );

    // No strict tool, a response_format beside one, or a format whose calls
    // are not one JSON object (pythonic): nothing but what was asked.
    for (model, extra) in [
        ("sg", json!({"tools": [loose]})),
        (
            "sg",
            json!({"tools": [strict], "response_format": {"type": "json_object"}}),
        ),
        ("py", json!({"tools": [strict]})),
    ] {
        let mut request = json!({"model": model, "messages": ask});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = post(&s.router, "/v1/chat/completions", request).await;
        assert_eq!(status, 200, "{body}");
        let p: sgl::SamplingParams = last_sampling(if model == "py" { &py } else { &sg });
        assert!(
            !matches!(
                p.constraint,
                Some(sgl::sampling_params::Constraint::StructuralTag(_))
            ),
            "{model} {extra}: {:?}",
            p.constraint
        );
    }
}

#[tokio::test]
async fn usage_counts_the_prompt_tokens_the_engine_found_cached() {
    use switchyard::mock::sim::{SchedConfig, SimConfig, SimWorker};
    let s = setup(&["sim"]).await;
    let reply = s.tokenizer.encode(&reply_text("sim"), false).unwrap();
    let sim = SimWorker::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            sched: SchedConfig {
                block_size: 16,
                ..SchedConfig::default()
            },
            speedup_ratio: 100.0,
            model: "sim".into(),
            reply_ids: Some(Arc::new(reply)),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    s.router.add_found(&sim.url()).await;
    let ask = json!({"model": "sim", "max_tokens": 3,
        "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. ".repeat(20)}]});
    let (status, body) = post(&s.router, "/v1/chat/completions", ask.clone()).await;
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 32, "{prompt} prompt tokens");

    // The same prompt again: its whole blocks are in the engine's cache.
    let (status, body) = post(&s.router, "/v1/chat/completions", ask.clone()).await;
    assert_eq!(status, 200, "{body}");
    let second: Value = serde_json::from_str(&body).unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= prompt / 16 * 16 - 16 && cached < prompt,
        "{cached} of {prompt}"
    );

    let mut streamed = ask;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = post(&s.router, "/v1/chat/completions", streamed).await;
    assert_eq!(status, 200, "{body}");
    let last = events(&body).pop().unwrap();
    assert_eq!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"],
        cached
    );
}

/// A harmony (gpt-oss) model asked for a call (`required`, a named
/// function): the engine is sent the message's header at the prompt's end
/// and a JSON constraint for what follows, and what it writes comes back as
/// calls, whole and streamed.
#[tokio::test]
async fn harmony_models_take_required_and_named_tool_choice_with_the_header_given() {
    use switchyard::pb::sglang_scheduler as sgl;
    // gpt-oss's template reduced to its shape: the prompt ends with the
    // assistant's turn opened, and channels make it harmony.
    let template = "{%- for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{%- endfor %}\
                    {%- if false %}<|channel|>{% endif %}<|start|>assistant";
    let s = setup_templated(&["named", "required"], test_config(), Some(template)).await;
    let mock = |model: &'static str, reply: &str| {
        let ids = s.tokenizer.encode(reply, false).unwrap();
        mock_with(MockConfig {
            name: model.into(),
            engine: MockEngine::Sglang,
            model: model.into(),
            tokens: ids.len() as u32,
            reply_ids: Some(Arc::new(ids)),
            reply_ends: true,
            ..MockConfig::default()
        })
    };
    let named = mock("named", "{\"city\": \"Oslo\"}").await;
    let required = mock(
        "required",
        "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}]",
    )
    .await;
    for w in [&named, &required] {
        s.router.add_found(&w.url()).await;
    }
    let params = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let tool =
        json!({"type": "function", "function": {"name": "get_weather", "parameters": params}});
    let ask = json!([{"role": "user", "content": "Weather in Oslo?"}]);
    let cases = [
        (
            "named",
            &named,
            json!({"type": "function", "function": {"name": "get_weather"}}),
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        ),
        (
            "required",
            &required,
            json!("required"),
            "<|start|>assistant<|channel|>final<|message|>",
        ),
    ];
    for (model, worker, choice, ends) in cases {
        for stream in [false, true] {
            let (status, body) = post(
                &s.router,
                "/v1/chat/completions",
                json!({"model": model, "messages": ask, "tools": [tool], "tool_choice": choice,
                       "stream": stream}),
            )
            .await;
            assert_eq!(status, 200, "{model}: {body}");
            let (name, args, finish) = if stream {
                let events = events(&body);
                let name = events
                    .iter()
                    .find_map(|e| {
                        e["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str()
                    })
                    .unwrap()
                    .to_string();
                let args: String = events
                    .iter()
                    .filter_map(|e| {
                        e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
                    })
                    .collect();
                let finish = events
                    .iter()
                    .find_map(|e| e["choices"][0]["finish_reason"].as_str())
                    .unwrap()
                    .to_string();
                (name, args, finish)
            } else {
                let v: Value = serde_json::from_str(&body).unwrap();
                let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
                (
                    call["name"].as_str().unwrap().to_string(),
                    call["arguments"].as_str().unwrap().to_string(),
                    v["choices"][0]["finish_reason"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            };
            assert_eq!(name, "get_weather", "{model}: {body}");
            assert_eq!(
                serde_json::from_str::<Value>(&args).unwrap(),
                json!({"city": "Oslo"})
            );
            assert_eq!(finish, "tool_calls", "{model}: {body}");
            let seen = worker.stats().seen();
            let prompt = s
                .tokenizer
                .decode(&seen.last().unwrap().token_ids, false)
                .unwrap();
            assert!(
                prompt.ends_with(ends),
                "{model}: the prompt sent ends {prompt:?}"
            );
            let p: sgl::SamplingParams = last_sampling(worker);
            assert!(
                matches!(
                    p.constraint,
                    Some(sgl::sampling_params::Constraint::JsonSchema(_))
                ),
                "{model}: no JSON constraint sent: {:?}",
                p.constraint
            );
        }
    }
}
