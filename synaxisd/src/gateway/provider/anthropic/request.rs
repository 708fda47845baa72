//! Translation of an OpenAI chat completion request body into a Messages API request body.
//!
//! Fields that are translated: `model`, `messages`, `max_completion_tokens` or `max_tokens`
//! (to `max_tokens`, [`DEFAULT_MAX_TOKENS`] when both are absent), `temperature`, `top_p`,
//! `top_k`, `stop` (to `stop_sequences`), `user` (to `metadata.user_id`), `tools`,
//! `tool_choice`, `parallel_tool_calls` (to `disable_parallel_tool_use`) and `stream`.
//! `n` greater than 1 is rejected, because a message has a single reply.
//!
//! Every other field is dropped, because the Messages API has no equivalent. Among OpenAI's
//! fields these are `frequency_penalty`, `presence_penalty`, `logit_bias`, `logprobs`,
//! `top_logprobs`, `seed`, `response_format`, `stream_options`, `service_tier`, `store`,
//! `metadata`, `modalities`, `audio`, `prediction`, `reasoning_effort`, `web_search_options`
//! and the deprecated `functions` and `function_call`. Fields unknown to OpenAI are dropped too.
//!
//! A request that cannot be translated fails with a 400 status naming the field, which the
//! gateway returns to the client.

use serde_json::{Map, Value, json};

use crate::gateway::provider::ProviderError;

/// `max_tokens` sent when the request sets neither `max_completion_tokens` nor `max_tokens`,
/// because the Messages API requires it.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Fields of the OpenAI request that this module reads; all others are dropped.
const TRANSLATED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "user",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
];

/// Returns the error for a request that cannot be translated.
// NOTE: this reuses `Status` with 400, because the gateway reports `ProviderError::Unsupported`
// as an invalid `model`. The client gets status 400 with this message and no retry happens, but
// the error's `Display` reads "the upstream returned status 400" although nothing was sent.
fn invalid(message: String) -> ProviderError {
    ProviderError::Status {
        status: 400,
        message,
    }
}

/// A message of the Messages API under construction.
#[derive(Debug)]
struct Message {
    role: &'static str,
    content: Vec<Value>,
}

/// Translates a chat completion request body into a Messages API request body.
pub fn translate_request(
    mut body: Map<String, Value>,
    stream: bool,
) -> Result<Value, ProviderError> {
    let mut request = Map::new();

    let model = body.remove("model").unwrap_or(Value::Null);
    request.insert("model".to_owned(), model);

    let messages = match body.remove("messages") {
        Some(Value::Array(messages)) => messages,
        _ => return Err(invalid("`messages` must be an array".to_owned())),
    };
    let (system, messages) = translate_messages(&messages)?;
    if !system.is_empty() {
        request.insert("system".to_owned(), Value::String(system.join("\n\n")));
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|message| json!({"role": message.role, "content": message.content}))
        .collect();
    request.insert("messages".to_owned(), Value::Array(messages));

    request.insert("max_tokens".to_owned(), max_tokens(&body)?.into());

    for field in ["temperature", "top_p", "top_k"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value) if value.is_number() => {
                request.insert(field.to_owned(), value.clone());
            }
            Some(_) => return Err(invalid(format!("`{field}` must be a number"))),
        }
    }

    if let Some(stop) = stop_sequences(body.get("stop"))? {
        request.insert("stop_sequences".to_owned(), stop);
    }

    match body.get("user") {
        None | Some(Value::Null) => {}
        Some(Value::String(user)) => {
            request.insert("metadata".to_owned(), json!({"user_id": user}));
        }
        Some(_) => return Err(invalid("`user` must be a string".to_owned())),
    }

    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        return Err(invalid(format!(
            "`n` is {n}, but the Anthropic upstream returns a single choice; send `n` of 1"
        )));
    }

    translate_tools(&body, &mut request)?;

    if stream {
        request.insert("stream".to_owned(), Value::Bool(true));
    }

    let dropped: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|field| !TRANSLATED_FIELDS.contains(field))
        .collect();
    if !dropped.is_empty() {
        tracing::debug!(
            fields = ?dropped,
            "request fields without an Anthropic equivalent were dropped"
        );
    }

    Ok(Value::Object(request))
}

