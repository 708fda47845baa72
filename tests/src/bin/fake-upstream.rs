//! `fake-upstream`: a local stand-in for an OpenAI-compatible or Anthropic provider.
//!
//! It prints `listening on http://ADDRESS` as its first line of standard output, then serves
//! `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings` and
//! `POST /v1/messages` (Anthropic), streaming and not, `GET /v1/models`, and
//! `GET /_fake/requests` (the request bodies it received). `--help` lists the flags that set
//! the reply, the usage, the timing and the failure modes.

use std::time::Duration;

use clap::Parser;
use synaxis_tests::fake_upstream::{self, FakeConfig};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "fake-upstream",
    about = "Fake OpenAI-compatible and Anthropic upstream for tests and first steps",
    after_help = "A refused connection needs no flag: point the gateway at a port that nothing \
                  listens on, such as http://127.0.0.1:9/v1."
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// The assistant's reply to every request; streams send it word by word.
    #[arg(long, default_value = "Hello from the fake upstream.")]
    reply: String,
    /// Prompt tokens reported in `usage` (Anthropic: `input_tokens`).
    #[arg(long, default_value_t = 11)]
    prompt_tokens: u64,
    /// Completion tokens reported in `usage` (Anthropic: `output_tokens`).
    #[arg(long, default_value_t = 7)]
    completion_tokens: u64,
    /// Milliseconds to wait before each response starts, failures and resets included.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds to wait between stream chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// API key that requests must present, as `Authorization: Bearer KEY` on OpenAI endpoints
    /// and as `x-api-key: KEY` on `/v1/messages`; without it any key is accepted.
    #[arg(long, env = "FAKE_UPSTREAM_API_KEY")]
    api_key: Option<String>,
    /// Send no `usage` in responses.
    #[arg(long)]
    omit_usage: bool,
    /// Report zero for every token count in `usage`.
    #[arg(long, conflicts_with = "omit_usage")]
    zero_usage: bool,
    /// Name of a tool to call when a chat completion or message request offers tools; the
    /// reply text, when not empty, comes before the call.
    #[arg(long)]
    tool_call_name: Option<String>,
    /// Input of the tool call, a JSON object; its arguments are streamed in pieces.
    #[arg(long, default_value = "{}", requires = "tool_call_name", value_parser = parse_json_object)]
    tool_call_input: serde_json::Value,
    /// Number of requests, counted from the first, that fail with `--fail-status`.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Fail every Nth request, counted from the first, with `--fail-status`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    fail_every: Option<u32>,
    /// HTTP status of the failing requests, such as 500 or 429; the error body has the
    /// endpoint's wire format.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    fail_status: u16,
    /// Close the connection of every request without sending a response.
    #[arg(long)]
    reset_connection: bool,
    /// Abort every stream after this many server-sent events, so that it ends without
    /// `[DONE]` or `message_stop`.
    #[arg(long)]
    cut_after_chunk: Option<usize>,
    /// Milliseconds to wait between the last event sent and the cut of `--cut-after-chunk`.
    #[arg(long, default_value_t = 0, requires = "cut_after_chunk")]
    pause_before_cut_ms: u64,
    /// Length of embedding vectors when the request sets no `dimensions`.
    #[arg(long, default_value_t = 8)]
    embedding_dimensions: usize,
}

fn parse_json_object(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err("the tool call input must be a JSON object".to_owned()),
        Err(error) => Err(format!("the tool call input is not valid JSON: {error}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = FakeConfig {
        reply: args.reply,
        prompt_tokens: args.prompt_tokens,
        completion_tokens: args.completion_tokens,
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        api_key: args.api_key,
        omit_usage: args.omit_usage,
        zero_usage: args.zero_usage,
        tool_call: args.tool_call_name.map(|name| (name, args.tool_call_input)),
        fail_first: args.fail_first,
        fail_status: args.fail_status,
        fail_every: args.fail_every,
        reset_connection: args.reset_connection,
        cut_after_chunk: args.cut_after_chunk,
        pause_before_cut: Duration::from_millis(args.pause_before_cut_ms),
        embedding_dimensions: args.embedding_dimensions,
    };

    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    fake_upstream::serve(listener, config).await?;
    Ok(())
}
