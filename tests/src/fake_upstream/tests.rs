use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

/// Upper bound on every HTTP exchange of these tests.
const TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client")
}

async fn start(config: FakeConfig) -> FakeUpstream {
    FakeUpstream::start(config)
        .await
        .expect("start fake upstream")
}

async fn post(upstream: &FakeUpstream, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("http://{}{path}", upstream.address))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("response")
}

/// Parses a server-sent event body into `(event name, data)` pairs.
fn parse_sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = String::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (name, data)
        })
        .collect()
}

fn json_events(body: &str) -> Vec<Value> {
    parse_sse(body)
        .into_iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str(&data).expect("event data is JSON"))
        .collect()
}

fn tool_config() -> FakeConfig {
    FakeConfig {
        reply: String::new(),
        tool_call: Some((
            "get_weather".to_owned(),
            json!({"city": "Lisbon", "unit": "celsius"}),
        )),
        ..FakeConfig::default()
    }
}

fn openai_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
}

fn anthropic_tools() -> Value {
    json!([{"name": "get_weather", "input_schema": {"type": "object"}}])
}

fn anthropic_request(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather?"}],
        "stream": stream,
    })
}

#[test]
fn split_words_joins_back() {
    let text = "Hello from  the fake upstream.";
    let pieces = split_words(text);
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces[0], "Hello");
    assert_eq!(pieces.len(), 5);
}

#[test]
fn split_pieces_joins_back() {
    let text = "{\"city\":\"São Paulo\"}";

    let pieces = split_pieces(text, 4);

    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|piece| piece.chars().count() <= 4));
    assert_eq!(split_pieces("", 4), Vec::<String>::new());
}

#[tokio::test]
async fn openai_chat_answers_tools_with_call() {
    let upstream = start(tool_config()).await;
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": openai_tools()});

    let body: Value = post(&upstream, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");

    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
            .expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Lisbon", "unit": "celsius"}));
}

#[tokio::test]
async fn openai_chat_without_tools_gets_text() {
    let upstream = start(FakeConfig {
        tool_call: Some(("f".to_owned(), json!({}))),
        ..FakeConfig::default()
    })
    .await;
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let body: Value = post(&upstream, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake upstream."
    );
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn openai_chat_streams_tool_call_arguments() {
    let upstream = start(tool_config()).await;
    let request = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": openai_tools(),
        "stream": true,
        "stream_options": {"include_usage": true},
    });

    let text = post(&upstream, "/v1/chat/completions", &request)
        .await
        .text()
        .await
        .expect("body");

    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks = json_events(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(calls[0]["id"], "call_fake");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.len() > 2, "arguments arrive in several pieces");
    let arguments: String = calls
        .iter()
        .filter_map(|call| call.pointer("/function/arguments").and_then(Value::as_str))
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Lisbon", "unit": "celsius"}));
    let finish = chunks.iter().find_map(|chunk| {
        chunk
            .pointer("/choices/0/finish_reason")
            .filter(|reason| !reason.is_null())
    });
    assert_eq!(finish, Some(&json!("tool_calls")));
    assert_eq!(chunks.last().expect("chunks")["usage"]["prompt_tokens"], 11);
}

#[tokio::test]
async fn anthropic_messages_checks_key() {
    let upstream = start(FakeConfig {
        api_key: Some("sk-ant-fake".to_owned()),
        ..FakeConfig::default()
    })
    .await;
    let url = format!("http://{}/v1/messages", upstream.address);

    let rejected = client()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .bearer_auth("sk-ant-fake")
        .json(&anthropic_request(false))
        .send()
        .await
        .expect("response");
    let accepted = client()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-ant-fake")
        .json(&anthropic_request(false))
        .send()
        .await
        .expect("response");

    assert_eq!(rejected.status(), 401);
    let error: Value = rejected.json().await.expect("JSON");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    assert_eq!(accepted.status(), 200);
    assert_eq!(
        upstream.received().len(),
        1,
        "a rejected key is not recorded"
    );
}

#[tokio::test]
async fn anthropic_messages_returns_text_and_usage() {
    let upstream = start(FakeConfig {
        prompt_tokens: 120,
        completion_tokens: 45,
        ..FakeConfig::default()
    })
    .await;

    let body: Value = post(&upstream, "/v1/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude-test");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello from the fake upstream."}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 120, "output_tokens": 45})
    );
    let received = upstream.received_requests();
    assert_eq!(received[0].path, "/v1/messages");
    assert_eq!(received[0].headers["anthropic-version"], "2023-06-01");
}