/// Reads `max_completion_tokens`, else `max_tokens`, else returns [`DEFAULT_MAX_TOKENS`].
fn max_tokens(body: &Map<String, Value>) -> Result<u64, ProviderError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value) => {
                return value
                    .as_u64()
                    .filter(|tokens| *tokens > 0)
                    .ok_or_else(|| invalid(format!("`{field}` must be a positive integer")));
            }
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

/// Translates OpenAI's `stop`, a string or an array of strings, into `stop_sequences`.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, ProviderError> {
    let sequences = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(sequence)) => vec![Value::String(sequence.clone())],
        Some(Value::Array(sequences)) if sequences.iter().all(Value::is_string) => {
            sequences.clone()
        }
        Some(_) => {
            return Err(invalid(
                "`stop` must be a string or an array of strings".to_owned(),
            ));
        }
    };
    Ok(Some(Value::Array(sequences)))
}

/// Splits OpenAI messages into the system prompt parts and the Messages API messages.
///
/// System and developer messages, wherever they are, become the system prompt, because the
/// Messages API has no system role. Tool results become user messages with `tool_result`
/// blocks, and consecutive messages of the same role are merged into one, because the API
/// expects user and assistant turns to alternate.
fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Message>), ProviderError> {
    let mut system = Vec::new();
    let mut translated: Vec<Message> = Vec::new();

    for (index, message) in messages.iter().enumerate() {
        let path = format!("messages[{index}]");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{path}.role` must be a string")))?;
        let content = message.get("content").unwrap_or(&Value::Null);

        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(system_text(content, &path)?);
                continue;
            }
            "user" => ("user", content_blocks(content, &path)?),
            "assistant" => ("assistant", assistant_blocks(message, content, &path)?),
            "tool" => ("user", vec![tool_result_block(message, content, &path)?]),
            "function" => {
                return Err(invalid(format!(
                    "`{path}` has the deprecated role `function`; send tool results with role `tool`"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "`{path}.role` is `{other}`; expected system, developer, user, assistant or tool"
                )));
            }
        };

        // A message without content, such as an empty assistant turn, would be rejected.
        if blocks.is_empty() {
            continue;
        }
        match translated.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => translated.push(Message {
                role,
                content: blocks,
            }),
        }
    }

    Ok((system, translated))
}

/// Returns the text of a system or developer message, with its text parts joined by newlines.
fn system_text(content: &Value, path: &str) -> Result<String, ProviderError> {
    let blocks = content_blocks(content, path)?;
    let mut texts = Vec::with_capacity(blocks.len());
    for block in &blocks {
        match block.get("text").and_then(Value::as_str) {
            Some(text) => texts.push(text),
            None => {
                return Err(invalid(format!(
                    "`{path}.content` may contain only text in a system or developer message"
                )));
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Translates message content, a string or an array of content parts, into content blocks.
/// Empty text is left out, because the Messages API rejects empty text blocks.
fn content_blocks(content: &Value, path: &str) -> Result<Vec<Value>, ProviderError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(text_block(text).into_iter().collect()),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                let part_path = format!("{path}.content[{index}]");
                if let Some(block) = part_block(part, &part_path)? {
                    blocks.push(block);
                }
            }
            Ok(blocks)
        }
        _ => Err(invalid(format!(
            "`{path}.content` must be a string or an array of content parts"
        ))),
    }
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Translates one content part. Text and refusal parts become text blocks and image parts
/// become image blocks. Other parts, such as `input_audio` and `file`, are rejected.
fn part_block(part: &Value, path: &str) -> Result<Option<Value>, ProviderError> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.type` must be a string")))?;
    let text_of = |field: &str| {
        part.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{path}.{field}` must be a string")))
    };
    match kind {
        "text" => Ok(text_block(text_of("text")?)),
        "refusal" => Ok(text_block(text_of("refusal")?)),
        "image_url" => image_block(part, path).map(Some),
        other => Err(invalid(format!(
            "`{path}` is a content part of type `{other}`, which the Anthropic upstream does not support; send text or image_url parts"
        ))),
    }
}

/// Translates an `image_url` part. A `data:` URL with base64 data becomes a base64 image
/// source, and an `http` or `https` URL becomes a URL image source. `detail` is dropped.
fn image_block(part: &Value, path: &str) -> Result<Value, ProviderError> {
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(image) => image
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{path}.image_url.url` must be a string")))?,
        None => return Err(invalid(format!("`{path}.image_url` is missing"))),
    };

    if let Some(data_url) = url.strip_prefix("data:") {
        let Some((media_type, data)) = data_url.split_once(";base64,") else {
            return Err(invalid(format!(
                "`{path}.image_url.url` is a data URL without base64 data; encode the image as `data:<media type>;base64,<data>`"
            )));
        };
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid(format!(
        "`{path}.image_url.url` must be an http(s) URL or a base64 data URL"
    )))
}

/// Translates an assistant message: its text, then one `tool_use` block per tool call.
fn assistant_blocks(
    message: &Value,
    content: &Value,
    path: &str,
) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = content_blocks(content, path)?;
    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(tool_calls)) => tool_calls,
        Some(_) => return Err(invalid(format!("`{path}.tool_calls` must be an array"))),
    };

    for (index, call) in tool_calls.iter().enumerate() {
        let call_path = format!("{path}.tool_calls[{index}]");
        let string_at = |pointer: &str| {
            call.pointer(pointer)
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    let field = pointer.trim_start_matches('/').replace('/', ".");
                    invalid(format!("`{call_path}.{field}` must be a string"))
                })
        };
        let id = string_at("/id")?;
        let name = string_at("/function/name")?;
        let arguments = string_at("/function/arguments")?;

        // Models sometimes send no arguments for a tool without parameters.
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments).map_err(|error| {
                invalid(format!(
                    "`{call_path}.function.arguments` is not valid JSON: {error}"
                ))
            })?
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

