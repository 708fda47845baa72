//! The Anthropic provider against the fake upstream's Messages API: request translation on
//! the wire, responses, streams with tool calls, and each failure mode.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxisd::config::UpstreamConfig;
use synaxisd::gateway::provider::anthropic::{API_VERSION, AnthropicProvider};
use synaxisd::gateway::provider::{ChatRequest, ChatResponse, Provider, ProviderError};

const KEY: &str = "sk-ant-test-key";
const KEY_ENV: &str = "SYNAXIS_TEST_ANTHROPIC_KEY";

/// Upper bound on every provider call of these tests.
const TIMEOUT: Duration = Duration::from_secs(20);

fn provider(base_url: &str, request_timeout_secs: u64) -> AnthropicProvider {
    let config: UpstreamConfig = serde_json::from_value(json!({
        "kind": "anthropic",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "connect_timeout_secs": 2,
        "request_timeout_secs": request_timeout_secs,
    }))
    .expect("upstream config");
    let env = |name: &str| (name == KEY_ENV).then(|| KEY.to_owned());
    AnthropicProvider::new("claude", &config, &env).expect("provider")
}

async fn start(config: FakeConfig) -> (FakeUpstream, AnthropicProvider) {
    let upstream = FakeUpstream::start(FakeConfig {
        api_key: Some(KEY.to_owned()),
        ..config
    })
    .await
    .expect("start fake upstream");
    let provider = provider(&upstream.base_url(), 10);
    (upstream, provider)
}

fn request(body: Value, stream: bool) -> ChatRequest {
    let Value::Object(mut body) = body else {
        panic!("request bodies are objects")
    };
    if stream {
        body.insert("stream".to_owned(), Value::Bool(true));
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    ChatRequest {
        body: Value::Object(body).to_string().into(),
        model,
        stream,
        body_model: None,
    }
}

fn weather_request() -> Value {
    json!({
        "model": "claude-test",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Weather in Lisbon?"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}],
    })
}

async fn call(
    provider: &AnthropicProvider,
    request: ChatRequest,
) -> Result<ChatResponse, ProviderError> {
    tokio::time::timeout(TIMEOUT, provider.chat_completions(request))
        .await
        .expect("the provider call finishes in time")
}

async fn complete(provider: &AnthropicProvider, body: Value) -> Value {
    match call(provider, request(body, false)).await {
        Ok(ChatResponse::Complete(completion)) => {
            serde_json::from_slice(&completion.json).expect("a completion is JSON")
        }
        other => panic!("expected a completion, got {other:?}"),
    }
}

/// Collects a stream's results until it ends.
async fn stream_results(
    provider: &AnthropicProvider,
    body: Value,
) -> Vec<Result<Value, ProviderError>> {
    let chunks = match call(provider, request(body, true)).await {
        Ok(ChatResponse::Stream(chunks)) => chunks,
        other => panic!("expected a stream, got {other:?}"),
    };
    let chunks = tokio::time::timeout(TIMEOUT, chunks.collect::<Vec<_>>())
        .await
        .expect("the stream ends in time");
    chunks
        .into_iter()
        .map(|chunk| {
            chunk.map(|chunk| serde_json::from_str(&chunk.json).expect("a chunk's text is JSON"))
        })
        .collect()
}

#[tokio::test]
async fn complete_sends_messages_request() {
    let (upstream, provider) = start(FakeConfig {
        prompt_tokens: 120,
        completion_tokens: 45,
        ..FakeConfig::default()
    })
    .await;

    let completion = complete(
        &provider,
        json!({"model": "claude-test", "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello"},
        ], "stream_options": {"include_usage": true}}),
    )
    .await;

    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "claude-test");
    let choice = &completion["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "Hello from the fake upstream."
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(completion["usage"]["prompt_tokens"], 120);
    assert_eq!(completion["usage"]["completion_tokens"], 45);
    assert_eq!(completion["usage"]["total_tokens"], 165);

    let sent = &upstream.received_requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], KEY);
    assert_eq!(sent.headers["anthropic-version"], API_VERSION);
    assert_eq!(sent.body["system"], "Answer briefly.");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hello"}]}])
    );
    assert!(
        sent.body.get("stream_options").is_none(),
        "OpenAI-only fields are dropped"
    );
}

