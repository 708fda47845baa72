//! Token counts for requests whose upstream reported no usage, or whose client disconnected
//! before the usage report: the delivered text is counted with OpenAI's `o200k_base`
//! tokenizer. For models of other tokenizers the count is an estimate.

use std::borrow::Cow;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tiktoken_rs::CoreBPE;

static ENCODER: LazyLock<Option<CoreBPE>> = LazyLock::new(|| match tiktoken_rs::o200k_base() {
    Ok(encoder) => Some(encoder),
    Err(error) => {
        tracing::error!(%error, "tokenizer unavailable; unreported usage is billed as zero");
        None
    }
});

/// Tokens that OpenAI's chat format adds per message, and to prime the reply.
const TOKENS_PER_MESSAGE: i64 = 3;
const TOKENS_PER_REPLY: i64 = 3;

/// Roles that are one token each in `o200k_base`, so that counting them needs no tokenizer run.
const ONE_TOKEN_ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Counts the tokens of `text`.
pub fn count(text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    ENCODER.as_ref().map_or(0, |encoder| {
        i64::try_from(encoder.encode_ordinary(text).len()).unwrap_or(i64::MAX)
    })
}

/// Counts the tokens of a message's role, which the chat format encodes apart from its content.
fn count_role(role: &str) -> i64 {
    if ONE_TOKEN_ROLES.contains(&role) {
        1
    } else {
        count(role)
    }
}

/// Estimates the prompt tokens of a chat completion's `messages` as OpenAI's chat format counts
/// them: a fixed number per message and for the reply, plus the tokens of each role and of each
/// message's text and tool calls.
pub fn count_messages(messages: Option<&Value>) -> i64 {
    let Some(Value::Array(messages)) = messages else {
        return 0;
    };
    let mut total = TOKENS_PER_REPLY;
    for message in messages {
        total += TOKENS_PER_MESSAGE;
        if let Some(role) = message.get("role").and_then(Value::as_str) {
            total += count_role(role);
        }
        let mut text = String::new();
        collect_text(message.get("content"), &mut text);
        if let Some(calls) = message.get("tool_calls") {
            text.push_str(&calls.to_string());
        }
        total += count(&text);
    }
    total
}

/// A chat message with only what its count reads. Its strings are borrowed from the body unless
/// they contain escapes.
#[derive(Deserialize)]
struct CountedMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Estimates the prompt tokens of a chat completion's `messages`, given as JSON text, as
/// [`count_messages`] does, without building a tree of JSON values. Returns `None` when they
/// have another shape, such as a message that is not an object, which [`count_messages`] then
/// counts.
pub fn count_raw_messages(messages: &RawValue) -> Option<i64> {
    let messages: Vec<CountedMessage<'_>> = serde_json::from_str(messages.get()).ok()?;
    let mut total = TOKENS_PER_REPLY;
    let mut text = String::new();
    for message in &messages {
        total += TOKENS_PER_MESSAGE;
        text.clear();
        if let Some(Text(role)) = &message.role {
            total += count_role(role);
        }
        if let Some(content) = message.content {
            push_content(content, &mut text)?;
        }
        if let Some(calls) = message.tool_calls {
            let calls: Value = serde_json::from_str(calls.get()).ok()?;
            text.push_str(&calls.to_string());
        }
        total += count(&text);
    }
    Some(total)
}

/// Appends the text of a raw `content` as [`collect_text`] does.
fn push_content(content: &RawValue, out: &mut String) -> Option<()> {
    match content.get().as_bytes().first() {
        Some(b'"') => {
            let Text(text) = serde_json::from_str(content.get()).ok()?;
            out.push_str(&text);
        }
        Some(b'[') => {
            let parts: Vec<Part<'_>> = serde_json::from_str(content.get()).ok()?;
            for text in parts.iter().filter_map(|part| part.text) {
                // A `text` that is not a string adds nothing, as in `collect_text`.
                if let Ok(Text(text)) = serde_json::from_str::<Text<'_>>(text.get()) {
                    out.push_str(&text);
                }
            }
        }
        _ => {}
    }
    Some(())
}

