//! Anthropic's Messages API of the fake upstream: `POST /v1/messages`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    FakeConfig, FakeState, Wire, accept_request, pause, split_pieces, split_words, sse_event,
    sse_response, tool_call_for,
};

/// Maximum number of characters in each streamed `partial_json` piece.
const JSON_PIECE_CHARS: usize = 8;

pub(super) async fn messages(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request =
        match accept_request(&state, Wire::Anthropic, "/v1/messages", &headers, &body).await {
            Ok(request) => request,
            Err(response) => return *response,
        };

    if !headers.contains_key("anthropic-version") {
        return Wire::Anthropic.error(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        );
    }
    if let Err(message) = validate_request(&request) {
        return Wire::Anthropic.error(StatusCode::BAD_REQUEST, &message);
    }

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let tool_call = tool_call_for(&state.config, &request).cloned();
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if stream {
        message_stream(state.config.clone(), model, tool_call)
    } else {
        Json(message(&state.config, &model, tool_call.as_ref())).into_response()
    }
}

/// Checks the fields that the Messages API requires, so that a translation mistake fails as
/// it would against Anthropic. Returns a message naming the field.
fn validate_request(request: &Value) -> Result<(), String> {
    if !request.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required".to_owned());
    }
    let max_tokens = request.get("max_tokens").and_then(Value::as_u64);
    if max_tokens.is_none_or(|tokens| tokens == 0) {
        return Err("max_tokens: Field required and must be a positive integer".to_owned());
    }
    match request.get("system") {
        None | Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err("system: Input should be a string or a list of blocks".to_owned()),
    }

    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| "messages: at least one message is required".to_owned())?;
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(format!(
                "messages.{index}.role: Input should be 'user' or 'assistant'"
            ));
        }
        match message.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) if !blocks.is_empty() => {
                if let Some(position) = blocks
                    .iter()
                    .position(|block| !block.get("type").is_some_and(Value::is_string))
                {
                    return Err(format!(
                        "messages.{index}.content.{position}.type: Field required"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "messages.{index}.content: Input should be a string or a non-empty list of blocks"
                ));
            }
        }
    }

    if let Some(tools) = request.get("tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| "tools: Input should be a list".to_owned())?;
        for (index, tool) in tools.iter().enumerate() {
            if !tool.get("name").is_some_and(Value::is_string) {
                return Err(format!("tools.{index}.name: Field required"));
            }
            if !tool.get("input_schema").is_some_and(Value::is_object) {
                return Err(format!("tools.{index}.input_schema: Field required"));
            }
        }
    }
    Ok(())
}

fn usage(config: &FakeConfig) -> Value {
    let (input, output) = config.token_counts();
    json!({"input_tokens": input, "output_tokens": output})
}

fn message(config: &FakeConfig, model: &str, tool_call: Option<&(String, Value)>) -> Value {
    let mut content = Vec::new();
    if !config.reply.is_empty() || tool_call.is_none() {
        content.push(json!({"type": "text", "text": config.reply}));
    }
    let mut stop_reason = "end_turn";
    if let Some((name, input)) = tool_call {
        content.push(json!({"type": "tool_use", "id": "toolu_fake", "name": name, "input": input}));
        stop_reason = "tool_use";
    }

    let mut message = json!({
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
    });
    if !config.omit_usage {
        message["usage"] = usage(config);
    }
    message
}

/// Streams the message as the Messages API does: `message_start`, a text block and a
/// `tool_use` block with their deltas, `message_delta` with the stop reason and output tokens,
/// and `message_stop`. A `ping` follows the first block start.
fn message_stream(
    config: Arc<FakeConfig>,
    model: String,
    tool_call: Option<(String, Value)>,
) -> Response {
    let delay = config.chunk_delay;
    let reply = config.reply.clone();
    let (input_tokens, output_tokens) = config.token_counts();
    let omit_usage = config.omit_usage;
    let events = async_stream::stream! {
        let mut start = json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
        });
        if !omit_usage {
            // The Messages API reports a first output token in `message_start` and the total in
            // `message_delta`, which replaces it.
            start["usage"] = json!({"input_tokens": input_tokens, "output_tokens": output_tokens.min(1)});
        }
        yield sse_event(Some("message_start"), &json!({"type": "message_start", "message": start}));

        let mut block = 0;
        if !reply.is_empty() || tool_call.is_none() {
            yield content_block_start(block, json!({"type": "text", "text": ""}));
            yield sse_event(Some("ping"), &json!({"type": "ping"}));
            for word in split_words(&reply) {
                pause(delay).await;
                yield content_block_delta(block, json!({"type": "text_delta", "text": word}));
            }
            yield content_block_stop(block);
            block += 1;
        }

        let mut stop_reason = "end_turn";
        if let Some((name, input)) = &tool_call {
            pause(delay).await;
            let tool_use = json!({"type": "tool_use", "id": "toolu_fake", "name": name, "input": {}});
            yield content_block_start(block, tool_use);
            yield content_block_delta(block, json!({"type": "input_json_delta", "partial_json": ""}));
            for piece in split_pieces(&input.to_string(), JSON_PIECE_CHARS) {
                pause(delay).await;
                yield content_block_delta(block, json!({"type": "input_json_delta", "partial_json": piece}));
            }
            yield content_block_stop(block);
            stop_reason = "tool_use";
        }

        let mut delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        });
        if !omit_usage {
            delta["usage"] = json!({"output_tokens": output_tokens});
        }
        yield sse_event(Some("message_delta"), &delta);
        yield sse_event(Some("message_stop"), &json!({"type": "message_stop"}));
    };
    sse_response(&config, events)
}

fn content_block_start(index: usize, block: Value) -> Bytes {
    let event = json!({"type": "content_block_start", "index": index, "content_block": block});
    sse_event(Some("content_block_start"), &event)
}

fn content_block_delta(index: usize, delta: Value) -> Bytes {
    let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
    sse_event(Some("content_block_delta"), &event)
}

fn content_block_stop(index: usize) -> Bytes {
    let event = json!({"type": "content_block_stop", "index": index});
    sse_event(Some("content_block_stop"), &event)
}
