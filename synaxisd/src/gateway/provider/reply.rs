//! Upstream responses in OpenAI's format: a whole completion or a streamed chunk. Each keeps the
//! JSON text that goes to the client unchanged, with the fields the gateway reads from it in one
//! pass over the text.

use std::borrow::Cow;

use bytes::Bytes;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::fields::Name;
use crate::billing::{Usage, tokens};

/// One chunk of a chat completion or completion stream, in OpenAI's format.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The chunk as JSON text, the `data` of its server-sent event.
    pub json: String,
    /// The `usage` object, when the chunk has one that is not null.
    pub usage: Option<Usage>,
    /// Whether the chunk only reports usage: a usage object and no choices.
    pub usage_only: bool,
    /// The text it delivers: content, legacy completion text, tool call names and arguments.
    pub delivered: String,
}

impl Chunk {
    /// Reads a chunk from its JSON text. Chunks made only of the common fields are read
    /// without building a JSON tree; any other JSON object is read through one.
    pub fn parse(json: String) -> Result<Self, serde_json::Error> {
        // A derived struct also reads from a JSON array, which the tree reading does not.
        let is_object = json.trim_start().starts_with('{');
        if is_object && let Ok(view) = serde_json::from_str::<ChunkView<'_>>(&json) {
            let mut delivered = String::new();
            for choice in view.choices.as_deref().unwrap_or_default() {
                choice.collect(&mut delivered);
            }
            let usage = view.usage.map(UsageView::usage);
            let usage_only =
                usage.is_some() && view.choices.is_none_or(|choices| choices.is_empty());
            return Ok(Self {
                json,
                usage,
                usage_only,
                delivered,
            });
        }
        let value: Value = serde_json::from_str(&json)?;
        Ok(Self::read(json, &value))
    }

    /// Makes a chunk from a JSON value, such as one translated from another wire format.
    pub fn from_value(value: &Value) -> Self {
        Self::read(value.to_string(), value)
    }

    fn read(json: String, value: &Value) -> Self {
        let usage = usage_of(value);
        let no_choices = value
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        let mut delivered = String::new();
        tokens::collect_delta(value, &mut delivered);
        Self {
            json,
            usage_only: no_choices && usage.is_some(),
            usage,
            delivered,
        }
    }

    /// Returns the JSON text without the `usage` field, for a client that did not request
    /// usage reports.
    pub fn json_without_usage(&self) -> Cow<'_, str> {
        if self.usage.is_none() {
            return Cow::Borrowed(&self.json);
        }
        match serde_json::from_str::<Value>(&self.json) {
            Ok(Value::Object(mut fields)) => {
                fields.remove("usage");
                Cow::Owned(Value::Object(fields).to_string())
            }
            _ => Cow::Borrowed(&self.json),
        }
    }
}

/// Reads the `usage` object of a completion or chunk; `None` when absent or null.
pub fn usage_of(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?.as_object()?;
    let count = |field: &str| usage.get(field).and_then(Value::as_i64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
    })
}

/// A whole `chat.completion`, `text_completion` or embeddings list.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The JSON text of the response.
    pub json: Bytes,
    /// The `usage` object, when the response has one that is not null.
    pub usage: Option<Usage>,
}

impl Completion {
    /// Reads a response from its JSON text, skipping all but `usage` without building a tree.
    pub fn parse(json: Bytes) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct CompletionView {
            #[serde(default)]
            usage: Option<UsageView>,
        }
        let is_object = json.trim_ascii_start().starts_with(b"{");
        let usage = match serde_json::from_slice::<CompletionView>(&json) {
            Ok(view) if is_object => view.usage.map(UsageView::usage),
            _ => usage_of(&serde_json::from_slice::<Value>(&json)?),
        };
        Ok(Self { json, usage })
    }

    /// Makes a response from a JSON value, such as one translated from another wire format.
    pub fn from_value(value: &Value) -> Self {
        Self {
            json: Bytes::from(value.to_string()),
            usage: usage_of(value),
        }
    }

    /// Returns the text the response delivers, for counting when it reports no usage.
    pub fn delivered(&self) -> String {
        let mut text = String::new();
        if let Ok(value) = serde_json::from_slice::<Value>(&self.json) {
            tokens::collect_completion(&value, &mut text);
        }
        text
    }
}

/// The fields of a chunk that the gateway reads. Deserializing fails on any other shape, such
/// as content given as parts, and the caller then reads a JSON tree.
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
}

