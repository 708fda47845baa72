//! Translation of the server-sent events of a streamed message into `chat.completion.chunk`
//! objects.
//!
//! `message_start` yields the first chunk, with `delta.role`. Text deltas become
//! `delta.content`. A `tool_use` block becomes one OpenAI tool call, started with its id and
//! name and continued by its `partial_json` pieces as `function.arguments`. `message_stop`
//! yields the chunk with `finish_reason` and then, always, a usage chunk without choices, as
//! OpenAI sends with `stream_options.include_usage`. `ping`, `content_block_stop`, thinking
//! deltas and event types unknown to this version are skipped.

use std::collections::HashMap;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

use super::response::{TokenCounts, finish_reason};
use crate::gateway::provider::sse::Event;
use crate::gateway::provider::{Chunk, ProviderError};

/// Chunks translated from one event, and whether the message is complete.
#[derive(Debug, Default, PartialEq)]
pub struct Translated {
    pub chunks: Vec<Value>,
    pub done: bool,
}

/// A `tool_use` content block of the message being streamed.
#[derive(Debug)]
struct ToolBlock {
    /// Position of the tool call in OpenAI's `tool_calls`.
    index: usize,
    /// Whether a non-empty `partial_json` piece was sent for this block.
    sent_arguments: bool,
}

/// State of one streamed message between events.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    tokens: TokenCounts,
    stop_reason: Option<String>,
    /// Tool blocks by their content block index.
    tool_blocks: HashMap<u64, ToolBlock>,
}

impl StreamTranslator {
    pub fn new(created: u64) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created,
            tokens: TokenCounts::default(),
            stop_reason: None,
            tool_blocks: HashMap::new(),
        }
    }

    /// Translates the data of one event. The event type is read from the data's `type` and
    /// from `event_name` (the SSE `event:` field) when the data has none.
    pub fn translate(&mut self, event_name: &str, data: &str) -> Result<Translated, ProviderError> {
        if data.trim().is_empty() {
            return Ok(Translated::default());
        }
        let event: Value = serde_json::from_str(data).map_err(|error| {
            ProviderError::InvalidResponse(format!("stream event is not JSON: {error}"))
        })?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event_name);

        let chunks = match kind {
            "message_start" => self.message_start(&event),
            "content_block_start" => self.content_block_start(&event)?,
            "content_block_delta" => self.content_block_delta(&event)?,
            "content_block_stop" => self.content_block_stop(&event),
            "message_delta" => {
                self.message_delta(&event);
                Vec::new()
            }
            "message_stop" => {
                return Ok(Translated {
                    chunks: self.message_stop(),
                    done: true,
                });
            }
            "error" => return Err(error_event(&event)),
            // `ping` and event types added after this translation was written.
            _ => Vec::new(),
        };
        Ok(Translated {
            chunks,
            done: false,
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }

    fn message_start(&mut self, event: &Value) -> Vec<Value> {
        let message = event.get("message").unwrap_or(&Value::Null);
        if let Some(id) = message.get("id").and_then(Value::as_str) {
            id.clone_into(&mut self.id);
        }
        if let Some(model) = message.get("model").and_then(Value::as_str) {
            model.clone_into(&mut self.model);
        }
        if let Some(usage) = message.get("usage") {
            self.tokens.update(usage);
        }
        vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
    }

    fn content_block_start(&mut self, event: &Value) -> Result<Vec<Value>, ProviderError> {
        let block_index = block_index(event)?;
        let block = event.get("content_block").unwrap_or(&Value::Null);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(self.text_chunk(text))
            }
            Some("tool_use") => {
                let string = |field: &str| {
                    block.get(field).and_then(Value::as_str).ok_or_else(|| {
                        ProviderError::InvalidResponse(format!(
                            "a streamed `tool_use` block has no string `{field}`"
                        ))
                    })
                };
                let id = string("id")?;
                let name = string("name")?;
                let index = self.tool_blocks.len();
                self.tool_blocks.insert(
                    block_index,
                    ToolBlock {
                        index,
                        sent_arguments: false,
                    },
                );
                let call = json!({
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                });
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), Value::Null)])
            }
            _ => Ok(Vec::new()),
        }
    }

    fn content_block_delta(&mut self, event: &Value) -> Result<Vec<Value>, ProviderError> {
        let block_index = block_index(event)?;
        let delta = event.get("delta").unwrap_or(&Value::Null);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(self.text_chunk(text))
            }
            Some("input_json_delta") => {
                let partial = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(tool) = self.tool_blocks.get_mut(&block_index) else {
                    return Err(ProviderError::InvalidResponse(format!(
                        "an `input_json_delta` arrived for content block {block_index}, which is not a started `tool_use` block"
                    )));
                };
                if partial.is_empty() {
                    return Ok(Vec::new());
                }
                tool.sent_arguments = true;
                let index = tool.index;
                Ok(vec![self.arguments_chunk(index, partial)])
            }
            // `thinking_delta`, `signature_delta` and `citations_delta` have no OpenAI form.
            _ => Ok(Vec::new()),
        }
    }

    /// Sends `{}` as the arguments of a tool call whose input arrived without any JSON piece,
    /// so that the client's concatenated arguments are valid JSON.
    fn content_block_stop(&mut self, event: &Value) -> Vec<Value> {
        let Some(block_index) = event.get("index").and_then(Value::as_u64) else {
            return Vec::new();
        };
        match self.tool_blocks.get(&block_index) {
            Some(tool) if !tool.sent_arguments => vec![self.arguments_chunk(tool.index, "{}")],
            _ => Vec::new(),
        }
    }

    fn message_delta(&mut self, event: &Value) {
        if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
            self.stop_reason = Some(reason.to_owned());
        }
        if let Some(usage) = event.get("usage") {
            self.tokens.update(usage);
        }
    }

    fn message_stop(&mut self) -> Vec<Value> {
        let finish = finish_reason(self.stop_reason.as_deref());
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.tokens.to_openai(),
        });
        vec![self.chunk(json!({}), finish), usage]
    }

    fn text_chunk(&self, text: &str) -> Vec<Value> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(json!({"content": text}), Value::Null)]
    }

    fn arguments_chunk(&self, index: usize, arguments: &str) -> Value {
        let call = json!({"index": index, "function": {"arguments": arguments}});
        self.chunk(json!({"tool_calls": [call]}), Value::Null)
    }
}

