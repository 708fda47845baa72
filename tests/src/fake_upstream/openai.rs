//! OpenAI's endpoints of the fake upstream: chat completions, legacy completions, embeddings
//! and models.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::{
    FakeConfig, FakeState, Wire, accept_request, created, pause, split_pieces, split_words,
    sse_event, sse_response, tool_call_for,
};

/// Maximum number of characters in each streamed piece of tool call arguments.
const ARGUMENT_PIECE_CHARS: usize = 8;

pub(super) async fn models(State(state): State<FakeState>, headers: HeaderMap) -> Response {
    if let Err(response) = Wire::OpenAi.check_key(&state.config, &headers) {
        return *response;
    }
    Json(json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}))
        .into_response()
}

fn usage(config: &FakeConfig) -> Value {
    let (prompt, completion) = config.token_counts();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn model_of(request: &Value) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned()
}

fn is_stream(request: &Value) -> bool {
    request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn wants_usage(request: &Value) -> bool {
    request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub(super) async fn chat_completions(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match accept_request(
        &state,
        Wire::OpenAi,
        "/v1/chat/completions",
        &headers,
        &body,
    )
    .await
    {
        Ok(request) => request,
        Err(response) => return *response,
    };

    let model = model_of(&request);
    let tool_call = tool_call_for(&state.config, &request).cloned();
    if is_stream(&request) {
        let include_usage = wants_usage(&request);
        chat_stream(state.config.clone(), model, tool_call, include_usage)
    } else {
        Json(chat_completion(&state.config, &model, tool_call.as_ref())).into_response()
    }
}

fn chat_completion(config: &FakeConfig, model: &str, tool_call: Option<&(String, Value)>) -> Value {
    let mut message = json!({"role": "assistant", "content": config.reply});
    let mut finish_reason = "stop";
    if let Some((name, input)) = tool_call {
        if config.reply.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = json!([{
            "id": "call_fake",
            "type": "function",
            "function": {"name": name, "arguments": input.to_string()},
        }]);
        finish_reason = "tool_calls";
    }

    let mut body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": created(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    });
    if !config.omit_usage {
        body["usage"] = usage(config);
    }
    body
}

fn chat_stream(
    config: std::sync::Arc<FakeConfig>,
    model: String,
    tool_call: Option<(String, Value)>,
    include_usage: bool,
) -> Response {
    let delay = config.chunk_delay;
    let usage_chunk = (include_usage && !config.omit_usage).then(|| usage(&config));
    let reply = config.reply.clone();
    let events = async_stream::stream! {
        let created = created();
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            sse_event(None, &chunk)
        };

        yield chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        for word in split_words(&reply) {
            pause(delay).await;
            yield chunk(json!({"content": word}), Value::Null);
        }

        let mut finish_reason = "stop";
        if let Some((name, input)) = &tool_call {
            pause(delay).await;
            let start = json!({"index": 0, "id": "call_fake", "type": "function",
                               "function": {"name": name, "arguments": ""}});
            yield chunk(json!({"tool_calls": [start]}), Value::Null);
            for piece in split_pieces(&input.to_string(), ARGUMENT_PIECE_CHARS) {
                pause(delay).await;
                let call = json!({"index": 0, "function": {"arguments": piece}});
                yield chunk(json!({"tool_calls": [call]}), Value::Null);
            }
            finish_reason = "tool_calls";
        }
        yield chunk(json!({}), json!(finish_reason));

        if let Some(usage) = usage_chunk {
            let usage_chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            });
            yield sse_event(None, &usage_chunk);
        }
        yield Bytes::from_static(b"data: [DONE]\n\n");
    };
    sse_response(&config, events)
}

pub(super) async fn completions(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request =
        match accept_request(&state, Wire::OpenAi, "/v1/completions", &headers, &body).await {
            Ok(request) => request,
            Err(response) => return *response,
        };

    let model = model_of(&request);
    if is_stream(&request) {
        let include_usage = wants_usage(&request);
        return completion_stream(state.config.clone(), model, include_usage);
    }

    let mut completion = json!({
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": created(),
        "model": model,
        "choices": [{"text": state.config.reply, "index": 0, "logprobs": null, "finish_reason": "stop"}],
    });
    if !state.config.omit_usage {
        completion["usage"] = usage(&state.config);
    }
    Json(completion).into_response()
}

fn completion_stream(
    config: std::sync::Arc<FakeConfig>,
    model: String,
    include_usage: bool,
) -> Response {
    let delay = config.chunk_delay;
    let usage_chunk = (include_usage && !config.omit_usage).then(|| usage(&config));
    let reply = config.reply.clone();
    let events = async_stream::stream! {
        let created = created();
        let chunk = |text: &str, finish: Value| {
            let chunk = json!({
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            });
            sse_event(None, &chunk)
        };

        for word in split_words(&reply) {
            pause(delay).await;
            yield chunk(&word, Value::Null);
        }
        yield chunk("", json!("stop"));

        if let Some(usage) = usage_chunk {
            let usage_chunk = json!({
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            });
            yield sse_event(None, &usage_chunk);
        }
        yield Bytes::from_static(b"data: [DONE]\n\n");
    };
    sse_response(&config, events)
}

pub(super) async fn embeddings(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request =
        match accept_request(&state, Wire::OpenAi, "/v1/embeddings", &headers, &body).await {
            Ok(request) => request,
            Err(response) => return *response,
        };

    let inputs = match embedding_inputs(request.get("input")) {
        Ok(inputs) => inputs,
        Err(message) => return Wire::OpenAi.error(StatusCode::BAD_REQUEST, message),
    };
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => state.config.embedding_dimensions,
        Some(value) => match value.as_u64().and_then(|count| usize::try_from(count).ok()) {
            Some(count) if count > 0 => count,
            _ => {
                return Wire::OpenAi.error(
                    StatusCode::BAD_REQUEST,
                    "`dimensions` must be a positive integer",
                );
            }
        },
    };
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Wire::OpenAi.error(
                StatusCode::BAD_REQUEST,
                &format!("`encoding_format` is `{other}`; expected float or base64"),
            );
        }
    };

    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|value| value.to_le_bytes())
                    .collect();
                Value::String(BASE64.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();

    let mut response = json!({"object": "list", "data": data, "model": model_of(&request)});
    if !state.config.omit_usage {
        let (prompt, _) = state.config.token_counts();
        response["usage"] = json!({"prompt_tokens": prompt, "total_tokens": prompt});
    }
    Json(response).into_response()
}

/// Splits the `input` of an embeddings request into one text per vector: a string, an array of
/// strings, an array of token ids, or an array of token id arrays.
fn embedding_inputs(input: Option<&Value>) -> Result<Vec<String>, &'static str> {
    let invalid = "`input` must be a string, an array of strings, or an array of token arrays";
    match input {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_number) {
                return Ok(vec![Value::Array(items.clone()).to_string()]);
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                        Ok(item.to_string())
                    }
                    _ => Err(invalid),
                })
                .collect()
        }
        _ => Err(invalid),
    }
}

/// Returns a vector in [-1, 1) derived from `input` by FNV-1a hashing, so that equal inputs
/// get equal vectors.
pub(super) fn embedding(input: &str, dimensions: usize) -> Vec<f32> {
    (0..dimensions)
        .map(|position| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in input.bytes().chain(position.to_le_bytes()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            let unit = f32::from(u16::try_from(hash % 2000).unwrap_or(0)) / 1000.0;
            unit - 1.0
        })
        .collect()
}
