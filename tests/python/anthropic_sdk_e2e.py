"""Drives synaxisd, in front of an Anthropic upstream, with the official OpenAI Python SDK and
prints what it saw as one JSON object.

Usage: anthropic_sdk_e2e.py, with SYNAXIS_BASE_URL, SYNAXIS_KEY and SYNAXIS_MODEL set.
The Rust end-to-end test runs it and asserts on the printed values.
"""

import json
import os

from openai import OpenAI

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the weather in Lisbon?"},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]


def read_stream(stream):
    """Return the text, tool calls, finish reason, usage and number of usage-only chunks of a
    streamed chat completion, with each tool call's argument pieces joined."""
    text = []
    calls = {}
    finish_reason = None
    usage = None
    usage_chunks = 0
    roles = []
    for chunk in stream:
        if chunk.usage is not None:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
        if not chunk.choices:
            usage_chunks += 1
            continue
        choice = chunk.choices[0]
        if choice.delta.role:
            roles.append(choice.delta.role)
        text.append(choice.delta.content or "")
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                entry["id"] = call.id
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
        if choice.finish_reason:
            finish_reason = choice.finish_reason
    return {
        "roles": roles,
        "text": "".join(text),
        "tool_calls": [
            {"id": call["id"], "name": call["name"], "arguments": json.loads(call["arguments"])}
            for _, call in sorted(calls.items())
        ],
        "finish_reason": finish_reason,
        "usage": usage,
        "usage_chunks": usage_chunks,
    }


def main():
    base_url = os.environ["SYNAXIS_BASE_URL"]
    key = os.environ["SYNAXIS_KEY"]
    model = os.environ["SYNAXIS_MODEL"]
    client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
    result = {}

    result["stream_with_usage"] = read_stream(
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    result["stream_without_usage"] = read_stream(
        client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, stream=True)
    )

    completion = client.chat.completions.create(
        model=model, messages=MESSAGES, tools=TOOLS, tool_choice="required"
    )
    choice = completion.choices[0]
    result["complete"] = {
        "text": choice.message.content,
        "tool_calls": [
            {
                "id": call.id,
                "type": call.type,
                "name": call.function.name,
                "arguments": json.loads(call.function.arguments),
            }
            for call in choice.message.tool_calls or []
        ],
        "finish_reason": choice.finish_reason,
        "usage": [completion.usage.prompt_tokens, completion.usage.completion_tokens],
    }

    # Send the tool's result back, with tool calls forbidden, so that the reply is text.
    call = choice.message.tool_calls[0]
    follow_up = MESSAGES + [
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    answer = client.chat.completions.create(
        model=model, messages=follow_up, tools=TOOLS, tool_choice="none"
    )
    result["follow_up"] = {
        "text": answer.choices[0].message.content,
        "tool_calls": len(answer.choices[0].message.tool_calls or []),
        "finish_reason": answer.choices[0].finish_reason,
    }

    print(json.dumps(result))


if __name__ == "__main__":
    main()