#[tokio::test]
async fn anthropic_messages_answers_tools_with_tool_use() {
    let upstream = start(FakeConfig {
        tool_call: Some(("get_weather".to_owned(), json!({"city": "Lisbon"}))),
        ..FakeConfig::default()
    })
    .await;
    let mut request = anthropic_request(false);
    request["tools"] = anthropic_tools();

    let body: Value = post(&upstream, "/v1/messages", &request)
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["content"][0]["type"], "text", "the reply comes first");
    assert_eq!(
        body["content"][1],
        json!({"type": "tool_use", "id": "toolu_fake", "name": "get_weather", "input": {"city": "Lisbon"}})
    );
}

#[tokio::test]
async fn anthropic_messages_streams_events() {
    let upstream = start(FakeConfig {
        reply: "Checking the weather.".to_owned(),
        prompt_tokens: 30,
        completion_tokens: 12,
        tool_call: Some((
            "get_weather".to_owned(),
            json!({"city": "Lisbon", "unit": "celsius"}),
        )),
        ..FakeConfig::default()
    })
    .await;
    let mut request = anthropic_request(true);
    request["tools"] = anthropic_tools();

    let response = post(&upstream, "/v1/messages", &request).await;
    let text = response.text().await.expect("body");

    let events = parse_sse(&text);
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_deref().expect("every event is named"))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert!(names.contains(&"ping"));
    let data = json_events(&text);
    for (name, event) in names.iter().zip(&data) {
        assert_eq!(event["type"], *name, "the data type matches the event name");
    }

    let text_deltas: String = data
        .iter()
        .filter_map(|event| event.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text_deltas, "Checking the weather.");
    let tool_start = data
        .iter()
        .find(|event| event.pointer("/content_block/type") == Some(&json!("tool_use")))
        .expect("tool_use block");
    assert_eq!(tool_start["index"], 1);
    assert_eq!(tool_start["content_block"]["name"], "get_weather");
    let partial_json: String = data
        .iter()
        .filter_map(|event| event.pointer("/delta/partial_json").and_then(Value::as_str))
        .collect();
    let input: Value = serde_json::from_str(&partial_json).expect("input is JSON");
    assert_eq!(input, json!({"city": "Lisbon", "unit": "celsius"}));

    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 30);
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 12);
}

#[tokio::test]
async fn anthropic_messages_rejects_invalid_requests() {
    let upstream = start(FakeConfig::default()).await;
    let mut without_max_tokens = anthropic_request(false);
    without_max_tokens
        .as_object_mut()
        .expect("object")
        .remove("max_tokens");
    let mut system_role = anthropic_request(false);
    system_role["messages"] = json!([{"role": "system", "content": "x"}]);
    let cases = [
        (without_max_tokens, "max_tokens"),
        (system_role, "messages.0.role"),
    ];

    for (request, field) in cases {
        let response = post(&upstream, "/v1/messages", &request).await;

        assert_eq!(response.status(), 400, "{field}");
        let error: Value = response.json().await.expect("JSON");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{message} should name {field}");
    }

    let without_version = client()
        .post(format!("http://{}/v1/messages", upstream.address))
        .json(&anthropic_request(false))
        .send()
        .await
        .expect("response");
    assert_eq!(without_version.status(), 400);
}

#[tokio::test]
async fn completions_returns_text_and_streams() {
    let upstream = start(FakeConfig::default()).await;
    let request = json!({"model": "m", "prompt": "Say hello"});
    let stream_request = json!({
        "model": "m",
        "prompt": "Say hello",
        "stream": true,
        "stream_options": {"include_usage": true},
    });

    let body: Value = post(&upstream, "/v1/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");
    let text = post(&upstream, "/v1/completions", &stream_request)
        .await
        .text()
        .await
        .expect("body");

    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello from the fake upstream.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks = json_events(&text);
    let streamed: String = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/text").and_then(Value::as_str))
        .collect();
    assert_eq!(streamed, "Hello from the fake upstream.");
    let usage = chunks.last().expect("chunks");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test]
async fn embeddings_returns_floats_and_base64() {
    let upstream = start(FakeConfig {
        prompt_tokens: 5,
        ..FakeConfig::default()
    })
    .await;
    let floats = json!({"model": "e", "input": ["one", "two"], "encoding_format": "float"});
    let encoded =
        json!({"model": "e", "input": "one", "encoding_format": "base64", "dimensions": 4});

    let floats: Value = post(&upstream, "/v1/embeddings", &floats)
        .await
        .json()
        .await
        .expect("JSON");
    let encoded: Value = post(&upstream, "/v1/embeddings", &encoded)
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(floats["object"], "list");
    assert_eq!(floats["data"][1]["object"], "embedding");
    assert_eq!(floats["data"][1]["index"], 1);
    let first = floats["data"][0]["embedding"].as_array().expect("array");
    assert_eq!(first.len(), 8);
    assert_ne!(
        floats["data"][0]["embedding"],
        floats["data"][1]["embedding"]
    );
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 5, "total_tokens": 5})
    );

    let bytes = BASE64
        .decode(encoded["data"][0]["embedding"].as_str().expect("string"))
        .expect("base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]]))
        .collect();
    assert_eq!(decoded, openai::embedding("one", 4));
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test]
async fn fail_first_fails_then_succeeds() {
    let upstream = start(FakeConfig {
        fail_first: 2,
        fail_status: 429,
        ..FakeConfig::default()
    })
    .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let first = post(&upstream, "/v1/chat/completions", &chat).await;
    let second = post(&upstream, "/v1/messages", &anthropic_request(false)).await;
    let third = post(&upstream, "/v1/chat/completions", &chat).await;

    assert_eq!(first.status(), 429);
    let error: Value = first.json().await.expect("JSON");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(error["error"]["message"].is_string());
    assert_eq!(second.status(), 429);
    let error: Value = second.json().await.expect("JSON");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(third.status(), 200);
    assert_eq!(upstream.received().len(), 3, "failed requests are recorded");
}

