use super::*;
use proptest::prelude::*;

/// The thought and the answer, joined from pieces.
fn split(format: ReasoningFormat, prompt: &str, chunks: &[&str]) -> (String, String) {
    let mut parser = ReasoningParser::new(format, prompt);
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    let (mut thought, mut answer) = (String::new(), String::new());
    for piece in pieces {
        match piece {
            Piece::Reasoning(r) => thought.push_str(&r),
            Piece::Text(t) => answer.push_str(&t),
        }
    }
    (thought, answer)
}

const PROMPT: &str = "<|im_start|>assistant\n";

#[test]
fn a_thought_the_model_opens_is_split_from_the_answer() {
    let out = "<think>\nThe user wants 2+2.\nThat is 4.\n</think>\n\nIt is 4.";
    assert_eq!(
        split(ReasoningFormat::Qwen3, PROMPT, &[out]),
        ("The user wants 2+2.\nThat is 4.".into(), "It is 4.".into())
    );
}

#[test]
fn a_thought_the_template_opens_ends_at_the_closing_tag() {
    // DeepSeek R1's and Qwen3 thinking templates end the prompt with the
    // opening tag: the model writes only the close.
    let prompt = "<｜Assistant｜><think>\n";
    let out = "Hmm, 2+2.\n</think>\n\n4";
    for format in [ReasoningFormat::Qwen3, ReasoningFormat::DeepSeekR1] {
        assert_eq!(
            split(format, prompt, &[out]),
            ("Hmm, 2+2.".into(), "4".into()),
            "{format}"
        );
    }
}

#[test]
fn deepseek_r1_starts_in_the_thought_without_the_tag() {
    assert_eq!(
        split(
            ReasoningFormat::DeepSeekR1,
            PROMPT,
            &["Let me see.</think>Yes."]
        ),
        ("Let me see.".into(), "Yes.".into())
    );
    // No close at all: all of it is thought, as SGLang's parser reads it.
    assert_eq!(
        split(ReasoningFormat::DeepSeekR1, PROMPT, &["still thinking"]),
        ("still thinking".into(), String::new())
    );
}

#[test]
fn thinking_switched_off_in_the_template_leaves_the_answer_whole() {
    // Qwen3 with enable_thinking false writes an empty thought itself.
    let prompt = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    for format in ReasoningFormat::ALL {
        assert_eq!(
            split(format, prompt, &["Plain answer with </think> in it."]),
            (String::new(), "Plain answer with </think> in it.".into()),
            "{format}"
        );
    }
}

#[test]
fn an_answer_without_a_thought_is_content_exactly() {
    for text in ["  Hello <b>there</b>\n", "<thin", "<thinking is fun", ""] {
        assert_eq!(
            split(ReasoningFormat::Qwen3, PROMPT, &[text]),
            (String::new(), text.to_string()),
            "{text:?}"
        );
    }
}

#[test]
fn a_tag_later_in_the_answer_is_content() {
    let out = "Use <think> tags like <think>this</think>.";
    assert_eq!(
        split(ReasoningFormat::Qwen3, PROMPT, &[out]),
        (String::new(), out.to_string())
    );
}

#[test]
fn a_partial_closing_tag_inside_the_thought_is_thought() {
    let out = "<think>a </thin b < c</think>d";
    assert_eq!(
        split(ReasoningFormat::Qwen3, PROMPT, &[out]),
        ("a </thin b < c".into(), "d".into())
    );
    // Cut off inside the closing tag: what was held is thought.
    assert_eq!(
        split(ReasoningFormat::Qwen3, PROMPT, &["<think>x </th"]),
        ("x </th".into(), String::new())
    );
}

#[test]
fn kimi_tags() {
    let out = "◁think▷思考中◁/think▷答案";
    assert_eq!(
        split(ReasoningFormat::Kimi, PROMPT, &[out]),
        ("思考中".into(), "答案".into())
    );
}

#[test]
fn formats_are_detected_from_templates_and_named_in_the_config() {
    assert_eq!(
        ReasoningFormat::detect("{{ content.split('</think>')[-1] }}"),
        Some(ReasoningFormat::Qwen3)
    );
    assert_eq!(
        ReasoningFormat::detect("◁think▷{{ t }}◁/think▷"),
        Some(ReasoningFormat::Kimi)
    );
    assert_eq!(ReasoningFormat::detect("{{ messages }}"), None);
    for f in ReasoningFormat::ALL {
        assert_eq!(f.name().parse::<ReasoningFormat>(), Ok(f));
    }
    let err = "r1".parse::<ReasoningFormat>().unwrap_err();
    assert!(err.contains("deepseek-r1"), "{err}");
}