#[tokio::test]
async fn complete_translates_tool_call() {
    let (upstream, provider) = start(FakeConfig {
        reply: String::new(),
        tool_call: Some(("get_weather".to_owned(), json!({"city": "Lisbon"}))),
        ..FakeConfig::default()
    })
    .await;

    let completion = complete(&provider, weather_request()).await;

    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_fake");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
            .expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Lisbon"}));
    assert_eq!(
        upstream.received()[0]["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
}

#[tokio::test]
async fn stream_translates_text_and_tool_call() {
    let (_upstream, provider) = start(FakeConfig {
        reply: "Let me check.".to_owned(),
        prompt_tokens: 300,
        completion_tokens: 40,
        tool_call: Some((
            "get_weather".to_owned(),
            json!({"city": "Lisbon", "unit": "celsius"}),
        )),
        ..FakeConfig::default()
    })
    .await;

    let results = stream_results(&provider, weather_request()).await;

    let chunks: Vec<Value> = results
        .into_iter()
        .map(|result| result.expect("no stream error"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|chunk| {
            chunk
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "Let me check.");

    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_fake");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|call| call["index"] == 0));
    let arguments: String = calls
        .iter()
        .filter_map(|call| call.pointer("/function/arguments").and_then(Value::as_str))
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Lisbon", "unit": "celsius"}));

    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = chunks.last().expect("chunks");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 300);
    assert_eq!(usage["usage"]["completion_tokens"], 40);
}

#[tokio::test]
async fn stream_without_usage_reports_zero() {
    let (_upstream, provider) = start(FakeConfig {
        omit_usage: true,
        ..FakeConfig::default()
    })
    .await;

    let results = stream_results(&provider, weather_request()).await;

    let usage = results
        .last()
        .expect("results")
        .as_ref()
        .expect("no stream error");
    assert_eq!(usage["usage"]["prompt_tokens"], 0);
    assert_eq!(usage["usage"]["completion_tokens"], 0);
}

#[tokio::test]
async fn wrong_key_is_status_with_message() {
    let upstream = FakeUpstream::start(FakeConfig {
        api_key: Some("sk-ant-other-key".to_owned()),
        ..FakeConfig::default()
    })
    .await
    .expect("start fake upstream");
    let provider = provider(&upstream.base_url(), 10);

    let error = call(&provider, request(weather_request(), false))
        .await
        .expect_err("wrong key");

    let ProviderError::Status { status, message } = error else {
        panic!("expected a status error, got {error:?}");
    };
    assert_eq!(status, 401);
    assert_eq!(message, "invalid x-api-key");
}

#[tokio::test]
async fn rate_limit_is_status_with_message() {
    let (_upstream, provider) = start(FakeConfig {
        fail_first: 1,
        fail_status: 429,
        ..FakeConfig::default()
    })
    .await;

    let first = call(&provider, request(weather_request(), true)).await;
    let second = call(&provider, request(weather_request(), false)).await;

    let Err(ProviderError::Status { status, message }) = first else {
        panic!("expected a status error, got {first:?}");
    };
    assert_eq!(status, 429);
    assert!(message.contains("fake upstream"), "{message}");
    assert!(second.is_ok(), "{second:?}");
}

#[tokio::test]
async fn reset_connection_is_invalid_response() {
    let (_upstream, provider) = start(FakeConfig {
        reset_connection: true,
        ..FakeConfig::default()
    })
    .await;

    let error = call(&provider, request(weather_request(), false))
        .await
        .expect_err("no response");

    assert!(
        matches!(error, ProviderError::InvalidResponse(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn cut_stream_ends_with_error() {
    let (_upstream, provider) = start(FakeConfig {
        cut_after_chunk: Some(4),
        pause_before_cut: Duration::from_millis(50),
        ..FakeConfig::default()
    })
    .await;

    let results = stream_results(&provider, weather_request()).await;

    let (last, before) = results.split_last().expect("results");
    assert!(before.iter().all(Result::is_ok), "{before:?}");
    assert!(
        matches!(last, Err(ProviderError::InvalidResponse(_))),
        "{last:?}"
    );
    assert!(
        before
            .iter()
            .flatten()
            .all(|chunk| chunk.get("usage").is_none()),
        "a cut stream reports no usage"
    );
}

#[tokio::test]
async fn refused_connection_is_connect_error() {
    // Nothing listens on the discard port of the loopback address.
    let provider = provider("http://127.0.0.1:9/v1", 10);

    let error = call(&provider, request(weather_request(), false))
        .await
        .expect_err("connection refused");

    assert!(matches!(error, ProviderError::Connect(_)), "{error:?}");
}

#[tokio::test]
async fn slow_upstream_is_timeout() {
    let upstream = FakeUpstream::start(FakeConfig {
        api_key: Some(KEY.to_owned()),
        latency: Duration::from_secs(5),
        ..FakeConfig::default()
    })
    .await
    .expect("start fake upstream");
    let provider = provider(&upstream.base_url(), 1);

    let error = call(&provider, request(weather_request(), false))
        .await
        .expect_err("timed out");

    assert!(matches!(error, ProviderError::Timeout), "{error:?}");
}

#[tokio::test]
async fn untranslatable_request_stays_local() {
    let (upstream, provider) = start(FakeConfig::default()).await;
    let body = json!({
        "model": "claude-test",
        "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}],
    });

    let error = call(&provider, request(body, false))
        .await
        .expect_err("audio is not supported");

    let ProviderError::Status { status, message } = error else {
        panic!("expected a status error, got {error:?}");
    };
    assert_eq!(status, 400);
    assert!(message.contains("input_audio"), "{message}");
    assert!(
        upstream.received().is_empty(),
        "nothing reaches the upstream"
    );
}