fn block_index(event: &Value) -> Result<u64, ProviderError> {
    event.get("index").and_then(Value::as_u64).ok_or_else(|| {
        ProviderError::InvalidResponse("a content block event has no `index`".to_owned())
    })
}

/// Returns the error for an `error` event, such as Anthropic's `overloaded_error`.
fn error_event(event: &Value) -> ProviderError {
    let kind = event
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let message = event
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no error message");
    ProviderError::InvalidResponse(format!(
        "the stream sent an error event ({kind}): {message}"
    ))
}

/// Translates a stream of server-sent events into chunks. The stream ends after the first
/// error, after `message_stop`, or with an error when the events end before `message_stop`.
pub fn translate_stream<S>(
    events: S,
    created: u64,
) -> BoxStream<'static, Result<Chunk, ProviderError>>
where
    S: Stream<Item = Result<Event, ProviderError>> + Send + 'static,
{
    let chunks = async_stream::stream! {
        let mut translator = StreamTranslator::new(created);
        let mut events = Box::pin(events);
        while let Some(event) = events.next().await {
            let translated =
                event.and_then(|event| translator.translate(&event.event, &event.data));
            match translated {
                Ok(Translated { chunks, done }) => {
                    for chunk in chunks {
                        yield Ok(Chunk::from_value(&chunk));
                    }
                    if done {
                        return;
                    }
                }
                Err(error) => {
                    yield Err(error);
                    return;
                }
            }
        }
        yield Err(ProviderError::InvalidResponse(
            "the stream ended before `message_stop`".to_owned(),
        ));
    };
    chunks.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events of a streamed message with text and one tool call, as the Messages API sends
    /// them.
    const EVENTS: &[(&str, &str)] = &[
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        ("ping", r#"{"type":"ping"}"#),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" now."}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Lisbon\"}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ];

    fn translate_all(events: &[(&str, &str)]) -> (Vec<Value>, bool) {
        let mut translator = StreamTranslator::new(1_700_000_000);
        let mut chunks = Vec::new();
        let mut done = false;
        for (name, data) in events {
            let translated = translator.translate(name, data).expect("valid event");
            chunks.extend(translated.chunks);
            done = translated.done;
        }
        (chunks, done)
    }

    #[test]
    fn translate_yields_openai_chunks() {
        let (chunks, done) = translate_all(EVENTS);

        assert!(done, "message_stop completes the stream");
        let deltas: Vec<Value> = chunks
            .iter()
            .map(|chunk| chunk["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Checking"}),
                json!({"content": " now."}),
                json!({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function",
                                       "function": {"name": "get_weather", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Lisbon\"}"}}]}),
                json!({}),
                Value::Null,
            ]
        );
        assert!(
            chunks[..7]
                .iter()
                .all(|chunk| chunk["id"] == "msg_01" && chunk["model"] == "claude-sonnet-4-5")
        );
        assert!(
            chunks[..6]
                .iter()
                .all(|chunk| chunk["choices"][0]["finish_reason"].is_null())
        );
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["object"], "chat.completion.chunk");
    }

    #[test]
    fn translate_ends_with_usage_chunk() {
        let (chunks, _) = translate_all(EVENTS);

        let usage = chunks.last().expect("chunks");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({
                "prompt_tokens": 30,
                "completion_tokens": 40,
                "total_tokens": 70,
                "prompt_tokens_details": {"cached_tokens": 5},
            })
        );
    }

    #[test]
    fn translate_sends_empty_object_for_tool_without_input() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_02","model":"m","usage":{"input_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_02","name":"now","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
        ];

        let (chunks, done) = translate_all(&events);

        assert!(!done);
        assert_eq!(
            chunks.last().expect("chunks")["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
        );
    }

    #[test]
    fn translate_numbers_tool_calls_in_order() {
        let start = |block: u64, id: &str| {
            format!(
                r#"{{"type":"content_block_start","index":{block},"content_block":{{"type":"tool_use","id":"{id}","name":"f","input":{{}}}}}}"#
            )
        };
        let mut translator = StreamTranslator::new(0);

        let first = translator
            .translate("content_block_start", &start(1, "a"))
            .expect("valid event");
        let second = translator
            .translate("content_block_start", &start(2, "b"))
            .expect("valid event");

        assert_eq!(
            first.chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(
            second.chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
    }

    #[test]
    fn translate_error_event_is_invalid_response() {
        let mut translator = StreamTranslator::new(0);

        let error = translator
            .translate(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .expect_err("error event");

        let ProviderError::InvalidResponse(message) = error else {
            panic!("expected InvalidResponse, got {error:?}");
        };
        assert!(message.contains("overloaded_error"), "{message}");
        assert!(message.contains("Overloaded"), "{message}");
    }

    #[test]
    fn translate_malformed_json_is_invalid_response() {
        let mut translator = StreamTranslator::new(0);

        let error = translator
            .translate("content_block_delta", "{\"type\": ")
            .expect_err("malformed JSON");

        assert!(
            matches!(error, ProviderError::InvalidResponse(_)),
            "{error:?}"
        );
    }

    #[test]
    fn translate_rejects_json_delta_for_unknown_block() {
        let mut translator = StreamTranslator::new(0);

        let error = translator
            .translate(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            )
            .expect_err("no tool block 3");

        assert!(
            matches!(error, ProviderError::InvalidResponse(_)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn translate_stream_stops_at_first_error() {
        let event = |name: &str, data: &str| {
            Ok(Event {
                event: name.to_owned(),
                data: data.to_owned(),
            })
        };
        let events = futures_util::stream::iter(vec![
            event(EVENTS[0].0, EVENTS[0].1),
            event(
                "error",
                r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
            ),
            event(EVENTS[12].0, EVENTS[12].1),
        ]);

        let results: Vec<_> = translate_stream(events, 0).collect().await;

        assert_eq!(results.len(), 2, "{results:?}");
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(ProviderError::InvalidResponse(_))));
    }

    #[tokio::test]
    async fn translate_stream_without_message_stop_fails() {
        let events = futures_util::stream::iter(EVENTS[..5].iter().map(|(name, data)| {
            Ok(Event {
                event: (*name).to_owned(),
                data: (*data).to_owned(),
            })
        }));

        let results: Vec<_> = translate_stream(events, 0).collect().await;

        let last = results.last().expect("results");
        let Err(ProviderError::InvalidResponse(message)) = last else {
            panic!("expected InvalidResponse, got {last:?}");
        };
        assert!(message.contains("message_stop"), "{message}");
        assert_eq!(results.len(), 4, "three chunks, then the error");
    }
}
