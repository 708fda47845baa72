//! Property tests of the parsers that read untrusted input: the request body parser and the
//! upstream's server-sent event stream. Each runs a bounded number of generated cases.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use synaxisd::gateway::chat::parse_body;
use synaxisd::gateway::provider::ProviderError;
use synaxisd::gateway::provider::openai::chunks_from_sse;

/// Parses `pieces` as one SSE stream and collects what it yields.
fn parse_pieces(pieces: Vec<Vec<u8>>) -> Vec<Result<Value, ProviderError>> {
    let bytes = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, ProviderError>));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let chunks = runtime.block_on(chunks_from_sse(bytes).collect::<Vec<_>>());
    chunks
        .into_iter()
        .map(|chunk| {
            chunk.map(|chunk| serde_json::from_str(&chunk.json).expect("a chunk's text is JSON"))
        })
        .collect()
}

/// Splits `text` at the given fractions of its length.
fn split_at_fractions(text: &[u8], fractions: &[f64]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = fractions
        .iter()
        .map(|fraction| ((text.len() as f64) * fraction) as usize)
        .collect();
    cuts.push(0);
    cuts.push(text.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|pair| text[pair[0]..pair[1]].to_vec())
        .collect()
}

fn chunk(content: &str) -> Value {
    json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn body_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let parsed = parse_body(&bytes);
        if let Ok(fields) = parsed {
            let reparsed: Value = serde_json::from_slice(&bytes).expect("accepted bodies are JSON");
            let rewritten: Value =
                serde_json::from_slice(&fields.write_with(&[])).expect("a rewrite is JSON");
            prop_assert_eq!(rewritten, reparsed);
        }
    }

    #[test]
    fn body_parser_accepts_objects(model in "[a-z0-9-]{1,20}", text in ".{0,40}") {
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
        let text = body.to_string();
        let parsed = parse_body(text.as_bytes()).expect("a JSON object parses");
        let rewritten: Value =
            serde_json::from_slice(&parsed.write_with(&[])).expect("a rewrite is JSON");
        prop_assert_eq!(rewritten, body);
    }

    #[test]
    fn sse_split_anywhere_parses_the_same(
        contents in proptest::collection::vec(".{0,30}", 1..6),
        fractions in proptest::collection::vec(0.0f64..1.0, 0..12),
        newline in prop::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        let mut text = String::new();
        for content in &contents {
            text.push_str(&format!("data: {}{newline}{newline}", chunk(content)));
        }
        text.push_str(&format!("data: [DONE]{newline}{newline}"));

        let parsed = parse_pieces(split_at_fractions(text.as_bytes(), &fractions));
        let parsed: Vec<Value> = parsed.into_iter().map(|item| item.expect("valid chunk")).collect();
        let expected: Vec<Value> = contents.iter().map(|content| chunk(content)).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn sse_garbage_ends_with_an_error(garbage in proptest::collection::vec(any::<u8>(), 0..256)) {
        let parsed = parse_pieces(vec![garbage]);
        // Whatever arrives, the stream ends, and it ends with an error unless it saw [DONE].
        if let Some(last) = parsed.last() {
            prop_assert!(last.is_err() || parsed.iter().all(Result::is_ok));
        }
    }
}

#[test]
fn sse_without_done_is_an_error() {
    let text = format!("data: {}\n\n", chunk("cut"));
    let parsed = parse_pieces(vec![text.into_bytes()]);
    assert_eq!(parsed.len(), 2);
    assert!(parsed[0].is_ok());
    assert!(matches!(parsed[1], Err(ProviderError::InvalidResponse(_))));
}

#[test]
fn sse_malformed_chunk_ends_the_stream() {
    let text = format!(
        "data: {{not json\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk("after")
    );
    let parsed = parse_pieces(vec![text.into_bytes()]);
    assert_eq!(parsed.len(), 1, "nothing after the malformed chunk");
    assert!(matches!(parsed[0], Err(ProviderError::InvalidResponse(_))));
}