/// Appends the text of a message's `content`: a string, or the `text` of its parts.
pub fn collect_text(content: Option<&Value>, out: &mut String) {
    match content {
        Some(Value::String(text)) => out.push_str(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    out.push_str(text);
                }
            }
        }
        _ => {}
    }
}

/// Appends what a streamed chunk delivers to the client: content and tool call arguments.
pub fn collect_delta(chunk: &Value, out: &mut String) {
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return;
    };
    for choice in choices {
        // Legacy completions stream `text` instead of a delta.
        collect_text(choice.get("text"), out);
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        collect_text(delta.get("content"), out);
        collect_tool_calls(delta.get("tool_calls"), out);
    }
}

/// Appends the completion text of a whole `chat.completion`.
pub fn collect_completion(body: &Value, out: &mut String) {
    let Some(choices) = body.get("choices").and_then(Value::as_array) else {
        return;
    };
    for choice in choices {
        collect_text(choice.get("text"), out);
        let Some(message) = choice.get("message") else {
            continue;
        };
        collect_text(message.get("content"), out);
        collect_tool_calls(message.get("tool_calls"), out);
    }
}

fn collect_tool_calls(calls: Option<&Value>, out: &mut String) {
    let Some(Value::Array(calls)) = calls else {
        return;
    };
    for call in calls {
        if let Some(function) = call.get("function") {
            if let Some(name) = function.get("name").and_then(Value::as_str) {
                out.push_str(name);
            }
            if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                out.push_str(arguments);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_known_text() {
        assert_eq!(count(""), 0);
        assert_eq!(count("Hello world"), 2);
    }

    #[test]
    fn delta_collects_content_and_arguments() {
        let mut text = String::new();
        collect_delta(
            &json!({"choices": [{"delta": {"content": "Hi"}}]}),
            &mut text,
        );
        collect_delta(
            &json!({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{\"a\":1}"}}]}}]}),
            &mut text,
        );
        assert_eq!(text, "Hi{\"a\":1}");
    }

    #[test]
    fn one_token_roles_are_one_token() {
        for role in ONE_TOKEN_ROLES {
            assert_eq!(count(role), 1, "{role}");
        }
        assert_eq!(count_role("narrator"), count("narrator"));
    }

    #[test]
    fn raw_messages_count_like_messages() {
        let bodies = [
            json!({"model": "m", "messages": [{"role": "user", "content": "Hello world"}]}),
            json!({"messages": [
                {"role": "system", "content": "Answer in \"quotes\"\n"},
                {"role": "user", "content": [
                    {"type": "text", "text": "part one"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": 5},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                ]},
                {"content": "no role"},
            ]}),
            json!({"messages": [{"role": "narrator", "content": "Once"}]}),
            json!({"messages": []}),
        ];
        for body in bodies {
            let text = body["messages"].to_string();
            let raw: Box<RawValue> = serde_json::from_str(&text).expect("JSON text");
            let typed = count_raw_messages(&raw);
            assert_eq!(typed, Some(count_messages(body.get("messages"))), "{text}");
        }
    }

    #[test]
    fn other_chat_shapes_fall_back() {
        for text in [
            r#"["not an object"]"#,
            r#"[{"role": 5, "content": "x"}]"#,
            r#""text""#,
            "{}",
        ] {
            let raw: Box<RawValue> = serde_json::from_str(text).expect("JSON text");
            assert_eq!(count_raw_messages(&raw), None, "{text}");
        }
    }

    #[test]
    fn messages_count_more_than_their_text() {
        let messages = json!([{"role": "user", "content": "Hello world"}]);
        let estimate = count_messages(Some(&messages));
        assert!(estimate > count("Hello world"), "{estimate}");
    }
}
