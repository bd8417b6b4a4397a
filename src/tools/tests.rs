use super::*;
use proptest::prelude::*;

/// A response's content and calls (name, arguments), joined from pieces.
fn joined(pieces: impl IntoIterator<Item = Piece>) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Call { index, name } => {
                assert_eq!(index, calls.len(), "calls are numbered in order");
                calls.push((name, String::new()));
            }
            Piece::Args { index, text } => calls[index].1.push_str(&text),
            // No call after all: its text is content.
            Piece::Void { index, text: t } => {
                calls[index].0.clear();
                text.push_str(&t);
            }
        }
    }
    calls.retain(|(name, _)| !name.is_empty());
    (text, calls)
}

fn parse(format: ToolFormat, chunks: &[&str]) -> (String, Vec<(String, String)>) {
    let mut parser = ToolParser::new(format);
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    joined(pieces)
}

fn call(name: &str, args: &str) -> (String, String) {
    (name.to_string(), args.to_string())
}

#[test]
fn hermes_reads_calls_after_content_and_drops_the_space_around_them() {
    let out = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n";
    let (text, calls) = parse(ToolFormat::Hermes, &[out]);
    assert_eq!(text, "Let me check.");
    assert_eq!(
        calls,
        vec![
            call("get_weather", "{\"city\": \"Paris\", \"unit\": \"c\"}"),
            call("get_time", "{}")
        ]
    );
}

#[test]
fn plain_text_is_content_exactly() {
    for format in ToolFormat::ALL {
        let (text, calls) = parse(format, &["Hello ", "there, <b>friend</b> [1]. \n"]);
        assert_eq!(text, "Hello there, <b>friend</b> [1]. \n", "{format}");
        assert!(calls.is_empty());
    }
}

#[test]
fn what_looks_like_a_call_but_is_not_is_content() {
    // No name; not an object; a broken object; an unfinished one; one
    // whose arguments stop before the close tag (the name read first: the
    // call is void, and all of it is content, whole and in any split).
    for out in [
        "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>not json</tool_call>",
        "<tool_call>{\"name\" 12}",
        "<tool_call>{\"name\": \"f\"",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>",
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1</tool_call>",
    ] {
        let (text, calls) = parse(ToolFormat::Hermes, &[out]);
        assert!(calls.is_empty(), "{out}: {calls:?}");
        assert_eq!(text, out, "{out}");
        let chars: Vec<String> = out.chars().map(String::from).collect();
        let split: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(parse(ToolFormat::Hermes, &split), (text, calls), "{out}");
    }
}

#[test]
fn arguments_before_the_name_and_quoted_arguments_are_read() {
    let (_, calls) = parse(
        ToolFormat::Hermes,
        &["<tool_call>{\"arguments\": {\"a\": [1, {\"b\": \"}\"}]}, \"name\": \"f\"}</tool_call>"],
    );
    assert_eq!(calls, vec![call("f", "{\"a\": [1, {\"b\": \"}\"}]}")]);
    let (_, calls) = parse(
        ToolFormat::Hermes,
        &["<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>"],
    );
    assert_eq!(calls, vec![call("f", "{\"x\": 1}")]);
}

#[test]
fn llama3_reads_a_bare_object_with_parameters_and_several_split_by_semicolons() {
    let (text, calls) = parse(
        ToolFormat::Llama3Json,
        &["<|python_tag|>{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"parameters\": {}}"],
    );
    assert_eq!(text, "");
    assert_eq!(calls, vec![call("a", "{\"x\": 1}"), call("b", "{}")]);
    // Content that merely contains braces later is content.
    let (text, calls) = parse(
        ToolFormat::Llama3Json,
        &["Use {\"name\": \"a\"} like this."],
    );
    assert_eq!(text, "Use {\"name\": \"a\"} like this.");
    assert!(calls.is_empty());
}

#[test]
fn mistral_reads_the_array_after_its_marker() {
    let (text, calls) = parse(
        ToolFormat::Mistral,
        &["[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"q\": \"x y\"}}, {\"name\": \"b\", \"arguments\": {\"n\": 2}}]"],
    );
    assert_eq!(text, "");
    assert_eq!(
        calls,
        vec![call("a", "{\"q\": \"x y\"}"), call("b", "{\"n\": 2}")]
    );
}