impl ChoiceView<'_> {
    /// Appends the delivered text in the order of [`tokens::collect_delta`].
    fn collect(&self, out: &mut String) {
        if let Some(text) = &self.text {
            out.push_str(text);
        }
        let Some(delta) = &self.delta else { return };
        if let Some(content) = &delta.content {
            out.push_str(content);
        }
        for call in delta.tool_calls.as_deref().unwrap_or_default() {
            if let Some(function) = &call.function {
                if let Some(name) = &function.name {
                    out.push_str(name);
                }
                if let Some(arguments) = &function.arguments {
                    out.push_str(arguments);
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallView<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// The token counts of a `usage` object, read as [`usage_of`] reads them: only from an object,
/// and a count that is not an integer counts as zero.
#[derive(Default)]
struct UsageView {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
}

impl<'de> Deserialize<'de> for UsageView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsageVisitor;

        impl<'de> Visitor<'de> for UsageVisitor {
            type Value = UsageView;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a usage object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageView, A::Error> {
                let mut usage = UsageView::default();
                while let Some(Name(field)) = map.next_key()? {
                    match field.as_ref() {
                        "prompt_tokens" => {
                            usage.prompt_tokens = map.next_value::<Value>()?.as_i64()
                        }
                        "completion_tokens" => {
                            usage.completion_tokens = map.next_value::<Value>()?.as_i64();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(usage)
            }
        }

        deserializer.deserialize_map(UsageVisitor)
    }
}

impl UsageView {
    fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reads `value` both ways: from its text, and through a JSON tree.
    fn both_ways(value: &Value) -> (Chunk, Chunk) {
        let fast = Chunk::parse(value.to_string()).expect("a JSON object parses");
        let tree = Chunk::from_value(value);
        (fast, tree)
    }

    #[test]
    fn fast_reading_matches_the_tree() {
        let chunks = [
            json!({"choices": [{"delta": {"content": "Hi", "role": "assistant"}, "index": 0}], "usage": null}),
            json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}),
            json!({"choices": [{"text": "legacy\n", "index": 0}]}),
            json!({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 0, "completion_tokens": 0}}),
            json!({"usage": {"prompt_tokens": 3}}),
            json!({"choices": [{"delta": {"content": [{"type": "text", "text": "parts"}]}}]}),
            json!({"choices": [], "usage": [4, 5]}),
            json!({"choices": [], "usage": {"prompt_tokens": 1.5, "completion_tokens": "2"}}),
            json!([{"delta": {"content": "array"}}]),
        ];
        for chunk in &chunks {
            let (fast, tree) = both_ways(chunk);
            assert_eq!(fast, tree, "{chunk}");
        }
    }

    #[test]
    fn usage_only_chunk_is_detected() {
        let usage_chunk = Chunk::from_value(
            &json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
        );
        let content_chunk =
            Chunk::from_value(&json!({"choices": [{"delta": {"content": "hi"}}], "usage": null}));
        assert!(usage_chunk.usage_only);
        assert!(!content_chunk.usage_only);
        assert_eq!(content_chunk.usage, None);
        assert_eq!(
            usage_chunk.usage,
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2
            })
        );
    }

    #[test]
    fn usage_is_removed_only_where_present() {
        let with_usage = Chunk::from_value(
            &json!({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 1}}),
        );
        let stripped: Value =
            serde_json::from_str(&with_usage.json_without_usage()).expect("still JSON");
        assert_eq!(stripped, json!({"choices": [{"delta": {"content": "x"}}]}));

        let without = Chunk::parse(r#"{"choices":[]}"#.to_owned()).expect("parses");
        assert!(matches!(without.json_without_usage(), Cow::Borrowed(_)));
    }

    #[test]
    fn completion_usage_reads_zero_and_absence() {
        let usage = |json: &'static str| {
            Completion::parse(Bytes::from_static(json.as_bytes()))
                .expect("JSON parses")
                .usage
        };
        assert_eq!(
            usage(r#"{"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0}}"#),
            Some(Usage::default())
        );
        assert_eq!(usage(r#"{"choices":[]}"#), None);
        assert_eq!(usage(r#"{"usage":null}"#), None);
        assert_eq!(usage(r#"{"usage":[1]}"#), None);
        assert!(Completion::parse(Bytes::from_static(b"{\"choices\"")).is_err());
    }
}