/// Translates a `tool` message into a `tool_result` block that refers to its tool call.
fn tool_result_block(message: &Value, content: &Value, path: &str) -> Result<Value, ProviderError> {
    let tool_use_id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.tool_call_id` must be a string")))?;
    let content = match content {
        Value::String(text) => Value::String(text.clone()),
        _ => Value::Array(content_blocks(content, path)?),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content}))
}

/// Translates `tools`, `tool_choice` and `parallel_tool_calls` into `request`.
///
/// `tool_choice` maps `auto` to `{type: auto}`, `required` to `{type: any}`, a named function
/// to `{type: tool, name}`, and `none` to leaving out the tools, so that no tool can be called.
/// `parallel_tool_calls: false` becomes `disable_parallel_tool_use: true`.
fn translate_tools(
    body: &Map<String, Value>,
    request: &mut Map<String, Value>,
) -> Result<(), ProviderError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("`tools` must be an array".to_owned())),
    };

    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            // NOTE: a conversation that already contains tool calls may be rejected by
            // Anthropic without its tools, though the client only asked for no new calls.
            "none" => return Ok(()),
            other => {
                return Err(invalid(format!(
                    "`tool_choice` is `{other}`; expected auto, required, none or a function"
                )));
            }
        },
        Some(choice) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|_| choice.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid(
                        "`tool_choice` must be auto, required, none or {\"type\": \"function\", \"function\": {\"name\": ...}}"
                            .to_owned(),
                    )
                })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };

    let mut translated = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        translated.push(tool_definition(tool, index)?);
    }
    request.insert("tools".to_owned(), Value::Array(translated));

    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(choice) = choice {
        request.insert("tool_choice".to_owned(), choice);
    }
    Ok(())
}

/// Translates `{type: function, function: {name, description, parameters}}` into
/// `{name, description, input_schema}`. A function without parameters gets an empty object
/// schema, because the Messages API requires `input_schema`.
fn tool_definition(tool: &Value, index: usize) -> Result<Value, ProviderError> {
    let path = format!("tools[{index}]");
    let kind = tool.get("type").and_then(Value::as_str);
    if kind != Some("function") {
        return Err(invalid(format!(
            "`{path}.type` must be `function`, the only tool type the Anthropic upstream supports"
        )));
    }
    let function = tool
        .get("function")
        .ok_or_else(|| invalid(format!("`{path}.function` is missing")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.function.name` must be a string")))?;

    let mut definition = json!({"name": name});
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        definition["description"] = Value::String(description.to_owned());
    }
    definition["input_schema"] = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(parameters) => parameters.clone(),
    };
    Ok(definition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Result<Value, ProviderError> {
        let Value::Object(body) = body else {
            unreachable!("test bodies are objects")
        };
        translate_request(body, false)
    }

    fn message_of(error: ProviderError) -> String {
        match error {
            ProviderError::Status {
                status: 400,
                message,
            } => message,
            other => unreachable!("expected a 400 status, got {other:?}"),
        }
    }

    #[test]
    fn translate_request_maps_a_tool_conversation() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": "Weather in Lisbon?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Lisbon\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "Thanks"},
            ],
            "max_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }}, {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "seed": 7,
            "frequency_penalty": 0.5,
            "stream_options": {"include_usage": true},
        });

        let request = translate(body).expect("translatable");

        assert_eq!(
            request,
            json!({
                "model": "claude-sonnet-4-5",
                "system": "Be brief.\n\nUse tools.",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Weather in Lisbon?"}]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Lisbon"}},
                        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                        {"type": "text", "text": "Thanks"},
                    ]},
                ],
                "max_tokens": 300,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "user-42"},
                "tools": [
                    {"name": "get_weather", "description": "Weather of a city",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
                ],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            })
        );
    }

    #[test]
    fn translate_request_defaults_max_tokens() {
        let request =
            translate(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .expect("translatable");

        assert_eq!(request["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(request.get("system").is_none());
        assert!(request.get("tools").is_none());
        assert!(request.get("stream").is_none());
    }

    #[test]
    fn translate_request_prefers_max_completion_tokens() {
        let request = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
        }))
        .expect("translatable");

        assert_eq!(request["max_tokens"], 20);
    }

    #[test]
    fn translate_request_sets_stream() {
        let Value::Object(body) =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        else {
            unreachable!()
        };

        let request = translate_request(body, true).expect("translatable");

        assert_eq!(request["stream"], true);
    }

    #[test]
    fn translate_request_maps_stop_array() {
        let request = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stop": ["a", "b"],
        }))
        .expect("translatable");

        assert_eq!(request["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn translate_request_maps_tool_choice() {
        let cases = [
            (json!("auto"), Some(json!({"type": "auto"}))),
            (json!("required"), Some(json!({"type": "any"}))),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                Some(json!({"type": "tool", "name": "get_weather"})),
            ),
            (Value::Null, None),
        ];
        for (choice, expected) in cases {
            let request = translate(json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                "tool_choice": choice,
            }))
            .expect("translatable");

            assert_eq!(request.get("tool_choice"), expected.as_ref(), "{choice}");
            assert_eq!(request["tools"][0]["name"], "get_weather", "{choice}");
        }
    }

    #[test]
    fn translate_request_tool_choice_none_drops_tools() {
        let request = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "tool_choice": "none",
        }))
        .expect("translatable");

        assert!(request.get("tools").is_none());
        assert!(request.get("tool_choice").is_none());
    }

    #[test]
    fn translate_request_maps_images() {
        let request = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ]}],
        }))
        .expect("translatable");

        assert_eq!(
            request["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ])
        );
    }

    #[test]
    fn translate_request_merges_consecutive_roles_and_skips_empty() {
        let request = translate(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "three"},
            ],
        }))
        .expect("translatable");

        assert_eq!(
            request["messages"],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ]}])
        );
    }

    #[test]
    fn translate_request_rejects_audio_part() {
        let error = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            ]}],
        }))
        .expect_err("audio is not supported");

        let message = message_of(error);
        assert!(message.contains("messages[0].content[0]"), "{message}");
        assert!(message.contains("input_audio"), "{message}");
    }

    #[test]
    fn translate_request_rejects_invalid_input() {
        let cases = [
            (
                json!({"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{not json"}}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"role": "tool", "content": "result"}),
                "messages[0].tool_call_id",
            ),
            (json!({"role": "function", "content": "x"}), "function"),
            (json!({"role": "critic", "content": "x"}), "critic"),
            (
                json!({"role": "system", "content": [{"type": "image_url", "image_url": "https://example.com/a.png"}]}),
                "only text",
            ),
        ];
        for (message, expected) in cases {
            let error = translate(json!({"model": "m", "messages": [message]}))
                .expect_err("invalid message");

            let text = message_of(error);
            assert!(text.contains(expected), "{text} should name {expected}");
        }
    }

    #[test]
    fn translate_request_rejects_several_choices() {
        let error = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "n": 2,
        }))
        .expect_err("n > 1");

        assert!(message_of(error).contains("`n`"));
    }

    #[test]
    fn translate_request_rejects_non_function_tool() {
        let error = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "web_search"}],
        }))
        .expect_err("unsupported tool type");

        assert!(message_of(error).contains("tools[0].type"));
    }
}