#[test]
fn arguments_stream_as_they_arrive() {
    let mut parser = ToolParser::new(ToolFormat::Hermes);
    assert_eq!(
        parser.push("<tool_call>\n{\"name\": \"f\", \"argu"),
        vec![Piece::Call {
            index: 0,
            name: "f".into()
        }]
    );
    assert_eq!(
        parser.push("ments\": {\"city\": \"Pa"),
        vec![Piece::Args {
            index: 0,
            text: "{\"city\": \"Pa".into()
        }]
    );
    assert_eq!(
        parser.push("ris\"}}\n</tool_call>"),
        vec![Piece::Args {
            index: 0,
            text: "ris\"}".into()
        }]
    );
    assert_eq!(parser.finish(), vec![]);
    assert_eq!(parser.calls(), 1);
}

#[test]
fn formats_are_detected_from_templates_and_named_in_the_config() {
    assert_eq!(
        ToolFormat::detect("{{- '<tool_call>\\n' }}"),
        Some(ToolFormat::Hermes)
    );
    assert_eq!(
        ToolFormat::detect("[TOOL_CALLS] {{ x }}"),
        Some(ToolFormat::Mistral)
    );
    assert_eq!(
        ToolFormat::detect("Environment: ipython"),
        Some(ToolFormat::Llama3Json)
    );
    assert_eq!(
        ToolFormat::detect("{{- '<|python_start|>' }}"),
        Some(ToolFormat::Pythonic)
    );
    assert_eq!(
        ToolFormat::detect("{{'<｜tool▁calls▁begin｜>'}}"),
        Some(ToolFormat::DeepSeek)
    );
    assert_eq!(ToolFormat::detect("{{ message.content }}"), None);
    for format in ToolFormat::ALL {
        assert_eq!(format.name().parse::<ToolFormat>(), Ok(format));
    }
    let err = "qwen".parse::<ToolFormat>().unwrap_err();
    assert!(
        err.contains("hermes, deepseek_v3, mistral, pythonic, llama3_json"),
        "{err}"
    );
}

/// Splits `s` at the given character positions.
/// What an engine held to a format's frame writes is read back by that
/// format's own parser as the call it framed (the name JSON-escaped).
#[test]
fn a_framed_call_is_read_back_as_that_call() {
    let args = r#"{"city": "Zürich", "days": [1, 2]}"#;
    for format in ToolFormat::ALL {
        for name in ["get_weather", "say \"hi\""] {
            let Some(frame) = format.call_frame(name) else {
                assert!(matches!(
                    format,
                    ToolFormat::Pythonic | ToolFormat::DeepSeek
                ));
                continue;
            };
            assert!(frame.begin.starts_with(frame.trigger), "{format}");
            // (Llama 3's calls are the whole output.)
            let before = match format {
                ToolFormat::Llama3Json => "",
                _ => "Checking.\n",
            };
            let out = format!("{before}{}{args}{}", frame.begin, frame.end);
            let (_, calls) = parse(format, &[&out]);
            assert_eq!(calls, [call(name, args)], "{format}: {out}");
        }
    }
    let tag: serde_json::Value = serde_json::from_str(
        &ToolFormat::Mistral
            .structural_tag(&[("a", serde_json::json!({})), ("b", serde_json::json!({}))])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(tag["triggers"], serde_json::json!(["[TOOL_CALLS]"]));
    assert_eq!(tag["structures"].as_array().unwrap().len(), 2);
    assert_eq!(ToolFormat::Hermes.structural_tag(&[]), None);
}

fn split(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts.into_iter().chain([chars.len()]) {
        out.push(chars[last..c].iter().collect());
        last = c;
    }
    out
}

const SAMPLES: &[(ToolFormat, &str)] = &[
    (ToolFormat::Hermes, "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": \"{}\"}\n</tool_call>"),
    (ToolFormat::Hermes, "<tool_call>{\"name\": 3}</tool_call> <tool_ca <tool_call>x"),
    (ToolFormat::Llama3Json, " <|python_tag|>{\"name\": \"a\", \"parameters\": {\"s\": \"\\\"}\"}} ; {\"name\": \"b\", \"parameters\": {}} tail"),
    (ToolFormat::Mistral, "ok [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"k\": null}}, {\"name\": \"b\", \"arguments\": {}}] after"),
    (ToolFormat::Mistral, "[TOOL_CALLS] {oops} [TOOL_CALLS"),
    (ToolFormat::Pythonic, "<|python_start|>[get_weather(city='San \\'F\\'', days=[1, 2.5], opts={'a': None, 'b': (True, False)}), now()]<|python_end|>"),
    (ToolFormat::Pythonic, "[f(x=1, y=oops)] tail"),
    (ToolFormat::DeepSeek, "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\",\n \"days\": 2}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>now<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜> ok"),
    (ToolFormat::DeepSeek, "<｜tool▁calls▁begin｜>oops <｜tool▁call▁begin｜>x"),
];

fn parse_with(mut parser: ToolParser, chunks: &[&str]) -> (String, Vec<(String, String)>) {
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    joined(pieces)
}

#[test]
fn output_constrained_to_an_array_of_calls_is_read_as_calls() {
    let out = "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}, {\"name\": \"get_time\", \"parameters\": {}}]";
    let whole = parse_with(ToolParser::array(), &[out]);
    assert_eq!(
        whole,
        (
            String::new(),
            vec![
                call("get_weather", "{\"city\": \"Oslo\"}"),
                call("get_time", "{}")
            ]
        )
    );
    let chars: Vec<String> = out.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(parse_with(ToolParser::array(), &refs), whole);
}

#[test]
fn output_constrained_to_one_functions_arguments_is_that_call() {
    let (text, calls) = parse_with(
        ToolParser::named("get_weather"),
        &["{\"city\"", ": \"Oslo\"}"],
    );
    assert_eq!(text, "");
    assert_eq!(calls, vec![call("get_weather", "{\"city\": \"Oslo\"}")]);
    // Nothing written: a call without arguments.
    assert_eq!(
        parse_with(ToolParser::named("now"), &[]),
        (String::new(), vec![call("now", "{}")])
    );
}

#[test]
fn pythonic_calls_become_json_arguments() {
    let out = "<|python_start|>[get_weather(city=\"San Francisco\", unit='celsius', days=3, hourly=True, extra=None), get_time(zones=['UTC', \"it's\"], opts={'x': (1, -2.5e3)}), ping()]<|python_end|>";
    let whole = parse(ToolFormat::Pythonic, &[out]);
    assert_eq!(whole.0, "");
    let calls: Vec<(String, serde_json::Value)> = whole
        .1
        .iter()
        .map(|(n, a)| (n.clone(), serde_json::from_str(a).expect(a)))
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "get_weather".into(),
                serde_json::json!({"city": "San Francisco", "unit": "celsius", "days": 3, "hourly": true, "extra": null})
            ),
            (
                "get_time".into(),
                serde_json::json!({"zones": ["UTC", "it's"], "opts": {"x": [1, -2.5e3]}})
            ),
            ("ping".into(), serde_json::json!({})),
        ]
    );
    let chars: Vec<String> = out.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(parse(ToolFormat::Pythonic, &refs), whole);
}

