//! `fake-upstream`: a local stand-in for an OpenAI-compatible provider.
//!
//! It prints `listening on http://ADDRESS` as its first line of standard output, then serves
//! `POST /v1/chat/completions` (streaming and not), `GET /v1/models`, and
//! `GET /_fake/requests` (the request bodies it received).

use std::time::Duration;

use clap::Parser;
use synaxis_tests::fake_upstream::{self, FakeConfig};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "fake-upstream",
    about = "Fake OpenAI-compatible upstream for tests and first steps"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// The assistant's reply to every request; streams send it word by word.
    #[arg(long, default_value = "Hello from the fake upstream.")]
    reply: String,
    /// Prompt tokens reported in `usage`.
    #[arg(long, default_value_t = 11)]
    prompt_tokens: u64,
    /// Completion tokens reported in `usage`.
    #[arg(long, default_value_t = 7)]
    completion_tokens: u64,
    /// Milliseconds to wait before each response starts.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds to wait between stream chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// API key that requests must present as `Authorization: Bearer KEY`; none accepts any.
    #[arg(long, env = "FAKE_UPSTREAM_API_KEY")]
    api_key: Option<String>,
    /// Send no `usage` in responses.
    #[arg(long)]
    omit_usage: bool,
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
    };

    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    fake_upstream::serve(listener, config).await?;
    Ok(())
}