#[tokio::test]
async fn fail_every_fails_each_nth_request() {
    let upstream = start(FakeConfig {
        fail_every: Some(3),
        ..FakeConfig::default()
    })
    .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            post(&upstream, "/v1/chat/completions", &chat)
                .await
                .status(),
        );
    }

    assert_eq!(statuses, [200, 200, 500, 200, 200, 500, 200]);
}

#[tokio::test]
async fn fail_first_default_status_is_500() {
    let upstream = start(FakeConfig {
        fail_first: 1,
        ..FakeConfig::default()
    })
    .await;

    let response = post(&upstream, "/v1/messages", &anthropic_request(false)).await;

    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.expect("JSON");
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test]
async fn reset_connection_sends_no_response() {
    let upstream = start(FakeConfig {
        reset_connection: true,
        ..FakeConfig::default()
    })
    .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let result = client()
        .post(format!("{}/chat/completions", upstream.base_url()))
        .json(&chat)
        .send()
        .await;

    let error = result.expect_err("no response arrives");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(error.status().is_none(), "{error:?}");
    assert_eq!(upstream.received().len(), 1);
}

#[tokio::test]
async fn cut_after_chunk_aborts_stream_after_pause() {
    let pause = Duration::from_millis(200);
    let upstream = start(FakeConfig {
        cut_after_chunk: Some(2),
        pause_before_cut: pause,
        ..FakeConfig::default()
    })
    .await;
    let chat =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let started = Instant::now();

    let response = post(&upstream, "/v1/chat/completions", &chat).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(piece) = body.next().await {
        match piece {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }

    assert!(failed, "the stream ends with an error");
    assert!(started.elapsed() >= pause, "the cut waits for the pause");
    let text = String::from_utf8(received).expect("UTF-8");
    assert_eq!(parse_sse(&text).len(), 2, "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn cut_after_chunk_cuts_anthropic_stream() {
    let upstream = start(FakeConfig {
        cut_after_chunk: Some(3),
        ..FakeConfig::default()
    })
    .await;

    let response = post(&upstream, "/v1/messages", &anthropic_request(true)).await;
    let result = response.text().await;

    assert!(result.is_err(), "the stream is aborted: {result:?}");
}

#[tokio::test]
async fn zero_usage_reports_zeros() {
    let upstream = start(FakeConfig {
        zero_usage: true,
        ..FakeConfig::default()
    })
    .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let openai: Value = post(&upstream, "/v1/chat/completions", &chat)
        .await
        .json()
        .await
        .expect("JSON");
    let anthropic: Value = post(&upstream, "/v1/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(
        openai["usage"],
        json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    );
    assert_eq!(
        anthropic["usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
}

#[tokio::test]
async fn omit_usage_leaves_out_anthropic_usage() {
    let upstream = start(FakeConfig {
        omit_usage: true,
        ..FakeConfig::default()
    })
    .await;

    let message: Value = post(&upstream, "/v1/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("JSON");
    let stream = post(&upstream, "/v1/messages", &anthropic_request(true))
        .await
        .text()
        .await
        .expect("body");

    assert!(message.get("usage").is_none());
    assert!(
        json_events(&stream)
            .iter()
            .all(|event| event.get("usage").is_none() && event.pointer("/message/usage").is_none())
    );
}

#[tokio::test]
async fn wait_for_requests_counts_every_endpoint() {
    let upstream = start(FakeConfig::default()).await;

    post(
        &upstream,
        "/v1/embeddings",
        &json!({"model": "e", "input": "x"}),
    )
    .await;
    post(&upstream, "/v1/messages", &anthropic_request(false)).await;

    upstream.wait_for_requests(2, TIMEOUT).await;
    let paths: Vec<String> = upstream
        .received_requests()
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(paths, ["/v1/embeddings", "/v1/messages"]);
}
