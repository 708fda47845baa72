//! Translation of a whole Messages API response into a `chat.completion` object, and the
//! pieces that the stream translation shares: finish reasons and usage.

use serde_json::{Value, json};

use crate::gateway::provider::ProviderError;

/// Token counts of a message. Anthropic counts prompt tokens read from and written to the
/// prompt cache apart from `input_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl TokenCounts {
    /// Overwrites the counts present in an Anthropic `usage` object and keeps the others.
    pub fn update(&mut self, usage: &Value) {
        let fields = [
            ("input_tokens", &mut self.input),
            ("cache_creation_input_tokens", &mut self.cache_creation),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("output_tokens", &mut self.output),
        ];
        for (field, count) in fields {
            if let Some(value) = usage.get(field).and_then(Value::as_u64) {
                *count = value;
            }
        }
    }

    /// Returns an OpenAI `usage` object. Prompt tokens include the cache tokens, because
    /// OpenAI counts cached tokens as prompt tokens too.
    pub fn to_openai(self) -> Value {
        let prompt = self.input + self.cache_creation + self.cache_read;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// Maps Anthropic's `stop_reason` to OpenAI's `finish_reason`. A missing stop reason maps to
/// null, and reasons without an OpenAI equivalent, such as `pause_turn`, map to `stop`.
pub fn finish_reason(stop_reason: Option<&str>) -> Value {
    let reason = match stop_reason {
        None => return Value::Null,
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        Some(_) => "stop",
    };
    Value::String(reason.to_owned())
}

/// Translates a Messages API response into a `chat.completion` with one choice.
///
/// Text blocks are joined into `message.content`, which is null when the message has only
/// tool calls. `tool_use` blocks become `message.tool_calls` with the input as a JSON string.
/// Other blocks, such as `thinking`, are left out.
pub fn translate_response(message: &Value, created: u64) -> Result<Value, ProviderError> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ProviderError::InvalidResponse("the message has no `content` array".to_owned())
        })?;

    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                texts.push(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => tool_calls.push(tool_call(block)?),
            _ => {}
        }
    }

    let content = if texts.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(texts.concat())
    };
    let mut reply = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }

    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let mut completion = json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish_reason(stop_reason),
        }],
    });
    if let Some(usage) = message.get("usage").filter(|usage| usage.is_object()) {
        let mut counts = TokenCounts::default();
        counts.update(usage);
        completion["usage"] = counts.to_openai();
    }
    Ok(completion)
}

/// Translates a `tool_use` block into an OpenAI tool call.
fn tool_call(block: &Value) -> Result<Value, ProviderError> {
    let field = |name: &str| {
        block.get(name).and_then(Value::as_str).ok_or_else(|| {
            ProviderError::InvalidResponse(format!("a `tool_use` block has no string `{name}`"))
        })
    };
    let id = field("id")?;
    let name = field("name")?;
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_response_maps_text_and_tool_calls() {
        let message = json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "x"},
                {"type": "text", "text": "Let me check. "},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Lisbon"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 100, "cache_read_input_tokens": 20,
                      "cache_creation_input_tokens": 5, "output_tokens": 30},
        });

        let completion = translate_response(&message, 1_700_000_000).expect("valid message");

        assert_eq!(
            completion,
            json!({
                "id": "msg_01",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "claude-sonnet-4-5",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Let me check. One moment.",
                        "tool_calls": [{
                            "id": "toolu_01",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Lisbon\"}"},
                        }],
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": {
                    "prompt_tokens": 125,
                    "completion_tokens": 30,
                    "total_tokens": 155,
                    "prompt_tokens_details": {"cached_tokens": 20},
                },
            })
        );
    }

    #[test]
    fn translate_response_only_tool_calls_has_null_content() {
        let message = json!({
            "id": "msg_02",
            "model": "m",
            "content": [{"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        });

        let completion = translate_response(&message, 0).expect("valid message");

        let reply = &completion["choices"][0]["message"];
        assert_eq!(reply["content"], Value::Null);
        assert_eq!(reply["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(completion["usage"]["total_tokens"], 7);
    }

    #[test]
    fn translate_response_without_content_is_invalid() {
        let error = translate_response(&json!({"id": "msg_03", "type": "message"}), 0)
            .expect_err("no content");

        assert!(
            matches!(error, ProviderError::InvalidResponse(_)),
            "{error:?}"
        );
    }

    #[test]
    fn finish_reason_maps_stop_reasons() {
        let cases = [
            (Some("end_turn"), json!("stop")),
            (Some("stop_sequence"), json!("stop")),
            (Some("max_tokens"), json!("length")),
            (Some("tool_use"), json!("tool_calls")),
            (Some("refusal"), json!("content_filter")),
            (Some("pause_turn"), json!("stop")),
            (None, Value::Null),
        ];
        for (stop_reason, expected) in cases {
            assert_eq!(finish_reason(stop_reason), expected, "{stop_reason:?}");
        }
    }
}