fn harmony(tools: bool, chunks: &[&str]) -> (String, String, Vec<(String, String)>) {
    use harmony::{HarmonyParser, Piece as H};
    let mut parser = HarmonyParser::new(tools);
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    let (mut thought, mut answer, mut calls) = (String::new(), String::new(), Vec::new());
    for piece in pieces {
        match piece {
            H::Reasoning(r) => thought.push_str(&r),
            H::Text(t) => answer.push_str(&t),
            H::Call { index, name } => {
                assert_eq!(index, calls.len());
                calls.push((name, String::new()));
            }
            H::Args { index, text } => calls[index].1.push_str(&text),
        }
    }
    (thought, answer, calls)
}

const HARMONY_CALL: &str = "<|channel|>analysis<|message|>Need the weather tool.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>";
const HARMONY_ANSWER: &str = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.<|return|>";

#[test]
fn harmony_channels_are_thought_answer_and_calls() {
    assert_eq!(
        harmony(true, &[HARMONY_CALL]),
        (
            "Need the weather tool.".into(),
            String::new(),
            vec![("get_weather".into(), "{\"city\":\"Paris\"}".into())]
        )
    );
    assert_eq!(
        harmony(false, &[HARMONY_ANSWER]),
        ("Easy.".into(), "It is 4.".into(), vec![])
    );
    // The recipient in the role part; no end marker before the next message.
    let out = "<|channel|>analysis<|message|>a<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>";
    assert_eq!(
        harmony(true, &[out]),
        ("a".into(), String::new(), vec![("f".into(), "{}".into())])
    );
}

#[test]
fn harmony_without_tools_or_markers_is_answer() {
    // No tools offered: a call's body is answer text.
    assert_eq!(
        harmony(false, &[HARMONY_CALL]),
        (
            "Need the weather tool.".into(),
            "{\"city\":\"Paris\"}".into(),
            vec![]
        )
    );
    // Special tokens left out of the text: all answer, exactly.
    let plain = "analysisEasy.assistantfinalIt is 4.";
    assert_eq!(
        harmony(true, &[plain]),
        (String::new(), plain.into(), vec![])
    );
    // Something that looks like a marker in a body is body.
    let out = "<|channel|>final<|message|>Use <|x|> or <b>.<|return|>";
    assert_eq!(
        harmony(false, &[out]),
        (String::new(), "Use <|x|> or <b>.".into(), vec![])
    );
}

#[test]
fn harmony_is_detected_from_its_template() {
    assert_eq!(
        ReasoningFormat::detect("{{ '<|start|>assistant<|channel|>final<|message|>' }}"),
        Some(ReasoningFormat::Harmony)
    );
}

fn chunks(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([chars.len()]) {
        out.push(chars[last..p].iter().collect());
        last = p;
    }
    out
}

proptest! {
    /// However the output is split into chunks, it splits into the same
    /// thought and answer as when it comes whole.
    #[test]
    fn any_split_reads_the_same(
        text in "(<think>|</think>|◁think▷|◁/think▷|<th|</|[a-c ]|\n){0,30}",
        cuts in proptest::collection::vec(0usize..200, 0..8),
        forced in any::<bool>(),
    ) {
        for format in ReasoningFormat::ALL {
            let prompt = if forced { "x<think>" } else { "x" };
            let whole = split(format, prompt, &[&text]);
            let parts = chunks(&text, &cuts);
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            prop_assert_eq!(split(format, prompt, &refs), whole);
        }
    }

    /// The same for harmony: any split reads as the whole.
    #[test]
    fn any_split_of_harmony_reads_the_same(
        text in "(<\\|channel\\|>|<\\|start\\|>|<\\|message\\|>|<\\|end\\|>|<\\|call\\|>|analysis|final|commentary to=functions.f |<\\||[a-c ]){0,30}",
        cuts in proptest::collection::vec(0usize..300, 0..8),
        tools in any::<bool>(),
    ) {
        let whole = harmony(tools, &[&text]);
        let parts = chunks(&text, &cuts);
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert_eq!(harmony(tools, &refs), whole);
    }
}