#[test]
fn deepseek_v3_and_v3_1_calls() {
    let v3 = "Let me see.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let v31 = "Let me see.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Tokyo\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    for out in [v3, v31] {
        let whole = parse(ToolFormat::DeepSeek, &[out]);
        assert_eq!(
            whole,
            (
                "Let me see.".to_string(),
                vec![
                    call("get_weather", "{\"city\": \"Tokyo\"}"),
                    call("get_weather", "{\"city\": \"Paris\"}")
                ]
            ),
            "{out}"
        );
        let chars: Vec<String> = out.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(parse(ToolFormat::DeepSeek, &refs), whole);
    }
    // Markers alone that open no call are content.
    let (text, calls) = parse(ToolFormat::DeepSeek, &["<｜tool▁calls▁begin｜>hello"]);
    assert_eq!((text.as_str(), calls.len()), ("hello", 0));
}

#[test]
fn pythonic_text_that_is_not_a_call_list_is_content() {
    for text in [
        "The list [1, 2] is short.",
        "[not a call]",
        "[f(1)]",
        "  hello",
    ] {
        let (content, calls) = parse(ToolFormat::Pythonic, &[text]);
        assert_eq!((content.as_str(), calls.len()), (text, 0), "{text:?}");
    }
    // A call announced keeps what was sent; the rest is content.
    let (content, calls) = parse(ToolFormat::Pythonic, &["[f(x=1, y=oops)] tail"]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "f");
    assert!(content.ends_with("] tail"), "{content:?}");
}

proptest! {
    /// However the text arrives, it parses to the same content and calls.
    #[test]
    fn any_split_parses_as_the_whole(sample in 0..SAMPLES.len(), cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let (format, out) = SAMPLES[sample];
        let whole = parse(format, &[out]);
        let parts = split(out, &cuts);
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert_eq!(parse(format, &refs), whole);
    }

    /// Any text: no panic, and the content and calls account for it.
    #[test]
    fn arbitrary_text_never_panics(format in 0..ToolFormat::ALL.len(), text in "[a-z{}\\[\\]\":,; <>/_\\\\]{0,80}") {
        let format = ToolFormat::ALL[format];
        let whole = parse(format, &[&text]);
        let chars: Vec<char> = text.chars().collect();
        let parts: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert_eq!(parse(format, &refs), whole);
    }
}
